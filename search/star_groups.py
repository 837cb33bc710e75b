"""Star grouping of a similarity graph: groups that cannot chain.

Photos are numbered by preference (0 = the best original, by :mod:`search.keeper`'s rules). Taken in
that order, every photo not yet in a group becomes a centre and takes every photo not yet in a group that
scores at or above the threshold against it. So every member of a group is one edge from its centre (the
group's best original), never linked through a chain, and each photo is in at most one group.

That sequential rule is the greedy maximal independent set in preference order, which is computed here in
rounds of whole-array numpy work (Blelloch, Fineman and Shun, "Greedy sequential maximal independent set
and matching are parallel on average", 2012): a photo becomes a centre as soon as every more-preferred
neighbour is known to be taken by another centre. Each round decides at least the most-preferred open
photo, and the number of rounds is the longest chain of ever-more-preferred neighbours, a handful for
near-duplicates; there is no Python loop per photo or per neighbour pair.

Exact copies (same bytes) are one node, its best copy, so they always end up together with their group.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Positions = npt.NDArray[np.int64]

_OPEN, _CENTRE, _TAKEN = 0, 1, 2


def star_groups(n: int, first: Positions, second: Positions, content: Positions | None = None) -> Positions:
    """The centre each of ``n`` photos is grouped with, or -1 for a photo in no group.

    ``first[i]``-``second[i]`` are the similar pairs (score at or above the threshold, either direction,
    repeats allowed), as positions in preference order (0 = the best original). ``content[v]`` is the
    position of the best copy among the photos with the same bytes as ``v`` (``v`` itself when it has none);
    a photo's copies join its group, or form one of their own. A centre is its own centre; a group is every
    photo whose centre is the same, and its centre is its most-preferred photo."""
    representative = np.arange(n, dtype=np.int64) if content is None else np.asarray(content, dtype=np.int64)
    a, b = representative[first], representative[second]
    keep = a != b
    a, b = a[keep], b[keep]
    source, target = np.concatenate([a, b]), np.concatenate([b, a])  # similarity is symmetric

    state = np.full(n, _OPEN, dtype=np.int8)
    open_source, open_target = source, target
    rounds = 0
    while open_source.size:
        rounds += 1
        blocked = np.zeros(n, dtype=bool)
        blocked[open_source[open_target < open_source]] = True  # a more-preferred neighbour is still open
        linked = np.zeros(n, dtype=bool)
        linked[open_source] = True
        centres = linked & ~blocked
        state[centres] = _CENTRE
        state[open_target[centres[open_source]]] = _TAKEN
        still_open = (state[open_source] == _OPEN) & (state[open_target] == _OPEN)
        open_source, open_target = open_source[still_open], open_target[still_open]
    logger.debug("star grouping: %d pairs decided in %d rounds", source.size // 2, rounds)

    owner = np.full(n, -1, dtype=np.int64)
    centre_ids = np.flatnonzero(state == _CENTRE)
    owner[centre_ids] = centre_ids
    # A taken photo belongs to the most-preferred centre among its neighbours: the one that took it first.
    claims = (state[source] == _CENTRE) & (state[target] == _TAKEN)
    claimant, claimed = source[claims], target[claims]
    order = np.lexsort((claimant, claimed))
    claimant, claimed = claimant[order], claimed[order]
    first_claim = np.ones(claimed.size, dtype=bool)
    first_claim[1:] = claimed[1:] != claimed[:-1]
    owner[claimed[first_claim]] = claimant[first_claim]

    copies = np.flatnonzero(representative != np.arange(n))
    if copies.size:
        best = representative[copies]
        alone = owner[best] < 0
        owner[best[alone]] = best[alone]  # a photo with copies and no near-duplicates centres its copies
        owner[copies] = owner[best]
    return owner


def groups_of(owner: Positions) -> list[Positions]:
    """The groups of two or more photos, each as positions in preference order (its centre first)."""
    members = np.flatnonzero(owner >= 0)
    order = np.lexsort((members, owner[members]))
    members = members[order]
    centres = owner[members]
    starts = np.flatnonzero(np.r_[True, centres[1:] != centres[:-1]]) if members.size else np.empty(0, np.int64)
    return [group for group in np.split(members, starts[1:]) if group.size > 1]
