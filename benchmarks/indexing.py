"""Indexing speed against the model's own limit, in one run, on the same photos, size, batch and device.

(a) forward-only: the model alone on pre-made uint8 tensors (the pipeline's own encoder: normalisation
    and one forward pass per batch) - the ceiling for end-to-end;
(b) end-to-end: a full ``indexer build`` into a fresh data dir (scan, read, hash, decode workers,
    inference, catalog commits, index write);
(c) naive: the model card's loop, ``birder.inference.classification.infer_image`` one photo at a time
    with birder's inference preset.

It prints images/s for each and the ratios end-to-end / forward-only and end-to-end / naive.

    python benchmarks/indexing.py ../shared/photos --image-size 224
    python benchmarks/indexing.py ../shared/photos --image-size 512 --limit 60 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.config import LoupeConfig, with_overrides  # noqa: E402
from indexer.decode import supported_extensions  # noqa: E402
from indexer.encoder import Encoder, load_model, resolve_device  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402


def forward_only(config: LoupeConfig, images: int) -> float:
    """Images/s of the encoder alone on pre-made pixels (one warm-up batch excluded)."""
    device = resolve_device(config.runtime.device)
    model = load_model(config.model, device)
    encoder = Encoder(model, device, config.runtime.precision, config.runtime.min_cosine)
    size, batch = config.model.image_size, config.runtime.batch_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    encoder.encode(pixels)
    batches = max(1, math.ceil(images / batch))
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode(pixels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - started)


def end_to_end(config: LoupeConfig, photos: Path) -> tuple[float, float]:
    """Images/s of a full build into a fresh data dir: over the processing phase, and over the whole
    command (model loading and index write included)."""
    shutil.rmtree(config.data_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = run_build(config, [photos], show_progress=False)
    wall = time.perf_counter() - started
    return summary.images_per_s, summary.processed / wall


def naive(config: LoupeConfig, files: list[Path]) -> float:
    """Images/s of birder's one-photo-at-a-time ``infer_image`` with its inference preset."""
    from birder.data.transforms.classification import inference_preset
    from birder.inference.classification import infer_image

    device = resolve_device(config.runtime.device)
    model = load_model(config.model, device)
    size = config.model.image_size
    transform = inference_preset((size, size), {"mean": model.rgb_mean, "std": model.rgb_std})
    with Image.open(files[0]) as first:
        infer_image(model.net, first.convert("RGB"), transform, return_embedding=True, device=device)
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            infer_image(model.net, image.convert("RGB"), transform, return_embedding=True, device=device)
    return len(files) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, help="folder of photos")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", default="random", help="random (default; same cost as pretrained) or pretrained")
    parser.add_argument("--limit", type=int, help="use only the first N photos (sorted by name)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    extensions = supported_extensions()
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in extensions)[: args.limit]
    workdir = Path(tempfile.mkdtemp(prefix="loupe-indexing-"))
    photos = workdir / "photos"
    photos.mkdir()
    for path in files:
        (photos / path.name).symlink_to(path.resolve())
    config = with_overrides(
        LoupeConfig(),
        {
            "data_dir": workdir / "data",
            "model.weights": args.weights,
            "model.image_size": args.image_size,
            "runtime.device": args.device,
            "runtime.batch_size": args.batch_size,
            "runtime.workers": args.workers,
        },
    )
    forward = forward_only(config, len(files))
    build, build_wall = end_to_end(config, photos)
    loop = naive(config, files)
    device = resolve_device(args.device)
    report: dict[str, Any] = {
        "photos": len(files),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "forward_only_img_s": round(forward, 2),
        "end_to_end_img_s": round(build, 2),
        "end_to_end_wall_img_s": round(build_wall, 2),
        "naive_img_s": round(loop, 2),
        "end_to_end_over_forward_only": round(build / forward, 3),
        "end_to_end_over_naive": round(build / loop, 3),
    }
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"indexing benchmark: {len(files)} photos at {args.image_size} px, batch {args.batch_size}, "
        f"{args.workers} decode workers, {report['device']}, {report['torch_threads']} torch threads"
    )
    print(f"{'(a) forward-only':<28} {forward:8.2f} img/s")
    print(f"{'(b) end-to-end build':<28} {build:8.2f} img/s  ({build_wall:.2f} with model load and index write)")
    print(f"{'(c) naive infer_image loop':<28} {loop:8.2f} img/s")
    print(f"end-to-end / forward-only = {build / forward:.3f}   end-to-end / naive = {build / loop:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
