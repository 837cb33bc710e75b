"""Near-duplicate grouping at scale: time and peak RSS over seeded clustered vectors with planted duplicates.

Each run draws N seeded clustered 384-d unit vectors (``benchmarks/scale.py``'s ``clustered``) and plants
near-duplicates: 8% of the rows are noisy copies of an earlier row (cosine about 0.97-0.995), a quarter of
them copies of a copy (chains), and 1% are exact copies (same vector, same content hash).

- ``catalog`` mode (default) commits the rows to a real SQLite catalog, builds the index the indexer
  chooses, and times ``find_duplicate_groups`` end to end (kNN over the index, pairs, star grouping, scores),
  then the plan of acting on every group (``plan_actions`` with ``trash``, what ``duplicates --apply trash``
  prints before ``--yes``): grouping plus planning, and the peak RSS of both.
- ``--arrays`` feeds the grouping core (``search.star_groups``) the planted families' pairs from arrays,
  without a catalog or a kNN pass: the part whose cost must stay linear at 1 M photos.

Peak RSS is the process's high-water mark during the measured step (reset through /proc/self/clear_refs).

    python -m benchmarks.duplicates 100000
    python -m benchmarks.duplicates 100000 1000000 --arrays
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.scale import clustered
from benchmarks.synthetic_catalog import fill_catalog, synthetic_config
from search.apply_plan import parse_action, plan_actions
from search.duplicates import find_duplicate_groups
from search.engine import SearchEngine
from search.star_groups import groups_of, star_groups

THRESHOLD = 0.95
NEAR_SHARE, CHAIN_SHARE, EXACT_SHARE = 0.08, 0.25, 0.01
Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def planted(count: int, seed: int = 0) -> tuple[Vectors, Ids, Ids]:
    """Vectors, the row each one copies (itself for originals) and the row whose bytes it shares."""
    vectors = clustered(count, seed, centres=max(16, count // 1_000))
    rng = np.random.default_rng(seed + 1)
    copies = np.sort(rng.choice(np.arange(count // 10, count), size=int(count * NEAR_SHARE), replace=False))
    source = np.arange(count, dtype=np.int64)
    source[copies] = rng.integers(0, count // 10, size=copies.size)
    chained = copies[rng.random(copies.size) < CHAIN_SHARE]
    earlier = copies[: copies.size // 2]
    chained = chained[chained > earlier[-1]] if earlier.size else chained[:0]
    source[chained] = rng.choice(earlier, size=chained.size)  # a copy of a copy: generated after it
    sigma = rng.uniform(0.004, 0.009, size=(copies.size, 1)).astype(np.float32)
    for part in (copies[~np.isin(copies, chained)], chained):  # copies of copies after their sources
        noisy = vectors[source[part]] + sigma[np.searchsorted(copies, part)] * rng.standard_normal(
            (part.size, vectors.shape[1]), dtype=np.float32
        )
        vectors[part] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    exact = rng.choice(
        np.setdiff1d(np.arange(count // 10, count), copies), size=int(count * EXACT_SHARE), replace=False
    )
    same_bytes = np.arange(count, dtype=np.int64)
    same_bytes[exact] = rng.integers(0, count // 10, size=exact.size)
    vectors[exact] = vectors[same_bytes[exact]]
    source[exact] = same_bytes[exact]
    return vectors, source, same_bytes


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def family_pairs(vectors: Vectors, source: Ids, threshold: float) -> tuple[Ids, Ids]:
    """Pairs at or above ``threshold`` within each planted family (rows sharing a root), vectorised."""
    root = source.copy()
    while (moved := root[root] != root).any():
        root[moved] = root[root[moved]]
    members = np.flatnonzero(np.bincount(root, minlength=len(root))[root] > 1)
    members = members[np.argsort(root[members], kind="stable")]
    firsts, seconds = [], []
    for offset in range(1, 16):
        a, b = members[:-offset], members[offset:]
        same = root[a] == root[b]
        if not same.any():
            break
        a, b = a[same], b[same]
        keep = np.einsum("ij,ij->i", vectors[a], vectors[b]) >= threshold
        firsts.append(a[keep])
        seconds.append(b[keep])
    return np.concatenate(firsts), np.concatenate(seconds)


def measure_arrays(count: int, threshold: float) -> dict[str, Any]:
    vectors, source, same_bytes = planted(count)
    rng = np.random.default_rng(3)
    preference = np.lexsort((np.arange(count), -rng.integers(40_000, 16_000_000, size=count)))
    first, second = family_pairs(vectors, source, threshold)
    del vectors
    _reset_peak()
    started = time.perf_counter()
    position = np.empty(count, dtype=np.int64)
    position[preference] = np.arange(count)
    content = position[same_bytes]
    best = np.full(count, count, dtype=np.int64)
    np.minimum.at(best, content, position)  # the best-placed copy of each content
    owner = star_groups(count, position[first], position[second], best[content][np.argsort(position)])
    groups = groups_of(owner)
    elapsed = time.perf_counter() - started
    return {
        "mode": "arrays",
        "vectors": count,
        "pairs": int(first.size),
        "groups": len(groups),
        "grouped": int(sum(g.size for g in groups)),
        "group_s": round(elapsed, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def measure_catalog(count: int, threshold: float) -> dict[str, Any]:
    vectors, _, same_bytes = planted(count)
    with tempfile.TemporaryDirectory(prefix="loupe-dup-bench-") as workdir:
        config = synthetic_config(Path(workdir))
        started = time.perf_counter()
        fill_catalog(config, vectors, same_bytes).close()
        fill_s = time.perf_counter() - started
        del vectors
        engine = SearchEngine.open(config)
        _, meta = engine.current()
        _reset_peak()
        started = time.perf_counter()
        groups = find_duplicate_groups(engine, threshold)
        elapsed = time.perf_counter() - started
        group_peak = _peak_rss_mib()
        started = time.perf_counter()
        plan = plan_actions(groups, parse_action("trash"), threshold)
        plan_s = time.perf_counter() - started
        peak = _peak_rss_mib()
        lowest = min((m.score for g in groups for m in g.members[1:] if not m.exact), default=1.0)
        engine.close()
    return {
        "mode": "catalog",
        "vectors": count,
        "index": meta.spec.factory_string,
        "nprobe": meta.nprobe,
        "fill_and_index_s": round(fill_s, 1),
        "groups": len(groups),
        "grouped": sum(len(g.members) for g in groups),
        "largest": max((len(g.members) for g in groups), default=0),
        "lowest_member_score": round(lowest, 4),
        "group_s": round(elapsed, 2),
        "planned": len(plan.items),
        "to_act": len(plan.to_act),
        "plan_s": round(plan_s, 2),
        "group_and_plan_s": round(elapsed + plan_s, 2),
        "group_peak_rss_mib": round(group_peak, 1),
        "peak_rss_mib": round(peak, 1),  # grouping and planning
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", type=int, nargs="+", help="collection sizes, e.g. 100000 1000000")
    parser.add_argument("--arrays", action="store_true", help="time the grouping core fed from arrays")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    measure = measure_arrays if args.arrays else measure_catalog
    runs = [measure(count, args.threshold) for count in args.sizes]
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "runs": runs}, indent=2))
        return 0
    for run in runs:
        print("  ".join(f"{key} {value}" for key, value in run.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
