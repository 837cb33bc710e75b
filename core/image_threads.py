"""Run a CPU model on several photos at once, one photo per thread, each thread on one core.

On the CPU this is the only way the encoder runs the network: every photo gets a forward pass of its
own (batch dimension 1) on a thread with a single intra-op thread. That makes a photo's vector a
function of its own pixels by construction: no batch-mate, batch size, core count or engine changes the
shapes or the thread split any kernel sees. Whole-batch passes did not guarantee it: on CPUs with
AVX512-BF16/AMX, oneDNN's kernels picked by the batch's row count gave a resumed build other bytes than
an uninterrupted one (30 of 30 photos differed at 128 px between batch 1 and batch 16), and reductions
split across threads round differently with the thread count.

It is also fast. torch's default on the CPU splits every operator of one forward pass across all
cores; for this ViT on a small machine that loses time: every operator ends in a barrier, and when a
decode worker takes a core for a moment every model thread waits for the one that was descheduled. On
the 2-core development machine one photo per thread ran 1.26x (512 px) and 1.05x (224 px) faster
forward-only than whole batches (and 0.69x at 64 px, where per-operator overhead dominates).

torch keeps its intra-op thread count per OS thread (OpenMP's and MKL's settings are thread-local), and
a thread takes the process-wide setting at its first parallel operator. The pool pins each of its
threads to one intra-op thread as it starts, waits until all have, then restores the process-wide
setting so that no other thread inherits the single thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def resolve_parallel_images(setting: int, device: torch.device) -> int:
    """``runtime.parallel_images``: photos the CPU model runs at once, each on its own image thread.

    -1 = one per intra-op thread torch would use (its default is the physical core count); 0 is read as
    1 (it used to mean whole-batch passes, which made vectors depend on batch-mates); a GPU or MPS
    device runs whole batches and gets 0.
    """
    if device.type != "cpu":
        return 0
    if setting < 0:
        return max(1, torch.get_num_threads())
    return max(1, setting)


def idle_threads(threads: int, cores: int | None = None, load: float | None = None) -> int:
    """How many of ``threads`` intra-op threads one query photo should use now: as many as the cores that
    other work leaves idle (1-minute load average), at least one.

    torch's OpenMP threads wait for each other after every operator; when the cores are busy (a build on
    the same machine, say) a descheduled thread stalls the rest: on the 2-core development machine at a
    load of 5.5 a 512 px query took 2.1 s on two threads against 0.68 s on one, while on the quiet
    machine two threads took 0.30 s against 0.60 s.
    """
    if cores is None:
        cores = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): trust the thread count
            return max(1, threads)
    return max(1, min(threads, cores - round(load)))


@contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run torch on ``threads`` intra-op threads in the calling thread inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch on one intra-op thread in the calling thread inside the block.

    While image threads keep every core busy, the caller's own small operators (joining outputs,
    pooling patch grids) would otherwise wake an OpenMP team whose threads spin-wait for cores the image
    threads need: 0.7 s of CPU in a 14 s build of 178 photos at 224 px on the development machine.
    """
    with intra_op_threads(1):
        yield


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
