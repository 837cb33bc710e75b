"""Peak memory of a build as the collection grows, and the cost of re-running it over unchanged files.

Generates N seeded noise JPEGs, builds them in a child process (random weights, small image size) and
prints the child's peak RSS, for each N given. Then runs the same build again: every file is unchanged,
so the re-run only stats them (no hashing, no decoding, no model calls) - its wall time is printed too.

    python benchmarks/memory.py 1000 10000 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generate(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(sub / f"{i:06d}.jpg", quality=80)


def peak_rss_of_build(photos: Path, data: Path, image_size: int) -> tuple[float, float, str]:
    """Peak RSS (MiB) of a ``python -m indexer build`` child, its wall time (s) and its summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer",
            "build",
            str(photos),
            "--data-dir",
            str(data),
            "--weights",
            "random",
            "--image-size",
            str(image_size),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (KiB on Linux): run the sizes in rising order.
    return max(before, after) / 1024, elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", type=int, nargs="+", help="collection sizes, e.g. 1000 10000")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for count in sorted(args.sizes):
        workdir = Path(tempfile.mkdtemp(prefix="loupe-memory-"))
        generate(workdir / "photos", count)
        peak, elapsed, _ = peak_rss_of_build(workdir / "photos", workdir / "data", args.image_size)
        _, rerun, output = peak_rss_of_build(workdir / "photos", workdir / "data", args.image_size)
        if f"unchanged {count}" not in output:
            raise SystemExit(f"the re-run did not find all {count} files unchanged:\n{output}")
        rows.append(
            {"images": count, "peak_rss_mib": round(peak, 1), "build_s": round(elapsed, 1), "rerun_s": round(rerun, 1)}
        )
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"image_size": args.image_size, "runs": rows}, indent=2))
        return 0
    print(f"`indexer build` (random weights, {args.image_size} px, in-process decoding): peak RSS, time, re-run time")
    for row in rows:
        print(
            f"{row['images']:>8} images  {row['peak_rss_mib']:8.1f} MiB  {row['build_s']:7.1f} s"
            f"  re-run unchanged {row['rerun_s']:5.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
