"""Per-vector costs of a large IVF-PQ index, measured on this machine, for sizing a big collection.

Generates N seeded, clustered, unit-length synthetic vectors (384-d like the global embeddings), then
measures what a 100 M build and its search would cost per vector:

- training time of ``IVF<nlist>,PQ<m>`` on a sample (k-means of the coarse quantizer, then the PQ),
- add rate: coarse assignment (which grows with nlist) and PQ encoding, measured apart,
- an on-disk build the way the indexer does it (shards, then ``merge_shards`` into one lists file):
  bytes per vector on disk, merge rate (what an incremental update copies),
- RAM of the memory-mapped index once opened (the quantizer; lists stay on disk),
- query latency (one query at a time) at the nprobe that reaches the target recall@10 against exact
  search, with the lists' pages dropped from the page cache before each query (cold) and cached (warm),
  and from an in-RAM copy for comparison.

Synthetic vectors are not photo embeddings: recall and the nprobe it takes are indicative only.

    python benchmarks/scale.py --vectors 1000000 --nlist 1024
    python benchmarks/scale.py --vectors 200000 --json
    python benchmarks/scale.py --extrapolate 100000000   # also prints the measured rates scaled up
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from core.index.ondisk import merge_shards, write_shards
from core.index.policy import IndexSpec

DIM = 384
K = 10
RERANK = 100
# The lists stay where they were written (the header records their absolute path): map them read-only.
READ_FLAGS = faiss.IO_FLAG_READ_ONLY
PLATEAU_GAIN = 0.01
Vectors = npt.NDArray[np.float32]


LATENT = 48


def clustered(count: int, seed: int, centres: int, dim: int = DIM) -> Vectors:
    """Unit vectors around ``centres`` fixed random directions (the same for every seed), spread mostly
    within a fixed 48-d subspace: embeddings vary along far fewer directions than they have dimensions,
    and isotropic noise would make every neighbour equally far (and product codes useless)."""
    fixed = np.random.default_rng(4242)
    middle = fixed.standard_normal((centres, dim), dtype=np.float32)
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    basis = np.linalg.qr(fixed.standard_normal((dim, LATENT)))[0].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        size = min(count, start + 100_000) - start
        spread = rng.standard_normal((size, LATENT), dtype=np.float32) @ basis * (0.7 / math.sqrt(LATENT))
        noise = rng.standard_normal((size, dim), dtype=np.float32) * (0.1 / math.sqrt(dim))
        block = middle[rng.integers(0, centres, size)] + spread + noise
        out[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's clean cached pages (no root needed); the next reads hit disk.
    Where there is no ``posix_fadvise`` (macOS, Windows) the pages stay cached and reads are warm."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def recall_at_k(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def tune_nprobe(index: faiss.Index, queries: Vectors, truth: npt.NDArray[np.int64], target: float) -> tuple[int, float]:
    """Double nprobe from 8 until recall@10 reaches ``target`` or stops improving (the product codes, not
    the lists visited, then limit it), as the indexer does after a build."""
    ivf = faiss.extract_index_ivf(index)
    nprobe = min(8, ivf.nlist)
    best = -1.0
    while True:
        ivf.nprobe = nprobe
        _, found = index.search(queries, K)
        recall = recall_at_k(found, truth)
        if recall < best + PLATEAU_GAIN:
            ivf.nprobe = nprobe // 2
            return nprobe // 2, best
        if recall >= target or nprobe >= ivf.nlist:
            return nprobe, recall
        best = recall
        nprobe = min(ivf.nlist, nprobe * 2)


def reranked_recall(index: faiss.Index, xb: Vectors, queries: Vectors, truth: npt.NDArray[np.int64]) -> float:
    """recall@10 when the top 100 by product codes are re-scored with the full vectors (which the
    catalog stores: 100 rows per query)."""
    _, candidates = index.search(queries, RERANK)
    found = np.empty((len(queries), K), dtype=np.int64)
    for row, (query, ids) in enumerate(zip(queries, candidates, strict=True)):
        ids = ids[ids >= 0]
        found[row] = ids[np.argsort(-(xb[ids] @ query))[:K]]
    return recall_at_k(found, truth)


def _percentiles(times: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(times, 50)), 2), "p95": round(float(np.percentile(times, 95)), 2)}


def latency_ms(
    index: faiss.Index, queries: Vectors, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median and 95th-percentile time of single-query searches (wall time; ``time.thread_time`` gives
    the CPU time, which on a shared machine is what a query would take on a core of its own)."""
    times = []
    for query in queries:
        started = clock()
        index.search(query[None, :], K)
        times.append((clock() - started) * 1e3)
    return _percentiles(times)


RSS_PROBE = """
import sys, faiss, numpy as np
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096
base = rss()
index = faiss.read_index(sys.argv[1], int(sys.argv[2]))
faiss.extract_index_ivf(index).nprobe = int(sys.argv[3])
opened = rss()
index.search(np.load(sys.argv[4]), 10)
print((opened - base) / 1e6, (rss() - base) / 1e6)
"""


def mapped_rss_mb(header: Path, nprobe: int, queries: Vectors, workdir: Path) -> dict[str, float]:
    """RSS growth of a fresh process that opens the memory-mapped index, then after it ran ``queries``
    (the lists' pages it touched count as resident while cached)."""
    np.save(workdir / "queries.npy", queries)
    command = [sys.executable, "-c", RSS_PROBE, str(header), str(READ_FLAGS), str(nprobe)]
    probe = subprocess.run([*command, str(workdir / "queries.npy")], capture_output=True, text=True, check=True)
    opened, searched = (float(value) for value in probe.stdout.split()[-2:])
    return {"after_open": round(opened, 1), f"after_{len(queries)}_queries": round(searched, 1)}


def cold_latency_ms(header: Path, lists: Path, nprobe: int, queries: Vectors) -> dict[str, float]:
    """Like :func:`latency_ms`, but each query runs on a freshly opened index whose lists' pages were just
    dropped from the page cache (pages a live mapping holds cannot be dropped, hence the reopening; the
    opening is not timed). Cold for this VM's page cache; the hypervisor may still cache the disk."""
    times = []
    for query in queries:
        drop_from_page_cache(lists)
        index = faiss.read_index(str(header), READ_FLAGS)
        faiss.extract_index_ivf(index).nprobe = nprobe
        started = time.perf_counter()
        index.search(query[None, :], K)
        times.append((time.perf_counter() - started) * 1e3)
        del index
    return _percentiles(times)


def measure(vectors: int, nlist: int, pq_bytes: int, train_points: int, queries: int, target: float) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads)",
        "vectors": vectors,
        "dim": DIM,
        "nlist": nlist,
        "pq_bytes": pq_bytes,
        "train_points": min(train_points, vectors),
    }
    started = time.perf_counter()
    xb = clustered(vectors, seed=0, centres=max(100, vectors // 100))
    xq = clustered(queries, seed=1, centres=max(100, vectors // 100))
    figures["generate_s"] = round(time.perf_counter() - started, 1)

    # Training: the coarse k-means and the product quantiser, timed apart (they scale differently).
    spec = IndexSpec(kind="ivf_pq", nlist=nlist, pq_bytes=pq_bytes)
    index = faiss.index_factory(DIM, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
    sample = xb[np.sort(np.random.default_rng(2).choice(vectors, size=figures["train_points"], replace=False))]
    ivf: Any = faiss.extract_index_ivf(index)  # train_q1 is not in faiss's type stubs
    started, cpu = time.perf_counter(), time.process_time()
    ivf.train_q1(len(sample), faiss.swig_ptr(sample), False, faiss.METRIC_INNER_PRODUCT)
    figures["train_quantizer_s"] = round(time.perf_counter() - started, 1)
    figures["train_quantizer_cpu_s"] = round(time.process_time() - cpu, 1)
    started, cpu = time.perf_counter(), time.process_time()
    index.train(sample)  # the quantizer is trained already: this trains the PQ on the residuals
    figures["train_pq_s"] = round(time.perf_counter() - started, 1)
    figures["train_pq_cpu_s"] = round(time.process_time() - cpu, 1)
    del sample

    # Add rate: coarse assignment (nlist dot products per vector) and the rest (residual PQ encoding).
    probe = xb[: min(vectors, 100_000)]
    cpu = time.process_time()
    ivf.quantizer.search(probe, 1)
    assign_s = time.process_time() - cpu
    template = faiss.serialize_index(index)
    workdir = Path(tempfile.mkdtemp(prefix="loupe-scale-", dir=os.environ.get("LOUPE_SCALE_DIR")))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        ids = np.arange(vectors, dtype=np.int64)
        chunks = ((ids[s : s + 50_000], xb[s : s + 50_000]) for s in range(0, vectors, 50_000))
        per_shard = max(1, vectors // 4)
        shards = write_shards(template, chunks, workdir / "shards", per_shard)
        add_wall_s, add_s = time.perf_counter() - started, time.process_time() - cpu
        figures["add_vectors_per_s"] = round(vectors / add_wall_s)
        figures["add_vectors_per_cpu_s"] = round(vectors / add_s)
        figures["assign_us_per_vector"] = round(assign_s / len(probe) * 1e6, 2)
        figures["encode_us_per_vector"] = round(max(0.0, add_s / vectors - assign_s / len(probe)) * 1e6, 2)
        figures["shards"] = len(shards)

        lists_path = workdir / "lists.ivfdata"
        merged = faiss.deserialize_index(template)
        started = time.perf_counter()
        merge_shards(merged, shards, lists_path)
        faiss.write_index(merged, str(workdir / "header.faiss"))
        merge_s = time.perf_counter() - started
        del merged
        lists_bytes = lists_path.stat().st_size
        figures["merge_mb_per_s"] = round(lists_bytes / 1e6 / merge_s, 1)
        figures["disk_bytes_per_vector"] = round(lists_bytes / vectors, 2)
        figures["header_bytes"] = (workdir / "header.faiss").stat().st_size

        mapped = faiss.read_index(str(workdir / "header.faiss"), READ_FLAGS)

        started = time.perf_counter()
        truth = faiss.knn(xq, xb, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
        figures["exact_search_ms_per_query"] = round((time.perf_counter() - started) / len(xq) * 1e3, 1)
        nprobe, recall = tune_nprobe(mapped, xq, truth, target)
        figures["nprobe"] = nprobe
        figures["recall_at_10"] = round(recall, 4)
        faiss.extract_index_ivf(mapped).nprobe = nlist
        figures["recall_at_10_all_lists"] = round(recall_at_k(mapped.search(xq, K)[1], truth), 4)
        faiss.extract_index_ivf(mapped).nprobe = nprobe
        figures["recall_at_10_reranked_top100"] = round(reranked_recall(mapped, xb, xq, truth), 4)
        latency_queries = xq[: min(len(xq), 200)]
        figures["latency_cold_ms"] = cold_latency_ms(workdir / "header.faiss", lists_path, nprobe, latency_queries[:50])
        latency_ms(mapped, latency_queries)  # warm the lists these queries visit
        figures["latency_warm_ms"] = latency_ms(mapped, latency_queries)
        figures["latency_warm_cpu_ms"] = latency_ms(mapped, latency_queries, clock=time.thread_time)
        del mapped
        figures["mapped_rss_mb"] = mapped_rss_mb(workdir / "header.faiss", nprobe, latency_queries, workdir)
        # The same index with its lists in RAM: the shards read normally and merged in memory.
        in_ram = faiss.read_index(str(shards[0]))
        for shard in shards[1:]:
            in_ram.merge_from(faiss.read_index(str(shard)), 0)
        faiss.extract_index_ivf(in_ram).nprobe = nprobe
        figures["latency_in_ram_ms"] = latency_ms(in_ram, latency_queries)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def extrapolate(figures: dict[str, Any], target: int, lists_per_sqrt: float, points_per_list: int) -> dict[str, Any]:
    """The measured per-vector rates scaled to ``target`` vectors, on the same kind of machine (a rough
    model: k-means and coarse assignment cost grows with nlist; encoding, disk and merge do not)."""
    nlist = round(lists_per_sqrt * math.sqrt(target))
    train_points = nlist * points_per_list
    scale_lists = nlist / figures["nlist"]
    quantizer_s = figures["train_quantizer_cpu_s"] * scale_lists * train_points / figures["train_points"]
    assign_us = figures["assign_us_per_vector"] * scale_lists
    add_s = target * (assign_us + figures["encode_us_per_vector"]) / 1e6
    lists_gb = target * figures["disk_bytes_per_vector"] / 1e9
    return {
        "vectors": target,
        "nlist": nlist,
        "train_points": train_points,
        "train_quantizer_cpu_h": round(quantizer_s / 3600, 1),
        "add_cpu_h": round(add_s / 3600, 1),
        "add_assign_share": round(assign_us / (assign_us + figures["encode_us_per_vector"]), 3),
        "lists_gb": round(lists_gb, 1),
        "quantizer_mb": round(nlist * DIM * 4 / 1e6, 1),
        "merge_min": round(lists_gb * 1e3 / figures["merge_mb_per_s"] / 60, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-bytes", type=int, default=48)
    parser.add_argument("--train-points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=1, help="faiss threads (1: per-core figures)")
    parser.add_argument("--extrapolate", type=int, default=0, help="also scale the figures to this many vectors")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    figures = measure(args.vectors, args.nlist, args.pq_bytes, args.train_points, args.queries, args.target_recall)
    if args.extrapolate:
        figures["extrapolated"] = extrapolate(figures, args.extrapolate, lists_per_sqrt=4.0, points_per_list=39)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
