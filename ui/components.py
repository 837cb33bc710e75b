"""Widgets the pages share: choosing a query image, the results grid, the side-by-side view."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from core.catalog import PhotoRecord
from core.decode import decode_image, supported_extensions
from core.errors import DecodeError
from search.engine import SearchEngine, SearchResult
from ui.thumbnails import full_image, thumbnail

GRID_COLUMNS = 5


@dataclass(frozen=True)
class QueryChoice:
    """The query the user picked: uploaded bytes, or an indexed photo."""

    label: str
    image: Image.Image
    width: int
    height: int
    data: bytes | None = None
    photo: PhotoRecord | None = None


def choose_query(engine: SearchEngine, key: str) -> QueryChoice | None:
    """Upload a photo (bounded in bytes and pixels, kept in memory only) or pick an indexed one."""
    if f"{key}-more-like" in st.session_state:  # set by "more like this" on the previous run
        st.session_state[f"{key}-source"] = "Pick an indexed photo"
        st.session_state[f"{key}-name"] = ""
    source = st.radio("Query", ["Upload a photo", "Pick an indexed photo"], horizontal=True, key=f"{key}-source")
    if source == "Upload a photo":
        max_mb = max(1, engine.config.search.max_query_bytes // (1 << 20))
        upload = st.file_uploader(
            f"Photo (up to {max_mb} MB)",
            type=sorted(ext.lstrip(".") for ext in supported_extensions()),
            max_upload_size=max_mb,
            key=f"{key}-upload",
        )
        if upload is None:
            return None
        data = upload.getvalue()
        if len(data) > engine.config.search.max_query_bytes:
            st.error(f"{upload.name} is {len(data) / (1 << 20):.1f} MB; the limit is {max_mb} MB.")
            return None
        try:
            decoded = decode_image(data, engine.query_limits, min_side=1024)
        except DecodeError as error:
            st.error(f"Cannot use {upload.name}: {error}")
            return None
        return QueryChoice(upload.name, decoded.image, decoded.width, decoded.height, data=data)

    photo = pick_indexed_photo(engine, key)
    if photo is None:
        return None
    image = full_image(photo, engine.photo_limits, longest_side=1024)
    if image is None:
        st.error(f"{photo.path} can no longer be read.")
        return None
    return QueryChoice(Path(photo.path).name, image, photo.width, photo.height, photo=photo)


def pick_indexed_photo(engine: SearchEngine, key: str) -> PhotoRecord | None:
    """Find an indexed photo by file name, or start from a random sample."""
    state_key = f"{key}-picked"
    if f"{key}-more-like" in st.session_state:  # "more like this" on a result picks it here
        st.session_state[state_key] = st.session_state.pop(f"{key}-more-like")
    name = st.text_input("File name contains", key=f"{key}-name", placeholder="e.g. IMG_2041 or harbour")
    if name:
        options = engine.find_photos(name, limit=50)
    else:
        if st.button("Random sample", key=f"{key}-shuffle") or f"{key}-sample" not in st.session_state:
            indexed = engine.photo_ids()
            st.session_state[f"{key}-sample"] = random.sample(indexed, min(20, len(indexed)))
        options = list(engine.photos(st.session_state[f"{key}-sample"]).values())
    picked_id = st.session_state.get(state_key)
    if not name and picked_id is not None and picked_id not in {photo.id for photo in options}:
        options = [*engine.photos([picked_id]).values(), *options]
    if not options:
        st.info("No indexed photo matches that name.")
        return None
    ids = [photo.id for photo in options]
    by_id = {photo.id: photo for photo in options}
    index = ids.index(picked_id) if picked_id in ids else 0
    chosen_id = st.selectbox(
        "Photo", ids, index=index, format_func=lambda i: Path(by_id[i].path).name, key=f"{key}-select-{picked_id}"
    )
    st.session_state[state_key] = chosen_id
    return by_id[chosen_id]


def results_grid(
    engine: SearchEngine,
    items: Sequence[tuple[PhotoRecord, str, Image.Image | None]],
    key: str,
    on_more_like: Callable[[int], None] | None = None,
) -> None:
    """Thumbnails in rows of five, each with its caption, "more like this" and "compare" buttons.

    ``items`` are ``(photo, caption, image)``: ``image`` replaces the cached thumbnail (to draw a box).
    """
    data_dir = engine.config.data_dir
    for start in range(0, len(items), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, (photo, caption, image) in zip(columns, items[start : start + GRID_COLUMNS], strict=False):
            with column:
                shown: Image.Image | Path | None = (
                    image if image is not None else thumbnail(data_dir, photo, engine.photo_limits)
                )
                if shown is None:
                    st.warning(f"{Path(photo.path).name}: file unreadable")
                else:
                    st.image(shown if isinstance(shown, Image.Image) else str(shown), width="stretch")
                st.caption(caption)
                if on_more_like is not None and st.button(
                    "More like this", key=f"{key}-more-{photo.id}", icon=":material/image_search:", width="stretch"
                ):
                    on_more_like(photo.id)
                if st.button("Compare", key=f"{key}-compare-{photo.id}", icon=":material/compare:", width="stretch"):
                    st.session_state[f"{key}-compare"] = photo.id
                    st.rerun()  # the side-by-side view sits above the grid


# How a match that is not the plain global one was made, in words (search.robust).
MATCH_WORDS = {"flipped": "mirrored copy", "rotated": "rotated copy", "local": "contains the query"}


def metadata_caption(photo: PhotoRecord | SearchResult) -> str:
    """What the photo's header says, in one line (format · capture date · camera), or "" when nothing."""
    taken = None if photo.capture_time is None else f"taken {photo.capture_time:%Y-%m-%d %H:%M}"
    camera = " ".join(part for part in (photo.camera_make, photo.camera_model) if part) or None
    return " · ".join(part for part in (photo.file_format, taken, camera) if part)


def caption_of(result: SearchResult) -> str:
    path = Path(result.path)
    how = MATCH_WORDS.get(result.match)
    if how is not None and result.box is not None:
        how += " at {},{}-{},{}".format(*result.box)
    details = metadata_caption(result)
    return (
        f"#{result.rank} · {result.score:.3f} · {result.label}"
        + (f" · {how}" if how else "")
        + f"  \n**{path.name}**  \n{path.parent}"
        + (f"  \n{details}" if details else "")
    )


def compare_view(engine: SearchEngine, query: QueryChoice, key: str) -> None:
    """Query and a chosen result side by side, at full size, with their metadata."""
    chosen = st.session_state.get(f"{key}-compare")
    if chosen is None:
        return
    photos = engine.photos([chosen])
    if chosen not in photos:
        st.session_state.pop(f"{key}-compare", None)
        return
    photo = photos[chosen]
    with st.container(border=True):
        st.subheader("Side by side")
        left, right = st.columns(2)
        with left:
            st.image(query.image, caption=f"query: {query.label}", width="stretch")
            st.caption(f"{query.width} x {query.height} px")
        with right:
            image = full_image(photo, engine.photo_limits)
            if image is None:
                st.warning("This photo can no longer be read.")
            else:
                st.image(image, caption=Path(photo.path).name, width="stretch")
            details = metadata_caption(photo)
            st.caption(
                f"{photo.width} x {photo.height} px · {photo.size_bytes / 1e6:.2f} MB · id {photo.id}  \n{photo.path}"
                + (f"  \n{details}" if details else "")
            )
        if st.button("Close", key=f"{key}-close-compare"):
            st.session_state.pop(f"{key}-compare", None)
            st.rerun()
