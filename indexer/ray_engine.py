"""The Ray engine: decode and embed on a Ray cluster, commit on the driver.

Two Ray Data ``map_batches`` stages run over the files :func:`indexer.pipeline.plan_work` picked:

- :class:`DecodeStage`, an autoscaling pool of CPU actors, reads, hashes and decodes each file exactly like
  the local DataLoader workers (:func:`core.reader.read_one`); content already in the catalog is
  hashed but not decoded, and a corrupt file becomes a recorded failure, not an exception.
- :class:`EmbedStage`, a pool of actors that each load the model once (one GPU per actor when the
  cluster has GPUs), runs one forward pass per batch and sends back the embedding and the pooled patch
  grid instead of the pixels.

The driver streams the results back with ``iter_batches`` (nothing is gathered whole) and hands each
batch to the same :class:`~indexer.committer.BatchCommitter` as the local engine: same rows, same dedup
by sha256, one transaction per batch, so a kill loses at most the batches in flight.

Every node needs Loupe's dependencies; this package's code travels with the job (``py_modules``).
Weights: ``random`` rebuilds identical parameters from the seed on every node, a file path (or
``pretrained``'s ``models_dir``) must be readable at the same absolute path on every node. Each model
actor checks that its weights hash equals the driver's before it embeds anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

import indexer
from core.config import LoupeConfig, ModelConfig
from core.decode import DecodeLimits
from core.encoder import Encoder, LoadedModel, load_model, resolve_batch_size, resolve_device
from core.errors import ConfigError, EngineError, EngineUnavailableError, LoupeError, WeightsError
from core.patches import pool_patches
from core.photo_metadata import PhotoMetadata
from core.reader import ReadResult, WorkItem, read_one
from core.weights import weights_kind
from indexer.committer import BatchCommitter, ModelOutput

if TYPE_CHECKING:
    import ray.data

logger = logging.getLogger(__name__)

Batch = dict[str, npt.NDArray[Any]]

# Input blocks per cluster CPU: enough blocks that every decode actor has work, few enough that a
# 20M-file plan does not become millions of tiny objects on the driver.
BLOCKS_PER_CPU = 4


def require_ray() -> None:
    """Raise :class:`EngineUnavailableError` unless Ray Data can be imported."""
    try:
        import ray.data  # noqa: F401
    except ImportError as error:
        raise EngineUnavailableError(
            "runtime.engine: ray needs Ray Data, which is not installed: pip install 'loupe[ray]'"
        ) from error


def job_runtime_env() -> dict[str, Any]:
    """Ship this package with the job: workers import the driver's code, not whatever a node has installed."""
    return {"py_modules": [str(Path(indexer.__file__).parent)]}


def connect(config: LoupeConfig) -> bool:
    """Join the configured cluster, or start a private instance; True when this call started Ray.

    A Ray already initialised in this process (a notebook, a test session) is used as it is; its job must
    make this package importable on the workers (see :func:`job_runtime_env`).
    """
    import ray

    if ray.is_initialized():
        return False
    runtime = config.runtime
    verbose = logger.isEnabledFor(logging.INFO)
    options: dict[str, Any] = {
        "runtime_env": job_runtime_env(),
        "logging_level": logging.INFO if verbose else logging.WARNING,
        # Worker output (birder's and torch's start-up chatter) only in verbose mode.
        "log_to_driver": verbose,
    }
    if runtime.ray_address is None:
        options["num_cpus"] = runtime.ray_num_cpus or None
        options["include_dashboard"] = False
    logger.info("starting Ray at %s", runtime.ray_address or "a private local instance")
    try:
        # "local" starts a private instance even when `ray start` left a cluster address behind: a plain
        # ray.init() would join (or, when that cluster is gone, wait for) it instead.
        ray.init(address=runtime.ray_address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = runtime.ray_address or "a private local instance"
        raise EngineError(f"cannot start or join Ray at {where}: {error}") from error
    return True


def _quiet_ray_data() -> None:
    """The build's own tqdm bar counts committed files: no Ray Data bars, and its chatter only with -v.

    Ray Data installs its own console handler at import (level INFO, not propagating), so the entry
    point's logging setup cannot reach it; its level is set here, after the import.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if not logger.isEnabledFor(logging.INFO):
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Its one warning here says that the bars are off, which is on purpose.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _worker_model_config(model: ModelConfig) -> ModelConfig:
    """Absolute paths: a Ray worker's working directory is not the driver's."""
    resolved = replace(model, models_dir=model.models_dir.expanduser().resolve())
    if weights_kind(model.weights) == "file":
        resolved = replace(resolved, weights=str(Path(model.weights).expanduser().resolve()))
    return resolved


# rows <-> results ------------------------------------------------------------------------------------
#
# Columns travel as Arrow: optional strings as "" and optional sizes as -1, pixels and vectors as raw
# bytes (b"" where there are none), so a known or failed file costs a few bytes, not an empty image.


def _text(values: Sequence[str | None]) -> npt.NDArray[Any]:
    return np.array([v or "" for v in values], dtype=object)


def _blob(values: Sequence[bytes]) -> npt.NDArray[Any]:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def results_to_batch(results: Sequence[ReadResult]) -> Batch:
    """Decode-stage output: one row per result, pixels as raw uint8 bytes."""
    return {
        "path": _text([r.item.path for r in results]),
        "size_bytes": np.array([r.item.size_bytes for r in results], dtype=np.int64),
        "mtime_ns": np.array([r.item.mtime_ns for r in results], dtype=np.int64),
        "sha256": _text([r.sha256 for r in results]),
        "width": np.array([-1 if r.width is None else r.width for r in results], dtype=np.int64),
        "height": np.array([-1 if r.height is None else r.height for r in results], dtype=np.int64),
        "known": np.array([r.known for r in results], dtype=bool),
        "error_reason": _text([r.error_reason for r in results]),
        "error_message": _text([r.error_message for r in results]),
        "pixels": _blob([b"" if r.pixels is None else r.pixels.numpy().tobytes() for r in results]),
        **_metadata_columns([r.metadata for r in results]),
    }


def _metadata_columns(metadata: Sequence[PhotoMetadata | None]) -> Batch:
    """The header facts as columns ("" for none; ``metadata_read`` False where the header was not read)."""
    known = [m or PhotoMetadata() for m in metadata]
    return {
        "metadata_read": np.array([m is not None for m in metadata], dtype=bool),
        "file_format": _text([m.file_format for m in known]),
        "capture_time": _text([None if m.capture_time is None else m.capture_time.isoformat() for m in known]),
        "camera_make": _text([m.camera_make for m in known]),
        "camera_model": _text([m.camera_model for m in known]),
    }


def _metadata_of_row(batch: Batch, i: int) -> PhotoMetadata | None:
    if not bool(batch["metadata_read"][i]):
        return None
    capture = str(batch["capture_time"][i])
    return PhotoMetadata(
        file_format=str(batch["file_format"][i]) or None,
        capture_time=datetime.fromisoformat(capture) if capture else None,
        camera_make=str(batch["camera_make"][i]) or None,
        camera_model=str(batch["camera_model"][i]) or None,
    )


def batch_to_results(batch: Batch, image_size: int | None = None) -> list[ReadResult]:
    """The results of a batch; with ``image_size``, decoded rows get their pixels back as tensors."""
    results: list[ReadResult] = []
    pixel_column = batch.get("pixels")
    for i in range(len(batch["path"])):
        pixels = None
        if image_size is not None and pixel_column is not None and len(pixel_column[i]):
            flat = np.frombuffer(pixel_column[i], dtype=np.uint8)
            pixels = torch.from_numpy(flat.reshape(3, image_size, image_size).copy())
        results.append(
            ReadResult(
                item=WorkItem(
                    path=str(batch["path"][i]),
                    size_bytes=int(batch["size_bytes"][i]),
                    mtime_ns=int(batch["mtime_ns"][i]),
                ),
                sha256=str(batch["sha256"][i]) or None,
                width=None if batch["width"][i] < 0 else int(batch["width"][i]),
                height=None if batch["height"][i] < 0 else int(batch["height"][i]),
                pixels=pixels,
                known=bool(batch["known"][i]),
                error_reason=str(batch["error_reason"][i]) or None,
                error_message=str(batch["error_message"][i]) or None,
                metadata=_metadata_of_row(batch, i),
            )
        )
    return results


def batch_outputs(batch: Batch, dim: int, patch_grid: int) -> dict[str, ModelOutput]:
    """The model outputs an embed-stage batch carries, by content hash."""
    outputs: dict[str, ModelOutput] = {}
    for sha256, embedding, patches in zip(batch["sha256"], batch["embedding"], batch["patches"], strict=True):
        if not len(embedding) or sha256 in outputs:
            continue
        grid = None
        if patch_grid:
            grid = np.frombuffer(patches, dtype=np.float16).reshape(patch_grid, patch_grid, dim).copy()
        outputs[str(sha256)] = ModelOutput(embedding=np.frombuffer(embedding, dtype=np.float32).copy(), patches=grid)
    return outputs


# stages ----------------------------------------------------------------------------------------------


class KnownHashes:
    """The content hashes already in the catalog, as a sorted array of 32-byte digests.

    Every decode actor needs them. As a set of hex strings 20 million hashes take about 3 GB in every
    actor; as one numpy array they take 660 MB, stored once in Ray's object store, and Ray's serializer
    keeps numpy buffers out of band, so the actors of a node can share that copy.
    """

    def __init__(self, hex_digests: Iterable[str]) -> None:
        digests = np.array([self._key(h) for h in hex_digests], dtype="S33")
        digests.sort()
        self.digests = digests

    @staticmethod
    def _key(sha256: str) -> bytes:
        # numpy's fixed-size bytes drop trailing NUL bytes, which a digest may end with: a final 0x01
        # keeps every key whole.
        return bytes.fromhex(sha256) + b"\x01"

    def __len__(self) -> int:
        return len(self.digests)

    def __contains__(self, sha256: object) -> bool:
        if not isinstance(sha256, str) or len(sha256) != 64:
            return False
        try:
            key = np.bytes_(self._key(sha256))
        except ValueError:  # not hexadecimal
            return False
        position = int(np.searchsorted(self.digests, key))
        return position < len(self.digests) and bool(self.digests[position] == key)


class DecodeStage:
    """Ray actor: read, hash and decode a batch of work items (the local engine's :func:`read_one`)."""

    def __init__(self, image_size: int, limits: DecodeLimits, known_hashes: KnownHashes) -> None:
        self.image_size = image_size
        self.limits = limits
        self.known_hashes = known_hashes

    def __call__(self, batch: Batch) -> Batch:
        items = [
            WorkItem(path=str(path), size_bytes=int(size), mtime_ns=int(mtime))
            for path, size, mtime in zip(batch["path"], batch["size_bytes"], batch["mtime_ns"], strict=True)
        ]
        return results_to_batch([read_one(item, self.image_size, self.limits, self.known_hashes) for item in items])


class EmbedStage:
    """Ray actor holding one model: embeds the decoded rows of each batch in one forward pass.

    The model is loaded here, on the worker, and its weights hash must equal the driver's: a node with
    another weights file (or a torch that initialises random weights differently) fails loudly instead
    of mixing vectors into the index.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        device: str,
        precision: str,
        min_cosine: float,
        patch_grid: int,
        weights_sha256: str,
        threads: int,
        parallel_images: int = -1,
    ) -> None:
        torch.set_num_threads(threads)
        # Ray makes the GPU it assigned to this actor the only visible one: plain "cuda" is that GPU.
        resolved = resolve_device("cuda" if device.startswith("cuda") else device)
        model = load_model(model_config, resolved)
        if model.weights.sha256 != weights_sha256:
            raise WeightsError(
                f"the model actor's weights ({model.weights.source}, sha256 {model.weights.sha256[:12]}...) "
                f"differ from the driver's (sha256 {weights_sha256[:12]}...): every node must read the same weights"
            )
        self.encoder = Encoder(model, resolved, precision, min_cosine, parallel_images=parallel_images)
        self.image_size = model.image_size
        self.patch_grid = patch_grid

    def __call__(self, batch: Batch) -> Batch:
        results = batch_to_results(batch, self.image_size)
        # Identical bytes twice in one batch go through the model once, as in the local engine.
        first: dict[str, int] = {}
        for i, result in enumerate(results):
            if result.pixels is not None and result.sha256 is not None:
                first.setdefault(result.sha256, i)
        embeddings = [b""] * len(results)
        patches = [b""] * len(results)
        if first:
            rows = list(first.values())
            encoded = self.encoder.encode(torch.stack([results[i].pixels for i in rows]))  # type: ignore[misc]
            grids = pool_patches(encoded.patches, self.patch_grid) if self.patch_grid else None
            for position, i in enumerate(rows):
                embeddings[i] = np.ascontiguousarray(encoded.embeddings[position], dtype=np.float32).tobytes()
                if grids is not None:
                    patches[i] = np.ascontiguousarray(grids[position]).tobytes()
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["embedding"] = _blob(embeddings)
        out["patches"] = _blob(patches)
        return out


# wiring ----------------------------------------------------------------------------------------------


def _model_actors(config: LoupeConfig, cluster: dict[str, float]) -> tuple[int, float]:
    """How many model actors, and the GPUs each reserves (0 on CPU-only clusters or with device cpu)."""
    gpus = int(cluster.get("GPU", 0))
    device = config.runtime.device
    if device.startswith("cuda") and gpus == 0:
        raise ConfigError(f"runtime.device: {device!r} asked for, but the Ray cluster has no GPU")
    use_gpus = gpus > 0 and device != "cpu"
    actors = config.runtime.ray_actors or (gpus if use_gpus else 1)
    return actors, 1.0 if use_gpus else 0.0


def _engine_error(error: Exception) -> LoupeError:
    """A worker's own typed error when Ray kept it, else an :class:`EngineError` with the gist of Ray's report.

    An actor that fails in its constructor (weights missing on a node, another weights hash) reaches the
    driver only as text: a remote traceback whose last line is the worker's exception.
    """
    cause = getattr(error, "cause", None)
    if isinstance(cause, LoupeError):
        return cause
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return EngineError(f"the Ray engine failed: {lines[-1] if lines else type(error).__name__}")


def _input_dataset(todo: Sequence[WorkItem], batch_size: int, cpus: int) -> ray.data.Dataset:
    import pyarrow as pa
    import ray.data

    blocks = max(1, min(math.ceil(len(todo) / batch_size), BLOCKS_PER_CPU * max(1, cpus)))
    rows = math.ceil(len(todo) / blocks)
    tables = [
        pa.table(
            {
                "path": [item.path for item in chunk],
                "size_bytes": pa.array([item.size_bytes for item in chunk], type=pa.int64()),
                "mtime_ns": pa.array([item.mtime_ns for item in chunk], type=pa.int64()),
            }
        )
        for chunk in (todo[start : start + rows] for start in range(0, len(todo), rows))
    ]
    return ray.data.from_arrow(tables)


def embed_with_ray(
    config: LoupeConfig,
    todo: Sequence[WorkItem],
    known_hashes: frozenset[str],
    model: LoadedModel,
    patch_grid: int,
    committer: BatchCommitter,
    progress: Callable[[int], object],
) -> None:
    """Decode and embed ``todo`` on Ray, committing each batch through ``committer`` as it arrives."""
    require_ray()
    import ray
    import ray.data

    started_here = connect(config)
    try:
        _quiet_ray_data()
        cluster = ray.cluster_resources()
        cpus = int(cluster.get("CPU", 1))
        actors, gpus_per_actor = _model_actors(config, cluster)
        actor_cpus = config.runtime.ray_actor_cpus
        decoders = max(1, cpus - actors * actor_cpus)
        logger.info(
            "Ray cluster: %d CPUs, %d GPUs; %d model actor(s) with %g GPU and %d CPU each, up to %d decode actors",
            cpus,
            int(cluster.get("GPU", 0)),
            actors,
            gpus_per_actor,
            actor_cpus,
            decoders,
        )
        batch_size = resolve_batch_size(
            config.runtime.batch_size, model, torch.device("cuda" if gpus_per_actor else "cpu")
        )
        limits = DecodeLimits(max_pixels=config.decode.max_pixels, max_file_bytes=config.decode.max_file_bytes)
        decoded = _input_dataset(todo, batch_size, cpus).map_batches(
            DecodeStage,
            fn_constructor_kwargs={
                "image_size": model.image_size,
                "limits": limits,
                # Ray Data stores the stage's arguments once in the object store.
                "known_hashes": KnownHashes(known_hashes),
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decoders),
            num_cpus=1,
        )
        embedded = decoded.map_batches(
            EmbedStage,
            fn_constructor_kwargs={
                "model_config": _worker_model_config(config.model),
                "device": config.runtime.device,
                "precision": config.runtime.precision,
                "min_cosine": config.runtime.min_cosine,
                "patch_grid": patch_grid,
                "weights_sha256": model.weights.sha256,
                "threads": actor_cpus,
                "parallel_images": config.runtime.parallel_images,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=actor_cpus,
            num_gpus=gpus_per_actor,
        )
        try:
            for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
                committer.commit(batch_to_results(batch), batch_outputs(batch, model.dim, patch_grid))
                progress(len(batch["path"]))
        except LoupeError:
            raise
        except ray.exceptions.RayError as error:
            raise _engine_error(error) from error
    finally:
        if started_here:
            ray.shutdown()
