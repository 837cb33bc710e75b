"""Duplicates review: groups of near-identical photos, the suggested original first (with the keeper rule
that chose it), as CSV too."""

from __future__ import annotations

import io
from pathlib import Path

import streamlit as st

from indexer.calibration_store import describe_threshold
from indexer.duplicate_decisions import load_decisions
from search.cli import write_duplicates_csv
from search.duplicates import DuplicateGroup, find_duplicate_groups
from search.keeper import KEEPER_RULE_WORDS
from ui.components import metadata_caption
from ui.state import require_engine
from ui.thumbnails import thumbnail

KEY = "duplicates"
GROUPS_SHOWN = 50

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
decisions = load_decisions(engine.catalog)  # a --keep or --dismiss since the last run regroups
cache_key = (threshold, engine.catalog.revision(), decisions)
if st.session_state.get(f"{KEY}-key") != cache_key:
    with st.spinner("Grouping..."):
        st.session_state[f"{KEY}-groups"] = find_duplicate_groups(engine, threshold, decisions=decisions)
        st.session_state[f"{KEY}-key"] = cache_key
groups: list[DuplicateGroup] = st.session_state[f"{KEY}-groups"]

photos = sum(len(group.members) for group in groups)
st.write(
    f"**{len(groups)} groups** ({photos} photos): every photo in a group scores ≥ {threshold:.3f} "
    "against its original (★), or is an exact copy of it"
)
buffer = io.StringIO()
write_duplicates_csv(groups, buffer)
st.download_button("Download the groups as CSV", buffer.getvalue(), file_name="duplicates.csv", mime="text/csv")

member_ids = [m.id for group in groups[:GROUPS_SHOWN] for m in group.members]
records = engine.catalog.photos(member_ids)
for number, group in enumerate(groups[:GROUPS_SHOWN], start=1):
    why = KEEPER_RULE_WORDS.get(group.keeper_rule, group.keeper_rule)
    with st.expander(
        f"Group {number}: {len(group.members)} photos — {Path(group.original.path).name} ({why})", expanded=number <= 3
    ):
        columns = st.columns(min(5, len(group.members)))
        for position, member in enumerate(group.members):
            with columns[position % len(columns)]:
                photo = records.get(member.id)
                cached = thumbnail(engine.config.data_dir, photo, engine.photo_limits) if photo is not None else None
                if cached is not None:
                    st.image(str(cached), width="stretch")
                if member.original:
                    kind = "★ suggested original"
                elif member.exact:
                    kind = "exact copy"
                else:
                    kind = f"similarity {member.score:.3f}"
                details = metadata_caption(photo) if photo is not None else ""
                st.caption(
                    f"{kind}  \n**{Path(member.path).name}**  \n{member.width} x {member.height} · {member.path}"
                    + (f"  \n{details}" if details else "")
                )
if len(groups) > GROUPS_SHOWN:
    st.caption(f"Showing the {GROUPS_SHOWN} largest groups; the CSV has all {len(groups)}.")
