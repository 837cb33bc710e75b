"""Load the PE-Spatial ViT through birder and embed batches of photos.

One forward pass per batch yields both outputs: the patch tokens of ``forward_features`` (after the
register token; the same tensor as ``detection_features``) and the global embedding, their mean
(birder's ``embedding`` for this average-pooled model), L2-normalised so inner product is cosine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Literal, cast

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


Precision = Literal["fp32", "bf16", "int8"]


def _quantize_linear_layers(net: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of ``net`` (dynamic quantisation of its linear layers); ``net`` stays fp32.

    torch marks this API deprecated in favour of torchao, but torchao 0.18's int8 dynamic quantisation
    has no fast CPU kernels: it measured 0.48 images/s against this one's 16.4 (fp32: 10.1) at 224 px on
    the development machine. Revisit when torchao's CPU path catches up.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(net), {torch.nn.Linear}, dtype=torch.qint8
        )
    return quantized


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto``: bfloat16 on CUDA, fp32 on the CPU.

    int8 (dynamic quantisation of the linear layers) is 1.2x (512 px) to 1.6x (224 px) faster than fp32 on
    the 2-core development machine with embeddings at cosine >= 0.9999 to fp32, but it scales activations
    per batch tensor, so a photo's vector depends slightly on its batch-mates: a resumed build would not
    reproduce an uninterrupted one bit for bit. It stays opt-in. bfloat16 on a CPU without AVX512-BF16
    is 6x slower than fp32 (measured), so it is never picked automatically there."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "int8" and device.type == "cuda":
        raise ConfigError("runtime.precision: int8 runs on the CPU only; use bf16 or fp32 on CUDA")
    return precision  # type: ignore[return-value]


class Encoder:
    """Runs a :class:`LoadedModel` on batches of uint8 pixels from :func:`indexer.preprocess.model_pixels`.

    With int8 the first batch is also run in fp32 and compared: if any embedding falls
    below ``min_cosine`` to its fp32 twin, the encoder switches to fp32 for good (and says so), so a
    model whose activations quantise badly can never degrade an index silently.
    """

    def __init__(
        self, model: LoadedModel, device: torch.device, precision: str = "fp32", min_cosine: float = 0.995
    ) -> None:
        self.model = model
        self.device = device
        self.precision: Precision = resolve_precision(precision, device)
        self.min_cosine = min_cosine
        self.checked_cosine: float | None = None
        self.calls = 0
        self.images = 0
        self._net = model.net
        if self.precision == "int8":
            self._net = _quantize_linear_layers(model.net)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            tokens = net.forward_features(x)  # type: ignore[operator]
        patches = tokens[:, self.model.num_special_tokens :].float()
        return torch.nn.functional.normalize(patches.mean(dim=1), dim=1), patches

    def encode(self, pixels: torch.Tensor) -> EncodedBatch:
        """Embed ``[B, 3, S, S]`` uint8 pixels in one forward pass."""
        model = self.model
        if pixels.ndim != 4 or pixels.shape[1:] != (3, model.image_size, model.image_size):
            raise ValueError(
                f"expected [B, 3, {model.image_size}, {model.image_size}] pixels, got {tuple(pixels.shape)}"
            )
        with torch.inference_mode():
            x = normalize(pixels.to(self.device, non_blocking=True), model.rgb_mean, model.rgb_std)
            embeddings, patches = self._forward(self._net, x)
            if self.precision == "int8" and self.checked_cosine is None:
                reference, reference_patches = self._forward(model.net, x)
                self.checked_cosine = float((embeddings * reference).sum(dim=1).min())
                if self.checked_cosine < self.min_cosine:
                    logger.warning(
                        "int8 embeddings reach only cosine %.4f to fp32 (< %.3f): using fp32",
                        self.checked_cosine,
                        self.min_cosine,
                    )
                    self.precision, self._net = "fp32", model.net
                    embeddings, patches = reference, reference_patches
            grid = model.grid_size
            patch_grid = patches.reshape(patches.shape[0], grid, grid, model.dim)
        self.calls += 1
        self.images += int(pixels.shape[0])
        return EncodedBatch(
            embeddings=embeddings.cpu().numpy().astype(np.float32, copy=False),
            patches=patch_grid.cpu(),
        )
