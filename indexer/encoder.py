"""Load the PE-Spatial ViT through birder and embed batches of photos.

One forward pass per batch yields both outputs: the patch tokens of ``forward_features`` (after the
register token; the same tensor as ``detection_features``) and the global embedding, their mean
(birder's ``embedding`` for this average-pooled model), L2-normalised so inner product is cosine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from indexer.config import ModelConfig
from indexer.errors import ConfigError, WeightsError
from indexer.preprocess import normalize
from indexer.weights import (
    WeightsIdentity,
    WeightsKind,
    ensure_pretrained_file,
    local_weights_file,
    pretrained_file,
    sha256_file,
    weights_kind,
)

logger = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]


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


@dataclass(frozen=True)
class EncodedBatch:
    """Model outputs for one batch: ``embeddings`` [B, D] unit-norm float32, ``patches`` [B, h, w, D]."""

    embeddings: Embeddings
    patches: torch.Tensor


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {device!r} asked for, but torch sees no CUDA GPU on this machine")
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
        net, info = fs_ops.load_model(device, config.network, path=path, tag=config.tag, inference=True)
    except (RuntimeError, KeyError, ValueError, OSError) as error:
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


class Encoder:
    """Runs a :class:`LoadedModel` on batches of uint8 pixels from :func:`indexer.preprocess.model_pixels`."""

    def __init__(self, model: LoadedModel, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.calls = 0
        self.images = 0

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(self, pixels: torch.Tensor) -> EncodedBatch:
        """Embed ``[B, 3, S, S]`` uint8 pixels in one forward pass."""
        model = self.model
        if pixels.ndim != 4 or pixels.shape[1:] != (3, model.image_size, model.image_size):
            raise ValueError(
                f"expected [B, 3, {model.image_size}, {model.image_size}] pixels, got {tuple(pixels.shape)}"
            )
        with torch.inference_mode():
            x = normalize(pixels.to(self.device, non_blocking=True), model.rgb_mean, model.rgb_std)
            with self._autocast():
                tokens = model.net.forward_features(x)  # type: ignore[operator]
            patches = tokens[:, model.num_special_tokens :].float()
            embeddings = torch.nn.functional.normalize(patches.mean(dim=1), dim=1)
            grid = model.grid_size
            patch_grid = patches.reshape(patches.shape[0], grid, grid, model.dim)
        self.calls += 1
        self.images += int(pixels.shape[0])
        return EncodedBatch(
            embeddings=embeddings.cpu().numpy().astype(np.float32, copy=False),
            patches=patch_grid.cpu(),
        )
