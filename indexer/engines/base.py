"""The interface every build engine offers to the wiring (:mod:`indexer.pipeline`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.reader import WorkItem
    from indexer.committer import BatchCommitter, BatchCounts

# Called with what each committed batch did, in commit order.
OnBatch = Callable[["BatchCounts"], object]


class BuildEngine(Protocol):
    """Reads, decodes and embeds the files a build planned, committing batch by batch.

    The wiring calls :meth:`start` before it prepares the encoder (so reading overlaps the preparation),
    then :meth:`run` once, or :meth:`stop` when the build fails in between. Whatever the engine, every
    batch goes through the committer, so the rows and the counts do not depend on it.
    """

    # What ran the model, as the catalog's vector makers record it (core.vector_makers).
    maker_device: str
    # Whether the model runs in the build's process (the build's encoder), so that compiling it can pay off.
    runs_model_here: bool

    def start(self, todo: Sequence[WorkItem], known_hashes: frozenset[str]) -> None:
        """Start reading ``todo``; content in ``known_hashes`` is hashed but not decoded."""
        ...

    def run(self, committer: BatchCommitter, on_batch: OnBatch) -> None:
        """Embed what :meth:`start` read and commit it through ``committer``, calling ``on_batch`` with
        each batch's counts."""
        ...

    def stop(self) -> None:
        """Release what :meth:`start` started (decode workers) without running."""
        ...
