"""Building an index from a :class:`~core.index.source.VectorSource`: training on a seeded sample, then
adding every vector, in RAM. :mod:`core.index.ondisk` builds the indexes whose lists live on disk."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import numpy.typing as npt

from core.config import IndexConfig
from core.index.policy import IndexSpec, set_nprobe
from core.index.source import VectorSource

logger = logging.getLogger(__name__)

TRAIN_SEED = 1234
SCALAR_TRAIN_POINTS = 20_000


def _train(index: faiss.Index, training: npt.NDArray[np.float32], use_gpu: bool) -> None:
    if use_gpu and faiss.get_num_gpus() > 0:
        # k-means on the GPU: faiss trains IVF coarse quantizers with whatever index is set here.
        ivf = faiss.extract_index_ivf(index)
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        logger.info("training %d lists on %d GPU(s)", ivf.nlist, faiss.get_num_gpus())
    index.train(training)
    if use_gpu and faiss.get_num_gpus() > 0:
        # Drop the GPU index so the trained CPU index holds no GPU resources.
        faiss.extract_index_ivf(index).clustering_index = None  # type: ignore[assignment]


def trained_index(source: VectorSource, config: IndexConfig, spec: IndexSpec) -> tuple[faiss.Index, int]:
    """An empty index of the given shape, trained on a seeded sample of ``source`` where the shape needs
    training (IVF, and scalar-quantised codes), and the number of vectors it was trained on."""
    index = faiss.index_factory(source.dim, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
    trained_on = 0
    if not index.is_trained:
        ids, _ = source.item_ids()
        rng = np.random.default_rng(TRAIN_SEED)
        # k-means (IVF, PQ) wants up to max_train_points, and never fewer than min_points_per_list per
        # list (faiss warns below 39: 40,000 lists at 100 M photos train on 1.56 M vectors, 2.4 GB).
        # A scalar quantiser only learns each dimension's range, which a small sample gives as well,
        # without holding 300 MB of training vectors.
        if spec.is_ivf:
            wanted = max(config.max_train_points, config.min_points_per_list * spec.nlist)
        else:
            wanted = min(config.max_train_points, SCALAR_TRAIN_POINTS)
        items = min(len(ids), max(1, wanted // source.vectors_per_item))
        sample = np.sort(rng.choice(ids, size=items, replace=False))
        training = np.concatenate([vectors for _, vectors in source.vectors_for(sample)])
        _train(index, training, config.use_gpu and spec.is_ivf)
        trained_on = len(training)
    return index, trained_on


def build_index(source: VectorSource, config: IndexConfig, spec: IndexSpec) -> tuple[faiss.Index, int]:
    """A new in-RAM index of the given shape holding every vector of ``source``; also returns the number
    of vectors it was trained on."""
    index, trained_on = trained_index(source, config, spec)
    for ids, vectors in source.iter_vectors():
        index.add_with_ids(vectors, ids)
    set_nprobe(index, config.nprobe)
    return index, trained_on
