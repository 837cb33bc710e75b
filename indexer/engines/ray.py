"""The Ray engine: decode and embed on a Ray cluster, commit on the driver.

:class:`RayEngine` (the interface: :class:`indexer.engines.base.BuildEngine`) runs two Ray Data
``map_batches`` stages over the files :func:`indexer.pipeline.plan_work` picked:

- :class:`DecodeStage`, an autoscaling pool of CPU actors, reads, hashes and decodes each file exactly like
  the local DataLoader workers (:func:`core.reader.read_one`); content already in the catalog is
  hashed but not decoded, and a corrupt file becomes a recorded failure, not an exception.
- :class:`EmbedStage`, a pool of actors that each load the model once (one GPU per actor when the
  cluster has GPUs), runs the same :class:`core.encoder.Encoder` as the local engine and sends back the
  embedding and the pooled patch grid instead of the pixels (:mod:`indexer.engines.ray_rows`).

The driver streams the results back with ``iter_batches`` (nothing is gathered whole) and hands each
batch to the same :class:`~indexer.committer.BatchCommitter` as the local engine: same rows, same dedup
by sha256, one transaction per batch, so a kill loses at most the batches in flight.

Every node needs Loupe's dependencies; Loupe's code (``indexer`` and ``core``) travels with the job
(``py_modules``).
Weights: ``random`` rebuilds identical parameters from the seed on every node, a file path (or
``pretrained``'s ``models_dir``) must be readable at the same absolute path on every node. Each model
actor checks that its weights hash equals the driver's before it embeds anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import indexer
from core.config import ModelConfig, RuntimeConfig
from core.decode import DecodeLimits
from core.encoder import Encoder, resolve_batch_size
from core.errors import ConfigError, EngineError, EngineUnavailableError, LoupeError, WeightsError
from core.model import LoadedModel, load_model, resolve_device
from core.reader import WorkItem, read_one
from indexer.engines.ray_rows import Batch, batch_outputs, batch_to_results, blob_column, results_to_batch

if TYPE_CHECKING:
    import ray.data

    from indexer.committer import BatchCommitter
    from indexer.engines.base import OnBatch

logger = logging.getLogger(__name__)

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
    """Ship the code the stages run (this package and the shared core) with the job: workers import the
    driver's code, not whatever a node has installed."""
    package = Path(indexer.__file__).parent
    return {"py_modules": [str(package), str(package.parent / "core")]}


def connect(runtime: RuntimeConfig) -> bool:
    """Join the configured cluster, or start a private instance; True when this call started Ray.

    A Ray already initialised in this process (a notebook, a test session) is used as it is; its job must
    make this package importable on the workers (see :func:`job_runtime_env`).
    """
    import ray

    if ray.is_initialized():
        return False
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
        """``model_config`` with absolute paths (:func:`core.weights.resolved_model_config`): a Ray
        worker's working directory is not the driver's."""
        torch.set_num_threads(threads)
        # Ray makes the GPU it assigned to this actor the only visible one: plain "cuda" is that GPU.
        resolved = resolve_device("cuda" if device.startswith("cuda") else device)
        model = load_model(model_config, resolved)
        if model.weights.sha256 != weights_sha256:
            raise WeightsError(
                f"the model actor's weights ({model.weights.source}, sha256 {model.weights.sha256[:12]}...) "
                f"differ from the driver's (sha256 {weights_sha256[:12]}...): every node must read the same weights"
            )
        self.encoder = Encoder(
            model, resolved, precision, min_cosine, parallel_images=parallel_images, patch_grid=patch_grid
        )
        self.image_size = model.image_size

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
            grids = encoded.grids
            for position, i in enumerate(rows):
                embeddings[i] = np.ascontiguousarray(encoded.embeddings[position], dtype=np.float32).tobytes()
                if grids is not None:
                    patches[i] = np.ascontiguousarray(grids[position]).tobytes()
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["embedding"] = blob_column(embeddings)
        out["patches"] = blob_column(patches)
        return out


# wiring ----------------------------------------------------------------------------------------------


def _model_actors(runtime: RuntimeConfig, cluster: dict[str, float]) -> tuple[int, float]:
    """How many model actors, and the GPUs each reserves (0 on CPU-only clusters or with device cpu)."""
    gpus = int(cluster.get("GPU", 0))
    device = runtime.device
    if device.startswith("cuda") and gpus == 0:
        raise ConfigError(f"runtime.device: {device!r} asked for, but the Ray cluster has no GPU")
    use_gpus = gpus > 0 and device != "cpu"
    actors = runtime.ray_actors or (gpus if use_gpus else 1)
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


class RayEngine:
    """Decode and embed on Ray, commit on the driver (see the module doc and
    :class:`indexer.engines.base.BuildEngine`).

    ``model_config``: the model settings with absolute paths (:func:`core.weights.resolved_model_config`);
    ``model``: the driver's copy, whose weights hash every model actor must match.
    """

    maker_device = "ray actors"
    runs_model_here = False

    def __init__(
        self,
        runtime: RuntimeConfig,
        model_config: ModelConfig,
        model: LoadedModel,
        patch_grid: int,
        limits: DecodeLimits,
    ) -> None:
        self.runtime = runtime
        self.model_config = model_config
        self.model = model
        self.patch_grid = patch_grid
        self.limits = limits
        self._todo: Sequence[WorkItem] = ()
        self._known_hashes: frozenset[str] = frozenset()

    def start(self, todo: Sequence[WorkItem], known_hashes: frozenset[str]) -> None:
        # Nothing runs before the cluster is joined, in :meth:`run`.
        self._todo = todo
        self._known_hashes = known_hashes

    def stop(self) -> None:
        self._todo = ()

    def run(self, committer: BatchCommitter, on_batch: OnBatch) -> None:
        require_ray()
        import ray
        import ray.data

        runtime, model, patch_grid = self.runtime, self.model, self.patch_grid
        started_here = connect(runtime)
        try:
            _quiet_ray_data()
            cluster = ray.cluster_resources()
            cpus = int(cluster.get("CPU", 1))
            actors, gpus_per_actor = _model_actors(runtime, cluster)
            actor_cpus = runtime.ray_actor_cpus
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
                runtime.batch_size, model, torch.device("cuda" if gpus_per_actor else "cpu")
            )
            decoded = _input_dataset(self._todo, batch_size, cpus).map_batches(
                DecodeStage,
                fn_constructor_kwargs={
                    "image_size": model.image_size,
                    "limits": self.limits,
                    # Ray Data stores the stage's arguments once in the object store.
                    "known_hashes": KnownHashes(self._known_hashes),
                },
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decoders),
                num_cpus=1,
            )
            embedded = decoded.map_batches(
                EmbedStage,
                fn_constructor_kwargs={
                    "model_config": self.model_config,
                    "device": runtime.device,
                    "precision": runtime.precision,
                    "min_cosine": runtime.min_cosine,
                    "patch_grid": patch_grid,
                    "weights_sha256": model.weights.sha256,
                    "threads": actor_cpus,
                    "parallel_images": runtime.parallel_images,
                },
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=actor_cpus,
                num_gpus=gpus_per_actor,
            )
            try:
                for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
                    on_batch(committer.commit(batch_to_results(batch), batch_outputs(batch, model.dim, patch_grid)))
            except LoupeError:
                raise
            except ray.exceptions.RayError as error:
                raise _engine_error(error) from error
        finally:
            if started_here:
                ray.shutdown()
