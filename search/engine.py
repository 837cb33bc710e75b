"""The search engine: open a data dir once, answer many queries.

It reads the catalog and the FAISS files, and encodes query images with the same decoding,
preprocessing, model, weights and image size as the index was built with (read from the catalog's
provenance; :mod:`search.query_encoding`). The model loads lazily: queries by id, path or vector never
need it. It is thread-safe
(Streamlit serves sessions from threads) and follows the catalog: a query after a build committed more
photos sees them, even before the build wrote its FAISS files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np
import numpy.typing as npt
from PIL import Image

from core.catalog import Catalog, PhotoRecord, Provenance
from core.catalog.calibrations import Calibration, current_calibration
from core.catalog.decisions import Decisions, load_decisions
from core.config import LoupeConfig
from core.decode import DecodeLimits
from core.errors import LoupeError
from core.index.files import IndexMeta, index_dir, read_meta
from core.index.source import PatchVectors
from core.index.sync import current_index
from search.query_encoding import DecodedQuery, QueryEncoder, QueryError, QueryImage, Vector

logger = logging.getLogger(__name__)

MatchLabel = Literal["exact", "near-duplicate", "similar"]
# How a result was matched (search.robust): the query as it is, mirrored or flipped, rotated, or by its
# patch grid placed inside the photo's (a crop) or the photo's inside it (a border).
MatchKind = Literal["global", "flipped", "rotated", "local"]
Box = tuple[int, int, int, int]


GPU_SEARCH_MIN_VECTORS = 100_000


@dataclass(frozen=True)
class SearchResult:
    """One neighbour of a query."""

    rank: int
    id: int
    path: str
    score: float
    label: MatchLabel
    width: int
    height: int
    sha256: str
    match: MatchKind = "global"
    # For a local match: where the query lies in this photo, in its pixels (after EXIF orientation).
    box: Box | None = None
    # What the photo's header says (None where it does not, or was not read yet).
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    file_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["box"] = None if self.box is None else list(self.box)
        data["capture_time"] = None if self.capture_time is None else self.capture_time.isoformat()
        return data


class NearDuplicateThreshold(NamedTuple):
    """The near-duplicate threshold in use, and the calibration it comes from (None: the config's
    ``search.near_duplicate_threshold``, uncalibrated)."""

    threshold: float
    calibration: Calibration | None


def match_label(score: float, same_content: bool, near_duplicate_threshold: float) -> MatchLabel:
    """``exact`` for the same bytes, ``near-duplicate`` at or above the threshold, else ``similar``."""
    if same_content:
        return "exact"
    if score >= near_duplicate_threshold:
        return "near-duplicate"
    return "similar"


def folder_prefix(folder: str, sep: str = os.sep) -> str:
    """What the catalog paths of photos below ``folder`` (resolved, as this OS writes it) start with:
    the folder and one separator (``/photos/`` on POSIX, ``C:\\Photos\\`` on Windows, ``C:\\`` for a drive)."""
    return folder.rstrip(sep) + sep


class SearchEngine:
    """Nearest-neighbour queries over one collection. Create with :meth:`open`."""

    def __init__(self, config: LoupeConfig, catalog: Catalog, provenance: Provenance) -> None:
        self.config = config
        self.catalog = catalog
        self.provenance = provenance
        self._lock = threading.RLock()
        self._index: faiss.Index | None = None
        self._meta: IndexMeta | None = None
        self._seen_revision = -1  # the catalog revision when the index was last (re)loaded
        self._patch_index: faiss.Index | None = None
        # Query images (uploads, files on the command line) have their own, tighter bounds; indexed photos
        # are read back (thumbnails, full-size views) under the limits they were indexed with.
        self.query_limits = DecodeLimits(
            max_pixels=min(config.decode.max_pixels, config.search.max_query_pixels),
            max_file_bytes=config.search.max_query_bytes,
        )
        self.photo_limits = DecodeLimits.of(config.decode)
        self.queries = QueryEncoder(config, provenance, self.query_limits)

    @classmethod
    def open(cls, config: LoupeConfig) -> SearchEngine:
        """Open the collection of ``config`` (catalog and index; the model loads on first image query)."""
        catalog = Catalog.open(config.resolved_db_url, create=False)
        provenance = catalog.provenance()
        if provenance is None:
            catalog.close()
            raise QueryError(f"no index in {config.data_dir}: build one with `python -m indexer build PHOTOS`")
        engine = cls(config, catalog, provenance)
        engine._refresh()
        return engine

    def close(self) -> None:
        self.catalog.close()

    # State ---------------------------------------------------------------------------------------

    @property
    def random_weights(self) -> bool:
        return self.provenance.weights_kind == "random"

    @property
    def dim(self) -> int:
        return self.provenance.dim

    @property
    def patch_grid(self) -> int:
        """Cells per side of the stored patch grids; 0 when the index was built without patches."""
        return self.provenance.patch_grid

    def patch_index(self) -> faiss.Index:
        """The patch index as of the catalog's last commit."""
        if not self.patch_grid:
            raise QueryError("this index was built with --no-patches: region search needs patch vectors")
        with self._lock:
            self.current()
            if self._patch_index is None:
                source = PatchVectors(self.catalog, self.dim, self.patch_grid)
                self._patch_index, _ = current_index(
                    self.catalog, self.config.data_dir, self.config.patches.index, source
                )
            return self._patch_index

    def _refresh(self) -> None:
        self._patch_index = None  # reloaded on the next region query
        self._seen_revision = self.catalog.revision()
        index, meta = current_index(self.catalog, self.config.data_dir, self.config.index)
        gpu = self.config.index.use_gpu and index.ntotal >= GPU_SEARCH_MIN_VECTORS and faiss.get_num_gpus() > 0
        # Large collections search (and group duplicates) on the GPU; small ones are faster on the CPU.
        # On-disk lists stay memory-mapped: copying them to the GPU would need the memory they avoid.
        if gpu and not meta.on_disk:
            index = faiss.index_cpu_to_all_gpus(index)
        self._index, self._meta = index, meta

    def _pointer_moved(self) -> bool:
        """Whether a build published another index file than the one loaded."""
        try:
            written = read_meta(index_dir(self.config.data_dir))
        except LoupeError:
            return False
        return written is not None and self._meta is not None and written.file != self._meta.file

    def current(self) -> tuple[faiss.Index, IndexMeta]:
        """The index as of the catalog's last commit (reloaded when a build committed since). An on-disk
        index is not caught up in memory: until the build publishes the next one, the last one serves
        (results whose photos left the catalog are dropped), and the pointer file is checked per query."""
        with self._lock:
            revision = self.catalog.revision()
            if (
                self._meta is None
                or revision != self._seen_revision
                or (self._meta.revision != revision and self._pointer_moved())
            ):
                self._refresh()
            assert self._index is not None and self._meta is not None
            return self._index, self._meta

    @property
    def ntotal(self) -> int:
        return int(self.current()[0].ntotal)

    def near_duplicate_threshold(self) -> NearDuplicateThreshold:
        """The default near-duplicate threshold of labels, ``duplicates`` and the UI: the collection's
        calibration for its weights and image size when it has one, else the configured threshold."""
        calibration = current_calibration(self.catalog, self.provenance)
        if calibration is None:
            return NearDuplicateThreshold(self.config.search.near_duplicate_threshold, None)
        return NearDuplicateThreshold(calibration.threshold, calibration)

    # Encoding (search.query_encoding) ----------------------------------------------------------

    def load_model(self) -> None:
        """Load the model now instead of on the first image query (for long-lived servers)."""
        self.queries.encoder()

    def batch_size(self) -> int:
        """Photos per forward pass for batched queries (``runtime.batch_size``, 0 = automatic)."""
        return self.queries.batch_size()

    def decode_workers(self) -> int:
        """Decode worker processes for batched queries (``runtime.workers``, -1 = automatic)."""
        return self.queries.decode_workers()

    def encode_pixels(self, pixels: Any) -> Vector:
        """Embed a ``[B, 3, S, S]`` uint8 batch (from :func:`core.preprocess.model_pixels`)."""
        return self.queries.encode_pixels(pixels)

    def encode_model_pixels(self, pixels: Any) -> tuple[Vector, npt.NDArray[np.float32] | None]:
        """Unit vectors and pooled patch grids of a uint8 batch (:meth:`QueryEncoder.encode_model_pixels`)."""
        return self.queries.encode_model_pixels(pixels)

    def encode_image(self, image: Image.Image, sha256: str | None = None) -> QueryImage:
        """Encode an RGB-convertible PIL image with the indexer's preprocessing and model."""
        return self.queries.encode_image(image, sha256)

    def decode_query(self, image: Image.Image | bytes | Path) -> DecodedQuery:
        """A query given as a file path, bytes or a PIL image, decoded under the query limits."""
        return self.queries.decode_query(image)

    def encode_bytes(self, data: bytes) -> QueryImage:
        """Decode (EXIF orientation, colour modes, limits) and encode image bytes."""
        return self.queries.encode_query(data)

    def encode_file(self, path: Path) -> QueryImage:
        return self.queries.encode_query(path)

    def encode_query(self, image: Image.Image | bytes | Path) -> QueryImage:
        """Encode a query given as a file path, bytes or a PIL image."""
        return self.queries.encode_query(image)

    # Queries -------------------------------------------------------------------------------------

    def search_vector(
        self,
        vector: Vector,
        k: int | None = None,
        *,
        min_score: float | None = None,
        under: str | Path | None = None,
        exclude_ids: Sequence[int] = (),
        query_sha256: str | None = None,
        query_path: str | None = None,
    ) -> list[SearchResult]:
        """The ``k`` nearest photos to a vector, best first, after the filters.

        ``under`` keeps photos below a folder; ``min_score`` drops weaker matches; ``exclude_ids`` drops
        given photos. Filters never cost results: the search goes deeper until ``k`` pass or none are left.
        Equal scores (exact copies) rank the query's own file (``query_path``) first, then by id.
        """
        k = k or self.config.search.default_k
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise QueryError(f"query vector has {query.shape[1]} values, the index has {self.dim}")
        if not np.all(np.isfinite(query)):
            raise QueryError("query vector has NaN or infinite values")
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            raise QueryError("query vector is all zeros")
        query = query / norm
        prefix = None if under is None else folder_prefix(str(Path(under).expanduser().resolve()))
        excluded = set(int(i) for i in exclude_ids)
        index, meta = self.current()
        total = int(index.ntotal)
        compressed = meta.kind == "ivf_pq" or meta.codec != "Flat"
        rescore = self.config.search.rescore_candidates if compressed else 0
        fetch = k + len(excluded)
        kept: list[tuple[PhotoRecord, float]] = []
        while True:
            fetch = min(fetch, total)
            if fetch == 0:
                break
            # faiss searches are safe to run concurrently
            scores, ids = index.search(query, min(max(fetch, rescore), total))
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            if rescore:
                found = self._exact_scores(query[0], found)
            photos = self.catalog.photos(i for i, _ in found)
            kept = [
                (photos[i], score)
                for i, score in found
                if i in photos
                and i not in excluded
                and (min_score is None or score >= min_score)
                and (prefix is None or photos[i].path.startswith(prefix))
            ]
            weakest = found[-1][1] if found else -1.0
            if len(kept) >= k or fetch >= total or (min_score is not None and weakest < min_score):
                break
            fetch *= 4
        kept.sort(key=lambda item: (-round(item[1], 5), item[0].path != query_path, item[0].id))
        threshold = self.near_duplicate_threshold().threshold
        return [
            SearchResult(
                rank=rank,
                id=photo.id,
                path=photo.path,
                score=score,
                label=match_label(score, query_sha256 is not None and photo.sha256 == query_sha256, threshold),
                width=photo.width,
                height=photo.height,
                sha256=photo.sha256,
                capture_time=photo.capture_time,
                camera_make=photo.camera_make,
                camera_model=photo.camera_model,
                file_format=photo.file_format,
            )
            for rank, (photo, score) in enumerate(kept[:k], start=1)
        ]

    def _exact_scores(self, query: Vector, found: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Candidates from compressed codes re-scored with the catalog's exact vectors, best first."""
        stored = self.catalog.stored_embeddings([id_ for id_, _ in found], self.dim)
        rescored = [(id_, float(np.dot(stored[id_], query))) for id_, _ in found if id_ in stored]
        rescored.sort(key=lambda item: -item[1])
        return rescored

    def search_image(
        self, image: Image.Image | bytes | Path, k: int | None = None, **filters: Any
    ) -> list[SearchResult]:
        """Neighbours of an image given as a file path, bytes or a PIL image."""
        query = self.encode_query(image)
        query_path = str(image.expanduser().resolve()) if isinstance(image, Path) else None
        return self.search_vector(query.vector, k, query_sha256=query.sha256, query_path=query_path, **filters)

    # The collection's photos, for callers above search (the UI) that must not reach into the catalog.

    def photos(self, ids: Iterable[int]) -> dict[int, PhotoRecord]:
        """Indexed photos by id (ids that are not indexed photos are left out)."""
        return self.catalog.photos(ids)

    def find_photos(self, name_contains: str, limit: int = 50) -> list[PhotoRecord]:
        """Indexed photos whose path contains ``name_contains`` (case-insensitive), by path."""
        return self.catalog.find_photos(name_contains, limit=limit)

    def photo_ids(self) -> list[int]:
        """The ids of every indexed photo, sorted."""
        return [int(i) for i in self.catalog.indexed_ids()[0]]

    def revision(self) -> int:
        """The catalog's revision: it changes with every build, reindex, apply or undo."""
        return self.catalog.revision()

    def decisions(self) -> Decisions:
        """The curator's decisions in force: dismissed pairs and pinned keepers."""
        return load_decisions(self.catalog)

    def photo(self, id_or_path: int | str | Path) -> PhotoRecord:
        """An indexed photo by catalog id or by path (resolved like the indexer stores it)."""
        if isinstance(id_or_path, int) or (isinstance(id_or_path, str) and id_or_path.isdigit()):
            found = self.catalog.photos([int(id_or_path)])
            if not found:
                raise QueryError(f"no indexed photo has id {id_or_path}")
            return next(iter(found.values()))
        path = str(Path(id_or_path).expanduser().resolve())
        photo = self.catalog.photo_by_path(path)
        if photo is None:
            raise QueryError(f"{path} is not an indexed photo of this collection")
        return photo

    def search_similar(
        self, id_or_path: int | str | Path, k: int | None = None, *, include_self: bool = False, **filters: Any
    ) -> list[SearchResult]:
        """ "More like this": neighbours of an indexed photo, from its stored embedding (no model needed)."""
        photo = self.photo(id_or_path)
        vector = self.catalog.embedding(photo.id, self.dim)
        if vector is None:  # pragma: no cover - photo() only returns indexed rows
            raise QueryError(f"photo {photo.id} has no stored embedding")
        exclude = list(filters.pop("exclude_ids", ()))
        if not include_self:
            exclude.append(photo.id)
        return self.search_vector(
            vector, k, exclude_ids=exclude, query_sha256=photo.sha256, query_path=photo.path, **filters
        )
