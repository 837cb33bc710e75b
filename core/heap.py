"""Keep the memory of freed tensors in the C heap for the next photo instead of returning it to the kernel.

A 512 px forward pass allocates and frees tensors of 1.5-13 MB in every layer. With glibc's defaults
many of them are mapped for one operator and unmapped after it: above the mmap threshold, and in the
per-thread heaps (arenas) that glibc gives each image thread, which it unmaps whenever they empty. So
each layer faults its pages in again, zero-filled by the kernel, and the threads of one process queue on
the address-space lock to do it. On the 2-core development machine (int8, 512 px, 2026-11-27) that was
19,500 page faults and 63 ms of kernel time per photo with image threads (43,600 faults and 117 ms in
whole-batch passes); with the settings below it is almost none (0-256 faults, no kernel time). Peak
memory moves little (1,360 against 1,460 MiB in that 512 px run, one heap fragmenting less than one per
thread; 1,633 against 1,610 MiB for benchmarks/memory.py's 1,000 photos at 64 px): the heap keeps its
high-water mark between photos instead of shrinking and growing again.

The settings: every thread allocates from the main heap (``M_ARENA_MAX`` 1; the model's threads make a
few hundred allocations per photo, far too few to contend), tensors up to 32 MB come from the heap
instead of their own mapping, and the heap is only trimmed beyond 1 GB of free memory at its top.

They are process-wide (``mallopt``), so :func:`keep_freed_memory` is called once, by the encoder, before
its image threads start. Nothing is changed where the C library is not glibc, or where the user tunes
glibc's allocator through ``GLIBC_TUNABLES``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from functools import cache

logger = logging.getLogger(__name__)

# mallopt parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# The largest mmap threshold glibc accepts on 64-bit systems (half its 64 MB per-thread heap): every
# tensor of this model at 512 px is below it, so it is reused from the heap instead of mapped anew.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory at the top of the heap is returned to the kernel only beyond this much.
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


@cache
def keep_freed_memory() -> bool:
    """Tune glibc's allocator to keep freed memory (see the module docstring). True when applied.

    Idempotent, and a no-op (False) on other C libraries or when ``GLIBC_TUNABLES`` already tunes malloc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.debug("not glibc: the allocator keeps its defaults")
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        logger.debug("GLIBC_TUNABLES tunes malloc already: the allocator keeps the user's settings")
        return False
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # One heap for all threads first (it only affects threads that have not allocated yet), then the
    # mmap threshold before the trim threshold: setting the trim threshold switches off glibc's dynamic
    # thresholds, which would otherwise pin the mmap threshold at its 128 KB start.
    applied = all(
        mallopt(parameter, value)
        for parameter, value in (
            (M_ARENA_MAX, 1),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        )
    )
    if applied:
        logger.debug(
            "malloc keeps freed memory: one heap, mmap threshold %d MB, trim threshold %d MB",
            MMAP_THRESHOLD_BYTES >> 20,
            TRIM_THRESHOLD_BYTES >> 20,
        )
    else:
        logger.warning("glibc refused the allocator settings (mallopt); photos may run slower")
    return applied
