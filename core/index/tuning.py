"""Recall tuning: measure recall@10 against exact search and pick the smallest ``nprobe`` that reaches
the target (the configured ``nprobe`` is the floor it starts from)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import faiss
import numpy as np
import numpy.typing as npt

from core.index.build import TRAIN_SEED
from core.index.files import Ids, IndexMeta
from core.index.source import VectorSource

logger = logging.getLogger(__name__)

RECALL_QUERIES = 500
RECALL_K = 10
# Stop doubling nprobe of an IVF-PQ index when recall@10 gains less than this.
RECALL_PLATEAU = 0.005


def exact_top_k(source: VectorSource, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], Ids]:
    """Exact inner-product top-k over every vector of ``source``, streamed in chunks (on GPUs when present)."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    chunk_ids: list[Ids] = []

    def blocks() -> Iterator[npt.NDArray[np.float32]]:
        for ids, vectors in source.iter_vectors():
            chunk_ids.append(ids)
            yield vectors

    scores, positions = knn_ground_truth(queries, blocks(), k, metric_type=faiss.METRIC_INNER_PRODUCT)
    all_ids = np.concatenate(chunk_ids) if chunk_ids else np.empty(0, dtype=np.int64)
    return scores, np.where(positions >= 0, all_ids[np.clip(positions, 0, None)], -1)


def recall_at_k(
    index: faiss.Index,
    queries: npt.NDArray[np.float32],
    exact_scores: npt.NDArray[np.float32],
    exact_ids: Ids | None = None,
) -> float:
    """Share of the exact top-k that ``index`` returns. Ties count: exact copies have equal scores, and
    any of them is a right answer, so a result counts when it scores at least the exact k-th score.
    Compressed codes only approximate the scores (often above the exact ones), so they cannot vouch for a
    tie: with ``exact_ids`` given, a result counts only when it is one of the exact top k."""
    k = exact_scores.shape[1]
    scores, ids = index.search(queries, k)
    if exact_ids is not None:
        hits = sum(len(set(found.tolist()) & set(truth.tolist())) for found, truth in zip(ids, exact_ids, strict=True))
        return hits / exact_scores.size
    kth = exact_scores[:, -1:] - 1e-5
    return float(np.minimum((scores >= kth).sum(axis=1), k).sum() / exact_scores.size)


@dataclass(frozen=True)
class RecallSample:
    """Seeded queries drawn from the collection and their exact top-``RECALL_K`` (scores and ids)."""

    queries: npt.NDArray[np.float32]
    exact_scores: npt.NDArray[np.float32]
    exact_ids: Ids


def recall_sample(source: VectorSource) -> RecallSample:
    """``RECALL_QUERIES`` seeded vectors of the collection and their exact top-k, which tuning measures on."""
    ids, _ = source.item_ids()
    rng = np.random.default_rng(TRAIN_SEED + 1)
    items = np.sort(rng.choice(ids, size=min(len(ids), RECALL_QUERIES), replace=False))
    candidates = np.concatenate([vectors for _, vectors in source.vectors_for(items)])
    queries = candidates[np.sort(rng.choice(len(candidates), size=min(RECALL_QUERIES, len(candidates)), replace=False))]
    exact_scores, exact_ids = exact_top_k(source, queries, RECALL_K)
    return RecallSample(queries, exact_scores, exact_ids)


def tune_nprobe(
    index: faiss.Index, meta: IndexMeta, source: VectorSource, target: float, margin: float = 0.0
) -> IndexMeta:
    """Measure recall@10 on a seeded sample of the collection against exact search and, for IVF, find
    the smallest nprobe at or above the configured floor whose recall reaches ``target + margin`` (the
    margin covers the sample's error): double from the floor until it does (or every list is visited, or,
    for product-quantised codes, another doubling gains less than ``RECALL_PLATEAU``), then bisect the
    last doubling (recall never falls as more lists are visited).
    Exact indexes of full vectors have recall 1 by construction; compressed ones are measured too."""
    ntotal = int(index.ntotal)
    if ntotal <= RECALL_K or (meta.kind == "flat" and meta.codec == "Flat"):
        return replace(meta, recall_at_10=1.0, recall_ntotal=ntotal)
    sample = recall_sample(source)
    compressed = meta.kind == "ivf_pq" or meta.codec != "Flat"

    def recall_now() -> float:
        return recall_at_k(index, sample.queries, sample.exact_scores, sample.exact_ids if compressed else None)

    if meta.kind == "flat":
        recall = recall_now()
        return replace(meta, recall_at_10=round(recall, 4), recall_ntotal=ntotal)
    ivf = faiss.extract_index_ivf(index)
    required = min(1.0, target + margin)
    measured: dict[int, float] = {}

    def recall_at(nprobe: int) -> float:
        if nprobe not in measured:
            ivf.nprobe = nprobe
            measured[nprobe] = recall_now()
        return measured[nprobe]

    nprobe = min(max(meta.nprobe_floor, 1), ivf.nlist)
    previous = 0
    while True:
        recall = recall_at(nprobe)
        if meta.kind == "ivf_pq" and previous and recall < measured[previous] + RECALL_PLATEAU:
            # Visiting more lists no longer helps: the product codes limit recall, and doubling on to
            # every list would make each query a scan of the whole collection.
            nprobe = previous
            break
        if recall >= required:
            failing = previous  # 0: the floor itself is enough
            while nprobe - failing > 1 and failing:
                middle = (failing + nprobe) // 2
                failing, nprobe = (failing, middle) if recall_at(middle) >= required else (middle, nprobe)
            break
        if nprobe >= ivf.nlist:
            break
        previous, nprobe = nprobe, min(ivf.nlist, nprobe * 2)
    ivf.nprobe = nprobe
    recall = measured[nprobe]
    logger.info(
        "%s index: recall@10 %.3f at nprobe %d of %d lists (wanted %.3f)",
        source.name,
        recall,
        nprobe,
        ivf.nlist,
        required,
    )
    return replace(meta, nprobe=nprobe, recall_at_10=round(recall, 4), recall_ntotal=ntotal)
