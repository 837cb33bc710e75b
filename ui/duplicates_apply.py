"""Acting on the reviewed duplicates in the UI: the action, its dry-run plan, the confirmation, the
outcome and its undo.

The code is the CLI's (``duplicates --apply``, ``undo``): :func:`search.apply_plan.plan_actions` makes the
plan (fed the keep toggles as ``keep_ids``), :func:`search.apply.apply_plan` carries it out, journaled,
and :func:`search.undo.undo_journal` reverses it; :mod:`search.apply_report` words the outcomes. Nothing
changes until the plan shown is confirmed, and a plan made for other groups, toggles or another action
than those on the page now is dropped rather than carried out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from core.config import LoupeConfig
from core.errors import LoupeError
from search.apply import ApplyReport, apply_plan
from search.apply_plan import ActionKind, ActionSpec, ActionSpecError, Plan, parse_action, plan_actions
from search.apply_report import apply_lines, undo_lines, unfinished_lines
from search.duplicates import DuplicateGroup
from search.journal import JOURNALS_DIR, unfinished_journals
from search.undo import UndoReport, undo_journal

KEY = "duplicates-apply"
PLAN = f"{KEY}-plan"
REPORT = f"{KEY}-report"
UNDONE = f"{KEY}-undone"
ACTIONS: dict[ActionKind, str] = {
    "move": "Move them into a folder",
    "trash": "Send them to the trash",
    "hardlink": "Replace each by a hard link to its keeper",
    "symlink": "Replace each by a symbolic link to its keeper",
}
VERBS: dict[ActionKind, str] = {"move": "move", "trash": "trash", "hardlink": "hard-link", "symlink": "symlink"}
PLAN_ROWS_SHOWN = 1_000
EARLIER_JOURNALS_SHOWN = 50


@dataclass(frozen=True)
class PendingPlan:
    """A plan shown for confirmation, and what it was made from (groups, toggles, action)."""

    made_from: tuple[Any, ...]
    plan: Plan


def apply_panel(
    config: LoupeConfig, groups: Sequence[DuplicateGroup], threshold: float, groups_key: Any, kept: frozenset[int]
) -> None:
    """Choose an action, see its plan (a dry run), confirm it; then its outcome and the undo button."""
    with st.container(border=True, key=KEY):
        st.subheader("Act on the duplicates")
        _outcome(config)
        for line in unfinished_lines(unfinished_journals(config.data_dir)):
            st.warning(line, icon=":material/warning:")
        kind: ActionKind = st.selectbox(
            "What to do with every photo that is not kept",
            list(ACTIONS),
            format_func=ACTIONS.__getitem__,
            key=f"{KEY}-kind",
        )
        folder = ""
        if kind == "move":
            folder = st.text_input(
                "Folder to move them into (its full path on this computer)", key=f"{KEY}-folder"
            ).strip()
        references = config.search.reference_folders
        made_from = (groups_key, kind, folder, kept, references)
        st.caption(f"Keepers, photos toggled to keep ({len(kept)} now) and photos in reference folders are left alone.")
        if st.button("Review the plan", key=f"{KEY}-review", icon=":material/checklist:"):
            try:
                plan = plan_actions(groups, _action(kind, folder), threshold, references, keep_ids=kept)
            except ActionSpecError as error:
                st.error(str(error))
            else:
                st.session_state[PLAN] = PendingPlan(made_from, plan)
        pending: PendingPlan | None = st.session_state.get(PLAN)
        if pending is not None and pending.made_from != made_from:
            del st.session_state[PLAN]
            pending = None
            st.info("The groups, the keep toggles or the action changed since that plan: review the plan again.")
        if pending is not None:
            _confirm(config, pending.plan)


def _action(kind: ActionKind, folder: str) -> ActionSpec:
    if kind != "move":
        return parse_action(kind)
    if not folder:
        raise ActionSpecError("Type the folder to move the photos into.")
    if not Path(folder).expanduser().is_absolute():
        # Relative to what? The server's working folder means nothing to someone in a browser.
        raise ActionSpecError(f"{folder!r} is not a full path: type the folder's whole path, from / (or ~).")
    return parse_action(f"move:{folder}")


def _confirm(config: LoupeConfig, plan: Plan) -> None:
    """The plan, as a table, and the button that carries it out."""
    to_act, left_alone = len(plan.to_act), len(plan.left_alone)
    groups = len({item.group for item in plan.items})
    st.markdown(
        f"**Plan** (a dry run: nothing has changed yet): `{plan.action}` on {groups:,} groups "
        f"({len(plan.items):,} photos): **{to_act:,} to act on**, {left_alone:,} left alone, "
        f"{len(plan.items) - to_act - left_alone:,} keepers kept"
    )
    items = plan.items[:PLAN_ROWS_SHOWN]
    st.dataframe(
        {
            "group": [item.group for item in items],
            "do": [VERBS[plan.action.kind] if item.decision == "act" else item.decision for item in items],
            "photo": [item.path for item in items],
            "score": [
                "" if item.decision == "keep" else "exact" if item.exact else f"{item.score:.4f}" for item in items
            ],
            "to / why": [item.target or item.reason for item in items],
        },
        hide_index=True,
        width="stretch",
        key=f"{KEY}-table",
    )
    if len(plan.items) > len(items):
        st.caption(f"The first {len(items):,} of {len(plan.items):,} rows; the JSON has them all.")
    st.download_button(
        "Download the plan as JSON",
        data=lambda: json.dumps({"dry_run": True, **plan.to_dict()}, indent=2),
        file_name="duplicates-plan.json",
        mime="application/json",
        key=f"{KEY}-plan-json",
    )
    if not to_act:
        st.info("Nothing to act on.")
        return
    kind = plan.action.kind
    if st.button(
        f"Confirm: {VERBS[kind]} {to_act:,} photos", type="primary", key=f"{KEY}-confirm", icon=":material/done_all:"
    ):
        with st.spinner(f"Acting on {to_act:,} photos..."):
            try:
                report = apply_plan(plan, config)
            except (LoupeError, OSError) as error:  # a build running (the writer lock), no room for a journal
                st.error(f"Nothing was done: {error}")
                return
        st.session_state.pop(PLAN, None)
        st.session_state.pop(UNDONE, None)
        st.session_state[REPORT] = report
        st.rerun()  # the groups change with the catalog


def _outcome(config: LoupeConfig) -> None:
    """The last apply's outcome, its undo button, and once undone the undo's outcome; or the undo of an
    earlier apply (from its journal) when this session has none."""
    report: ApplyReport | None = st.session_state.get(REPORT)
    undone: UndoReport | None = st.session_state.get(UNDONE)
    if report is not None:
        failed = report.count("failed")
        headline = (
            f"{report.action}: {report.count('done'):,} done, {report.count('skipped'):,} skipped, {failed:,} failed"
        )
        (st.warning if failed else st.success)(headline, icon=":material/task_alt:")
        st.code("\n".join(apply_lines(report, "the Undo button below")[1:]) or headline, language=None)
        if report.journal is not None and report.count("done") and (undone is None or not undone.complete):
            _undo_button(config, report.journal, f"{KEY}-undo", "Undo")
    if undone is not None:
        lines = undo_lines(undone)
        (st.success if undone.complete else st.warning)(lines[0], icon=":material/undo:")
        if len(lines) > 1:
            st.code("\n".join(lines[1:]), language=None)
    if report is not None or undone is not None:
        if st.button("Close", key=f"{KEY}-close"):
            st.session_state.pop(REPORT, None)
            st.session_state.pop(UNDONE, None)
            st.rerun()
        return
    journals = earlier_journals(config.data_dir)
    if journals:
        with st.expander("Undo an earlier apply"):
            chosen = st.selectbox("Journal", journals, format_func=lambda path: path.name, key=f"{KEY}-journal")
            _undo_button(config, chosen, f"{KEY}-undo-earlier", "Undo this apply")


def _undo_button(config: LoupeConfig, journal: Path, key: str, label: str) -> None:
    if st.button(label, key=key, icon=":material/undo:"):
        with st.spinner("Undoing..."):
            try:
                undone = undo_journal(journal, config)
            except (LoupeError, OSError) as error:
                st.error(f"Nothing was undone: {error}")
                return
        st.session_state[UNDONE] = undone
        st.rerun()


def earlier_journals(data_dir: Path) -> list[Path]:
    """The journals of the collection's applies, newest first (their names carry the time)."""
    folder = data_dir / JOURNALS_DIR
    try:
        found = [folder / name for name in os.listdir(folder) if name.endswith(".jsonl")]
    except OSError:
        return []
    return sorted(found, key=lambda path: path.name, reverse=True)[:EARLIER_JOURNALS_SHOWN]
