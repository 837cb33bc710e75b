"""The allocator keeps freed tensor memory: a thread that allocates and frees large tensors stops faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from core.heap import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]

# A thread of its own (like an image thread) allocating and freeing tensors of a 512 px forward pass's
# sizes; it prints the page faults of its last 30 rounds (the process's: nothing else runs meanwhile).
WORKLOAD = """
import resource, sys, threading, torch
from core.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(2)  # both cores write each tensor, as in a whole-batch pass
faults = []
def rounds():
    alive = torch.empty(100_000).fill_(1)
    for step in range(40):
        if step == 10:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fc1 = torch.empty(3_000_000).fill_(1)
        qkv = torch.empty(1_500_000).fill_(1)
        del fc1
        tokens = torch.empty(400_000).fill_(1)
        del qkv, tokens
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(faults[0])
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)


def _faults(mode: str) -> int:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@glibc_only
def test_a_thread_reuses_freed_tensor_memory_instead_of_faulting_it_in_again() -> None:
    # 30 rounds of 19.6 MB: with glibc's defaults the largest tensor gets a heap of its own, unmapped when
    # it is freed, and every round faults its 2,930 pages in again (87,900 in all, measured).
    assert _faults("default") > 30 * 1_000
    assert _faults("keep") < 100


def test_a_user_tuned_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    keep_freed_memory.cache_clear()
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()
