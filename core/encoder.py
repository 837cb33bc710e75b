"""Embed batches of photos with a loaded model (:mod:`core.model`): the one model-output path.

The local engine, the Ray engine's model actors, calibration and queries all call :class:`Encoder`.

One forward pass per batch yields both outputs: the patch tokens of ``forward_features`` (after the
register token; the same tensor as ``detection_features``) and the global embedding, their mean
(birder's ``embedding`` for this average-pooled model), L2-normalised so inner product is cosine.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import torch

from core.catalog import Provenance
from core.config import ModelConfig, RuntimeConfig
from core.errors import ConfigError
from core.heap import keep_freed_memory
from core.image_threads import ImageThreads, idle_threads, intra_op_threads, resolve_parallel_images
from core.model import LoadedModel, load_collection_model, resolve_device
from core.patches import PatchGrids, pool_patches
from core.preprocess import normalize

logger = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]
# uint8 model pixels: a stacked ``[B, 3, S, S]`` batch or a sequence of ``[3, S, S]`` images.
Images = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True)
class EncodedBatch:
    """Model outputs for one batch: ``embeddings`` [B, D] unit-norm float32, ``patches`` [B, h, w, D] (the
    model's own grid) and ``grids``, the patches pooled to the encoder's ``patch_grid`` (None when it is 0)."""

    embeddings: Embeddings
    patches: torch.Tensor
    grids: PatchGrids | None = None


Precision = Literal["fp32", "bf16", "int8"]


def _quantize_linear_layers(net: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of ``net`` (dynamic quantisation of its linear layers); ``net`` stays fp32.

    Dynamic quantisation scales activations per input tensor, so an int8 vector would depend on the other
    photos of a multi-image pass; the encoder runs one photo per pass on the CPU, so it never does.

    torch marks this API deprecated in favour of torchao, but torchao 0.18's int8 dynamic quantisation
    has no fast CPU kernels: it measured 0.48 images/s against this one's 16.4 (fp32: 10.1) at 224 px on
    the development machine. ONNX Runtime's dynamic int8 was measured too: with its per-tensor uint8
    activations the embeddings reach only cosine 0.986-0.996 to fp32, below ``runtime.min_cosine``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(net), {torch.nn.Linear}, dtype=torch.qint8
        )
    return quantized


def cpu_bf16_units() -> str | None:
    """How this CPU computes bfloat16 in hardware: ``"amx"`` (matrix tiles), ``"avx512_bf16"`` (vector
    dot products only), or None (emulated)."""
    cpu: Any = torch.cpu  # private probes, but the only ones torch offers
    if cpu._is_amx_tile_supported():
        return "amx"
    if cpu._is_avx512_bf16_supported():
        return "avx512_bf16"
    return None


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto``: the fastest precision known to be faithful on this device.

    - CUDA: bfloat16.
    - Apple's MPS: fp32 (not measured: no Mac here).
    - A CPU with AMX: bfloat16 (the tiles multiply bf16 matrices; not measured here, no AMX machine).
    - Other CPUs: int8, dynamic quantisation of the linear layers (one photo per pass). On the 2-core
      development machine (AVX2) it measured 1.15x-1.3x faster than fp32 forward-only (224 and 512 px),
      with embeddings at cosine >= 0.9999; bfloat16 is emulated there and 6x slower than fp32. On a
      2-core AMD EPYC with AVX512-BF16 but no AMX, int8 built 1.54x (224 px) and 1.24x (512 px) faster
      than bf16 (forward-only 1.40x and 1.30x): AVX512-BF16 alone does not make bf16 the fast one.

    Whatever is picked, the first photos of a run are checked against fp32 (see :class:`Encoder`).
    """
    if precision == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_bf16_units() == "amx"):
            return "bf16"
        if device.type != "cpu":
            return "fp32"  # Apple's MPS: bf16 there depends on the chip and macOS version
        return "int8"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"runtime.precision: int8 runs on the CPU only; use bf16 or fp32 on {device.type.upper()}")
    return precision  # type: ignore[return-value]


# Tokens per forward pass that ``runtime.batch_size: 0`` aims for. On the 2-core CPU (int8 and fp32
# alike) 512 px ran fastest per image in batches of 1-2 and slower from 4 (activations outgrow the
# caches); 224 px was flat from 4 to 16.
CPU_TOKENS_PER_BATCH = 2_048
CUDA_TOKENS_PER_BATCH = 65_536
# Largest automatic batch; also bounds what a kill can lose (two batches in flight).
MAX_AUTO_BATCH = {"cpu": 64, "cuda": 512}
# Photos of a run's first batch that are also run in fp32 to check a faster precision's faithfulness, at
# least (with image threads: one per thread, so none waits while the others check): a model whose
# activations quantise badly does so on every photo, and each fp32 photo costs 1.5-2x an int8 one (on the
# 2-core development machine 4 of them were 3 % of a 178-photo build at 224 px).
FAITHFULNESS_CHECK_IMAGES = 2
# torch.compile costs a minute or more before the first batch; below this many photos it cannot pay off.
COMPILE_PAYS_OFF_FROM = 2_000


def resolve_batch_size(batch_size: int, model: LoadedModel, device: torch.device) -> int:
    """``batch_size`` 0 picks the power of two of images nearest the device's token budget."""
    if batch_size > 0:
        return batch_size
    tokens = model.grid_size**2 + model.num_special_tokens
    budget = CUDA_TOKENS_PER_BATCH if device.type == "cuda" else CPU_TOKENS_PER_BATCH
    nearest = 2 ** max(0, round(math.log2(budget / tokens)))
    return min(nearest, MAX_AUTO_BATCH["cuda" if device.type == "cuda" else "cpu"])


def should_compile(setting: str, device: torch.device, images: int) -> bool:
    """``runtime.compile``: ``auto`` compiles on CUDA for runs long enough to repay the compilation."""
    if setting == "always":
        return True
    if setting == "never":
        return False
    return device.type == "cuda" and images >= COMPILE_PAYS_OFF_FROM


class Encoder:
    """Runs a :class:`LoadedModel` on batches of uint8 pixels from :func:`core.preprocess.model_pixels`:
    unit embeddings and, with ``patch_grid``, the patch tokens pooled to that grid (:mod:`core.patches`),
    from the same forward pass.

    With int8 or bf16 the first photos of the first batch are also run in fp32 and compared. If any
    embedding falls below ``min_cosine`` to its fp32 twin, the encoder switches to fp32 for good (and says
    so): a model whose activations quantise badly can never degrade an index silently.

    ``compile`` wraps the forward pass in ``torch.compile`` (worth it on a GPU for long runs: the first
    batch pays the compilation).

    On the CPU every photo gets a forward pass of its own on an image thread with one intra-op thread
    (:mod:`core.image_threads`), ``parallel_images`` photos at a time (``runtime.parallel_images``;
    -1 = one per core torch uses). A photo's vector is then a function of its own pixels by construction:
    the same bytes whatever its batch-mates, the batch size, the core count, a resume or the engine.
    :meth:`submit` returns before the batch is done. On a GPU the batch goes through in one pass, for
    throughput; a vector there can differ in its last bits with its batch-mates.

    Unless compiled, the encoder switches the network's attention layers to
    :class:`core.rotary_attention.ComplexRotaryAttention` in place (bit-identical, fewer operators).
    """

    def __init__(
        self,
        model: LoadedModel,
        device: torch.device,
        precision: str = "fp32",
        min_cosine: float = 0.995,
        *,
        compile: bool = False,
        parallel_images: int = 0,
        patch_grid: int = 0,
    ) -> None:
        self.model = model
        self.device = device
        self.patch_grid = patch_grid
        self.precision: Precision = resolve_precision(precision, device)
        self.min_cosine = min_cosine
        self.checked_cosine: float | None = None
        self.compiled = compile
        self.calls = 0
        self.images = 0
        # Process-wide, once, before the image threads start: a forward pass's large tensors are reused
        # from the heap instead of being mapped and faulted in again for every operator (core.heap).
        keep_freed_memory()
        if not compile:
            from core.rotary_attention import use_complex_rotary_attention  # imports birder's network code

            # Same numbers with fewer operators (core.rotary_attention), switched in the caller's network
            # in place (the fp32 check runs it too); torch.compile fuses the rotation itself from birder's code.
            use_complex_rotary_attention(model.net)
        net = _quantize_linear_layers(model.net) if self.precision == "int8" else model.net
        self._features: Callable[[torch.Tensor], torch.Tensor] = net.forward_features  # type: ignore[assignment]
        if compile:
            self._features = cast(Callable[[torch.Tensor], torch.Tensor], torch.compile(self._features))
        threads = resolve_parallel_images(parallel_images, device)
        # A compiled forward is not run from several threads at once: on the CPU it gets one image thread.
        self.parallel_images = min(threads, 1) if compile else threads
        self._threads = ImageThreads(self.parallel_images) if self.parallel_images else None

    def _embed_pixels(self, pixels: torch.Tensor, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass over uint8 ``[B, 3, S, S]`` pixels (every model call goes through here):
        unit-norm embeddings ``[B, D]`` and patch tokens ``[B, N, D]``; ``reference``: the fp32 network."""
        model = self.model
        x = normalize(pixels.to(self.device, non_blocking=True), model.rgb_mean, model.rgb_std)
        if reference:
            tokens = model.net.forward_features(x)  # type: ignore[operator]
        elif self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                tokens = self._features(x)
        else:
            tokens = self._features(x)
        patches = tokens[:, model.num_special_tokens :].float()
        return torch.nn.functional.normalize(patches.mean(dim=1), dim=1), patches

    def _embed_one(self, pixels: torch.Tensor, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One photo's ``[1, D]`` embedding and ``[1, N, D]`` patches, on an image thread (inference mode
        and autocast are per thread)."""
        with torch.inference_mode():
            return self._embed_pixels(pixels[None], reference)

    def _forward(self, images: Images, *, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm embeddings and patch tokens of uint8 ``images``: one photo per pass on the image
        threads (CPU), else one forward pass over the batch (GPU)."""
        if self._threads is not None:
            parts = self._threads.map(lambda one: self._embed_one(one, reference), images)
            return torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts])
        pixels = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        return self._embed_pixels(pixels, reference)

    def _check_against_fp32(
        self, images: Images, embeddings: torch.Tensor, patches: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        checked = min(len(images), max(FAITHFULNESS_CHECK_IMAGES, self.parallel_images))
        reference, _ = self._forward(images[:checked], reference=True)
        self.checked_cosine = float((embeddings[:checked] * reference).sum(dim=1).min())
        if self.checked_cosine >= self.min_cosine:
            return embeddings, patches
        logger.warning(
            "%s embeddings reach only cosine %.4f to fp32 (< %.3f): using fp32",
            self.precision,
            self.checked_cosine,
            self.min_cosine,
        )
        self.precision = "fp32"
        self._features = self.model.net.forward_features  # type: ignore[assignment]
        return self._forward(images, reference=True)

    def _validated(self, pixels: Images) -> Images:
        size = self.model.image_size
        shapes = [tuple(pixels.shape[1:])] if isinstance(pixels, torch.Tensor) else [tuple(p.shape) for p in pixels]
        if (isinstance(pixels, torch.Tensor) and pixels.ndim != 4) or any(s != (3, size, size) for s in shapes):
            got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else shapes
            raise ValueError(f"expected [B, 3, {size}, {size}] pixels or [3, {size}, {size}] images, got {got}")
        if len(pixels) == 0:
            raise ValueError("nothing to encode: no images given")
        return pixels

    def _finished(self, embeddings: torch.Tensor, patches: torch.Tensor) -> EncodedBatch:
        grid, dim = self.model.grid_size, self.model.dim
        cells = patches.reshape(patches.shape[0], grid, grid, dim).cpu()
        return EncodedBatch(
            embeddings=embeddings.cpu().numpy().astype(np.float32, copy=False),
            patches=cells,
            grids=pool_patches(cells, self.patch_grid) if self.patch_grid else None,
        )

    def encode(self, pixels: Images) -> EncodedBatch:
        """Embed uint8 ``[B, 3, S, S]`` pixels (or a sequence of ``[3, S, S]`` images) now."""
        images = self._validated(pixels)
        with torch.inference_mode():
            embeddings, patches = self._forward(images)
            if self.precision != "fp32" and self.checked_cosine is None:
                embeddings, patches = self._check_against_fp32(images, embeddings, patches)
        self.calls += 1
        self.images += len(images)
        return self._finished(embeddings, patches)

    def encode_query(self, pixels: torch.Tensor) -> EncodedBatch:
        """Embed one query photo (``[1, 3, S, S]`` uint8) as fast as one photo can go.

        On the CPU it runs on the calling thread with the intra-op threads of the cores other work leaves
        idle (:func:`core.image_threads.idle_threads`) instead of on one image thread: on 2 quiet
        cores a 512 px query took 0.30 s this way against 0.60 s on one thread. The vector is then the
        indexed one to a cosine near 1, not to the byte (the kernels split the work differently);
        vectors that are stored always go through :meth:`encode` or :meth:`submit`, and exact copies are
        told by their sha256, never by a score.
        """
        images = self._validated(pixels)
        if self._threads is None or len(images) != 1:
            return self.encode(images)
        one = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        with torch.inference_mode(), intra_op_threads(idle_threads(torch.get_num_threads())):
            embeddings, patches = self._embed_pixels(one, reference=False)
            if self.precision != "fp32" and self.checked_cosine is None:
                embeddings, patches = self._check_against_fp32(images, embeddings, patches)
        self.calls += 1
        self.images += 1
        return self._finished(embeddings, patches)

    def submit(self, pixels: Images) -> PendingEncoding:
        """Start embedding ``pixels`` and return at once; :meth:`PendingEncoding.result` waits for them.

        On the CPU the photos queue behind those submitted before on the image threads, so a caller can
        commit one batch while the next is computed. On a GPU, and for the first batch of a precision
        that must still be checked against fp32, the work is done before returning.
        """
        images = self._validated(pixels)
        if self._threads is None or (self.precision != "fp32" and self.checked_cosine is None):
            return PendingEncoding(self, [], self.encode(images))
        self.calls += 1
        self.images += len(images)
        return PendingEncoding(self, [self._threads.submit(self._embed_one, image, False) for image in images], None)


class PendingEncoding:
    """Embeddings that image threads may still be computing (see :meth:`Encoder.submit`)."""

    def __init__(
        self,
        encoder: Encoder,
        parts: list[Future[tuple[torch.Tensor, torch.Tensor]]],
        done: EncodedBatch | None,
    ) -> None:
        self._encoder = encoder
        self._parts = parts
        self._done = done

    def result(self) -> EncodedBatch:
        """Wait for every photo of the batch; the first error of a photo is raised here."""
        if self._done is None:
            outputs = [part.result() for part in self._parts]
            embeddings = torch.cat([output[0] for output in outputs])
            patches = torch.cat([output[1] for output in outputs])
            self._done = self._encoder._finished(embeddings, patches)
            self._parts = []
        return self._done


def open_collection_encoder(
    data_dir: Path, model: ModelConfig, runtime: RuntimeConfig, provenance: Provenance
) -> Encoder:
    """An encoder of the model the collection in ``data_dir`` was built with, checked against its catalog's
    ``provenance`` (:func:`core.model.load_collection_model`), pooling patch grids as its index does."""
    device = resolve_device(runtime.device)
    loaded = load_collection_model(data_dir, model, provenance, device)
    return Encoder(
        loaded,
        device,
        runtime.precision,
        runtime.min_cosine,
        parallel_images=runtime.parallel_images,
        patch_grid=provenance.patch_grid,
    )
