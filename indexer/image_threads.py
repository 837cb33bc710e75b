"""Run a CPU model on several photos at once, one photo per thread, each thread on one core.

torch's default on the CPU splits every operator of one forward pass across all cores. For this ViT
on a small machine that loses time: every operator ends in a barrier, the per-image int8 layers stack
their outputs, and when a decode worker takes a core for a moment every model thread waits for the one
that was descheduled. Giving each photo its own thread with a single intra-op thread removes all three:
on the 2-core development machine the int8 model ran 1.26x (512 px) and 1.05x (224 px) faster
forward-only, and the vectors are bit-identical to a whole-batch pass (each photo is computed alone
either way; tested).

torch keeps its intra-op thread count per OS thread (OpenMP's and MKL's settings are thread-local), and
a thread takes the process-wide setting at its first parallel operator. The pool pins each of its
threads to one intra-op thread as it starts, waits until all have, then restores the process-wide
setting so that no other thread inherits the single thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


# Below this many tokens per photo, automatic mode keeps whole batches: a small photo's forward pass is
# mostly per-operator overhead, which image threads pay once per photo instead of once per batch. On the
# development machine (int8, batch 8) image threads ran at 0.69x at 64 px (16 tokens), 1.0x at 128 px
# (64), 1.05x at 224 px (196) and 1.26x at 512 px (1,024).
MIN_TOKENS_FOR_IMAGE_THREADS = 144


def resolve_parallel_images(setting: int, device: torch.device, tokens: int = MIN_TOKENS_FOR_IMAGE_THREADS) -> int:
    """``runtime.parallel_images``: -1 = one photo per intra-op thread torch would use on the CPU (its
    default is the physical core count) for photos of at least :data:`MIN_TOKENS_FOR_IMAGE_THREADS`
    ``tokens``; 0, a GPU or smaller photos in automatic mode = whole batches with all threads."""
    if device.type != "cpu" or setting == 0:
        return 0
    if setting < 0:
        return torch.get_num_threads() if tokens >= MIN_TOKENS_FOR_IMAGE_THREADS else 0
    return setting


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch on one intra-op thread in the calling thread inside the block.

    While image threads keep every core busy, the caller's own small operators (joining outputs,
    pooling patch grids) would otherwise wake an OpenMP team whose threads spin-wait for cores the image
    threads need: 0.7 s of CPU in a 14 s build of 178 photos at 224 px on the development machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _nothing() -> None:
    pass


class ImageThreads:
    """A pool of ``threads`` threads, each running torch with one intra-op thread."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"ImageThreads needs at least one thread, got {threads}")
        self.threads = threads
        # Also initialises this thread's own count before the pool threads lower the shared default.
        previous = torch.get_num_threads()
        started = threading.Barrier(threads + 1)

        def pin_to_one_core() -> None:
            torch.get_num_threads()  # this thread's lazy initialisation happens now, not later
            torch.set_num_threads(1)
            started.wait()

        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="loupe-image", initializer=pin_to_one_core)
        # A ThreadPoolExecutor starts a thread per task submitted while none is idle, up to ``threads``:
        # these empty tasks start them all (each is held in its initializer, so none is idle), and the
        # barrier returns once every one has pinned itself.
        for _ in range(threads):
            self._pool.submit(_nothing)
        started.wait()
        torch.set_num_threads(previous)
        logger.debug("%d image threads, one intra-op thread each (process default stays %d)", threads, previous)

    def submit(self, function: Callable[..., Result], *args: object) -> Future[Result]:
        """Queue ``function(*args)`` behind the work submitted before; its future holds the result."""
        return self._pool.submit(function, *args)

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """``function`` over ``items`` on the pool's threads, results in order; the first error is raised."""
        return list(self._pool.map(function, items))

    def close(self) -> None:
        """Let the threads finish and exit."""
        self._pool.shutdown(wait=True)
