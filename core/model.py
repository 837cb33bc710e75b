"""The collection's model: load the PE-Spatial ViT through birder, and say how it makes vectors.

:func:`load_model` builds the network with the configured weights at the configured image size;
:func:`provenance_of` is the catalog's record of it; :func:`load_collection_model` loads the model an
existing collection was built with and refuses one whose weights differ from the catalog's record, so
queries and calibration are never compared in another space.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from core.catalog import Provenance
from core.config import RESOLVED_CONFIG_FILE, ModelConfig, config_from_mapping
from core.errors import ConfigError, ProvenanceMismatchError, WeightsError
from core.preprocess import preprocessing_descriptor
from core.weights import (
    WeightsIdentity,
    WeightsKind,
    ensure_pretrained_file,
    local_weights_file,
    pretrained_file,
    sha256_file,
    weights_kind,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A ready network and the facts the catalog records about it."""

    net: torch.nn.Module
    network: str
    weights: WeightsIdentity
    image_size: int
    native_size: int
    dim: int
    patch_size: int
    num_special_tokens: int
    rgb_mean: tuple[float, float, float]
    rgb_std: tuple[float, float, float]

    @property
    def grid_size(self) -> int:
        """Patch cells per side at ``image_size``."""
        return self.image_size // self.patch_size


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else Apple's Metal (MPS) when present, else the CPU. A device asked
    for by name that torch cannot see is a :class:`ConfigError`."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and bool(mps.is_available())
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {device!r} asked for, but torch sees no CUDA GPU on this machine")
    if resolved.type == "mps" and not has_mps:
        raise ConfigError(f"runtime.device: {device!r} asked for, but torch sees no Apple MPS device on this machine")
    return resolved


def _state_sha256(net: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _random_model(config: ModelConfig, native_size: int) -> tuple[torch.nn.Module, WeightsIdentity, dict[str, Any]]:
    from birder.data.transforms.classification import get_rgb_stats
    from birder.model_registry import registry

    # fork_rng keeps the caller's global RNG untouched while the seed fixes the initialisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_seed)
        net = registry.net_factory(config.network, 0, size=(native_size, native_size))
    identity = WeightsIdentity(kind="random", sha256=_state_sha256(net), source=f"random seed {config.random_seed}")
    # The pretrained file declares birder's "centered" stats (mean 0.5, std 0.5); random weights use the same
    # so that a random-weights index exercises exactly the preprocessing of a real one.
    return net, identity, dict(get_rgb_stats("centered"))


def _file_model(
    config: ModelConfig, path: Any, kind: WeightsKind, sha256: str, device: torch.device
) -> tuple[torch.nn.Module, WeightsIdentity, dict[str, Any]]:
    from birder.common import fs_ops

    try:
        # birder loads .pt files with torch.load(weights_only=True): a pickle that asks to call anything
        # but tensor constructors is refused (UnpicklingError) before it runs.
        net, info = fs_ops.load_model(device, config.network, path=path, tag=config.tag, inference=True)
    except (RuntimeError, KeyError, ValueError, OSError, pickle.UnpicklingError) as error:
        raise WeightsError(f"{path} is not a birder {config.network} weights file: {error}") from error
    identity = WeightsIdentity(kind=kind, sha256=sha256, source=str(path))
    return cast(torch.nn.Module, net), identity, dict(info.rgb_stats)


def load_model(config: ModelConfig, device: torch.device) -> LoadedModel:
    """Build the network with the configured weights, at the configured image size, ready for inference."""
    spec = pretrained_file(config)
    native_size = spec.native_size[0]
    kind = weights_kind(config.weights)
    if kind == "random":
        net, identity, rgb_stats = _random_model(config, native_size)
    elif kind == "pretrained":
        path = ensure_pretrained_file(spec)
        net, identity, rgb_stats = _file_model(config, path, "pretrained", spec.sha256, device)
    else:
        path = local_weights_file(config.weights)
        net, identity, rgb_stats = _file_model(config, path, "file", sha256_file(path), device)

    if config.image_size != native_size:
        net.adjust_size((config.image_size, config.image_size))  # type: ignore[operator]
    net.to(device)
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)

    mean = tuple(float(v) for v in rgb_stats["mean"])
    std = tuple(float(v) for v in rgb_stats["std"])
    return LoadedModel(
        net=net,
        network=config.network,
        weights=identity,
        image_size=config.image_size,
        native_size=native_size,
        dim=int(net.embedding_size),  # type: ignore[arg-type]
        patch_size=int(net.patch_size),  # type: ignore[arg-type]
        num_special_tokens=int(net.num_special_tokens),  # type: ignore[arg-type]
        rgb_mean=mean,  # type: ignore[arg-type]
        rgb_std=std,  # type: ignore[arg-type]
    )


def provenance_of(model: LoadedModel, patch_grid: int = 0) -> Provenance:
    """The catalog record of how this model makes vectors (``patch_grid`` 0: no patch vectors)."""
    return Provenance(
        model=model.network,
        weights_kind=model.weights.kind,
        weights_sha256=model.weights.sha256,
        weights_source=model.weights.source,
        image_size=model.image_size,
        dim=model.dim,
        preprocessing=preprocessing_descriptor(model.rgb_mean, model.rgb_std),
        patch_grid=patch_grid,
    )


def collection_model_config(data_dir: Path, fallback: ModelConfig, provenance: Provenance) -> ModelConfig:
    """The model settings a collection was built with: the build's saved config (``fallback`` when it has
    none or cannot be read), at the network and image size the catalog records."""
    saved = data_dir / RESOLVED_CONFIG_FILE
    model = fallback
    if saved.exists():
        try:
            model = config_from_mapping(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).model
        except (ConfigError, yaml.YAMLError) as error:
            logger.warning("ignoring %s: %s", saved, error)
    return replace(model, network=provenance.model, image_size=provenance.image_size)


def load_collection_model(
    data_dir: Path, fallback: ModelConfig, provenance: Provenance, device: torch.device
) -> LoadedModel:
    """The model of the collection in ``data_dir`` (see :func:`collection_model_config`), checked against
    the catalog's provenance: other weights raise :class:`ProvenanceMismatchError`."""
    model = load_model(collection_model_config(data_dir, fallback, provenance), device)
    if model.weights.sha256 != provenance.weights_sha256:
        raise ProvenanceMismatchError(
            f"the index was built with weights sha256 {provenance.weights_sha256} "
            f"({provenance.weights_source}); the model found now has {model.weights.sha256} "
            f"({model.weights.source}): queries would be compared in another space"
        )
    return model
