"""The region benchmark's collection (benchmarks/region_collection.py): split, regions, hosts, truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.region import iou, score_region
from benchmarks.region_collection import HOST_SHAPES, make_collection, pick_region, reshape_host, split_of, texture


def _photo(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> Path:
    """Left half blocky noise (textured), right half a gentle gradient with a little noise (plain)."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((size[1], size[0], 3), dtype=np.float32)
    half = size[0] // 2
    blocks = rng.uniform(0, 255, size=(size[1] // 8, half // 8, 3))  # 8 px blocks: survive resampling
    pixels[:, :half] = blocks.repeat(8, axis=0).repeat(8, axis=1)
    ramp = np.linspace(60, 200, size[0] - half, dtype=np.float32)[None, :, None]
    pixels[:, half:] = ramp + rng.normal(0, 3, size=(size[1], size[0] - half, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def test_the_split_is_a_stable_half_by_file_name() -> None:
    names = [Path(f"dir{n % 3}/photo-{n}.jpg") for n in range(400)]
    splits = [split_of(name) for name in names]
    assert splits == [split_of(Path("elsewhere") / name.name) for name in names]  # the name alone decides
    assert 150 < splits.count("tune") < 250


def test_textured_and_plain_regions_are_told_apart(tmp_path: Path) -> None:
    with Image.open(_photo(tmp_path / "a.png", 0)) as opened:
        image = opened.convert("RGB")
    textured = pick_region(image, True, np.random.default_rng(0))
    plain = pick_region(image, False, np.random.default_rng(0))
    assert textured is not None and plain is not None
    assert textured[1] > 2 * plain[1]
    assert texture(image, plain[0])[1] >= 8.0  # plain, not blank


def test_hosts_take_their_shape() -> None:
    image = Image.new("RGB", (1600, 900), "grey")
    for shape, (aspect, longer) in HOST_SHAPES.items():
        host = reshape_host(image, shape)
        assert max(host.size) == longer
        assert abs(host.width / host.height - aspect) < 0.01


def test_the_collection_holds_each_region_where_the_truth_says(tmp_path: Path) -> None:
    photos = [_photo(tmp_path / f"photo-{n:02d}.png", n) for n in range(24)]
    chosen = [p for p in photos if split_of(p) == "report"]
    planted, distractors = make_collection(photos, tmp_path / "out", 4, 2, "report", 0)
    assert len(planted) == 4 and [region.kind for region in planted] == ["textured", "plain"] * 2
    assert distractors == len(chosen) - 4
    assert not {region.source for region in planted} & {p for p in photos if split_of(p) == "tune"}
    for region in planted:
        with Image.open(region.source) as opened:
            cut = np.asarray(opened.convert("RGB").crop(region.box), dtype=np.float32)
        for target in region.targets:
            with Image.open(tmp_path / "out" / target.name) as opened:
                host = opened.convert("RGB")
            pasted = np.asarray(host.crop(target.box).resize(cut.shape[1::-1]), dtype=np.float32)
            # The pasted pixels are the region's (up to resampling and JPEG), not the host's.
            assert np.corrcoef(pasted.ravel(), cut.ravel())[0, 1] > 0.5
    found = [(region.targets[0].name, region.targets[0].box) for region in planted[:1]]
    scored = score_region(planted[0], found)
    assert scored["r1"] == 1.0 and scored["r10"] == 0.5 and scored["ious"] == [1.0]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 1 / 3
