"""Duplicates: groups of near-identical photos at a threshold (the calibrated one by default), a page at a
time, the keeper first with the rule that chose it; keep toggles and decisions per photo
(:mod:`ui.duplicates_review`); acting on the rest, with a dry-run plan, a confirmation and an undo
(:mod:`ui.duplicates_apply`); every group as CSV."""

from __future__ import annotations

import io

import streamlit as st

from core.catalog.calibrations import describe_threshold
from search.duplicates import DuplicateGroup
from search.duplicates_csv import write_duplicates_csv
from ui.duplicates_apply import apply_panel
from ui.duplicates_review import KEY, current_groups, kept_ids, pager, review_page, show_notice
from ui.state import require_engine


def groups_csv(groups: list[DuplicateGroup]) -> str:
    buffer = io.StringIO()
    write_duplicates_csv(groups, buffer)
    return buffer.getvalue()


engine = require_engine()
st.header("Near-duplicates")
default = engine.near_duplicate_threshold()
st.caption(describe_threshold(default.threshold, default.calibration))
threshold = st.slider(
    "Similarity threshold",
    min(0.80, float(default.threshold)),
    1.0,
    float(default.threshold),
    0.001,  # a calibrated threshold has three decimals (0.9988 would show as 1.00 in steps of 0.005)
    format="%.3f",
    key=f"{KEY}-threshold",
)
show_notice()
groups, groups_key = current_groups(engine, threshold)
photos = sum(len(group.members) for group in groups)
st.write(
    f"**{len(groups):,} groups** ({photos:,} photos): every photo in a group scores ≥ {threshold:.3f} "
    "against its keeper (★), or is an exact copy of it"
)
# Made when clicked (Streamlit calls ``data`` then), not on every rerun: 100,000 groups make a large CSV.
st.download_button(
    "Download the groups as CSV",
    data=lambda: groups_csv(groups),
    file_name="duplicates.csv",
    mime="text/csv",
    key=f"{KEY}-csv",
)
apply_panel(engine.config, groups, threshold, groups_key, kept_ids())
if groups:
    review_page(engine, groups, pager(len(groups)))
    pager(len(groups), bottom=True)
