"""Plans, apply reports and undo reports as lines for people (the CLI prints them; ``--json`` prints their
``to_dict()`` instead)."""

from __future__ import annotations

from pathlib import Path

from search.apply import ApplyReport
from search.apply_plan import Plan
from search.undo import UndoReport

DRY_RUN_LINE = "dry run: nothing changed; add --yes to act"
PROBLEMS = ("refused", "failed")


def plan_lines(plan: Plan) -> list[str]:
    """Every photo of every group: the keeper and the rule that chose it, then each other photo with its
    score against the keeper and what the plan does with it (its destination, or why it is left alone)."""
    groups = len({item.group for item in plan.items})
    lines = [
        f"plan: {plan.action} on {groups} groups ({len(plan.items)} photos) at threshold {plan.threshold}: "
        f"{len(plan.to_act)} to act on, {len(plan.left_alone)} left alone"
    ]
    if plan.reference_dirs:
        lines.append("reference folders (never acted on): " + ", ".join(str(f) for f in plan.reference_dirs))
    verb = plan.action.kind
    for item in plan.items:
        if item.decision == "keep":
            lines.append(f"group {item.group}: keeper chosen by rule {item.keeper_rule!r}")
            lines.append(f"  {'keep':<8}  {'keeper':>8}  {item.path}")
            continue
        score = "exact" if item.exact else f"{item.score:.4f}"
        if item.decision == "act":
            where = f"  -> {item.target}" if item.target is not None else ""
            lines.append(f"  {verb:<8}  {score:>8}  {item.path}{where}")
        else:
            lines.append(f"  {'leave':<8}  {score:>8}  {item.path}  ({item.reason})")
    return lines


def apply_lines(report: ApplyReport, undo_command: str) -> list[str]:
    """The apply's counts, each file skipped or failed and why, the journal and the command that undoes it."""
    lines: list[str] = []
    recovered_done = sum(1 for o in report.recovered if o.status == "done")
    if report.recovered:
        lines.append(
            f"interrupted apply: finished {recovered_done} action(s) whose file had changed; "
            f"{len(report.recovered) - recovered_done} had not started or could not be finished"
        )
        lines.extend(f"  {o.status:<8}  {o.path}: {o.message}" for o in report.recovered if o.status == "failed")
    lines.append(
        f"{report.action}: {report.count('done')} done, {report.count('skipped')} skipped, "
        f"{report.count('failed')} failed"
    )
    lines.extend(f"  {o.status:<8}  {o.path}: {o.message}" for o in report.outcomes if o.status != "done")
    if report.journal is None:
        lines.append("nothing to act on: no journal written")
    else:
        lines.append(f"journal: {report.journal}")
        if report.count("done"):
            lines.append(f"to undo: {undo_command}")
    return lines


def undo_lines(report: UndoReport) -> list[str]:
    """The undo's counts and each action refused or failed, and why."""
    lines = [
        f"undo {report.journal}: {report.count('undone')} undone, {report.count('nothing')} with nothing to undo, "
        f"{report.count('refused')} refused, {report.count('failed')} failed"
    ]
    lines.extend(f"  {o.status:<8}  {o.path}: {o.message}" for o in report.outcomes if o.status in PROBLEMS)
    if not report.complete:
        lines.append("the files above were left as they are; run undo again once they are sorted out")
    return lines


def unfinished_lines(journals: list[Path]) -> list[str]:
    """A note on applies that were interrupted: the next --yes finishes them, undo reverses them."""
    return [
        f"note: the apply journaled in {journal} was interrupted; --yes finishes it first "
        f"(or `search undo {journal}` reverses it)"
        for journal in journals
    ]
