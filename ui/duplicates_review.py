"""Reviewing duplicate groups in the UI: one page of groups at a time, and per photo a keep toggle and the
curator's decisions.

The groups of a threshold are computed once per threshold, catalog revision and stored decisions, and
kept in the session (small objects: 100,000 groups take about 100 MB); a page shows only its own groups,
reading the catalog rows and making the thumbnails and contact sheets of those photos alone
(:func:`ui.thumbnails.thumbnails`, :mod:`ui.contact_sheets`).

Each group shows its photos numbered, the keeper first: a contact sheet, a table of what tells them apart,
and a **keep** toggle per photo, prefilled by the keeper rules: the keeper (and any photo in a reference
folder) is always kept, the others are off, so the action acts on them; a photo toggled on is left alone,
by the planner itself (``plan_actions(keep_ids=...)``). The toggles are kept in the session by photo id,
so they survive paging. **Keep this one** and **Not a duplicate** store the same decisions as
``duplicates --keep`` and ``--dismiss`` (:mod:`core.catalog.decisions`), and the groups are computed
again with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from core.catalog import Catalog, PhotoRecord
from core.catalog.decisions import Decisions, dismiss, keep, unkeep
from core.config import LoupeConfig
from core.errors import LoupeError
from search.apply_plan import is_under
from search.duplicates import DuplicateGroup, DuplicateMember, find_duplicate_groups
from search.engine import SearchEngine
from search.keeper import KEEPER_RULE_WORDS, PINNED
from ui.components import metadata_caption
from ui.contact_sheets import MOST_TILES, TILE, contact_sheet
from ui.thumbnails import THUMBNAIL_THREADS, thumbnails

logger = logging.getLogger(__name__)

KEY = "duplicates"
PAGE = f"{KEY}-page"
PER_PAGE = f"{KEY}-per-page"
KEPT = f"{KEY}-kept"  # ids of the photos toggled to keep
NOTICE = f"{KEY}-notice"  # what the last decision stored, shown once
PAGE_SIZES = (5, 10, 20, 50)
# What Markdown (and Streamlit's ``:emoji:`` and ``$math$``) would read in a file name or folder.
MARKDOWN_SPECIAL = frozenset("\\`*_[]<>|~$:")
DEFAULT_PAGE_SIZE = 20

GroupsKey = tuple[float, int, Decisions]


def current_groups(engine: SearchEngine, threshold: float) -> tuple[list[DuplicateGroup], GroupsKey]:
    """The groups at ``threshold``, computed again only when the threshold, the catalog (a build, an apply,
    an undo) or the stored decisions changed; and the key they were computed for."""
    decisions = engine.decisions()
    key: GroupsKey = (threshold, engine.revision(), decisions)
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
    """The groups at ``positions``, each with its contact sheet, its photos' facts, keep toggles and
    decision buttons. Only these groups' photos are read: their catalog rows, thumbnails and sheets."""
    shown = [groups[position] for position in positions]
    data_dir = engine.config.data_dir
    records = engine.photos(member.id for group in shown for member in group.members)
    # Thumbnails made at the tile size, then one sheet per group, in threads (decoding releases the GIL).
    images = thumbnails(data_dir, records.values(), engine.photo_limits, side=TILE)
    with ThreadPoolExecutor(max_workers=THUMBNAIL_THREADS, thread_name_prefix="contact-sheet") as pool:
        sheets = list(pool.map(lambda group: contact_sheet(data_dir, [images.get(m.id) for m in group.members]), shown))
    references = tuple(Path(folder) for folder in engine.config.search.reference_folders)
    if positions:
        st.caption(f"Groups {positions.start + 1:,}-{positions.stop:,} of {len(groups):,}")
    with st.container(key=f"{KEY}-groups"):
        for position, group, sheet in zip(positions, shown, sheets, strict=True):
            _group_card(engine.config, position + 1, group, sheet, records, images, references)


@st.fragment
def _group_card(
    config: LoupeConfig,
    number: int,
    group: DuplicateGroup,
    sheet: Path,
    records: Mapping[int, PhotoRecord],
    images: Mapping[int, Path | None],
    references: tuple[Path, ...],
) -> None:
    # A fragment: a keep toggle reruns only its group, not the whole page. One sheet, one table, one
    # widget for the toggles and the decisions in a popover per group, not a set per photo: a page of 20
    # groups of 10 is then about a hundred elements for the browser to draw, not a couple of thousand.
    why = KEEPER_RULE_WORDS.get(group.keeper_rule, group.keeper_rule)
    members = group.members
    with st.container(border=True, key=f"{KEY}-group-{number}"):
        st.markdown(
            f"**Group {number:,}** · {len(members)} photos · keeper **{_plain(Path(group.original.path).name)}** "
            f"({why})"
        )
        st.image(str(sheet), width="content")
        if len(members) > MOST_TILES:
            st.caption(f"The sheet shows the first {MOST_TILES} photos; the table lists all {len(members)}.")
        st.markdown(_details_table(members, records, images))
        others = {
            m.id: f"#{position} {Path(m.path).name}" for position, m in enumerate(members, start=1) if position > 1
        }
        actable = [i for i, m in zip(others, members[1:], strict=True) if not _in_any(m.path, references)]
        if actable:
            _keep_toggles(number, actable, others)
        else:
            st.caption("Every photo of this group is kept: the others are in reference folders.")
        with st.popover("Decisions", icon=":material/rule:"):
            _decisions(config, number, group, records, others)


def _keep_toggles(number: int, actable: list[int], names: Mapping[int, str]) -> None:
    """One toggle per photo the action would act on, prefilled by the keeper rules: off (act on it)."""
    kept: set[int] = st.session_state.setdefault(KEPT, set())
    toggles = f"{KEY}-keep-{number}"
    # The session's set of kept photos is the one truth: group N may hold other photos after a regroup.
    st.session_state[toggles] = [i for i in actable if i in kept]
    st.pills(
        "Keep also (every photo not kept is acted on; the keeper and photos in reference folders always are kept)",
        actable,
        selection_mode="multi",
        format_func=names.__getitem__,
        key=toggles,
        on_change=_toggled,
        args=(tuple(actable), toggles),
    )


def _decisions(
    config: LoupeConfig, number: int, group: DuplicateGroup, records: Mapping[int, PhotoRecord], names: dict[int, str]
) -> None:
    """ "Keep this one" and "Not a duplicate" for a chosen photo, "Unpin" for a pinned keeper: stored."""
    keeper = records.get(group.original.id)
    if group.keeper_rule == PINNED and st.button(
        f"Unpin the keeper {Path(group.original.path).name}", key=f"{KEY}-unpin-{number}", width="stretch"
    ):
        _decide(config, "unpin", keeper, keeper)
    chosen: int = st.selectbox("Photo", list(names), format_func=names.__getitem__, key=f"{KEY}-photo-{number}")
    member = next(m for m in group.members if m.id == chosen)
    if st.button(
        "Keep this one",
        key=f"{KEY}-pin-{number}",
        width="stretch",
        help="Make this photo its group's keeper, now and in later groupings (duplicates --keep)",
    ):
        _decide(config, "pin", records.get(chosen), keeper)
    if st.button(
        "Not a duplicate",
        key=f"{KEY}-dismiss-{number}",
        width="stretch",
        disabled=member.exact,
        help="Exact copies are always duplicates"
        if member.exact
        else "Never group this photo with the keeper again (duplicates --dismiss)",
    ):
        _decide(config, "dismiss", records.get(chosen), keeper)


def _in_any(path: str, folders: Sequence[Path]) -> bool:
    return any(is_under(path, folder) for folder in folders)


def _kind(member: DuplicateMember) -> str:
    if member.original:
        return "★ keeper"
    return "exact copy" if member.exact else f"similarity {member.score:.3f}"


def _details_table(
    members: Sequence[DuplicateMember], records: Mapping[int, PhotoRecord], images: Mapping[int, Path | None]
) -> str:
    """The group's photos as a Markdown table, in the gallery's order: what tells copies apart."""
    lines = ["| # | photo | match | pixels | size | header | folder |", "|---|---|---|---|---|---|---|"]
    for position, member in enumerate(members, start=1):
        photo = records.get(member.id)
        header = metadata_caption(photo) if photo is not None else ""
        if images.get(member.id) is None:
            header = "file unreadable" + (f" · {header}" if header else "")
        path = Path(member.path)
        lines.append(
            f"| {position} | {_plain(path.name)} | {_kind(member)} | {member.width} x {member.height} | "
            f"{_size(member.size_bytes)} | {_plain(header)} | {_plain(str(path.parent))} |"
        )
    return "\n".join(lines)


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.0f} kB"


def _plain(text: str) -> str:
    """``text`` shown as it is in Markdown (a file name may hold ``*``, ``_``, ``|``...)."""
    return "".join(f"\\{char}" if char in MARKDOWN_SPECIAL else char for char in text)


def _toggled(choices: tuple[int, ...], toggles: str) -> None:
    kept: set[int] = st.session_state.setdefault(KEPT, set())
    chosen = set(st.session_state.get(toggles) or ())
    kept.difference_update(choices)
    kept.update(chosen)


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
