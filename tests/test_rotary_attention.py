"""Rotary attention as one complex product: the same bits as birder's RoPEAttention, or birder's own code."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from birder.net.rope_vit import RoPEAttention
from PIL import Image

from core.encoder import Encoder
from core.model import LoadedModel, load_model
from core.preprocess import model_pixels, normalize
from core.rotary_attention import ComplexRotaryAttention, rotation_table, use_complex_rotary_attention
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE, small_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stock_model() -> LoadedModel:
    """A network of its own, never switched (the session's ``random_model`` is switched by encoders)."""
    return load_model(small_config(Path("unused")).model, CPU)


def _photos(count: int, size: int = TEST_IMAGE_SIZE) -> torch.Tensor:
    images = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.jpg"))[:count]]
    return torch.stack([model_pixels(image, size) for image in images])


def _attention_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [module for module in net.modules() if isinstance(module, RoPEAttention)]


def test_every_layer_switches_and_the_network_computes_the_same_bits(stock_model: LoadedModel) -> None:
    switched = copy.deepcopy(stock_model.net)
    assert use_complex_rotary_attention(switched) == 12
    assert all(type(layer) is ComplexRotaryAttention for layer in _attention_layers(switched))
    assert use_complex_rotary_attention(switched) == 0  # already switched: nothing left to do
    x = normalize(_photos(3), stock_model.rgb_mean, stock_model.rgb_std)
    with torch.inference_mode():
        expected = stock_model.net.forward_features(x)  # type: ignore[operator]
        got = switched.forward_features(x)  # type: ignore[operator]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_encoders_give_the_vectors_of_birders_attention(
    stock_model: LoadedModel, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = _photos(4)
    with monkeypatch.context() as patched:
        patched.setattr("core.rotary_attention.use_complex_rotary_attention", lambda net: 0)
        reference = Encoder(copy.deepcopy(stock_model), CPU, precision)
    assert all(type(layer) is RoPEAttention for layer in _attention_layers(reference.model.net))
    switched = Encoder(copy.deepcopy(stock_model), CPU, precision)
    assert all(type(layer) is ComplexRotaryAttention for layer in _attention_layers(switched.model.net))
    expected, got = reference.encode(pixels), switched.encode(pixels)
    np.testing.assert_array_equal(got.embeddings, expected.embeddings)
    assert torch.equal(got.patches, expected.patches)


def _layer_and_input(stock_model: LoadedModel) -> tuple[RoPEAttention, torch.Tensor, torch.Tensor]:
    layer = copy.deepcopy(_attention_layers(stock_model.net)[0])
    assert isinstance(layer, RoPEAttention)
    rope = stock_model.net._get_rope_embed(TEST_IMAGE_SIZE, TEST_IMAGE_SIZE)  # type: ignore[operator]
    tokens = rope.shape[0] + stock_model.num_special_tokens
    x = torch.randn(2, tokens, stock_model.dim, generator=torch.Generator().manual_seed(0))
    return layer, rope, x


def _uneven(rope: torch.Tensor) -> torch.Tensor:
    uneven = rope.clone()
    uneven[:, 1::2] *= 1.5  # the two channels of a pair no longer share an angle
    return uneven


@pytest.mark.parametrize("other_rope", [_uneven, lambda rope: rope.double()], ids=["uneven pairs", "float64"])
def test_a_rope_the_fast_path_cannot_take_runs_birders_rotation(stock_model: LoadedModel, other_rope: Any) -> None:
    layer, rope, x = _layer_and_input(stock_model)
    changed = other_rope(rope)
    assert rotation_table(changed, stock_model.num_special_tokens) is None
    assert rotation_table(rope, stock_model.num_special_tokens) is not None
    with torch.inference_mode():
        expected = layer(x, changed)
        use_complex_rotary_attention(layer)
        assert type(layer) is ComplexRotaryAttention
        assert torch.equal(layer(x, changed), expected)


def test_the_table_follows_the_rope_it_is_given(stock_model: LoadedModel) -> None:
    layer, rope, x = _layer_and_input(stock_model)
    stock = copy.deepcopy(layer)
    use_complex_rotary_attention(layer)
    other = rope * 0.5
    with torch.inference_mode():
        for table_rope in (rope, other, rope):  # a new tensor, then the first one again
            assert torch.equal(layer(x, table_rope), stock(x, table_rope))
    written = rope.clone()
    with torch.inference_mode():
        assert torch.equal(layer(x, written), stock(x, written))
        written.mul_(0.25)  # the same tensor, written in place: its table is rebuilt
        assert torch.equal(layer(x, written), stock(x, written))


def test_autocast_runs_birders_code(stock_model: LoadedModel) -> None:
    layer, rope, x = _layer_and_input(stock_model)
    stock = copy.deepcopy(layer)
    use_complex_rotary_attention(layer)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(layer(x, rope), stock(x, rope))


def test_modules_the_fast_path_does_not_handle_stay_birders() -> None:
    kwargs = {"dim": 64, "num_heads": 2, "attn_drop": 0.0, "proj_drop": 0.0, "num_special_tokens": 1}
    standard = RoPEAttention(**kwargs, rope_rot_type="standard")  # type: ignore[arg-type]
    with_qk_norm = RoPEAttention(**kwargs, qk_norm=True, rope_rot_type="interleaved")  # type: ignore[arg-type]
    eligible = RoPEAttention(**kwargs, rope_rot_type="interleaved")  # type: ignore[arg-type]
    net = torch.nn.ModuleList([standard, with_qk_norm, eligible])
    assert use_complex_rotary_attention(net) == 1
    assert [type(module) for module in net] == [RoPEAttention, RoPEAttention, ComplexRotaryAttention]
