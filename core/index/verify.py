"""Verifying the index files against the catalog (``loupe verify``): every way they disagree."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from core.catalog import Catalog
from core.errors import IndexFileError
from core.index.files import Ids, IndexMeta, index_dir, index_ids, load_index
from core.index.source import GlobalVectors, VectorSource


def check_index(catalog: Catalog, data_dir: Path, sample: int = 200, source: VectorSource | None = None) -> list[str]:
    """Every way the FAISS files disagree with the catalog (empty when they agree)."""
    provenance = catalog.provenance()
    if provenance is None:
        return ["the catalog has no provenance: no index was ever built here"]
    if source is None:
        source = GlobalVectors(catalog, provenance.dim)
    name = source.name
    directory = index_dir(data_dir)
    try:
        loaded = load_index(directory, name=name)
    except IndexFileError as error:
        return [str(error)]
    if loaded is None:
        return [f"no {name} index files in {directory}: run `python -m indexer reindex`"]
    index, meta = loaded.index, loaded.meta
    problems: list[str] = []
    if meta.catalog_id != provenance.catalog_id:
        problems.append(f"{name} index belongs to catalog {meta.catalog_id}, not {provenance.catalog_id}")
    if meta.dim != source.dim or index.d != source.dim:
        problems.append(f"{name} index has dimension {index.d}, catalog vectors have {source.dim}")
        return problems
    revision = catalog.revision()
    if meta.revision != revision:
        problems.append(f"{name} index reflects catalog revision {meta.revision}, catalog is at {revision}")
    items, _ = source.item_ids()
    expected = source.vector_ids_of(items)
    present = index_ids(index)
    unique, counts = np.unique(present, return_counts=True)
    if (counts > 1).any():
        first_repeat = int(unique[counts > 1][0])
        problems.append(
            f"{int((counts > 1).sum())} ids stored more than once in the {name} index (first: {first_repeat})"
        )
    missing = np.setdiff1d(expected, unique)
    extra = np.setdiff1d(unique, expected)
    if len(missing):
        first = int(source.items_of(missing[:1])[0])
        problems.append(
            f"{len(missing)} vectors of indexed photos missing from the {name} index (first photo id: {first})"
        )
    if len(extra):
        first = int(source.items_of(extra[:1])[0])
        problems.append(
            f"{len(extra)} {name} index vectors with no indexed photo in the catalog (first photo id: {first})"
        )
    if index.ntotal != len(expected):
        problems.append(f"{name} index holds {index.ntotal} vectors, the catalog has {len(expected)}")
    # Only photos with every vector present: reconstructing a missing one would raise, not report.
    present_items = np.setdiff1d(np.intersect1d(items, np.unique(source.items_of(unique))), source.items_of(missing))
    problems.extend(_check_vectors(source, index, meta, present_items, sample))
    return problems


def _check_vectors(source: VectorSource, index: faiss.Index, meta: IndexMeta, items: Ids, sample: int) -> list[str]:
    """Compare the stored vectors of a seeded sample of photos with the catalog's."""
    if len(items) == 0:
        return []
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(items, size=min(max(1, sample // source.vectors_per_item), len(items)), replace=False))
    if meta.kind != "flat":
        # reconstruct() by id needs a direct map; a hashtable one takes arbitrary (catalog) ids.
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    # Compressed codes only approximate a vector; full vectors must match to rounding.
    threshold = 0.9999 if meta.codec == "Flat" and meta.kind != "ivf_pq" else 0.8
    bad: list[int] = []
    for chunk_ids, vectors in source.vectors_for(picked):
        for vector_id, vector in zip(chunk_ids, vectors, strict=True):
            if float(np.dot(index.reconstruct(int(vector_id)), vector)) < threshold:
                bad.append(int(vector_id))
    if bad:
        first = int(source.items_of(np.asarray(bad[:1]))[0])
        return [f"{len(bad)} sampled {source.name} index vectors differ from the catalog's (first photo id: {first})"]
    return []
