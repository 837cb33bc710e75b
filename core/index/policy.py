"""Index policy: THE place where the index choice is made. Change which FAISS index a collection gets here.

:func:`choose_index_spec` is a pure function of the collection size (and the vectors' dimension): exact
search below ``exact_below`` vectors, IVF with about ``lists_per_sqrt * sqrt(N)`` lists beyond,
product-quantised codes (IVF-PQ) from ``compress_above`` on, the IVF's lists on disk from ``on_disk_above``
on (the autofaiss rule of thumb). :class:`IndexSpec` turns a choice into a FAISS factory string,
:func:`needs_rebuild` says when a trained index no longer suits the collection, and :func:`set_nprobe` sets
the lists visited per query explicitly. The numbers come from :class:`core.config.IndexConfig`: the global
index's and the patch index's (whose exact codec is RaBitQ and whose compressed codes are IVF-PQ) are
defaults there, and both go through the same choice here. :mod:`core.index.tuning` raises ``nprobe``
above the configured floor when recall needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import faiss

from core.config import IndexConfig

IndexKind = Literal["flat", "ivf_flat", "ivf_pq"]


@dataclass(frozen=True)
class IndexSpec:
    """The shape of a FAISS index: exact, IVF over full vectors, or IVF over product-quantised codes."""

    kind: IndexKind
    nlist: int = 0
    pq_bytes: int = 0
    codec: str = "Flat"
    # Inverted lists in a memory-mapped file rather than in RAM (IVF only).
    on_disk: bool = False

    @property
    def factory_string(self) -> str:
        if self.kind == "flat":
            return f"IDMap2,{self.codec}"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        # "np": no polysemous training, which only serves Hamming-filtered search and costs minutes.
        return f"IVF{self.nlist},PQ{self.pq_bytes}np"

    @property
    def is_ivf(self) -> bool:
        return self.kind != "flat"


def _largest_divisor_at_most(dim: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(dim, limit)) + 1) if dim % d == 0)


def choose_index_spec(n_vectors: int, dim: int, config: IndexConfig) -> IndexSpec:
    """Pick the index for a collection of ``n_vectors`` (the autofaiss rule of thumb).

    Exact search below ``exact_below``; IVF with about ``lists_per_sqrt * sqrt(N)`` lists beyond, never so
    many that a list gets fewer than ``min_points_per_list`` training points (k-means needs them);
    product-quantised codes from ``compress_above`` on, where full vectors would crowd out RAM; the IVF's
    lists on disk from ``on_disk_above`` on (0: never), where even the codes would.
    """
    if n_vectors < max(config.exact_below, 2 * config.min_points_per_list):
        return IndexSpec(kind="flat", codec=config.exact_codec)
    ideal = round(config.lists_per_sqrt * math.sqrt(n_vectors))
    nlist = max(1, min(ideal, n_vectors // config.min_points_per_list))
    on_disk = 0 < config.on_disk_above <= n_vectors
    if n_vectors >= config.compress_above:
        pq_bytes = _largest_divisor_at_most(dim, config.pq_bytes)
        return IndexSpec(kind="ivf_pq", nlist=nlist, pq_bytes=pq_bytes, on_disk=on_disk)
    return IndexSpec(kind="ivf_flat", nlist=nlist, on_disk=on_disk)


def needs_rebuild(current: IndexSpec, desired: IndexSpec, growth: float) -> bool:
    """Whether the trained index no longer suits the collection (other kind or storage, or lists off by
    ``growth``)."""
    if (current.kind, current.pq_bytes, current.codec, current.on_disk) != (
        desired.kind,
        desired.pq_bytes,
        desired.codec,
        desired.on_disk,
    ):
        return True
    if not current.is_ivf:
        return False
    return desired.nlist >= growth * current.nlist or desired.nlist * growth <= current.nlist


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Set the lists visited per query (a no-op for exact indexes)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = min(nprobe, ivf.nlist)
