"""The settings tree: one frozen dataclass per section, each field with its default and its check.

Every field is documented in ``config.yaml`` at the project root. A field's ``check`` (in its
``metadata``) says what is wrong with a value; :mod:`core.config.loading` runs it on every value read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.locations import user_data_dir, user_models_dir

DEFAULT_CONFIG_FILE = Path("config.yaml")
# Written into the data dir by every build, so readers know the exact settings the index was made with.
RESOLVED_CONFIG_FILE = "config.resolved.yaml"

Check = Callable[[Any], str | None]


def _at_least(minimum: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}"

    return check


def _image_size(value: Any) -> str | None:
    if value < 32 or value % 16 != 0:
        return "must be a multiple of 16 (the model's patch size) and at least 32"
    return None


def _device(value: Any) -> str | None:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is None:
        return "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    return None


def _precision(value: Any) -> str | None:
    if value not in ("auto", "fp32", "bf16", "int8"):
        return "must be auto, fp32, bf16 or int8"
    return None


def _compile(value: Any) -> str | None:
    if value not in ("auto", "always", "never"):
        return "must be auto, always or never"
    return None


def _gpu_jpeg(value: Any) -> str | None:
    if value not in ("auto", "never"):
        return "must be auto or never"
    return None


def _engine(value: Any) -> str | None:
    if value not in ("local", "ray"):
        return "must be local or ray"
    return None


def _weights(value: Any) -> str | None:
    if value == "":
        return "must be 'pretrained', 'random' or the path of a .pt file"
    return None


def _codec(value: Any) -> str | None:
    if value not in ("Flat", "SQfp16", "SQ8", "SQ4", "RaBitQ"):
        return "must be Flat, SQfp16, SQ8, SQ4 or RaBitQ"
    return None


def _checked(default: Any, check: Check) -> Any:
    return field(default=default, metadata={"check": check})


# The metadata of a folder whose default is per user (a default_factory, computed when the config is
# made): ``null`` in a config file means that default.
PER_USER = {"null_is_default": True}


def _glob_patterns(value: Any) -> str | None:
    # Patterns are matched against whole absolute paths: one that starts otherwise could never match.
    for pattern in value:
        if re.match(r"[/*?\[~]|[A-Za-z]:", pattern) is None:
            return (
                f"has {pattern!r}, which can never match: patterns are matched against the whole resolved "
                "path, so start them with '*', '/' or '~' (for example '*/thumbnails/*')"
            )
    return None


@dataclass(frozen=True)
class ModelConfig:
    """Which network embeds the photos, and with which weights."""

    network: str = "rope_i_vit_reg1_s16_pn_npn_avg_c1"
    tag: str = "pe-spatial"
    weights: str = _checked("pretrained", _weights)
    models_dir: Path = field(default_factory=user_models_dir, metadata=PER_USER)
    image_size: int = _checked(512, _image_size)
    random_seed: int = 0


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast the model runs."""

    device: str = _checked("auto", _device)
    precision: str = _checked("auto", _precision)
    min_cosine: float = _checked(0.995, _at_least(0.0))
    batch_size: int = _checked(0, _at_least(0))
    workers: int = _checked(-1, _at_least(-1))
    parallel_images: int = _checked(-1, _at_least(-1))
    compile: str = _checked("auto", _compile)
    gpu_jpeg: str = _checked("auto", _gpu_jpeg)
    engine: str = _checked("local", _engine)
    ray_address: str | None = None
    ray_num_cpus: int = _checked(0, _at_least(0))
    ray_actors: int = _checked(0, _at_least(0))
    ray_actor_cpus: int = _checked(1, _at_least(1))


@dataclass(frozen=True)
class DecodeConfig:
    """Limits that protect the indexer from hostile or broken files."""

    max_pixels: int = _checked(178_956_970, _at_least(1))
    max_file_bytes: int = _checked(1 << 30, _at_least(1))
    follow_symlinks: bool = True


@dataclass(frozen=True)
class IndexConfig:
    """How the FAISS index is shaped from the collection size."""

    exact_below: int = _checked(5_000, _at_least(0))
    compress_above: int = _checked(2_000_000, _at_least(1))
    lists_per_sqrt: float = _checked(4.0, _at_least(0.1))
    min_points_per_list: int = _checked(39, _at_least(1))
    pq_bytes: int = _checked(48, _at_least(1))
    nprobe: int = _checked(1, _at_least(1))
    target_recall: float = _checked(0.95, _at_least(0.0))
    recall_margin: float = _checked(0.02, _at_least(0.0))
    retrain_growth: float = _checked(2.0, _at_least(1.1))
    max_train_points: int = _checked(200_000, _at_least(1))
    use_gpu: bool = True
    exact_codec: str = _checked("Flat", _codec)
    # IVF indexes of at least this many vectors keep their inverted lists in a file that searches
    # memory-map (0 = never): past a few GB of codes, RAM should hold only the quantizer.
    on_disk_above: int = _checked(50_000_000, _at_least(0))


@dataclass(frozen=True)
class ScanConfig:
    """Which files under the roots a build looks at."""

    # Glob patterns (fnmatch) matched against each file's resolved path written with "/"; see config.yaml.
    exclude: tuple[str, ...] = _checked((), _glob_patterns)


@dataclass(frozen=True)
class PatchConfig:
    """Patch-level (region) retrieval: pooled patch grids in a compressed index of their own."""

    enabled: bool = True
    grid: int = _checked(16, _at_least(1))
    candidates: int = _checked(100, _at_least(1))
    cell_neighbours: int = _checked(512, _at_least(1))
    index: IndexConfig = IndexConfig(
        exact_below=50_000, compress_above=50_000, pq_bytes=32, nprobe=16, target_recall=0.8, exact_codec="RaBitQ"
    )


def _unit_interval(value: Any) -> str | None:
    return None if -1.0 <= value <= 1.0 else "must be a cosine similarity between -1 and 1"


VARIANT_NAMES = ("mirror", "flip", "rotate90", "rotate180", "rotate270", "transpose", "transverse")


def _variants(value: Any) -> str | None:
    unknown = [name for name in value if name not in VARIANT_NAMES]
    if unknown:
        return f"has {', '.join(map(repr, unknown))}: the variants are {', '.join(VARIANT_NAMES)}"
    return None


@dataclass(frozen=True)
class RobustConfig:
    """Matching that survives common edits (:mod:`search.robust`), for ``query`` and ``lookup``.

    ``flips_and_rotations``: the query is also encoded mirrored and rotated (the ``variants``, in the same
    forward pass) and each candidate keeps its best score. ``local_verification``: the best
    ``local_candidates`` candidates are re-scored by sliding the query's patch grid over theirs, so a
    crop, a bordered copy or one with a caption still finds its source.
    """

    flips_and_rotations: bool = True
    variants: tuple[str, ...] = _checked(("mirror", "rotate90", "rotate180", "rotate270"), _variants)
    local_verification: bool = True
    local_candidates: int = _checked(50, _at_least(1))


def _precision_target(value: Any) -> str | None:
    return None if 0.5 <= value < 1.0 else "must be a precision at least 0.5 and below 1"


@dataclass(frozen=True)
class CalibrationConfig:
    """How a collection's near-duplicate threshold is calibrated (:mod:`indexer.calibrate`)."""

    # Near-duplicate labels must be right this often (edited copies against their best non-match).
    precision: float = _checked(0.99, _precision_target)
    # Indexed photos edited and searched per calibration (all of them in a smaller collection).
    sample: int = _checked(200, _at_least(1))
    # Edited copies made of each sampled photo, their families taken in turn.
    edits_per_photo: int = _checked(2, _at_least(1))
    seed: int = 0
    # Collections with fewer indexed photos keep near_duplicate_threshold, uncalibrated.
    min_photos: int = _checked(20, _at_least(2))
    # Builds calibrate when the collection has none, has grown or shrunk by growth x since, or the
    # weights changed. false (or build --no-calibrate) = only `loupe calibrate` does.
    on_build: bool = True
    growth: float = _checked(2.0, _at_least(1.1))


# The keeper rules of duplicate groups (search.keeper), in their default order: a photo in a reference
# folder, then the better format (RAW, then lossless, then camera JPEG/HEIF, then web formats), then more
# pixels, then the oldest capture date (EXIF, else the file's mtime), then the larger file, then the
# shorter path.
KEEPER_RULE_NAMES = ("reference", "format", "pixels", "capture_date", "file_size", "path")


def _keeper_rules(value: Any) -> str | None:
    unknown = [name for name in value if name not in KEEPER_RULE_NAMES]
    if unknown:
        return f"has {', '.join(map(repr, unknown))}: the rules are {', '.join(KEEPER_RULE_NAMES)}"
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        return f"names {', '.join(map(repr, repeated))} more than once"
    return None


def _query_scales(value: Any) -> str | None:
    # Views shrunk below 1x lost recall in docs/region-search.md (their few cells match by chance).
    bad = [scale for scale in value if not 1.0 < scale <= 4.0]
    return f"has {bad}: each scale must be above 1 and at most 4" if bad else None


@dataclass(frozen=True)
class SearchConfig:
    """How queries are answered and labelled, and how duplicate groups choose their keeper.

    ``keeper_rules``: the order in which the rules of :mod:`search.keeper` choose a group's keeper (its
    suggested original); ``reference_folders``: photos below these come first under the ``reference`` rule
    (the first folder listed before the next).
    """

    default_k: int = _checked(10, _at_least(1))
    near_duplicate_threshold: float = _checked(0.95, _unit_interval)
    calibration: CalibrationConfig = CalibrationConfig()
    duplicate_neighbours: int = _checked(32, _at_least(1))
    max_query_bytes: int = _checked(64 << 20, _at_least(1))
    max_query_pixels: int = _checked(100_000_000, _at_least(1))
    rescore_candidates: int = _checked(100, _at_least(0))
    robust: RobustConfig = RobustConfig()
    # Region search also encodes the query enlarged around the box at these scales (search/region_scales.py).
    region_query_scales: tuple[float, ...] = _checked((1.189, 1.414, 1.682), _query_scales)
    keeper_rules: tuple[str, ...] = _checked(KEEPER_RULE_NAMES, _keeper_rules)
    # Keepers come from these first, and `duplicates --apply` never acts on their photos (see config.yaml).
    reference_folders: tuple[Path, ...] = ()


def _port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port between 1 and 65535"


@dataclass(frozen=True)
class UIConfig:
    """How ``loupe ui`` serves the browser UI.

    ``allow_remote`` False: the app refuses to show any photo when it is served on an address other
    computers can reach (anything but loopback), because it has no login of its own.
    """

    allow_remote: bool = False
    port: int = _checked(8501, _port)


@dataclass(frozen=True)
class LoupeConfig:
    """The whole configuration. ``db_url`` None means SQLite at ``<data_dir>/catalog.sqlite``.

    ``data_dir`` and ``model.models_dir`` default to the user's own folders (:mod:`core.locations`);
    :func:`core.settings.resolve_settings` is what the commands use to pick them, with the environment,
    the config file and the folders of earlier versions.
    """

    data_dir: Path = field(default_factory=user_data_dir, metadata=PER_USER)
    db_url: str | None = None
    # A factory, not a shared instance: models_dir's per-user default is computed when the config is made.
    model: ModelConfig = field(default_factory=ModelConfig)
    runtime: RuntimeConfig = RuntimeConfig()
    decode: DecodeConfig = DecodeConfig()
    scan: ScanConfig = ScanConfig()
    index: IndexConfig = IndexConfig()
    search: SearchConfig = SearchConfig()
    patches: PatchConfig = PatchConfig()
    ui: UIConfig = UIConfig()

    @property
    def resolved_db_url(self) -> str:
        """The SQLAlchemy URL of the catalog."""
        if self.db_url is not None:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite').resolve()}"
