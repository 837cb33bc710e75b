"""Region search: pick a query image, drag a box on it, find every photo that contains that region."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st
from PIL import Image

from core.catalog import PhotoRecord
from search.engine import QueryError
from search.region import search_region
from ui.components import choose_query, compare_view, results_grid
from ui.region_box import box_editor
from ui.state import require_engine
from ui.thumbnails import draw_box, overlay_heatmap, thumbnail

KEY = "region"

engine = require_engine()
st.header("Find a region")
if not engine.patch_grid:
    st.warning("This index was built with --no-patches: rebuild it without that flag for region search.")
    st.stop()

with st.sidebar:
    st.subheader("Results")
    k = st.slider("How many", 1, 100, engine.config.search.default_k * 2, key=f"{KEY}-k")
    show_heatmaps = st.toggle("Show similarity heatmaps", key=f"{KEY}-heatmaps")

query = choose_query(engine, KEY)
if query is not None:
    st.caption("Drag a box on the image to set the region; the sliders fine-tune it.")
    box = box_editor(query.image, query.width, query.height, KEY, query.label)
    compare_view(engine, query, KEY)
    started = time.perf_counter()
    try:
        image = Path(query.photo.path) if query.photo is not None else query.data
        assert image is not None
        found = search_region(engine, image, box, k)
    except QueryError as error:
        st.error(str(error))
        st.stop()
    elapsed_ms = (time.perf_counter() - started) * 1000
    st.caption(f"{len(found.matches)} photos in {elapsed_ms:.0f} ms (region snapped to {found.query_box})")
    photos = engine.photos([m.id for m in found.matches])
    items: list[tuple[PhotoRecord, str, Image.Image | None]] = []
    for match in found.matches:
        photo = photos.get(match.id)
        if photo is None:
            continue
        cached = thumbnail(engine.config.data_dir, photo, engine.photo_limits)
        if cached is None:
            items.append((photo, f"#{match.rank} · score {match.score:.2f} · similarity {match.similarity:.3f}", None))
            continue
        with Image.open(cached) as opened:
            shown = opened.convert("RGB")
        if show_heatmaps:
            shown = overlay_heatmap(shown, match.heatmap)
        shown = draw_box(shown, match.box, (photo.width, photo.height))
        caption = (
            f"#{match.rank} · score {match.score:.2f} · similarity {match.similarity:.3f}  \n"
            f"**{Path(photo.path).name}**  \nbox {','.join(map(str, match.box))}"
        )
        items.append((photo, caption, shown))

    def more_like(photo_id: int) -> None:
        st.session_state[f"{KEY}-more-like"] = photo_id
        st.rerun()

    with st.container(key="region-grid"):
        results_grid(engine, items, KEY, on_more_like=more_like)
