"""Turn a decoded photo into the model's input pixels, exactly as birder's inference preset does, and say so.

birder's ``inference_preset(size, rgb_stats)`` resizes the whole image to ``size x size`` (bicubic,
antialiased; no crop at its default ``center_crop=1.0``) and normalises with the model's ``rgb_stats``.
The work is split in two so the expensive half runs in the decode workers and only uint8 pixels cross
the process boundary (4x less than float32): :func:`model_pixels` (or :func:`resize_pixels` for photos
decoded on the GPU, :mod:`core.device_decode`), then :func:`normalize` on the model's device in
:mod:`core.encoder`. A test checks the two halves together equal birder's preset.

The whole image is kept (squashed, never cropped) so a region anywhere in the photo is in the patch grid
and a patch cell maps back to original pixels by a plain scale.

Every rule of the preprocessing is a constant here, and :func:`preprocessing_descriptor` writes the
catalog's provenance string from the same constants: a change to the rule changes the string, so a
catalog built under the old rule refuses vectors made under the new one.
"""

from __future__ import annotations

import functools

import torch
from PIL import Image
from torchvision.transforms import v2

# The resize of both paths (Pillow images in the decode workers, tensors decoded on the GPU).
RESIZE_MODE = "bicubic"
RESIZE_ANTIALIAS = True
# How the encoder makes the global embedding of the patch tokens (core.encoder.Encoder._embed_pixels).
GLOBAL_POOLING = "mean-of-patch-tokens"
GLOBAL_NORM = "l2"


def preprocessing_descriptor(rgb_mean: tuple[float, ...], rgb_std: tuple[float, ...]) -> str:
    """The catalog's ``preprocessing`` provenance field for a model's rgb stats, made from the rules above
    (``squash-bicubic-antialias;mean=0.5,0.5,0.5;std=0.5,0.5,0.5;mean-of-patch-tokens;l2``)."""
    mean = ",".join(f"{v:g}" for v in rgb_mean)
    std = ",".join(f"{v:g}" for v in rgb_std)
    resize = f"squash-{RESIZE_MODE}" + ("-antialias" if RESIZE_ANTIALIAS else "")
    return f"{resize};mean={mean};std={std};{GLOBAL_POOLING};{GLOBAL_NORM}"


@functools.lru_cache(maxsize=4)
def resize_transform(size: int) -> v2.Compose:
    """The resize and to-tensor half of birder's inference preset, for a square ``size``."""
    return v2.Compose(
        [
            v2.Resize((size, size), interpolation=v2.InterpolationMode(RESIZE_MODE), antialias=RESIZE_ANTIALIAS),
            v2.PILToTensor(),
        ]
    )


def model_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """``[3, size, size]`` uint8 pixels of an RGB image, ready for :func:`normalize`."""
    pixels: torch.Tensor = resize_transform(size)(image)
    return pixels


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` uint8 resized to ``[C, size, size]`` uint8 on their device, like :func:`model_pixels`."""
    scaled = torch.nn.functional.interpolate(
        pixels.unsqueeze(0).float(),
        size=(size, size),
        mode=RESIZE_MODE,
        antialias=RESIZE_ANTIALIAS,
        align_corners=False,
    )
    return scaled.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def normalize(pixels: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """Scale uint8 ``[B, 3, H, W]`` pixels to floats and normalise them with the model's rgb stats."""
    scaled = pixels.to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (scaled - mean_t) / std_t
