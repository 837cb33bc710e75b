"""What acting on duplicate groups would do, file by file, before anything is done: the plan.

:func:`plan_actions` turns groups (:func:`search.duplicates.find_duplicate_groups`), an action, the
threshold and the reference folders into one :class:`PlanItem` per photo: the keeper (kept), each
non-keeper to act on with its destination, and each one left alone with the reason. It reads the file
system only to keep move destinations clear of existing files and to see what an earlier run already did;
it changes nothing. The dry run prints it; :func:`search.apply.apply_plan` carries it out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.errors import LoupeError

if TYPE_CHECKING:  # only types: parsing an --apply value must not import FAISS
    from search.duplicates import DuplicateGroup, DuplicateMember

ActionKind = Literal["move", "trash", "hardlink", "symlink"]
Decision = Literal["keep", "act", "skip"]
KINDS: tuple[ActionKind, ...] = ("move", "trash", "hardlink", "symlink")
ACTION_SYNTAX = "move:DIR, trash, hardlink or symlink"
KEPT_BY_CURATOR = "marked to keep in the review"


class ActionSpecError(LoupeError):
    """An ``--apply`` value that names no action Loupe knows."""


@dataclass(frozen=True)
class ActionSpec:
    """An action on duplicates; ``target_dir`` is the folder of a move (absolute)."""

    kind: ActionKind
    target_dir: Path | None = None

    def __str__(self) -> str:
        return f"move:{self.target_dir}" if self.kind == "move" else self.kind


def parse_action(text: str) -> ActionSpec:
    """``move:DIR`` (DIR made absolute), ``trash``, ``hardlink`` or ``symlink``."""
    kind, _, argument = text.partition(":")
    if kind == "move":
        if not argument:
            raise ActionSpecError(f"move needs a folder: move:DIR, got {text!r}")
        return ActionSpec("move", Path(os.path.abspath(Path(argument).expanduser())))
    for known in KINDS:
        if text == known and known != "move":
            return ActionSpec(known)
    raise ActionSpecError(f"expected {ACTION_SYNTAX}, got {text!r}")


@dataclass(frozen=True)
class PlanItem:
    """One photo of a group and what the plan does with it. ``target``: a move's destination, or the
    keeper a link will point to; ``reason``: why a file is kept or left alone."""

    group: int
    image_id: int
    path: str
    keeper_id: int
    keeper: str
    score: float
    exact: bool
    keeper_rule: str
    decision: Decision
    reason: str = ""
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """Every photo of every group, group by group, the keeper first."""

    action: ActionSpec
    threshold: float
    reference_dirs: tuple[Path, ...]
    items: tuple[PlanItem, ...]

    @property
    def to_act(self) -> list[PlanItem]:
        return [item for item in self.items if item.decision == "act"]

    @property
    def left_alone(self) -> list[PlanItem]:
        return [item for item in self.items if item.decision == "skip"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "threshold": self.threshold,
            "reference": [str(folder) for folder in self.reference_dirs],
            "to_act": len(self.to_act),
            "left_alone": len(self.left_alone),
            "items": [item.to_dict() for item in self.items],
        }


def is_under(path: str, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` or below it (both absolute)."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    return path == str(folder) or path.startswith(prefix)


def plan_actions(
    groups: Sequence[DuplicateGroup],
    action: ActionSpec,
    threshold: float,
    reference_dirs: Iterable[Path] = (),
    *,
    keep_ids: Collection[int] = frozenset(),
    exists: Callable[[str], bool] = os.path.lexists,
) -> Plan:
    """The plan of ``action`` on ``groups``: act on each non-keeper scoring at least ``threshold``
    against its keeper (or with the keeper's very bytes), never on a file in a reference folder nor on one
    the curator chose to keep (``keep_ids``: catalog ids, the UI's keep toggles); a move goes to
    ``DIR/NAME``, or, when that name is taken, ``DIR/`` plus the file's path below the folder that holds
    every photo of the groups, never onto an existing file. ``exists`` is how names are checked."""
    references = tuple(Path(os.path.abspath(folder)) for folder in reference_dirs)
    kept = frozenset(int(i) for i in keep_ids)
    items: list[PlanItem] = []
    for number, group in enumerate(groups, start=1):
        keeper = group.original
        for member in group.members:
            decision, reason = _decide(member, keeper.path, action, threshold, references, kept)
            items.append(
                PlanItem(
                    group=number,
                    image_id=member.id,
                    path=member.path,
                    keeper_id=keeper.id,
                    keeper=keeper.path,
                    score=member.score,
                    exact=member.exact,
                    keeper_rule=group.keeper_rule,
                    decision=decision,
                    reason=reason,
                    target=keeper.path if decision == "act" and action.kind != "trash" else None,
                )
            )
    if action.kind == "move" and action.target_dir is not None:
        items = _with_move_targets(items, action.target_dir, exists)
    return Plan(action=action, threshold=threshold, reference_dirs=references, items=tuple(items))


def _decide(
    member: DuplicateMember,
    keeper: str,
    action: ActionSpec,
    threshold: float,
    references: tuple[Path, ...],
    kept: frozenset[int],
) -> tuple[Decision, str]:
    """Keep the keeper; act on another member unless a reason says to leave it alone."""
    if member.original:
        return "keep", "keeper"
    if member.id in kept:
        return "skip", KEPT_BY_CURATOR
    folder = next((folder for folder in references if is_under(member.path, folder)), None)
    if folder is not None:
        return "skip", f"in the reference folder {folder}"
    if not member.exact and not member.score >= threshold:
        return "skip", f"scores {member.score:.4f} against its keeper, below the threshold {threshold}"
    if action.kind == "move" and action.target_dir is not None and is_under(member.path, action.target_dir):
        return "skip", "already in the move folder"
    if action.kind == "hardlink" and _same_file(member.path, keeper):
        return "skip", "already a hard link of its keeper"
    if action.kind == "symlink" and os.path.islink(member.path):
        return "skip", "already a symbolic link"
    return "act", ""


def _with_move_targets(items: list[PlanItem], folder: Path, exists: Callable[[str], bool]) -> list[PlanItem]:
    """``items`` with each move's destination: ``folder/NAME``; on a clash ``folder/`` plus the file's path
    below the folder common to every photo of the plan (the collection's top folder, as far as the plan
    shows it); then ``NAME (2).EXT``, ``(3)``... until the name is free."""
    moving = [item for item in items if item.decision == "act"]
    if not moving:
        return items
    try:
        common = Path(os.path.commonpath([os.path.dirname(item.path) for item in items]))
    except ValueError:  # different drives (Windows): keep each file's whole path below its drive
        common = None
    claimed: set[str] = set()
    targets: dict[int, str] = {}
    for item in moving:
        source = Path(item.path)
        below = source.relative_to(common) if common is not None else Path(*source.parts[1:])
        for candidate in _candidates(folder, source.name, below):
            if str(candidate) not in claimed and not exists(str(candidate)):
                break
        claimed.add(str(candidate))
        targets[item.image_id] = str(candidate)
    return [
        PlanItem(**{**asdict(item), "target": targets[item.image_id]}) if item.image_id in targets else item
        for item in items
    ]


def _candidates(folder: Path, name: str, below: Path) -> Iterable[Path]:
    yield folder / name
    nested = folder / below
    yield nested
    stem, suffix = os.path.splitext(nested.name)
    number = 2
    while True:
        yield nested.with_name(f"{stem} ({number}){suffix}")
        number += 1


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
