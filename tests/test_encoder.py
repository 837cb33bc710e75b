from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import ModelConfig
from core.encoder import Encoder, cpu_bf16_units, resolve_batch_size, resolve_precision, should_compile
from core.errors import ConfigError
from core.model import LoadedModel, load_model
from core.preprocess import model_pixels, normalize
from tests.conftest import OTHER_MEAN, OTHER_STD, PHOTOS, TEST_IMAGE_SIZE


def _pixels(size: int, count: int = 3) -> torch.Tensor:
    images = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.jpg"))[:count]]
    return torch.stack([model_pixels(image, size) for image in images])


def test_preprocessing_equals_birders_inference_preset() -> None:
    from birder.data.transforms.classification import inference_preset

    image = Image.open(sorted(PHOTOS.glob("*.jpg"))[0]).convert("RGB")
    size = TEST_IMAGE_SIZE
    preset = inference_preset((size, size), {"mean": OTHER_MEAN, "std": OTHER_STD})
    ours = normalize(model_pixels(image, size).unsqueeze(0), OTHER_MEAN, OTHER_STD)[0]
    torch.testing.assert_close(ours, preset(image), atol=1e-6, rtol=0)


def test_random_model_facts(random_model: LoadedModel) -> None:
    assert random_model.dim == 384
    assert random_model.grid_size == TEST_IMAGE_SIZE // 16
    assert random_model.native_size == 512
    assert random_model.weights.kind == "random" and len(random_model.weights.sha256) == 64
    assert random_model.rgb_mean == (0.5, 0.5, 0.5) and random_model.rgb_std == (0.5, 0.5, 0.5)


def test_random_weights_take_birders_centered_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random model's mean and std are what birder says its "centered" stats are, not constants of ours
    (the loaded file's stats: tests/test_weights.py)."""
    from birder.data.transforms import classification

    real = classification.get_rgb_stats

    def moved_stats(mode: Any) -> Any:
        return {"mean": OTHER_MEAN, "std": OTHER_STD} if mode == "centered" else real(mode)

    monkeypatch.setattr(classification, "get_rgb_stats", moved_stats)
    model = load_model(ModelConfig(weights="random", image_size=TEST_IMAGE_SIZE), torch.device("cpu"))
    assert (model.rgb_mean, model.rgb_std) == (OTHER_MEAN, OTHER_STD)


def test_random_weights_are_seeded() -> None:
    first = load_model(ModelConfig(weights="random", image_size=64, random_seed=0), torch.device("cpu"))
    second = load_model(ModelConfig(weights="random", image_size=64, random_seed=0), torch.device("cpu"))
    other = load_model(ModelConfig(weights="random", image_size=64, random_seed=1), torch.device("cpu"))
    assert first.weights.sha256 == second.weights.sha256 != other.weights.sha256


def test_one_pass_gives_birders_embedding_and_detection_features(random_model: LoadedModel) -> None:
    model = replace(random_model, rgb_mean=OTHER_MEAN, rgb_std=OTHER_STD)
    encoder = Encoder(model, torch.device("cpu"))
    pixels = _pixels(TEST_IMAGE_SIZE)
    batch = encoder.encode(pixels)
    assert batch.embeddings.shape == (3, 384) and batch.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-5)
    grid = TEST_IMAGE_SIZE // 16
    assert batch.patches.shape == (3, grid, grid, 384)

    # The encoder normalises with the model's own stats: the same network on the same pixels with other
    # stats gives other vectors.
    x = normalize(pixels, OTHER_MEAN, OTHER_STD)
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(model.net.embedding(x), dim=1)  # type: ignore[operator]
        detection = model.net.detection_features(x)["stage1"]  # type: ignore[operator]
    np.testing.assert_allclose(batch.embeddings, reference.numpy(), atol=1e-5)
    torch.testing.assert_close(batch.patches.permute(0, 3, 1, 2), detection, atol=1e-4, rtol=1e-4)
    assert (encoder.calls, encoder.images) == (1, 3)
    centered = Encoder(random_model, torch.device("cpu")).encode(pixels).embeddings
    assert (centered * batch.embeddings).sum(axis=1).max() < 0.999


def test_batching_does_not_change_embeddings(random_model: LoadedModel) -> None:
    encoder = Encoder(random_model, torch.device("cpu"))
    pixels = _pixels(TEST_IMAGE_SIZE)
    together = encoder.encode(pixels).embeddings
    alone = np.concatenate([encoder.encode(pixels[i : i + 1]).embeddings for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_wrong_input_shape_is_refused(random_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="expected"):
        Encoder(random_model, torch.device("cpu")).encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.slow
def test_real_size_grid_is_32_by_32() -> None:
    model = load_model(ModelConfig(weights="random"), torch.device("cpu"))
    batch = Encoder(model, torch.device("cpu")).encode(_pixels(512, count=1))
    assert batch.patches.shape == (1, 32, 32, 384)


def test_auto_precision_is_the_fast_faithful_one_for_the_device() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_bf16_units() == "amx" else "int8")
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(ConfigError, match="int8 runs on the CPU only; use bf16 or fp32 on MPS"):
        resolve_precision("int8", torch.device("mps"))
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_int8_stays_faithful(random_model: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="int8 runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    pixels = _pixels(TEST_IMAGE_SIZE, count=6)
    reference = Encoder(random_model, torch.device("cpu"), "fp32").encode(pixels)
    int8 = Encoder(random_model, torch.device("cpu"), "int8")
    quantized = int8.encode(pixels)
    assert int8.precision == "int8" and int8.checked_cosine is not None and int8.checked_cosine >= 0.995
    cosines = (quantized.embeddings * reference.embeddings).sum(axis=1)
    assert cosines.min() >= 0.995 and not np.allclose(quantized.embeddings, reference.embeddings, atol=1e-7)
    # The fp32 network is left untouched by quantisation.
    assert (
        Encoder(random_model, torch.device("cpu"), "fp32").encode(pixels).embeddings.tolist()
        == reference.embeddings.tolist()
    )


def test_unfaithful_int8_falls_back_to_fp32(random_model: LoadedModel) -> None:
    pixels = _pixels(TEST_IMAGE_SIZE, count=3)
    reference = Encoder(random_model, torch.device("cpu"), "fp32").encode(pixels).embeddings
    strict = Encoder(random_model, torch.device("cpu"), "int8", min_cosine=1.01)  # no int8 model can pass
    first = strict.encode(pixels).embeddings
    assert strict.precision == "fp32"
    np.testing.assert_array_equal(first, reference)
    np.testing.assert_array_equal(strict.encode(pixels).embeddings, reference)


def test_automatic_batch_size_follows_the_token_budget(random_model: LoadedModel) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    at = {size: replace(random_model, image_size=size) for size in (64, 224, 512)}
    assert resolve_batch_size(0, at[224], cpu) == 8
    assert resolve_batch_size(0, at[512], cpu) == 2
    assert resolve_batch_size(0, at[64], cpu) == 64  # capped: a kill loses at most one batch
    assert resolve_batch_size(0, at[224], cuda) == 256
    assert resolve_batch_size(0, at[512], cuda) == 64
    assert resolve_batch_size(7, at[512], cpu) == 7


def test_compile_only_where_it_pays_off() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not should_compile("auto", cpu, 1_000_000)
    assert not should_compile("auto", cuda, 100)
    assert should_compile("auto", cuda, 50_000)
    assert should_compile("always", cpu, 1) and not should_compile("never", cuda, 50_000)


@pytest.mark.slow
def test_compiled_encoder_matches_eager(random_model: LoadedModel) -> None:
    pixels = _pixels(TEST_IMAGE_SIZE, count=2)
    eager = Encoder(random_model, torch.device("cpu"), "fp32").encode(pixels)
    compiled = Encoder(random_model, torch.device("cpu"), "fp32", compile=True).encode(pixels)
    np.testing.assert_allclose(compiled.embeddings, eager.embeddings, atol=1e-4)


def test_automatic_decode_workers_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.reader import resolve_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_workers(-1, torch.device("cuda")) == 15
    assert resolve_workers(-1, torch.device("cpu")) == 2
    assert resolve_workers(0, torch.device("cuda")) == 0 and resolve_workers(5, torch.device("cpu")) == 5
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert resolve_workers(-1, torch.device("cpu")) == 1
