from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import ModelConfig
from core.encoder import Encoder
from core.errors import WeightsError, WeightsUnavailableError
from core.model import load_model
from core.preprocess import normalize
from core.weights import ensure_pretrained_file, pretrained_file, pretrained_file_name, sha256_file
from tests.conftest import OTHER_MEAN, OTHER_STD

PE_SPATIAL_SHA256 = "4e65e500f2a7d2b11fc28aaa0b1ad4921692780507de014ebc5659e757327fde"


def test_registry_facts_of_the_pretrained_file(tmp_path: Path) -> None:
    spec = pretrained_file(ModelConfig(models_dir=tmp_path))
    assert spec.file_name == "rope_i_vit_reg1_s16_pn_npn_avg_c1_pe-spatial.pt"
    assert spec.sha256 == PE_SPATIAL_SHA256
    assert spec.destination == tmp_path.resolve() / spec.file_name
    assert spec.native_size == (512, 512)
    # The name settings look for in ./models without importing birder is birder's own.
    assert pretrained_file_name(ModelConfig()) == spec.file_name


def test_missing_weights_fail_fast_with_what_where_and_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from birder.common import cli

    def offline(*_args: object, **_kwargs: object) -> None:
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    # The machine is offline anyway; the stub keeps the test from depending on how the network fails.
    monkeypatch.setattr(cli, "download_file", offline)
    spec = pretrained_file(ModelConfig(models_dir=tmp_path))
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as raised:
        ensure_pretrained_file(spec)
    assert time.perf_counter() - started < 5
    message = str(raised.value)
    for fact in (spec.file_name, spec.url, PE_SPATIAL_SHA256, str(spec.destination), "--weights random"):
        assert fact in message


def test_damaged_pretrained_file_is_refused(tmp_path: Path) -> None:
    spec = pretrained_file(ModelConfig(models_dir=tmp_path))
    spec.destination.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="expected " + PE_SPATIAL_SHA256):
        ensure_pretrained_file(spec)


def test_local_pt_file_loads_with_its_hash_and_its_stats(tmp_path: Path) -> None:
    from birder.net.base import get_signature

    source = load_model(ModelConfig(weights="random", random_seed=3), torch.device("cpu"))
    path = tmp_path / "mine.pt"
    torch.save(
        {
            "state": source.net.state_dict(),
            "task": "image_classification",
            "signature": get_signature((1, 3, 512, 512), 0),
            "class_to_idx": {},
            # Not the random model's "centered" stats (0.5, 0.5): the loaded model must carry the file's.
            "rgb_stats": {"mean": OTHER_MEAN, "std": OTHER_STD},
        },
        path,
    )
    loaded = load_model(ModelConfig(weights=str(path), image_size=64), torch.device("cpu"))
    assert loaded.weights.kind == "file"
    assert loaded.weights.sha256 == sha256_file(path)
    assert loaded.image_size == 64
    assert (loaded.rgb_mean, loaded.rgb_std) == (OTHER_MEAN, OTHER_STD)
    for name, tensor in source.net.state_dict().items():
        if "pos_embed" not in name:
            torch.testing.assert_close(loaded.net.state_dict()[name], tensor)
    # And the encoder normalises with them.
    pixels = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.inference_mode():
        expected = loaded.net.embedding(normalize(pixels, OTHER_MEAN, OTHER_STD))  # type: ignore[operator]
    np.testing.assert_allclose(
        Encoder(loaded, torch.device("cpu"), "fp32").encode(pixels).embeddings,
        torch.nn.functional.normalize(expected, dim=1).numpy(),
        atol=1e-5,
    )


def test_missing_or_foreign_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        load_model(ModelConfig(weights=str(tmp_path / "nope.pt")), torch.device("cpu"))
    foreign = tmp_path / "foreign.pt"
    torch.save(
        {
            "state": {},
            "signature": {"inputs": [{"data_shape": [0, 3, 512, 512]}], "outputs": [{"data_shape": [0, 0]}]},
            "class_to_idx": {},
            "rgb_stats": {"mean": (0, 0, 0), "std": (1, 1, 1)},
        },
        foreign,
    )
    with pytest.raises(WeightsError, match="is not a birder"):
        load_model(ModelConfig(weights=str(foreign)), torch.device("cpu"))
