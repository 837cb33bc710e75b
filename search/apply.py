"""Carry out a plan (:mod:`search.apply_plan`): each action journaled before it starts and confirmed after,
its file and catalog changed in the same step, under the collection's writer lock.

Per action, in this order: the catalog row must still be the planned file, the file's bytes and its
keeper's must still be those indexed (sha256, read again now), the catalog row is kept for undo when the
action changes or removes it, a ``begin`` record is fsync'ed, the file is changed
(:func:`search.action_steps.do_file`), the catalog follows (:func:`search.action_steps.catalog_forward`)
and a ``done`` record is fsync'ed. A file that cannot be acted on (no room, no permission, locked) is a
``failed`` record with the reason, its files as they were, and the apply goes on with the next one. At
the end the FAISS files are synced with the catalog, as a build does, so ``indexer verify`` passes.

A kill leaves a journal with a ``begin`` and no outcome, listed as unfinished: the next apply (before
planning anything) finishes those actions whose file change had happened and drops the others, which it
then plans again like any duplicate; ``search undo JOURNAL`` reverses them instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from core.catalog import STATUS_INDEXED, Catalog
from core.catalog.moves import row_facts, save_row
from core.config import LoupeConfig
from core.durable import fsync_dir
from core.errors import CatalogError, LoupeError
from core.index.source import patch_vectors_of
from core.index.sync import sync_index
from core.lock import exclusive_writer
from search.action_steps import SAVES_ROW, ActionError, catalog_forward, do_file, settle
from search.apply_plan import Plan, PlanItem
from search.file_actions import os_message, sha256_of
from search.journal import (
    ActionRecord,
    JournalEntry,
    JournalWriter,
    default_journal_path,
    holding_dir,
    mark_finished,
    mark_unfinished,
    new_journal_id,
    read_journal,
    unfinished_journals,
)

logger = logging.getLogger(__name__)

OutcomeStatus = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class ActionOutcome:
    """What became of one planned action."""

    path: str
    status: OutcomeStatus
    message: str = ""
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyReport:
    """What an apply did; ``recovered``: interrupted actions of earlier applies it finished or dropped.
    ``journal`` is None when there was nothing to act on (no journal is written then)."""

    action: str
    journal: Path | None  # None: there was nothing to act on, and no journal was written
    outcomes: tuple[ActionOutcome, ...]
    recovered: tuple[ActionOutcome, ...] = field(default=())

    def count(self, status: OutcomeStatus) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "journal": None if self.journal is None else str(self.journal),
            **outcomes_by_status(self.outcomes),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
            "recovered": [outcome.to_dict() for outcome in self.recovered],
        }


def apply_plan(
    plan: Plan, config: LoupeConfig, journal_path: Path | None = None, *, show_progress: bool = False
) -> ApplyReport:
    """Carry out ``plan`` on the collection of ``config``, journaling to ``journal_path`` (default: a new
    file under ``<data dir>/journals``). Raises :class:`~core.lock.BuildLockedError` while a build runs,
    :class:`~search.journal.JournalError` when the journal cannot be created."""
    data_dir = config.data_dir
    with exclusive_writer(data_dir, f"search duplicates --apply {plan.action}", config.resolved_db_url):
        catalog = Catalog.open(config.resolved_db_url, create=False)
        try:
            provenance = catalog.provenance()
            if provenance is None:
                raise CatalogError(f"no index in {data_dir}: nothing to act on")
            recovered = complete_unfinished(catalog, data_dir, provenance.catalog_id)
            if not plan.to_act:
                if recovered:
                    sync_indexes(catalog, config)
                return ApplyReport(str(plan.action), None, (), tuple(recovered))
            path = (journal_path or default_journal_path(data_dir)).absolute()
            journal_id = new_journal_id(path)
            holding = holding_dir(data_dir, journal_id).resolve()
            header = {
                "id": journal_id,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "action": str(plan.action),
                "threshold": plan.threshold,
                "reference": [str(folder) for folder in plan.reference_dirs],
                "data_dir": str(data_dir.resolve()),
                "catalog_id": provenance.catalog_id,
                "holding_dir": str(holding),
            }
            try:
                with JournalWriter.create(path, header) as journal:
                    mark_unfinished(data_dir, journal_id, path)
                    runner = _Runner(catalog, journal, journal_id, holding, plan.action.kind)
                    items = tqdm(plan.to_act, desc="acting", unit="file", disable=not show_progress)
                    outcomes = tuple(runner.act(item, seq) for seq, item in enumerate(items, start=1))
                    journal.append({"record": "end", **outcomes_by_status(outcomes)})
            except BaseException:
                sync_after_error(catalog, config)
                raise
            mark_finished(data_dir, journal_id)
            sync_indexes(catalog, config)
        finally:
            catalog.close()
    return ApplyReport(str(plan.action), path, outcomes, tuple(recovered))


def sync_indexes(catalog: Catalog, config: LoupeConfig) -> None:
    """Bring the global and patch FAISS files up to the catalog, as the end of a build does."""
    sync_index(catalog, config.data_dir, config.index)
    patches = patch_vectors_of(catalog)
    if patches is not None:
        sync_index(catalog, config.data_dir, config.patches.index, patches)


def sync_after_error(catalog: Catalog, config: LoupeConfig) -> None:
    """Sync the FAISS files with what was committed before an error stopped the work (so ``verify`` keeps
    passing); a failure here is logged, never allowed to hide the error that stopped the work."""
    try:
        sync_indexes(catalog, config)
    except Exception as error:  # the error in flight is the one to report
        logger.warning("could not sync the index files after the error (run `indexer reindex`): %s", error)


def complete_unfinished(catalog: Catalog, data_dir: Path, catalog_id: str) -> list[ActionOutcome]:
    """Finish the interrupted actions of earlier applies on this catalog: the catalog half of those whose
    file change happened (``done``), nothing for the others (``abandoned``, planned again later)."""
    outcomes: list[ActionOutcome] = []
    for path in unfinished_journals(data_dir):
        try:
            contents = read_journal(path)
            if contents.header.get("catalog_id") != catalog_id:
                logger.warning("%s is the journal of another catalog; leaving it alone", path)
                continue
            if contents.undo_started and not contents.undo_ended:
                logger.warning("an undo of %s was interrupted: run `search undo %s` again to finish it", path, path)
                continue
            with JournalWriter.reopen(path) as journal:
                outcomes.extend(_complete(catalog, journal, entry) for entry in contents.interrupted)
                if not contents.ended:
                    journal.append({"record": "end", "recovered": True})
        except (LoupeError, OSError) as error:
            # One journal that cannot be finished must not stop every later apply: it stays listed.
            logger.warning("cannot finish the interrupted apply of %s: %s", path, error)
            continue
        mark_finished(data_dir, contents.journal_id)
        logger.info("finished the interrupted apply of %s", path)
    return outcomes


def _complete(catalog: Catalog, journal: JournalWriter, entry: JournalEntry) -> ActionOutcome:
    action = entry.action
    try:
        side = settle(action)
    except (OSError, ActionError) as error:
        message = f"interrupted, and its files are not as Loupe left them: {_describe(error)}"
        journal.append({"record": "failed", "seq": action.seq, "message": message})
        return ActionOutcome(action.path, "failed", message)
    if side.state == "original":
        message = "interrupted before the file changed: nothing was done"
        journal.append({"record": "abandoned", "seq": action.seq, "message": message})
        return ActionOutcome(action.path, "skipped", message)
    catalog_forward(catalog, action)
    trash = {} if side.trash is None else {"trash_file": side.trash.file, "trash_info": side.trash.info}
    journal.append({"record": "done", "seq": action.seq, "recovered": True, **trash})
    return ActionOutcome(action.path, "done", "completed after an interruption", action.target)


class _Runner:
    """Acts on planned items one by one, journaling each."""

    def __init__(self, catalog: Catalog, journal: JournalWriter, journal_id: str, holding: Path, kind: str) -> None:
        self.catalog = catalog
        self.kind = kind
        self.journal = journal
        self.journal_id = journal_id
        self.holding = holding
        self._keepers: dict[int, str] = {}  # keeper id -> "" when intact, else why not

    def act(self, item: PlanItem, seq: int) -> ActionOutcome:
        try:
            action = self._checked(item, seq)
        except _Skip as skip:
            self.journal.append({"record": "skipped", "path": item.path, "reason": skip.reason, "error": skip.error})
            return ActionOutcome(item.path, "failed" if skip.error else "skipped", skip.reason, item.target)
        if action.saved_row is not None:
            _write_durably(Path(action.saved_row), save_row(self.catalog, item.image_id).to_json())
        self.journal.begin(action)
        try:
            trash = do_file(action)
        except (OSError, LoupeError) as error:
            message = f"{_verb(action)}: {_describe(error)}"
            try:
                side = settle(action)
            except (OSError, ActionError) as settle_error:
                message += f"; then: {_describe(settle_error)}"
                self.journal.append({"record": "failed", "seq": seq, "message": message})
                return ActionOutcome(item.path, "failed", message, item.target)
            if side.state == "original":
                self.journal.append({"record": "failed", "seq": seq, "message": message})
                return ActionOutcome(item.path, "failed", message, item.target)
            trash = side.trash  # the change happened; what failed came after it (a folder's fsync, say)
        catalog_forward(self.catalog, action)
        where = {} if trash is None else {"trash_file": trash.file, "trash_info": trash.info}
        self.journal.append({"record": "done", "seq": seq, **where})
        return ActionOutcome(item.path, "done", "", item.target)

    def _checked(self, item: PlanItem, seq: int) -> ActionRecord:
        """The journal record of ``item``'s action, once its file and keeper are still as indexed."""
        facts = row_facts(self.catalog, item.image_id)
        if facts is None or facts.path != item.path or facts.status != STATUS_INDEXED or facts.sha256 is None:
            raise _Skip("no longer in the catalog as planned (a build ran since?): plan again")
        sha256 = self._file_sha256(Path(item.path))
        if sha256 != facts.sha256:
            raise _Skip("its bytes changed since it was indexed (sha256 differs): run build, then plan again")
        keeper_sha256 = self._keeper(item)
        kind = self.kind
        if kind == "hardlink" and not _same_device(item.path, item.keeper):
            raise _Skip(f"on another file system than its keeper {item.keeper}: a hard link cannot cross them")
        if kind == "move" and item.target is None:
            raise _Skip("the plan has no destination for it")
        name = Path(item.path).name
        return ActionRecord(
            seq=seq,
            kind=kind,
            path=item.path,
            sha256=sha256,
            image_id=item.image_id,
            keeper=item.keeper,
            keeper_id=item.keeper_id,
            keeper_sha256=keeper_sha256,
            group=item.group,
            score=item.score,
            keeper_rule=item.keeper_rule,
            target=item.target,
            holding=str(self.holding / str(seq) / name) if kind in ("hardlink", "symlink") else None,
            saved_row=str(self.holding / f"{seq}.row.json") if kind in SAVES_ROW else None,
            temporary=f".loupe-{self.journal_id}-{seq}.tmp",
        )

    def _file_sha256(self, path: Path) -> str:
        if path.is_symlink() or not path.is_file():
            raise _Skip("the file is gone (or is a link now)")
        try:
            return sha256_of(path)
        except OSError as error:
            raise _Skip(f"cannot read it: {os_message(error)}", error=True) from error

    def _keeper(self, item: PlanItem) -> str:
        """The keeper's sha256, once it is checked to be the file indexed; :class:`_Skip` otherwise."""
        facts = row_facts(self.catalog, item.keeper_id)
        if facts is None or facts.path != item.keeper or facts.sha256 is None:
            raise _Skip(f"its keeper {item.keeper} is no longer in the catalog as planned: plan again")
        if item.keeper_id not in self._keepers:
            try:
                intact = Path(item.keeper).is_file() and sha256_of(Path(item.keeper)) == facts.sha256
            except OSError:
                intact = False
            changed = f"its keeper {item.keeper} is gone or changed since it was indexed"
            self._keepers[item.keeper_id] = "" if intact else changed
        if self._keepers[item.keeper_id]:
            raise _Skip(self._keepers[item.keeper_id])
        return facts.sha256


class _Skip(Exception):
    """An item left alone at the time to act (not an error of the apply)."""

    def __init__(self, reason: str, *, error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def _same_device(first: str, second: str) -> bool:
    try:
        return os.stat(first).st_dev == os.stat(second).st_dev
    except OSError as error:
        raise _Skip(f"cannot read it: {os_message(error)}", error=True) from error


def _verb(action: ActionRecord) -> str:
    return {
        "move": f"cannot move {action.path} to {action.target}",
        "trash": f"cannot move {action.path} to the trash",
        "hardlink": f"cannot replace {action.path} by a hard link to {action.keeper}",
        "symlink": f"cannot replace {action.path} by a symbolic link to {action.keeper}",
    }[action.kind]


def _describe(error: BaseException) -> str:
    return os_message(error) if isinstance(error, OSError) else str(error)


def _write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)


def outcomes_by_status(outcomes: Iterable[ActionOutcome]) -> dict[str, int]:
    """How many outcomes have each status."""
    counts: dict[str, int] = {"done": 0, "skipped": 0, "failed": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return counts
