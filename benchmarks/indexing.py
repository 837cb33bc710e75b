"""Indexing speed against the model's own limit, in one run, on the same photos, size, batch and device.

(a) forward-only: the model alone on pre-made uint8 tensors (the pipeline's own encoder: normalisation
    and the forward pass, batches submitted as the build submits them, one photo per image thread on
    the CPU) - the ceiling for end-to-end;
(b) end-to-end: a full ``indexer build`` into a fresh data dir (scan, read, hash, decode workers,
    inference, catalog commits, index write);
(c) naive: the model card's loop, ``birder.inference.classification.infer_image`` one photo at a time
    with birder's inference preset (fp32);
(d) decode ceiling: the build's readers alone (read, hash, decode, resize in the decode workers, plus
    nvJPEG on CUDA), no model - the other limit end-to-end cannot beat;
and, when the build's precision is not fp32, forward-only in fp32 for the speed-up it buys.

It prints images/s for each, the ratios end-to-end / forward-only, end-to-end / naive and end-to-end /
min(forward-only, decode ceiling), and checks them against the targets of issue 6.

    python benchmarks/indexing.py ../shared/photos --image-size 224
    python benchmarks/indexing.py ../shared/photos --image-size 512 --limit 48 --json
    python benchmarks/indexing.py --generate 400 --device cuda     # 12-megapixel JPEGs, made here
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import LoupeConfig, with_overrides  # noqa: E402
from core.decode import DecodeLimits, supported_extensions  # noqa: E402
from core.device_decode import GPU_JPEG_MIN_PIXELS  # noqa: E402
from core.encoder import Encoder, resolve_batch_size  # noqa: E402
from core.model import load_model, resolve_device  # noqa: E402
from core.reader import PhotoDataset, WorkItem, finish_on_device, make_loader, resolve_workers  # noqa: E402
from core.settings import resolve_settings  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from indexer.summary import BuildSummary  # noqa: E402

# Issue 6's targets.
TARGET_OVER_FORWARD = 0.85
TARGET_OVER_NAIVE = 1.5
TARGET_OVER_CEILING_GPU = 0.8


def forward_only(config: LoupeConfig, images: int, precision: str | None = None) -> tuple[float, str]:
    """Images/s of the encoder alone on pre-made pixels (one warm-up batch excluded), and its precision."""
    device = resolve_device(config.runtime.device)
    model = load_model(config.model, device)
    encoder = Encoder(
        model,
        device,
        precision or config.runtime.precision,
        config.runtime.min_cosine,
        parallel_images=config.runtime.parallel_images,
    )
    size, batch = config.model.image_size, resolve_batch_size(config.runtime.batch_size, model, device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    encoder.encode(pixels)
    batches = max(1, math.ceil(images / batch))
    started = time.perf_counter()
    # Submitted like the build submits them: the next batch queues while the previous one is collected,
    # so image threads never wait at the end of a batch.
    previous = encoder.submit(pixels)
    for _ in range(batches - 1):
        current = encoder.submit(pixels)
        previous.result()
        previous = current
    previous.result()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - started), encoder.precision


def end_to_end(config: LoupeConfig, photos: Path) -> tuple[BuildSummary, float]:
    """A full build into a fresh data dir: its summary (images/s over the processing phase), and images/s
    over the whole command (model loading and index write included)."""
    shutil.rmtree(config.data_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = run_build(config, [photos], show_progress=False)
    wall = time.perf_counter() - started
    return summary, summary.processed / wall


def decode_ceiling(config: LoupeConfig, files: list[Path], batch_size: int) -> float:
    """Images/s of the build's readers alone: what the decode side can feed the model at most."""
    device = resolve_device(config.runtime.device)
    limits = DecodeLimits.of(config.decode)
    device_jpegs = device.type == "cuda" and config.runtime.gpu_jpeg == "auto"
    items = [WorkItem(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    size = config.model.image_size
    dataset = PhotoDataset(items, size, limits, frozenset(), GPU_JPEG_MIN_PIXELS if device_jpegs else None)
    workers = resolve_workers(config.runtime.workers, device)
    loader = make_loader(dataset, batch_size, workers, stack_pixels=False)
    started = time.perf_counter()
    count = 0
    for batch in loader:
        if device_jpegs:
            batch = finish_on_device(batch, size, limits, device, stack_pixels=False)
        count += len(batch.results)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def _generate_one(folder: Path, index: int, width: int, height: int) -> None:
    rng = np.random.default_rng(index)
    ys, xs = np.ogrid[0:height, 0:width]
    frequencies = rng.uniform(40, 400, size=6)
    noise = rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    channels = [
        128 + 60 * np.sin(xs / frequencies[c] + index) * np.cos(ys / frequencies[c + 3]) + noise[..., c]
        for c in range(3)
    ]
    pixels = np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"generated-{index:05d}.jpg", quality=90)


def generate_photos(folder: Path, count: int, width: int = 4000, height: int = 3000) -> None:
    """``count`` seeded 12-megapixel camera-like JPEGs (smooth structure plus sensor-like noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_generate_one, [folder] * count, range(count), [width] * count, [height] * count))


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


def _check(value: float, target: float) -> str:
    return f"{'meets' if value >= target else 'MISSES'} the target {target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="?", help="folder of photos (or --generate)")
    parser.add_argument("--generate", type=int, metavar="N", help="make N 12-megapixel JPEGs to index instead")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--precision", default="auto", help="auto (the build's default), fp32, bf16, int8")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = the build's automatic batch size")
    parser.add_argument("--workers", type=int, default=-1, help="decode workers (-1 = the build's automatic count)")
    parser.add_argument(
        "--parallel-images", type=int, default=-1, help="CPU photos at once, one thread each (-1 = auto: one per core)"
    )
    parser.add_argument("--weights", default="random", help="random (default; same cost as pretrained) or pretrained")
    parser.add_argument("--limit", type=int, help="use only the first N photos (sorted by name)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the measurements N times; medians")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if (args.photos is None) == (args.generate is None):
        parser.error("give a folder of photos or --generate N")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    workdir = Path(tempfile.mkdtemp(prefix="loupe-indexing-"))
    photos = workdir / "photos"
    if args.generate:
        generate_photos(photos, args.generate)
        files = sorted(photos.iterdir())
    else:
        extensions = supported_extensions()
        files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in extensions)[: args.limit]
        photos.mkdir()
        for path in files:
            (photos / path.name).symlink_to(path.resolve())
        files = sorted(photos.iterdir())
    config = with_overrides(
        resolve_settings().config,  # the user's settings (config file, models dir), as every command
        {
            "data_dir": workdir / "data",
            "model.weights": args.weights,
            "model.image_size": args.image_size,
            "runtime.device": args.device,
            "runtime.precision": args.precision,
            "runtime.batch_size": args.batch_size,
            "runtime.workers": args.workers,
            "runtime.parallel_images": args.parallel_images,
        },
    )
    # Rounds interleave the measurements, so a noisy neighbour slows all of them alike; medians are kept.
    # Within a round the three the targets compare run back to back (forward-only, build, naive loop), so
    # the VM's drift has the least time to come between them; the fp32 pass and the readers come last.
    rounds: dict[str, list[float]] = {"forward": [], "fp32": [], "build": [], "wall": [], "ceiling": [], "naive": []}
    for _ in range(args.rounds):
        forward_round, precision = forward_only(config, len(files))
        rounds["forward"].append(forward_round)
        summary, build_wall_round = end_to_end(config, photos)
        rounds["build"].append(summary.images_per_s)
        rounds["wall"].append(build_wall_round)
        rounds["naive"].append(naive(config, files))
        rounds["fp32"].append(forward_round if precision == "fp32" else forward_only(config, len(files), "fp32")[0])
        rounds["ceiling"].append(decode_ceiling(config, files, summary.batch_size))
    forward, forward_fp32, build, build_wall, ceiling, loop = (
        statistics.median(rounds[name]) for name in ("forward", "fp32", "build", "wall", "ceiling", "naive")
    )
    device = resolve_device(args.device)
    limit = min(forward, ceiling)
    report: dict[str, Any] = {
        "photos": len(files),
        "rounds": args.rounds,
        "generated_12mp": bool(args.generate),
        "image_size": args.image_size,
        "precision": summary.precision,
        "cosine_to_fp32_first_batch": summary.checked_cosine,
        "batch_size": summary.batch_size,
        "parallel_images": summary.parallel_images,
        "compiled": summary.compiled,
        "workers": resolve_workers(args.workers, device),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "forward_only_img_s": round(forward, 2),
        "forward_only_fp32_img_s": round(forward_fp32, 2),
        "end_to_end_img_s": round(build, 2),
        "end_to_end_wall_img_s": round(build_wall, 2),
        "decode_ceiling_img_s": round(ceiling, 2),
        "naive_img_s": round(loop, 2),
        "end_to_end_over_forward_only": round(build / forward, 3),
        "end_to_end_over_naive": round(build / loop, 3),
        "end_to_end_over_min_forward_decode": round(build / limit, 3),
        # Each round's own ratios: its measurements ran minutes apart at most, so drift between rounds
        # on a shared machine cancels out of them.
        "per_round": {
            **{f"{name}_img_s": [round(value, 2) for value in values] for name, values in rounds.items()},
            "end_to_end_over_forward_only": [
                round(b / f, 3) for b, f in zip(rounds["build"], rounds["forward"], strict=True)
            ],
            "end_to_end_over_naive": [round(b / n, 3) for b, n in zip(rounds["build"], rounds["naive"], strict=True)],
        },
    }
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cosine = f", cosine >= {summary.checked_cosine:.5f} to fp32" if summary.checked_cosine is not None else ""
    print(
        f"indexing benchmark: {len(files)} photos at {args.image_size} px, {summary.precision}{cosine}, "
        f"batch {summary.batch_size}, {summary.parallel_images or 'whole-batch'} photos at once, "
        f"{report['workers']} decode workers, {report['device']}, "
        f"{report['torch_threads']} torch threads, median of {args.rounds} round(s)"
    )
    print(f"{'(a) forward-only':<30} {forward:8.2f} img/s  (fp32: {forward_fp32:.2f})")
    print(f"{'(b) end-to-end build':<30} {build:8.2f} img/s  ({build_wall:.2f} with model load and index write)")
    print(f"{'(c) naive infer_image loop':<30} {loop:8.2f} img/s")
    print(f"{'(d) decode ceiling':<30} {ceiling:8.2f} img/s")
    print(f"end-to-end / forward-only = {build / forward:.3f}  ({_check(build / forward, TARGET_OVER_FORWARD)})")
    print(f"end-to-end / naive        = {build / loop:.3f}  ({_check(build / loop, TARGET_OVER_NAIVE)})")
    if args.rounds > 1:
        per_round = report["per_round"]
        print(
            "per round: end-to-end / forward-only "
            + ", ".join(f"{ratio:.3f}" for ratio in per_round["end_to_end_over_forward_only"])
            + "; end-to-end / naive "
            + ", ".join(f"{ratio:.3f}" for ratio in per_round["end_to_end_over_naive"])
        )
    over_limit = build / limit
    gpu_target = _check(over_limit, TARGET_OVER_CEILING_GPU) if device.type == "cuda" else "the GPU target"
    print(f"end-to-end / min(forward-only, decode ceiling) = {over_limit:.3f}  ({gpu_target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
