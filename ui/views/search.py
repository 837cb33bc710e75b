"""Query by image: upload a photo or pick an indexed one, see its nearest neighbours."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core.catalog.calibrations import describe_threshold
from search.engine import QueryError, SearchResult
from search.robust import search_image_robust
from ui.components import caption_of, choose_query, compare_view, results_grid
from ui.state import require_engine

KEY = "search"

engine = require_engine()
st.header("Search by image")
near = engine.near_duplicate_threshold()
st.caption(describe_threshold(near.threshold, near.calibration))

with st.sidebar:
    st.subheader("Results")
    k = st.slider("How many", 1, 100, engine.config.search.default_k * 2, key=f"{KEY}-k")
    min_score = st.slider("Minimum score", 0.0, 1.0, 0.0, 0.01, key=f"{KEY}-min-score")
    under = st.text_input("Only under folder", key=f"{KEY}-under", placeholder="/photos/2021")

query = choose_query(engine, KEY)
if query is not None:
    st.image(query.image, caption=f"{query.label} ({query.width} x {query.height})", width=320)
    compare_view(engine, query, KEY)
    started = time.perf_counter()
    try:
        filters = {"min_score": min_score or None, "under": under or None}
        results: list[SearchResult]
        if query.photo is not None:
            results = engine.search_similar(query.photo.id, k, include_self=True, **filters)
        else:
            assert query.data is not None
            # Mirrored, rotated, cropped and captioned copies too (search.robust), as `loupe query` does.
            results = search_image_robust(engine, query.data, k, None, **filters)
    except QueryError as error:
        st.error(str(error))
        st.stop()
    elapsed = time.perf_counter() - started
    st.caption(f"{len(results)} results in {elapsed * 1000:.0f} ms")
    photos = engine.photos([r.id for r in results])

    def more_like(photo_id: int) -> None:
        st.session_state[f"{KEY}-more-like"] = photo_id
        st.rerun()

    items = [(photos[r.id], caption_of(r), None) for r in results if r.id in photos]
    with st.container(key="results-grid"):
        results_grid(engine, items, KEY, on_more_like=more_like)
    if not results:
        st.info("No photo passes the filters." if (min_score or under) else "The collection is empty.")
    st.session_state["last-results"] = [Path(r.path).name for r in results]
