"""Turn the results of one batch into catalog rows, the same way for every engine.

The local engine hands over decoded pixels and lets the committer run the model; the Ray engine hands
over model outputs computed by its actors. Either way the committer decides, per file, between reusing
a known embedding (dedup by sha256), recording a failure and taking a fresh model output, and commits
the batch in one transaction, so a kill loses at most the batches in flight. Each finished batch
returns its :class:`BatchCounts`; the build adds them up (:class:`indexer.summary.BuildSummary`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from core.catalog import Catalog, FailedFile, FileOutcome, FileState, IndexedFile
from core.decode import DecodeLimits
from core.encoder import Embeddings, EncodedBatch, Encoder, PendingEncoding
from core.patches import PatchGrids
from core.reader import ReadResult, read_one

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutput:
    """What the model made of one photo's content: a unit ``[D]`` embedding and its pooled patch grid."""

    embedding: Embeddings
    patches: PatchGrids | None


@dataclass
class BatchCounts:
    """What committing one batch did. ``results``: the files it had; ``reused_from``: catalog paths whose
    content a new path reused (a move or a copy: only the end of the build can tell which)."""

    results: int = 0
    new: int = 0
    changed: int = 0
    touched: int = 0
    regridded: int = 0
    failed: int = 0
    embedded: int = 0
    model_batches: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    reused_from: list[str] = field(default_factory=list)


class BatchCommitter:
    """Turns read results into catalog rows: reuses known embeddings, runs the model once on the rest.

    ``encoder`` embeds the results that arrive with pixels but without a model output (every decoded
    result of the local engine; under Ray only a content whose catalog row vanished during the build);
    its ``patch_grid`` is the grid of the rows committed (0: none).
    """

    def __init__(
        self,
        catalog: Catalog,
        encoder: Encoder,
        states: dict[str, FileState],
        limits: DecodeLimits,
        regrid: frozenset[str] = frozenset(),
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.patch_grid = encoder.patch_grid
        self.states = states
        self.limits = limits
        self.image_size = encoder.model.image_size
        self.dim = encoder.model.dim
        # Unchanged files read again because their row has no patch grid (counted apart from changed ones).
        self.regrid = regrid
        # Hashes committed by this run: workers only know the hashes the catalog had at the start.
        self.run_hashes: set[str] = set()
        # Hashes of batches submitted but not finished yet.
        self.in_flight: set[str] = set()

    def _count_indexed(self, path: str, counts: BatchCounts) -> None:
        if path in self.regrid:
            counts.regridded += 1
        elif path in self.states:
            counts.changed += 1
        else:
            counts.new += 1

    def _reuse(self, result: ReadResult, counts: BatchCounts) -> IndexedFile | bool:
        """The reused row for known content; True when only the file's mtime changed (recorded here);
        False when the content's row vanished since the build started."""
        if result.sha256 is None:
            raise ValueError(f"{result.item.path}: a reused result must carry its sha256")
        # With patches on, content is reused only with its grid: without one it goes through the model again.
        known = self.catalog.known_content(result.sha256, self.dim, need_grid=bool(self.patch_grid))
        if known is None:
            return False
        item = result.item
        if known.path == item.path:
            # Same bytes under the same path: only the mtime moved (a touch, a copy-back).
            self.catalog.touch(item.path, item.size_bytes, item.mtime_ns)
            counts.touched += 1
            return True
        if item.path in self.regrid:
            counts.regridded += 1  # its own grid was gone: a copy's is carried over
        elif item.path in self.states:
            counts.changed += 1  # new bytes at a known path, but bytes seen before elsewhere
        else:
            counts.reused_from.append(known.path)
        return IndexedFile(
            path=item.path,
            size_bytes=item.size_bytes,
            mtime_ns=item.mtime_ns,
            sha256=result.sha256,
            width=known.width,
            height=known.height,
            embedding=known.embedding,
            patches=known.patches,
            metadata=known.metadata,  # the same bytes say the same things
        )

    def commit(self, results: Sequence[ReadResult], outputs: Mapping[str, ModelOutput] | None = None) -> BatchCounts:
        """Commit one batch in one transaction. ``outputs``: model outputs already computed, by sha256."""
        return self.finish(self.submit(results, outputs))

    def submit(self, results: Sequence[ReadResult], outputs: Mapping[str, ModelOutput] | None = None) -> PendingBatch:
        """Start the model on the batch's new content and return before it is done (with image threads;
        see :meth:`Encoder.submit`). Batches must be finished in the order they were submitted.

        Content seen by this run in a batch not yet finished is not sent again: when this batch is
        finished, the earlier one is committed and the content is reused from the catalog."""
        computed = outputs or {}
        unique: dict[str, ReadResult] = {}
        for result in results:
            if result.error_reason is not None or result.known:
                continue
            if result.sha256 is None or result.width is None or result.height is None:
                raise ValueError(f"{result.item.path}: a decoded result must carry its sha256 and size")
            if result.sha256 in self.run_hashes or result.sha256 in self.in_flight:
                continue
            unique.setdefault(result.sha256, result)
        missing = [result for sha, result in unique.items() if sha not in computed]
        encoding = self._submit_model(missing) if missing else None
        self.in_flight.update(unique)
        return PendingBatch(results, computed, list(unique), missing, encoding)

    def finish(self, pending: PendingBatch) -> BatchCounts:
        """Wait for the batch's model outputs, then write all of its rows in one transaction; returns what
        the batch did."""
        counts = BatchCounts(results=len(pending.results))
        output_of = {sha: pending.computed[sha] for sha in pending.embedded if sha in pending.computed}
        if pending.encoding is not None:
            outputs = self._model_outputs(pending.encoding.result())
            output_of.update(zip((r.sha256 for r in pending.sent), outputs, strict=True))  # type: ignore[misc]
        if pending.embedded:
            counts.embedded += len(pending.embedded)
            counts.model_batches += 1
        outcomes: list[FileOutcome] = []
        to_encode: list[ReadResult] = []
        for result in pending.results:
            if result.error_reason is not None:
                outcomes.append(self._failed(result, counts))
            elif not result.known and result.sha256 in output_of:
                outcomes.append(self._indexed(result, output_of[result.sha256], counts))
            else:
                reused = self._reuse(result, counts)
                if isinstance(reused, IndexedFile):
                    outcomes.append(reused)
                elif reused is False:
                    to_encode.append(read_one(result.item, self.image_size, self.limits, frozenset()))
        if to_encode:
            outcomes.extend(self._embed_reread(to_encode, counts))
        if outcomes:
            self.catalog.commit_outcomes(outcomes)
            self.run_hashes.update(o.sha256 for o in outcomes if isinstance(o, IndexedFile))
        self.in_flight.difference_update(pending.embedded)
        return counts

    def _embed_reread(self, results: list[ReadResult], counts: BatchCounts) -> list[FileOutcome]:
        """Outcomes of results re-read because their content's row vanished: failures, or fresh outputs."""
        outcomes: list[FileOutcome] = [self._failed(r, counts) for r in results if r.error_reason is not None]
        decoded = {r.sha256: r for r in results if r.error_reason is None}
        if decoded:
            sent = list(decoded.values())
            output_of = dict(zip(decoded, self._model_outputs(self._submit_model(sent).result()), strict=True))
            counts.embedded += len(decoded)
            counts.model_batches += 1
            outcomes.extend(self._indexed(r, output_of[r.sha256], counts) for r in results if r.error_reason is None)
        return outcomes

    def _failed(self, result: ReadResult, counts: BatchCounts) -> FailedFile:
        reason = result.error_reason or "unreadable"
        counts.failed += 1
        counts.reasons[reason] += 1
        item = result.item
        return FailedFile(
            item.path, item.size_bytes, item.mtime_ns, result.sha256, reason, result.error_message or reason
        )

    def _indexed(self, result: ReadResult, output: ModelOutput, counts: BatchCounts) -> IndexedFile:
        self._count_indexed(result.item.path, counts)
        return IndexedFile(
            path=result.item.path,
            size_bytes=result.item.size_bytes,
            mtime_ns=result.item.mtime_ns,
            sha256=result.sha256,  # type: ignore[arg-type]
            width=result.width,  # type: ignore[arg-type]
            height=result.height,  # type: ignore[arg-type]
            embedding=output.embedding,
            patches=output.patches,
            metadata=result.metadata,
        )

    def _submit_model(self, results: list[ReadResult]) -> PendingEncoding:
        """Start one forward pass (or one photo per image thread) over results that carry pixels."""
        if any(r.pixels is None for r in results):
            raise ValueError("a decoded result without pixels needs a model output computed elsewhere")
        pixels = [cast(torch.Tensor, r.pixels) for r in results]
        if self.encoder.device.type == "cuda" and all(p.device.type == "cpu" for p in pixels):
            # Stacked straight into page-locked memory: the copy to the GPU is a non-blocking DMA.
            batch = torch.empty((len(pixels), *pixels[0].shape), dtype=pixels[0].dtype, pin_memory=True)
            torch.stack(pixels, out=batch)
            return self.encoder.submit(batch)
        # A list, not a stack: image threads take the photos one by one.
        return self.encoder.submit(pixels)

    def _model_outputs(self, encoded: EncodedBatch) -> list[ModelOutput]:
        grids = encoded.grids
        return [
            ModelOutput(
                embedding=np.asarray(encoded.embeddings[i], dtype=np.float32),
                patches=None if grids is None else grids[i],
            )
            for i in range(len(encoded.embeddings))
        ]


@dataclass
class PendingBatch:
    """A batch submitted to :meth:`BatchCommitter.submit` and not yet finished.

    ``embedded``: the new contents (by sha256) this batch brings, once each; ``sent``: those the model
    is computing (the rest came computed); ``encoding``: the model's pending outputs for ``sent``."""

    results: Sequence[ReadResult]
    computed: Mapping[str, ModelOutput]
    embedded: list[str]
    sent: list[ReadResult]
    encoding: PendingEncoding | None
