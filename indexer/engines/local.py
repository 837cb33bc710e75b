"""The local engine: DataLoader workers read and decode, the build's own encoder embeds.

The model computes one batch while the previous one is committed: a kill loses at most these two
batches, and the next run embeds them again. On a CUDA device large JPEGs may be decoded on the GPU
(:mod:`core.device_decode`): the workers then hand over their compressed bytes.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from core.decode import DecodeLimits
from core.device_decode import GPU_JPEG_MIN_PIXELS
from core.image_threads import one_intra_op_thread
from core.reader import PhotoDataset, ReadBatch, WorkItem, finish_on_device, make_loader, resolve_workers
from core.vector_makers import describe_device

if TYPE_CHECKING:
    from indexer.committer import BatchCommitter, PendingBatch
    from indexer.engines.base import OnBatch


class LocalEngine:
    """Decode workers in this machine, the model in this process (see :class:`indexer.engines.base.BuildEngine`).

    ``workers``: the ``runtime.workers`` setting (-1: automatic); ``device_jpegs``: decode large JPEGs on
    ``device`` (a CUDA GPU) instead of in the workers.
    """

    runs_model_here = True

    def __init__(
        self,
        device: torch.device,
        image_size: int,
        limits: DecodeLimits,
        batch_size: int,
        workers: int,
        *,
        device_jpegs: bool = False,
    ) -> None:
        self.device = device
        self.image_size = image_size
        self.limits = limits
        self.batch_size = batch_size
        self.workers = workers
        self.device_jpegs = device_jpegs
        self.maker_device = describe_device(device)
        self._batches: Iterator[ReadBatch] = iter(())

    def start(self, todo: Sequence[WorkItem], known_hashes: frozenset[str]) -> None:
        dataset = PhotoDataset(
            todo, self.image_size, self.limits, known_hashes, GPU_JPEG_MIN_PIXELS if self.device_jpegs else None
        )
        # Not stacked here: the committer hands the photos to image threads one by one, or stacks them
        # straight into pinned memory for a GPU.
        loader = make_loader(dataset, self.batch_size, resolve_workers(self.workers, self.device), stack_pixels=False)
        # Started before the network is prepared, so the workers decode the first batches while the
        # encoder quantises the network and starts its image threads (0.2 s of a 13 s build of 178
        # photos at 224 px on the development machine was the model waiting for its first batch).
        self._batches = iter(loader)

    def stop(self) -> None:
        self._batches = iter(())  # the last reference to the loader's iterator: its workers stop

    def run(self, committer: BatchCommitter, on_batch: OnBatch) -> None:
        in_flight: deque[PendingBatch] = deque()
        threads = committer.encoder.parallel_images
        with one_intra_op_thread() if threads else contextlib.nullcontext():
            for batch in self._batches:
                if self.device_jpegs:
                    batch = finish_on_device(batch, self.image_size, self.limits, self.device, stack_pixels=False)
                in_flight.append(committer.submit(batch.results))
                if len(in_flight) > 1:
                    on_batch(committer.finish(in_flight.popleft()))
            while in_flight:
                on_batch(committer.finish(in_flight.popleft()))
        self.stop()
