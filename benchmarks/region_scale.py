"""Region-query latency at scale (issue 19 item 4): a real SQLite catalog of N photos' synthetic grids
and the patch index the indexer would choose for their N * g * g cells, queried with regions of stored
photos. Run through ``benchmarks/region.py --scale N``.

What is like production: the catalog (stored 1.6-bit grid codes, read back through ``stored_grids``),
the patch index's kind and shape (``choose_index_spec``: IVF-PQ with about 4 * sqrt(cells) lists and 32
bytes a cell above 50,000 cells, ``IDMap2,RaBitQ`` below), ``nprobe`` from the config, 256 neighbours a
cell, 100 candidates, and everything :func:`search.region.match_region` does.

What is not (each to keep the build within minutes on two cores, where training and filling a
25.6 M-cell IVF index takes hours):

- Cells are drawn around known centroids: each photo cell is one of ``prototypes`` unit vectors (about
  100 photo cells share one), each made from a centroid plus noise (cosine about 0.82 to it). Photos have
  no spatial coherence: their cells are drawn independently.
- The IVF's coarse quantizer is those centroids (no k-means); each prototype goes to its own centroid's
  list (its nearest by a wide margin) and is product-quantised once; its code is copied into the list for
  every cell that uses it. PQ is trained on 20,000 fresh draws around the centroids.
- ``nprobe`` is the config's floor (16); the indexer's recall tuning can raise it on real data.
- The query grid is given directly (the stored photo's prototypes plus a little noise), so the query's
  512 px forward pass is excluded: it is measured separately (:func:`forward_pass_seconds`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from benchmarks.synthetic_catalog import fill_catalog, synthetic_config
from core.catalog import Catalog, StoredGrid
from core.config import LoupeConfig, with_overrides
from core.grid_codes import encode_cells
from core.index.policy import choose_index_spec, set_nprobe
from core.index.source import CELL_ID_BASE
from search.region import Box, match_region
from search.region_scales import EncodedView

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
DIM = 384
CELLS_PER_PROTOTYPE = 100
MAX_PROTOTYPES = 262_144
PQ_TRAIN = 20_000
NOISE = 0.7  # prototype = unit(centroid + NOISE * unit noise): cosine about 0.82 to its centroid
QUERY_NOISE = 0.1


def _unit(values: npt.NDArray[np.floating]) -> Vectors:
    values = np.asarray(values, dtype=np.float32)
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def _around(centroids: Vectors, which: npt.NDArray[np.int64], rng: np.random.Generator) -> Vectors:
    noise = _unit(rng.normal(size=(len(which), centroids.shape[1])))
    return _unit(centroids[which] + NOISE * noise)


@dataclass
class ScaleCollection:
    catalog: Catalog
    patch_index: faiss.Index
    prototypes: Vectors  # [P, dim]
    photo_cells: npt.NDArray[np.int32]  # [N, g * g] prototype of each cell
    index_kind: str
    fill_s: float
    index_s: float


def build_collection(config: LoupeConfig, photos: int, grid: int, seed: int) -> ScaleCollection:
    rng = np.random.default_rng(seed)
    cells = grid * grid
    spec = choose_index_spec(photos * cells, DIM, config.patches.index)
    centroids = _unit(rng.normal(size=(max(spec.nlist, 64), DIM)))
    count = int(np.clip(photos * cells // CELLS_PER_PROTOTYPE, len(centroids), MAX_PROTOTYPES))
    owner = np.arange(count, dtype=np.int64) % len(centroids)
    prototypes = _around(centroids, owner, rng)
    photo_cells = rng.integers(0, count, size=(photos, cells), dtype=np.int32)
    codes = encode_cells(prototypes)

    started = time.perf_counter()
    embeddings = _unit(rng.normal(size=(photos, DIM)))  # global vectors: not used by region search
    catalog = fill_catalog(
        config,
        embeddings,
        grid_of=lambda i: StoredGrid(grid, codes[photo_cells[i]].tobytes()),
        patch_grid=grid,
        build_index=False,
    )
    fill_s = time.perf_counter() - started

    started = time.perf_counter()
    ids = ((np.arange(photos, dtype=np.int64) + 1)[:, None] * CELL_ID_BASE + np.arange(cells)).ravel()
    if spec.kind == "flat":
        index = faiss.index_factory(DIM, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
        index.train(prototypes)
        index.add_with_ids(prototypes[photo_cells.ravel()], ids)
    else:
        index = faiss.index_factory(DIM, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(centroids)  # a full quantizer: train() skips k-means and trains only the PQ
        ivf.train(_around(centroids, rng.integers(0, len(centroids), PQ_TRAIN), rng))
        ivf_codes = np.empty((count, ivf.code_size), dtype=np.uint8)
        ivf.encode_vectors(count, faiss.swig_ptr(prototypes), faiss.swig_ptr(owner), faiss.swig_ptr(ivf_codes))
        cell_prototypes = photo_cells.ravel()
        lists = owner[cell_prototypes]
        order = np.argsort(lists, kind="stable")
        sorted_ids = np.ascontiguousarray(ids[order])
        sorted_codes = np.ascontiguousarray(ivf_codes[cell_prototypes[order]])
        bounds = np.searchsorted(lists[order], np.arange(len(centroids) + 1))
        invlists = ivf.invlists
        if invlists is None:  # pragma: no cover - a fresh IVF index always has its lists
            raise RuntimeError("IVF index without inverted lists")
        for number in range(len(centroids)):
            start, end = int(bounds[number]), int(bounds[number + 1])
            if end > start:
                invlists.add_entries(
                    number,
                    end - start,
                    faiss.swig_ptr(sorted_ids[start:end]),
                    faiss.swig_ptr(sorted_codes[start:end]),
                )
        ivf.ntotal = index.ntotal = len(ids)
        set_nprobe(index, config.patches.index.nprobe)
    return ScaleCollection(
        catalog, index, prototypes, photo_cells, spec.factory_string, fill_s, time.perf_counter() - started
    )


def forward_pass_seconds(config: LoupeConfig, repeats: int = 3, images: int = 1) -> float:
    """Median seconds of one query's forward pass (``Encoder.encode_query``; ``images`` > 1: one batch of
    the query and its extra views, ``Encoder.encode``) at the configured size, with random weights (the
    architecture's cost is the same with trained ones)."""
    import torch

    from core.encoder import Encoder
    from core.model import load_model

    device = torch.device("cpu")
    encoder = Encoder(load_model(config.model, device), device, config.runtime.precision)
    size = config.model.image_size
    pixels = torch.zeros((images, 3, size, size), dtype=torch.uint8)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        encoder.encode_query(pixels) if images == 1 else encoder.encode(pixels)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def run_scale(
    photos: int,
    workdir: Path,
    queries: int = 50,
    seed: int = 0,
    one_by_one: bool = False,
    forward: bool = True,
    unverified: bool = False,
    query_scales: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Fill, index and query; return the latency report (see :func:`print_report`). ``one_by_one`` and
    ``unverified`` also time the per-candidate re-ranking and the batched one without the spatial
    verification (:mod:`search.region_verify`); ``query_scales`` the batched one with the query's extra
    views (:mod:`search.region_scales`; synthetic: the query's grid with the box enlarged about its centre)."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config = with_overrides(synthetic_config(workdir / "data"), {"model.image_size": 512})
    grid = config.patches.grid
    built = build_collection(config, photos, grid, seed)
    rng = np.random.default_rng(seed + 1)
    sizes = built.catalog.photos(range(1, photos + 1))
    chosen = rng.choice(photos, size=min(queries, photos), replace=False)
    modes = [("batched", False, True, False)] + ([("one by one", True, True, False)] if one_by_one else [])
    modes += [("batched, unverified", False, False, False)] if unverified else []
    modes += [("batched, query scales", False, True, True)] if query_scales else []
    report: dict[str, Any] = {
        "photos": photos,
        "cells": photos * grid * grid,
        "patch_index": built.index_kind,
        "nprobe": config.patches.index.nprobe,
        "candidates": config.patches.candidates,
        "fill_s": round(built.fill_s, 1),
        "index_s": round(built.index_s, 1),
        "queries": len(chosen),
        "modes": {},
    }
    asked: list[tuple[int, Vectors, tuple[int, int], Box]] = []
    for photo in chosen.tolist():
        record = sizes[photo + 1]
        noise = QUERY_NOISE * _unit(rng.normal(size=(grid * grid, DIM)))
        query_grid = _unit(built.prototypes[built.photo_cells[photo]] + noise).reshape(grid, grid, DIM)
        side = min(record.width, record.height)
        width = int(side * rng.uniform(0.3, 0.45))
        height = int(width * rng.uniform(0.75, 1.33))
        x0 = int(rng.integers(0, record.width - width + 1))
        y0 = int(rng.integers(0, max(1, record.height - height + 1)))
        asked.append((photo + 1, query_grid, (record.width, record.height), (x0, y0, x0 + width, y0 + height)))
    latencies: dict[str, list[float]] = {name: [] for name, *_ in modes}
    stages: dict[str, dict[str, float]] = {name: {} for name, *_ in modes}
    found: dict[str, list[tuple[bool, bool]]] = {name: [] for name, *_ in modes}
    for _, slow, verify, _ in modes:  # warm-up (caches, the database's pages of the first query), not counted
        match_region(
            built.catalog, built.patch_index, config.patches, *asked[0][1:], 10, one_by_one=slow, verify=verify
        )
    for number, (photo_id, query_grid, query_size, box) in enumerate(asked):
        views = [_enlarged(query_grid, query_size, box, scale) for scale in query_scales]
        # The modes take turns going first: the machine's load changes between one query and the next.
        for name, slow, verify, scaled in modes if number % 2 == 0 else modes[::-1]:
            started = time.perf_counter()
            result = match_region(
                built.catalog,
                built.patch_index,
                config.patches,
                query_grid,
                query_size,
                box,
                10,
                stages[name],
                one_by_one=slow,
                verify=verify,
                views=views if scaled else (),
            )
            latencies[name].append(time.perf_counter() - started)
            ids = [match.id for match in result.matches]
            found[name].append((bool(ids) and ids[0] == photo_id, photo_id in ids))
    for name, *_ in modes:
        report["modes"][name] = {
            "median_ms": round(1000 * float(np.median(latencies[name])), 1),
            "p95_ms": round(1000 * float(np.percentile(latencies[name], 95)), 1),
            "candidates_per_s": round(config.patches.candidates * len(asked) / sum(latencies[name])),
            "found_top1": float(np.mean([top1 for top1, _ in found[name]])),
            "found_top10": float(np.mean([top10 for _, top10 in found[name]])),
            "stage_ms": {stage: round(1000 * seconds / len(asked), 1) for stage, seconds in stages[name].items()},
        }
    built.catalog.close()
    report["forward_pass_ms"] = round(1000 * forward_pass_seconds(config)) if forward else None
    if forward and query_scales:
        report["forward_pass_with_views_ms"] = round(1000 * forward_pass_seconds(config, images=1 + len(query_scales)))
    return report


def _enlarged(grid: Vectors, size: tuple[int, int], box: Box, scale: float) -> EncodedView:
    """A stand-in for the query's view at ``scale``: the same grid, the box enlarged about its centre
    (as many cells as the real view's box covers, which is what the re-ranking's cost depends on)."""
    width, height = size
    half_w, half_h = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
    cx = min(max((box[0] + box[2]) / 2, half_w), width - half_w)
    cy = min(max((box[1] + box[3]) / 2, half_h), height - half_h)
    return EncodedView(
        grid, (max(0, round(cx - half_w)), max(0, round(cy - half_h)), round(cx + half_w), round(cy + half_h)), size
    )


def print_report(report: dict[str, Any]) -> None:
    print(
        f"region scale: {report['photos']} photos ({report['cells']} cells), patch index {report['patch_index']} "
        f"nprobe {report['nprobe']}, {report['candidates']} candidates; catalog filled in {report['fill_s']} s, "
        f"index in {report['index_s']} s; {report['queries']} queries"
    )
    print(
        f"{'re-ranking':<22} {'median ms':>9} {'p95 ms':>7} {'cand/s':>7} {'top1':>5} {'top10':>5}  stages (ms/query)"
    )
    for name, row in report["modes"].items():
        stages = ", ".join(f"{stage} {ms}" for stage, ms in row["stage_ms"].items())
        print(
            f"{name:<22} {row['median_ms']:>9} {row['p95_ms']:>7} {row['candidates_per_s']:>7} "
            f"{row['found_top1']:>5.2f} {row['found_top10']:>5.2f}  {stages}"
        )
    if report["forward_pass_ms"] is not None:
        print(f"not included: the query's own forward pass at 512 px, {report['forward_pass_ms']} ms")
    if "forward_pass_with_views_ms" in report:
        print(f"  and with its extra views in the same batch, {report['forward_pass_with_views_ms']} ms")
