"""Reviewing duplicate groups in the UI: one page of groups at a time, and per photo a keep toggle and the
curator's decisions.

The groups of a threshold are computed once per threshold, catalog revision and stored decisions, and
kept in the session (small objects: 100,000 groups fit); a page shows only its own groups, reading the
catalog rows and making the thumbnails of those photos alone (:func:`ui.thumbnails.thumbnails`).

Each photo has a **keep** toggle, prefilled by the keeper rules: on for its group's keeper (always kept),
off for the others, which the action acts on; a photo toggled on is left alone, by the planner itself
(``plan_actions(keep_ids=...)``). The toggles are kept in the session by photo id, so they survive
paging. **Keep this one** and **Not a duplicate** store the same decisions as ``duplicates --keep`` and
``--dismiss`` (:mod:`indexer.duplicate_decisions`), and the groups are computed again with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from indexer.catalog import Catalog, PhotoRecord
from indexer.config import LoupeConfig
from indexer.duplicate_decisions import Decisions, dismiss, keep, load_decisions, unkeep
from indexer.errors import LoupeError
from search.apply_plan import is_under
from search.duplicates import DuplicateGroup, DuplicateMember, find_duplicate_groups
from search.engine import SearchEngine
from search.keeper import KEEPER_RULE_WORDS, PINNED
from ui.components import metadata_caption
from ui.thumbnails import thumbnails

logger = logging.getLogger(__name__)

KEY = "duplicates"
PAGE = f"{KEY}-page"
PER_PAGE = f"{KEY}-per-page"
KEPT = f"{KEY}-kept"  # ids of the photos toggled to keep
NOTICE = f"{KEY}-notice"  # what the last decision stored, shown once
PAGE_SIZES = (5, 10, 20, 50)
DEFAULT_PAGE_SIZE = 20
COLUMNS = 5

GroupsKey = tuple[float, int, Decisions]


def current_groups(engine: SearchEngine, threshold: float) -> tuple[list[DuplicateGroup], GroupsKey]:
    """The groups at ``threshold``, computed again only when the threshold, the catalog (a build, an apply,
    an undo) or the stored decisions changed; and the key they were computed for."""
    decisions = load_decisions(engine.catalog)
    key: GroupsKey = (threshold, engine.catalog.revision(), decisions)
    if st.session_state.get(f"{KEY}-key") != key:
        with st.spinner("Grouping..."):
            st.session_state[f"{KEY}-groups"] = find_duplicate_groups(engine, threshold, decisions=decisions)
            st.session_state[f"{KEY}-key"] = key
    groups: list[DuplicateGroup] = st.session_state[f"{KEY}-groups"]
    return groups, key


def kept_ids() -> frozenset[int]:
    """The photos the curator toggled to keep (catalog ids)."""
    kept: set[int] = st.session_state.setdefault(KEPT, set())
    return frozenset(kept)


def page_count(total: int, per_page: int) -> int:
    """Pages of ``per_page`` groups for ``total`` groups (at least one, empty or not)."""
    return max(1, -(-total // per_page))


def pager(total: int, *, bottom: bool = False) -> range:
    """The page chooser (groups per page, page number, previous and next) and the positions of the groups
    on the chosen page. ``bottom``: only previous and next, below the page (they share its state)."""
    per_page = int(st.session_state.get(PER_PAGE, DEFAULT_PAGE_SIZE))
    pages = page_count(total, per_page)
    if st.session_state.get(PAGE, 1) > pages:  # fewer groups than before (a higher threshold, an apply)
        st.session_state[PAGE] = pages
    where = "bottom" if bottom else "top"
    columns = st.columns([1, 2, 1, 2] if not bottom else [1, 1, 4], vertical_alignment="bottom")
    with columns[0]:
        st.button("Previous", key=f"{KEY}-previous-{where}", on_click=_turn, args=(-1, pages), width="stretch")
    if bottom:
        with columns[1]:
            st.button("Next", key=f"{KEY}-next-{where}", on_click=_turn, args=(1, pages), width="stretch")
    else:
        with columns[1]:
            st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key=PAGE)
        with columns[2]:
            st.button("Next", key=f"{KEY}-next-{where}", on_click=_turn, args=(1, pages), width="stretch")
        with columns[3]:
            st.selectbox("Groups per page", PAGE_SIZES, index=PAGE_SIZES.index(DEFAULT_PAGE_SIZE), key=PER_PAGE)
    page = int(st.session_state.get(PAGE, 1))
    start = (page - 1) * per_page
    return range(start, min(total, start + per_page))


def _turn(step: int, pages: int) -> None:
    st.session_state[PAGE] = min(pages, max(1, int(st.session_state.get(PAGE, 1)) + step))


def review_page(engine: SearchEngine, groups: Sequence[DuplicateGroup], positions: range) -> None:
    """The groups at ``positions``, each with its photos' thumbnails, facts, toggles and decision buttons."""
    shown = [groups[position] for position in positions]
    records = engine.catalog.photos(member.id for group in shown for member in group.members)
    images = thumbnails(engine.config.data_dir, records.values(), engine.photo_limits)
    references = tuple(Path(folder) for folder in engine.config.search.reference_folders)
    if positions:
        st.caption(f"Groups {positions.start + 1:,}-{positions.stop:,} of {len(groups):,}")
    with st.container(key=f"{KEY}-groups"):
        for position, group in zip(positions, shown, strict=True):
            _group_card(engine.config, position + 1, group, records, images, references)


@st.fragment
def _group_card(
    config: LoupeConfig,
    number: int,
    group: DuplicateGroup,
    records: Mapping[int, PhotoRecord],
    images: Mapping[int, Path | None],
    references: tuple[Path, ...],
) -> None:
    # A fragment: a keep toggle reruns only its group, not the page and its other thumbnails.
    why = KEEPER_RULE_WORDS.get(group.keeper_rule, group.keeper_rule)
    with st.container(border=True, key=f"{KEY}-group-{number}"):
        st.markdown(
            f"**Group {number:,}** · {len(group.members)} photos · keeper **{Path(group.original.path).name}** ({why})"
        )
        for start in range(0, len(group.members), COLUMNS):
            for column, member in zip(st.columns(COLUMNS), group.members[start : start + COLUMNS], strict=False):
                with column:
                    _member(config, group, member, records, images.get(member.id), references)


def _member(
    config: LoupeConfig,
    group: DuplicateGroup,
    member: DuplicateMember,
    records: Mapping[int, PhotoRecord],
    image: Path | None,
    references: tuple[Path, ...],
) -> None:
    photo = records.get(member.id)
    if image is not None:
        st.image(str(image), width="stretch")
    else:
        st.warning("file unreadable", icon=":material/broken_image:")
    if member.original:
        kind = "★ keeper"
    elif member.exact:
        kind = "exact copy"
    else:
        kind = f"similarity {member.score:.3f}"
    details = metadata_caption(photo) if photo is not None else ""
    st.caption(
        f"{kind}  \n**{Path(member.path).name}**  \n{member.width} x {member.height} · "
        f"{member.size_bytes / 1e6:.2f} MB · {member.path}" + (f"  \n{details}" if details else "")
    )
    toggle = f"{KEY}-keep-{member.id}"
    reference = next((folder for folder in references if is_under(member.path, folder)), None)
    if member.original or reference is not None:
        why = "the keeper of its group" if member.original else f"in the reference folder {reference}"
        # Its own key: a toggle's state follows its key, and this photo's own toggle may be off.
        st.toggle("Keep", value=True, disabled=True, key=f"{KEY}-always-{member.id}", help=f"Always kept: {why}.")
    else:
        st.toggle(
            "Keep",
            value=member.id in st.session_state.setdefault(KEPT, set()),
            key=toggle,
            on_change=_toggled,
            args=(member.id, toggle),
            help="Off: the action acts on this photo. On: it is left alone.",
        )
    keeper = records.get(group.original.id)
    if member.original:
        if group.keeper_rule == PINNED and st.button("Unpin", key=f"{KEY}-unpin-{member.id}", width="stretch"):
            _decide(config, "unpin", photo, keeper)
        return
    if st.button(
        "Keep this one",
        key=f"{KEY}-pin-{member.id}",
        width="stretch",
        help="Make this photo its group's keeper, now and in later groupings (duplicates --keep).",
    ):
        _decide(config, "pin", photo, keeper)
    if st.button(
        "Not a duplicate",
        key=f"{KEY}-dismiss-{member.id}",
        width="stretch",
        disabled=member.exact,
        help="Exact copies are always duplicates."
        if member.exact
        else "Never group this photo with the keeper again (duplicates --dismiss).",
    ):
        _decide(config, "dismiss", photo, keeper)


def _toggled(photo_id: int, toggle: str) -> None:
    kept: set[int] = st.session_state.setdefault(KEPT, set())
    if st.session_state.get(toggle):
        kept.add(photo_id)
    else:
        kept.discard(photo_id)


def _decide(config: LoupeConfig, what: str, photo: PhotoRecord | None, keeper: PhotoRecord | None) -> None:
    """Store a decision about ``photo`` (and its group's ``keeper``), then regroup the whole page."""
    if photo is None or keeper is None:
        st.error("This photo or its keeper is no longer in the catalog (a build ran since?): reload the page.")
        return
    try:
        with writable_catalog(config) as catalog:
            if what == "pin":
                keep(catalog, photo)
                notice = f"{Path(photo.path).name} is now the keeper of its group (pinned)."
            elif what == "unpin":
                unkeep(catalog, photo)
                notice = f"{Path(photo.path).name} is no longer pinned: the keeper rules choose again."
            else:
                dismiss(catalog, [photo, keeper])
                notice = f"{Path(photo.path).name} and {Path(keeper.path).name}: not duplicates, never grouped again."
    except LoupeError as error:
        st.error(str(error))
        return
    st.session_state[NOTICE] = notice
    st.rerun()  # the whole page: the groups change


@contextmanager
def writable_catalog(config: LoupeConfig) -> Iterator[Catalog]:
    """The collection's catalog for one decision, as ``duplicates --keep/--dismiss`` open it: as readers do
    (an out-of-date schema is refused), writing only the decisions table, so it works while a build runs."""
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        yield catalog
    finally:
        catalog.close()


def show_notice() -> None:
    """What the last decision stored, once."""
    notice = st.session_state.pop(NOTICE, None)
    if notice:
        st.success(notice, icon=":material/check:")
