"""Turn a decoded photo into the model's input pixels, exactly as birder's inference preset does.

birder's ``inference_preset(size, rgb_stats)`` resizes the whole image to ``size x size`` (bicubic,
antialiased; no crop at its default ``center_crop=1.0``) and normalises with the model's ``rgb_stats``.
The work is split in two so the expensive half runs in the decode workers and only uint8 pixels cross
the process boundary (4x less than float32): :func:`model_pixels` here, the normalisation on the model's
device in :mod:`core.encoder`. A test checks the two halves together equal birder's preset.

The whole image is kept (squashed, never cropped) so a region anywhere in the photo is in the patch grid
and a patch cell maps back to original pixels by a plain scale.
"""

from __future__ import annotations

import functools

import torch
from PIL import Image
from torchvision.transforms import v2


@functools.lru_cache(maxsize=4)
def resize_transform(size: int) -> v2.Compose:
    """The resize and to-tensor half of birder's inference preset, for a square ``size``."""
    return v2.Compose(
        [
            v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.PILToTensor(),
        ]
    )


def model_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """``[3, size, size]`` uint8 pixels of an RGB image, ready for :func:`normalize`."""
    pixels: torch.Tensor = resize_transform(size)(image)
    return pixels


def normalize(pixels: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """Scale uint8 ``[B, 3, H, W]`` pixels to floats and normalise them with the model's rgb stats."""
    scaled = pixels.to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (scaled - mean_t) / std_t
