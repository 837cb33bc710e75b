"""Crash campaign: SIGKILL builds and reindexes in every phase, fill the disk, and check nothing is lost,
duplicated or computed twice, and that the end state equals an uninterrupted build's.

Builds run in subprocesses through ``tests/crash_harness.py``, which logs every embedding the model
computes and kills the process at the N-th scan step, decode, forward pass, database commit or FAISS
write (N seeded). One uninterrupted reference build is shared by the tests of this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.decode import DecodeLimits, load_image
from core.index.files import index_dir, index_ids, load_index
from core.preprocess import model_pixels
from core.report import verify_collection
from search.engine import SearchEngine
from tests.conftest import TEST_IMAGE_SIZE, small_config
from tests.crash_harness import HarnessServer

pytestmark = pytest.mark.slow

PHOTOS = 200
BATCH = 8
SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]
SEED = 20261127


def build_args(photos: Path, data: Path, *extra: str) -> list[str]:
    return [
        "build", str(photos), "--data-dir", str(data), *SMALL,
        "--batch-size", str(BATCH), "--workers", "0", "--no-progress",
        # The harness logs every forward pass as a stored embedding: the calibration's edited copies are not.
        "--no-calibrate", *extra,
    ]  # fmt: skip


def write_noise_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, quality=85)
        paths.append(path)
    return paths


def pixel_hashes(paths: list[Path]) -> dict[str, str]:
    """sha256 of the model pixels of each file (what the harness logs) -> the file's path."""
    limits = DecodeLimits(max_pixels=10**8, max_file_bytes=10**8)
    by_hash: dict[str, str] = {}
    for path in paths:
        decoded, _ = load_image(path, limits, min_side=TEST_IMAGE_SIZE)
        pixels = model_pixels(decoded.image, TEST_IMAGE_SIZE)
        by_hash[hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()] = str(path)
    assert len(by_hash) == len(paths), "two test photos have the same pixels"
    return by_hash


def logged_calls(calls_log: Path) -> list[str]:
    return calls_log.read_text(encoding="utf-8").split() if calls_log.exists() else []


def catalog_rows(data: Path) -> dict[str, tuple[str, bytes | None]]:
    """path -> (status, embedding) of every catalog row (asserting a path appears once)."""
    with contextlib.closing(sqlite3.connect(data / "catalog.sqlite")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = connection.execute("SELECT path, status, embedding FROM images").fetchall()
    paths = Counter(path for path, _, _ in rows)
    assert not [path for path, count in paths.items() if count > 1]
    return {path: (status, embedding) for path, status, embedding in rows}


def committed_paths(data: Path) -> set[str]:
    if not (data / "catalog.sqlite").exists():
        return set()
    return {path for path, (status, _) in catalog_rows(data).items() if status == "indexed"}


def neighbours(data: Path, queries: list[str]) -> list[list[tuple[str, float]]]:
    engine = SearchEngine.open(small_config(data))
    try:
        return [
            [(Path(r.path).name, round(r.score, 5)) for r in engine.search_similar(q, 10, include_self=True)]
            for q in queries
        ]
    finally:
        engine.close()


def assert_same_as_reference(data: Path, reference: Path, photos: list[Path]) -> None:
    """verify passes; each photo once, indexed; FAISS ids == catalog ids; vectors and results as the reference."""
    result = verify_collection(small_config(data))
    assert result.problems == []
    rows = catalog_rows(data)
    assert sorted(rows) == sorted(str(p) for p in photos)
    assert {status for status, _ in rows.values()} == {"indexed"}
    with contextlib.closing(sqlite3.connect(data / "catalog.sqlite")) as connection:
        catalog_ids = sorted(i for (i,) in connection.execute("SELECT id FROM images WHERE status = 'indexed'"))
    loaded = load_index(index_dir(data))
    assert loaded is not None
    assert not list(index_dir(data).glob(".*.tmp"))  # torn files of killed writers are cleared
    assert sorted(index_ids(loaded.index).tolist()) == catalog_ids
    reference_rows = catalog_rows(reference)
    assert {p: e for p, (_, e) in rows.items()} == {p: reference_rows[p][1] for p in rows}
    if len(reference_rows) == len(rows):  # the same collection: the same answers
        queries = [str(p) for p in random.Random(SEED).sample(photos, 8)]
        assert neighbours(data, queries) == neighbours(reference, queries)


@dataclass(frozen=True)
class Collection:
    photos_dir: Path
    photos: list[Path]
    reference: Path
    by_pixels: dict[str, str]
    harness: HarnessServer


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collection]:
    root = tmp_path_factory.mktemp("crash")
    photos = write_noise_photos(root / "photos", PHOTOS)
    harness = HarnessServer(root)
    reference = root / "reference"
    calls = root / "reference-calls.log"
    done = harness.run(calls, "none", 0, build_args(root / "photos", reference, "--json"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["new"], summary["embedded"]) == (PHOTOS, PHOTOS)
    by_pixels = pixel_hashes(photos)
    assert sorted(logged_calls(calls)) == sorted(by_pixels)  # the harness logs what the model saw
    yield Collection(root / "photos", photos, reference, by_pixels, harness)
    harness.close()


def kill_plan(rng: random.Random) -> list[tuple[str, int]]:
    """Ten kills, every phase twice. Decode/inference/commit kills each commit at most ~32 photos, so
    work remains for all of them (a CPU forward pass holds one photo: inference counts photos, as decode
    does); the index is written only at the end of a build, so those come last:
    the first tears the global (1) or patch (2) file; the second run then writes at least one file."""
    work = [
        ("decode", rng.randint(1, 24)),
        ("inference", rng.randint(1, 3 * BATCH)),
        ("commit", rng.randint(2, 4)),
    ]
    return [
        ("scan", rng.randint(1, PHOTOS)),
        *work,
        ("scan", rng.randint(1, PHOTOS)),
        *[(phase, rng.randint(1, high)) for phase, high in (("decode", 24), ("inference", 3 * BATCH), ("commit", 4))],
        ("index-write", rng.randint(1, 2)),
        ("index-write", 1),
    ]


def test_ten_sigkills_in_every_phase_then_the_same_state_as_an_uninterrupted_build(
    collection: Collection, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    calls = tmp_path / "calls.log"
    args = build_args(collection.photos_dir, data)
    embedded_per_run: list[list[str]] = []
    committed_after: list[int] = []
    for phase, at in kill_plan(random.Random(SEED)):
        committed_before = committed_paths(data)
        logged = len(logged_calls(calls))
        killed = collection.harness.run(calls, phase, at, args)
        assert killed.returncode == -signal.SIGKILL, f"{phase} #{at} never reached: {killed.stdout}{killed.stderr}"
        embedded = [collection.by_pixels[h] for h in logged_calls(calls)[logged:]]
        # An embedding committed by an earlier run is never computed again.
        assert not committed_before & set(embedded), f"recomputed after the {phase} kill"
        embedded_per_run.append(embedded)
        committed_after.append(len(committed_paths(data)))
        assert committed_after[-1] >= len(committed_before)  # nothing committed is lost

    committed_before = committed_paths(data)
    logged = len(logged_calls(calls))
    final = collection.harness.run(calls, "none", 0, [*args, "--json"])
    assert final.returncode == 0, final.stderr
    embedded = [collection.by_pixels[h] for h in logged_calls(calls)[logged:]]
    assert not committed_before & set(embedded)
    assert json.loads(final.stdout)["embedded"] == len(embedded) == PHOTOS - len(committed_before)
    # The kills landed mid-work: the model ran in the killed runs, and the work of several was committed.
    assert sum(1 for run in embedded_per_run if run) >= 4
    grew = [after for before, after in zip([0, *committed_after], committed_after, strict=False) if after > before]
    assert len(grew) >= 4, committed_after

    # Only embeddings lost with a killed run were computed twice: at most the two batches in flight (one
    # being committed, the next computed meanwhile) per kill.
    recomputed = sum(Counter(logged_calls(calls)).values()) - PHOTOS
    assert 0 <= recomputed <= 2 * BATCH * len(embedded_per_run)
    assert_same_as_reference(data, collection.reference, collection.photos)


def test_sigkilled_reindex_keeps_the_previous_index_and_reruns(collection: Collection, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(collection.reference, data)
    reindex = ["reindex", "--data-dir", str(data)]
    rng = random.Random(SEED + 1)
    for at in (rng.randint(1, 2), 1):  # a torn global or patch file, then a torn first file
        killed = collection.harness.run(tmp_path / "calls.log", "index-write", at, reindex)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        # The torn temporary file was never renamed into place: the index still verifies.
        assert verify_collection(small_config(data)).problems == []
    done = collection.harness.run(tmp_path / "calls.log", "none", 0, reindex)
    assert done.returncode == 0, done.stderr
    assert not logged_calls(tmp_path / "calls.log")  # reindex never runs the model
    assert_same_as_reference(data, collection.reference, collection.photos)


@contextlib.contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[Callable[[str], None]]:
    """A tmpfs of ``size`` at ``mount_point``; yields a function that resizes it. Skips where mounting is
    not allowed (not root, or in a container without CAP_SYS_ADMIN)."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); the RLIMIT_FSIZE test covers it")

    def resize(new_size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(mount_point)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


FULL_DISK_PHOTOS = 64


def _fill_then_finish(
    collection: Collection, tmp_path: Path, data: Path, first_try: subprocess.CompletedProcess[str], message: str
) -> None:
    """The build that ran out of space failed cleanly and lost nothing; a rerun with space completes."""
    photos = collection.photos[:FULL_DISK_PHOTOS]
    calls = tmp_path / "calls.log"
    assert first_try.returncode == 2, first_try.stderr
    assert first_try.stderr.startswith("error: ") and "Traceback" not in first_try.stderr
    assert message in first_try.stderr, first_try.stderr
    # What was committed before the disk filled is intact and equals the reference.
    rows = catalog_rows(data)
    reference = catalog_rows(collection.reference)
    committed = {path for path, (status, _) in rows.items() if status == "indexed"}
    assert 0 < len(committed) < len(photos)
    assert all(rows[path] == reference[path] for path in committed)

    logged = len(logged_calls(calls))
    done = collection.harness.run(calls, "none", 0, [*full_disk_args(photos, data), "--json"])
    assert done.returncode == 0, done.stderr
    assert not committed & {collection.by_pixels[h] for h in logged_calls(calls)[logged:]}
    assert_same_as_reference(data, collection.reference, photos)


def full_disk_args(photos: list[Path], data: Path) -> list[str]:
    """A build of some of the photos, named one by one (a third of the collection keeps the test short)."""
    return [*build_args(photos[0], data)[:1], *map(str, photos), *build_args(photos[0], data)[2:]]


def test_full_disk_fails_cleanly_keeps_the_committed_work_and_the_next_run_completes(
    collection: Collection, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "400k") as resize:
        data = tmp_path / "disk" / "data"
        photos = collection.photos[:FULL_DISK_PHOTOS]
        first = collection.harness.run(tmp_path / "calls.log", "none", 0, full_disk_args(photos, data))
        resize("64m")
        _fill_then_finish(collection, tmp_path, data, first, "database or disk is full")


def test_file_size_limit_fails_cleanly_like_a_full_disk(collection: Collection, tmp_path: Path) -> None:
    """The same, with RLIMIT_FSIZE (EFBIG instead of ENOSPC), where a tmpfs cannot be mounted."""
    probe = tmp_path / "probe"
    probe.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)]
    if subprocess.run(mount, capture_output=True, check=False).returncode == 0:
        subprocess.run(["umount", str(probe)], check=True)
        pytest.skip("a tmpfs can be mounted here: the real full-disk test ran instead")
    data = tmp_path / "data"
    photos = collection.photos[:FULL_DISK_PHOTOS]
    first = collection.harness.run(
        tmp_path / "calls.log", "none", 0, full_disk_args(photos, data), max_file_bytes=400_000
    )
    # SQLite reports a write refused with EFBIG as an I/O error.
    _fill_then_finish(collection, tmp_path, data, first, "disk I/O error")
