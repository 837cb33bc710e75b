"""Synthetic edits of a photo: the copies a curator calls "the same photo" (resized, re-compressed,
cropped, mirrored, rotated, recoloured, blurred, captioned, framed, or several of these at once).

Calibration (:mod:`indexer.calibrate`) and the copy-detection benchmark make them from indexed photos to
measure how an edited copy scores against its source. Everything happens in memory with Pillow and
numpy; an edit is a function of the image and the random generator only, so a seed gives the same edits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

logger = logging.getLogger(__name__)

EDIT_FAMILIES: tuple[str, ...] = (
    "resize",
    "jpeg",
    "crop",
    "crop-offcentre",
    "mirror",
    "rotate90",
    "rotate-small",
    "grayscale",
    "color",
    "blur",
    "overlay",
    "border",
    "combo",
)
# What a combination draws from: every family but itself, and not two geometric turns (a combo of a
# mirror and a quarter turn is still one photo, but it says little that each alone does not).
COMBO_PARTS: tuple[str, ...] = tuple(family for family in EDIT_FAMILIES if family not in ("rotate90", "combo"))
CAPTIONS = ("© 2026 Loupe Archive", "SAMPLE", "holiday 2019", "IMG_0042", "do not copy", "press photo")


@dataclass(frozen=True)
class Edit:
    """One edited copy: its family (one of :data:`EDIT_FAMILIES`), what exactly was done, the RGB image."""

    family: str
    name: str
    image: Image.Image


EditFunction = Callable[[Image.Image, np.random.Generator], tuple[str, Image.Image]]


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _resize(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    scale = _uniform(rng, 0.3, 0.7)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return f"resize {scale:.2f}x", image.resize(size, Image.Resampling.LANCZOS)


def _jpeg(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    quality = int(rng.integers(10, 41))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as reopened:
        return f"jpeg q={quality}", reopened.convert("RGB")


def _crop_box(image: Image.Image, fraction: float, centre_x: float, centre_y: float) -> tuple[int, int, int, int]:
    """The box that keeps ``1 - fraction`` of each side, placed at relative position ``centre_*`` (0..1)."""
    width = max(1, round(image.width * (1.0 - fraction)))
    height = max(1, round(image.height * (1.0 - fraction)))
    left = round((image.width - width) * centre_x)
    top = round((image.height - height) * centre_y)
    return left, top, left + width, top + height


def _crop(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    fraction = _uniform(rng, 0.05, 0.30)
    return f"crop {fraction:.0%} centred", image.crop(_crop_box(image, fraction, 0.5, 0.5))


def _crop_offcentre(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    fraction = _uniform(rng, 0.05, 0.30)
    # Towards a corner: the kept part touches (or nearly touches) two edges of the photo.
    x, y = (float(v) for v in rng.choice([0.0, 0.1, 0.9, 1.0], size=2))
    return f"crop {fraction:.0%} off-centre", image.crop(_crop_box(image, fraction, x, y))


def _mirror(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    return "mirror", ImageOps.mirror(image)


def _rotate90(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    angle = int(rng.choice([90, 180, 270]))
    turn = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }[angle]
    return f"rotate {angle}", image.transpose(turn)


def _rotate_small(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    angle = _uniform(rng, 3.0, 15.0) * float(rng.choice([-1.0, 1.0]))
    grey = int(rng.choice([0, 255]))
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(grey, grey, grey))
    return f"rotate {angle:+.1f}° ({'white' if grey else 'black'} fill)", rotated


def _grayscale(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    return "grayscale", ImageOps.grayscale(image).convert("RGB")


def _factor(rng: np.random.Generator) -> float:
    # Away from 1 by at least 0.15, so every change is visible.
    return 1.0 + _uniform(rng, 0.15, 0.45) * float(rng.choice([-1.0, 1.0]))


def _color(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    brightness, contrast, saturation = _factor(rng), _factor(rng), _factor(rng)
    changed = ImageEnhance.Brightness(image).enhance(brightness)
    changed = ImageEnhance.Contrast(changed).enhance(contrast)
    changed = ImageEnhance.Color(changed).enhance(saturation)
    name = f"brightness {brightness:.2f}, contrast {contrast:.2f}, saturation {saturation:.2f}"
    return name, changed


def _blur(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    # In proportion to the photo, so a thumbnail and a 12 MP original lose about as much detail.
    radius = _uniform(rng, 1.0, 3.0) * max(1.0, min(image.size) / 256)
    return f"blur r={radius:.1f}", image.filter(ImageFilter.GaussianBlur(radius))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def _overlay(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    text = str(rng.choice(CAPTIONS))
    canvas = image.convert("RGBA")
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if rng.random() < 0.5:
        bar = max(4, round(canvas.height * _uniform(rng, 0.10, 0.20)))
        draw.rectangle((0, canvas.height - bar, canvas.width, canvas.height), fill=(0, 0, 0, 200))
        draw.text((bar // 4, canvas.height - bar * 0.85), text, fill=(255, 255, 255, 255), font=_font(max(6, bar // 2)))
        name = f"caption bar {bar / canvas.height:.0%} '{text}'"
    else:
        size = max(6, round(min(canvas.size) * _uniform(rng, 0.08, 0.16)))
        x = round(canvas.width * _uniform(rng, 0.05, 0.5))
        y = round(canvas.height * _uniform(rng, 0.05, 0.8))
        draw.text(
            (x, y),
            text,
            fill=(255, 255, 255, 150),
            font=_font(size),
            stroke_width=max(1, size // 12),
            stroke_fill=(0, 0, 0, 150),
        )
        name = f"watermark '{text}'"
    return name, Image.alpha_composite(canvas, layer).convert("RGB")


def _border(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    fraction = _uniform(rng, 0.05, 0.20)
    pad = max(1, round(min(image.size) * fraction))
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    return f"border {fraction:.0%} rgb{colour}", ImageOps.expand(image, border=pad, fill=colour)


def _combo(image: Image.Image, rng: np.random.Generator) -> tuple[str, Image.Image]:
    count = int(rng.integers(2, 4))
    parts = [str(part) for part in rng.choice(COMBO_PARTS, size=count, replace=False)]
    names = []
    for part in parts:
        name, image = EDITS[part](image, rng)
        names.append(name)
    return " + ".join(names), image


EDITS: dict[str, EditFunction] = {
    "resize": _resize,
    "jpeg": _jpeg,
    "crop": _crop,
    "crop-offcentre": _crop_offcentre,
    "mirror": _mirror,
    "rotate90": _rotate90,
    "rotate-small": _rotate_small,
    "grayscale": _grayscale,
    "color": _color,
    "blur": _blur,
    "overlay": _overlay,
    "border": _border,
    "combo": _combo,
}


def make_edit(image: Image.Image, family: str, rng: np.random.Generator) -> Edit:
    """One edited copy of ``image`` (any mode; the copy is RGB) from ``family``, its details drawn
    from ``rng``. Raises ``ValueError`` for an unknown family."""
    edit = EDITS.get(family)
    if edit is None:
        raise ValueError(f"unknown edit family {family!r} (known: {', '.join(EDIT_FAMILIES)})")
    name, edited = edit(image.convert("RGB"), rng)
    return Edit(family=family, name=name, image=edited.convert("RGB"))


def make_edits(image: Image.Image, rng: np.random.Generator, families: Sequence[str] = EDIT_FAMILIES) -> list[Edit]:
    """One edited copy of ``image`` per family, in the order given."""
    return [make_edit(image, family, rng) for family in families]
