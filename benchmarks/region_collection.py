"""The region benchmark's planted collection (``benchmarks/region.py``): regions cut out of source photos,
textured or plain, pasted at 0.5x to 2x into hosts reshaped to different sizes and aspect ratios.

- Split: a photo belongs to the ``tune`` or the ``report`` half by a hash of its file name (salted with
  :data:`SPLIT_SALT`, not the seed), so figures reported on one half never come from photos used to tune
  on the other, whatever the seed.
- Regions: for each source, :data:`CANDIDATE_BOXES` random boxes (30-45% of the smaller side, aspect 0.75
  to 1.33) are measured by edge density (mean absolute grey-level gradient); every other source keeps its
  most textured box, the rest their plainest. Boxes flatter than :data:`MIN_STD` (grey-level standard
  deviation) are never kept: a blank patch of sky could be anywhere, so its truth is not one place.
- Hosts: each target is a photo of the split's pool (never a source) centre-cropped and resized to one of
  :data:`HOST_SHAPES` in turn; the region is resized by a log-uniform scale in 0.5..2 (shrunk if needed to
  stay within 60% of the host's smaller side, and grown to at least :data:`MIN_PASTE` px) and pasted at a
  random place. The pool's photos are also indexed unchanged, as distractors.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.region import Box

SPLIT_SALT = "loupe-region-benchmark"
CANDIDATE_BOXES = 12
MIN_STD = 8.0
MIN_PASTE = 24
# name -> (width / height, longer side in px)
HOST_SHAPES: dict[str, tuple[float, int]] = {
    "landscape": (16 / 9, 1280),
    "portrait": (3 / 4, 1024),
    "square": (1.0, 800),
    "small": (4 / 3, 400),
    "large": (3 / 2, 2000),
}


@dataclass(frozen=True)
class Target:
    """One host the region was pasted into: the file written, the pasted box, the host's shape and the
    scale actually applied (after the fit-in-host limits)."""

    name: str
    box: Box
    shape: str
    scale: float


@dataclass(frozen=True)
class PlantedRegion:
    source: Path
    box: Box
    kind: str  # "textured" or "plain"
    edge_density: float
    targets: tuple[Target, ...]

    def target_box(self, name: str) -> Box | None:
        for target in self.targets:
            if target.name == name:
                return target.box
        return None


def split_of(path: Path) -> str:
    """``tune`` or ``report``: half of the photos each, by a salted hash of the file name."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{path.name}".encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "report"


def texture(image: Image.Image, box: Box) -> tuple[float, float]:
    """Edge density (mean absolute grey gradient, 0..255) and grey standard deviation of ``box``."""
    grey = np.asarray(image.crop(box).convert("L"), dtype=np.float32)
    edges = (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
    return float(edges), float(grey.std())


def pick_region(image: Image.Image, textured: bool, rng: np.random.Generator) -> tuple[Box, float] | None:
    """The most textured (or plainest, not blank) of a few random boxes, with its edge density."""
    side = min(image.size)
    measured: list[tuple[float, Box]] = []
    for _ in range(CANDIDATE_BOXES):
        width = int(side * rng.uniform(0.3, 0.45))
        height = min(image.height, int(width * rng.uniform(0.75, 1.33)))
        x0 = int(rng.integers(0, image.width - width + 1))
        y0 = int(rng.integers(0, image.height - height + 1))
        box: Box = (x0, y0, x0 + width, y0 + height)
        edges, std = texture(image, box)
        if std >= MIN_STD:
            measured.append((edges, box))
    if not measured:
        return None
    edges, box = max(measured) if textured else min(measured)
    return box, edges


def reshape_host(image: Image.Image, shape: str) -> Image.Image:
    """Centre-crop ``image`` to the shape's aspect ratio and resize it to the shape's longer side."""
    aspect, longer = HOST_SHAPES[shape]
    if image.width / image.height > aspect:
        crop_w, crop_h = round(image.height * aspect), image.height
    else:
        crop_w, crop_h = image.width, round(image.width / aspect)
    left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    size = (longer, round(longer / aspect)) if aspect >= 1 else (round(longer * aspect), longer)
    return cropped.resize(size, Image.Resampling.BICUBIC)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def make_collection(
    photos: list[Path], out: Path, regions: int, targets_per_region: int, split: str, seed: int
) -> tuple[list[PlantedRegion], int]:
    """Write targets and distractors of one split into ``out``; return the ground truth and the number
    of distractors."""
    rng = np.random.default_rng(seed)
    chosen = [photo for photo in photos if split_of(photo) == split]
    order = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in order]
    if len(chosen) < regions + targets_per_region:
        raise ValueError(f"the {split} split has {len(chosen)} photos: too few for {regions} regions")
    out.mkdir(parents=True)
    planted: list[PlantedRegion] = []
    sources: list[tuple[Path, Box, str, float]] = []
    position = 0
    while len(sources) < regions and position < len(chosen):
        textured = len(sources) % 2 == 0
        picked = pick_region(_open(chosen[position]), textured, rng)
        if picked is not None:
            sources.append((chosen[position], picked[0], "textured" if textured else "plain", picked[1]))
        position += 1
    pool = chosen[position:]
    if len(sources) < regions or not pool:
        raise ValueError(f"the {split} split has too few usable photos for {regions} regions")
    shapes = list(HOST_SHAPES)
    host_turn = 0
    for number, (source, box, kind, edges) in enumerate(sources):
        region = _open(source).crop(box)
        targets: list[Target] = []
        for t in range(targets_per_region):
            shape = shapes[host_turn % len(shapes)]
            host = reshape_host(_open(pool[host_turn % len(pool)]), shape)
            host_turn += 1
            scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            scale = min(scale, 0.6 * min(host.size) / max(region.size))
            scale = max(scale, MIN_PASTE / min(region.size))
            pasted = region.resize(
                (max(8, round(region.width * scale)), max(8, round(region.height * scale))), Image.Resampling.BICUBIC
            )
            px = int(rng.integers(0, host.width - pasted.width + 1))
            py = int(rng.integers(0, host.height - pasted.height + 1))
            host.paste(pasted, (px, py))
            name = f"region{number:02d}-{kind}-target{t}-{shape}.jpg"
            host.save(out / name, quality=90)
            targets.append(Target(name, (px, py, px + pasted.width, py + pasted.height), shape, round(scale, 3)))
        planted.append(PlantedRegion(source, box, kind, round(edges, 2), tuple(targets)))
    for photo in pool:
        _open(photo).save(out / f"distractor-{photo.stem}.jpg", quality=90)
    return planted, len(pool)
