"""Hostile inputs end to end: a seeded corpus of bad and odd files through ``indexer build`` and ``status``.

Every kind has one exact expected outcome: indexed at the right (oriented) size, or failed with a specific
reason slug, or (for things that are not files) left out by the scan with a warning. The build exits 0;
``--strict`` makes it exit 1 while any scanned file is failed. Unit-level decoding of the same kinds is
in tests/test_decode.py; this checks that nothing between scan and catalog loses or hides a file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.catalog import path_from_db
from tests.conftest import TEST_IMAGE_SIZE
from tests.crash_harness import HARNESS_FILE, harness_env, one_torch_thread
from tests.test_decode import _ycck_jpeg

pytestmark = pytest.mark.slow

SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]
RED, BLUE = (255, 0, 0), (0, 0, 255)


@dataclass(frozen=True)
class Expected:
    """``indexed`` with ``size`` (width, height after EXIF orientation), ``failed`` with ``reason``, or
    ``skipped`` (not a regular file: the scan warns and leaves it out)."""

    outcome: str
    size: tuple[int, int] | None = None
    reason: str | None = None


def indexed(width: int, height: int) -> Expected:
    return Expected("indexed", size=(width, height))


def failed(reason: str) -> Expected:
    return Expected("failed", reason=reason)


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _declared_size_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (CRC fixed): a decompression bomb's header."""
    data = bytearray(_encode(Image.new("RGB", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _exif_jpeg(orientation: int) -> bytes:
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(image, "JPEG", exif=exif.tobytes())


def _animated(fmt: str, **params: Any) -> bytes:
    frames = [Image.new("RGB", (24, 16), colour) for colour in (RED, (0, 255, 0), BLUE)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)


@dataclass
class Corpus:
    root: Path
    expected: dict[str, tuple[Path, Expected]]
    mutation_plan: Path
    # Kinds checked apart from the catalog: the scan leaves them out on purpose.
    outside: dict[str, Path]


def make_corpus(root: Path, seed: int = 7) -> Corpus:
    """At least 25 kinds of bad or odd files under ``root`` (seeded), and what each must become."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    expected: dict[str, tuple[Path, Expected]] = {}

    def put(kind: str, name: str | bytes, data: bytes, outcome: Expected, folder: Path = root) -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        path.write_bytes(data)
        expected[kind] = (path, outcome)
        return path

    jpeg = _encode(_noise(rng, 64, 48), "JPEG", quality=90)
    png = _encode(_noise(rng, 30, 50), "PNG")
    put("empty file", "empty.jpg", b"", failed("empty-file"))
    put("truncated JPEG", "truncated.jpg", jpeg[: len(jpeg) // 2], failed("truncated"))
    put("truncated PNG", "truncated.png", png[: len(png) // 2], failed("truncated"))
    put("PNG named .jpg", "really-a-png.jpg", png, indexed(30, 50))
    put("upper-case extension", "SHOUTING.JPEG", _encode(_noise(rng, 20, 20), "JPEG"), indexed(20, 20))
    put("text named .jpg", "notes.jpg", b"shopping list: milk, eggs\n", failed("not-an-image"))
    put("HTML named .png", "page.png", b"<!DOCTYPE html><html><body>404</body></html>\n", failed("not-an-image"))
    put("decompression bomb", "bomb.png", _declared_size_png(100_000, 100_000), failed("too-many-pixels"))
    bad_crc = bytearray(_encode(_noise(rng, 8, 8), "PNG"))
    bad_crc[29] ^= 0xFF  # IHDR's CRC
    put("PNG with a bad header CRC", "bad-crc.png", bytes(bad_crc), failed("corrupt"))
    put("1x1 pixel", "one-pixel.png", _encode(Image.new("RGB", (1, 1), RED), "PNG"), indexed(1, 1))
    put("10000x10", "panorama.png", _encode(_noise(rng, 10_000, 10), "PNG"), indexed(10_000, 10))
    sixteen = Image.fromarray(np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 170)
    put("16-bit PNG", "sixteen-bit.png", _encode(sixteen, "PNG"), indexed(24, 16))
    put("CMYK JPEG", "cmyk.jpg", _encode(Image.new("CMYK", (24, 16), (0, 255, 255, 0)), "JPEG"), indexed(24, 16))
    put("YCCK JPEG", "ycck.jpg", _ycck_jpeg((0, 255, 255, 0), size=(24, 16)), indexed(24, 16))
    palette = Image.new("P", (24, 16), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (12, 0, 24, 16))
    put("palette with transparency", "palette.png", _encode(palette, "PNG", transparency=0), indexed(24, 16))
    put("LA (grey + alpha)", "grey-alpha.png", _encode(Image.new("LA", (24, 16), (90, 128)), "PNG"), indexed(24, 16))
    put("animated GIF", "animated.gif", _animated("GIF"), indexed(24, 16))
    put("animated WebP", "animated.webp", _animated("WEBP", lossless=True), indexed(24, 16))
    for orientation in range(2, 9):
        size = (20, 40) if orientation >= 5 else (40, 20)
        put(f"EXIF orientation {orientation}", f"exif-{orientation}.jpg", _exif_jpeg(orientation), indexed(*size))
    garbage_exif = b"Exif\x00\x00MM\x00*\x00\x00\xff\xff\xff\xff garbage"
    put(
        "corrupt EXIF",
        "bad-exif.jpg",
        _encode(Image.new("RGB", (40, 20), RED), "JPEG", exif=garbage_exif),
        indexed(40, 20),
    )
    # We run as root, which reads mode-000 files anyway: the build indexes it (see the non-root test below).
    unreadable = put("mode 000 (read as root)", "locked.jpg", _encode(_noise(rng, 16, 12), "JPEG"), indexed(16, 12))
    unreadable.chmod(0)
    broken = root / "broken-link.jpg"
    broken.symlink_to(root / "no-such-file.jpg")
    expected["broken symlink"] = (broken, failed("missing"))
    loop_a, loop_b = root / "loop-a.jpg", root / "loop-b.jpg"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    expected["symlink loop (file)"] = (loop_a, failed("symlink-loop"))
    expected["symlink loop (file), other end"] = (loop_b, failed("symlink-loop"))
    (root / "loop-dir").mkdir()
    (root / "loop-dir" / "back-up").symlink_to(root)  # a directory loop: the scan visits each folder once
    put(
        "photo beside a directory loop",
        "inside.jpg",
        _encode(_noise(rng, 10, 10), "JPEG"),
        indexed(10, 10),
        root / "loop-dir",
    )
    folder_named_jpg = root / "folder.jpg"
    folder_named_jpg.mkdir()
    put(
        "photo in a folder named .jpg",
        "in-folder.jpg",
        _encode(_noise(rng, 12, 10), "JPEG"),
        indexed(12, 10),
        folder_named_jpg,
    )
    put("non-UTF-8 name", b"caf\xe9-\xff.jpg", _encode(_noise(rng, 14, 10), "JPEG"), indexed(14, 10))
    put(
        "quotes, newline, spaces",
        'it\'s a "photo"\n  with spaces .jpg',
        _encode(_noise(rng, 16, 10), "JPEG"),
        indexed(16, 10),
    )
    deep = root
    while len(str(deep)) < 3_700:  # PATH_MAX is 4096: long, but still a path the kernel takes
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    put("very long path", "x" * 200 + ".jpg", _encode(_noise(rng, 18, 10), "JPEG"), indexed(18, 10), deep)
    same = _encode(_noise(rng, 22, 10), "JPEG")
    for i in range(6):
        put(f"same content, name {i}", f"copy-{i}.jpg", same, indexed(22, 10))
    # Scan order is by name, root files first: these are read after the first decode, when the harness
    # deletes one and overwrites the other with a different photo.
    put("deleted between scan and decode", "zz-deleted.jpg", _encode(_noise(rng, 26, 10), "JPEG"), failed("missing"))
    replaced = put(
        "replaced between scan and decode", "zz-replaced.jpg", _encode(_noise(rng, 28, 10), "JPEG"), indexed(33, 21)
    )
    replacement = root.parent / "replacement.png"
    replacement.write_bytes(_encode(_noise(rng, 33, 21), "PNG"))
    plan = root.parent / "mutations.json"
    plan.write_text(
        json.dumps({"delete": [str(root / "zz-deleted.jpg")], "replace": {str(replaced): str(replacement)}})
    )

    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    return Corpus(root, expected, plan, {"FIFO named .jpg": fifo})


def _catalog(data: Path) -> dict[str, dict[str, Any]]:
    with closing(sqlite3.connect(data / "catalog.sqlite")) as connection:
        rows = connection.execute("SELECT path, status, error_reason, width, height, sha256 FROM images").fetchall()
    return {
        path_from_db(path): {"status": status, "reason": reason, "size": (width, height), "sha256": sha}
        for path, status, reason, width, height, sha in rows
    }


def _indexer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args], env=harness_env(), capture_output=True, text=True, timeout=300
    )


def test_every_hostile_kind_is_indexed_or_failed_with_its_reason(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "photos")
    assert len(corpus.expected) + len(corpus.outside) >= 25
    data = tmp_path / "data"
    # `python -m indexer build` under the harness, which deletes and replaces two files at the first decode.
    build = subprocess.run(
        [
            sys.executable,
            HARNESS_FILE,
            str(tmp_path / "calls.log"),
            "decode",
            "1",
            str(corpus.mutation_plan),
            "--",
            "build",
            str(corpus.root),
            "--data-dir",
            str(data),
            *SMALL,
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--json",
        ],
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    assert "Traceback" not in build.stderr
    summary = json.loads(build.stdout)
    rows = _catalog(data)

    # Nothing silently missing: one row per scanned file, and the scanned files are exactly the corpus's.
    assert summary["scanned"] == len(rows) == len(corpus.expected)
    assert sorted(rows) == sorted(str(path) for path, _ in corpus.expected.values())
    outcomes = {}
    for kind, (path, expected) in corpus.expected.items():
        row = rows[str(path)]
        if expected.outcome == "indexed":
            outcomes[kind] = (row["status"], row["size"])
            assert (row["status"], row["size"]) == ("indexed", expected.size), kind
        else:
            outcomes[kind] = (row["status"], row["reason"])
            assert (row["status"], row["reason"]) == ("failed", expected.reason), kind
    for kind, path in corpus.outside.items():
        assert str(path) not in rows, kind
        assert f"skipping {path}: not a regular file" in build.stderr, kind

    # Same bytes under six names: six rows, one embedding computed.
    copies = {rows[str(path)]["sha256"] for kind, (path, _) in corpus.expected.items() if kind.startswith("same")}
    assert len(copies) == 1
    distinct = {row["sha256"] for row in rows.values() if row["status"] == "indexed"}
    assert summary["embedded"] == len(distinct)

    wanted_reasons: dict[str, int] = {}
    for _, expected in corpus.expected.values():
        if expected.reason is not None:
            wanted_reasons[expected.reason] = wanted_reasons.get(expected.reason, 0) + 1
    assert summary["failures_by_reason"] == wanted_reasons
    assert summary["failed"] == sum(wanted_reasons.values())

    status = json.loads(_indexer("status", "--data-dir", str(data), "--failures", "--json").stdout)
    assert status["failures_by_reason"] == wanted_reasons
    listed = {
        path_from_db(f["path"]) if isinstance(f["path"], str) else f["path"]: f["reason"] for f in status["failures"]
    }
    assert listed == {str(path): e.reason for path, e in corpus.expected.values() if e.outcome == "failed"}
    human = _indexer("status", "--data-dir", str(data), "--failures")
    assert human.returncode == 0
    for reason, count in wanted_reasons.items():
        assert f"{reason} {count}" in human.stdout
    assert _indexer("verify", "--data-dir", str(data)).returncode == 0

    # A second run: the replaced file's new bytes are known (only its stat changed), the deleted one's row
    # goes, the failures stay failures; --strict says so with exit 1.
    again = _indexer("build", str(corpus.root), "--data-dir", str(data), *SMALL, "--json", "--strict")
    assert again.returncode == 1, again.stderr
    second = json.loads(again.stdout)
    assert (second["embedded"], second["touched"], second["removed"]) == (0, 1, 1)
    assert len(_catalog(data)) == len(corpus.expected) - 1


def test_strict_fails_while_unchanged_files_stay_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 20), RED).save(photos / "good.jpg")
    (photos / "empty.jpg").write_bytes(b"")
    build = ["build", str(photos), "--data-dir", str(tmp_path / "data"), *SMALL, "--json", "--no-progress"]
    with one_torch_thread():
        assert main(build) == 0
        assert json.loads(capsys.readouterr().out)["failures_by_reason"] == {"empty-file": 1}
        # Nothing is read again (the empty file did not change), but the collection still has a failed file.
        assert main([*build, "--strict"]) == 1
        second = json.loads(capsys.readouterr().out)
        assert (second["unchanged"], second["failed"], second["unchanged_failed"]) == (2, 0, 1)
        (photos / "empty.jpg").unlink()
        assert main([*build, "--strict"]) == 0


NOBODY = 65534


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX users")
def test_unreadable_file_for_a_non_root_user_is_permission_denied(request: pytest.FixtureRequest) -> None:
    """Root reads mode-000 files (so the corpus build indexes one); any other user gets a specific failure.
    As root, the reader runs in a forked child that drops to ``nobody`` first."""
    from core.decode import DecodeLimits
    from core.reader import WorkItem, read_one

    # Not under tmp_path, whose parents are private to root on purpose.
    folder = Path(tempfile.mkdtemp(prefix="loupe-perm-"))
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    folder.chmod(0o755)
    locked = folder / "locked.jpg"
    Image.new("RGB", (8, 8), RED).save(locked)
    locked.chmod(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result = read_one(WorkItem(str(locked), 0, 0), 64, DecodeLimits(10**8, 10**8), frozenset())
            os.write(write_end, str(result.error_reason).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as answer:
        assert answer.read().decode() == "permission-denied"
