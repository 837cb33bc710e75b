"""benchmarks/indexing.py runs end to end on a few small photos and reports figures that add up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import PHOTOS, TEST_IMAGE_SIZE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "indexing.py"


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("indexing_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_measures_every_figure_in_each_round(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(PHOTOS), "--image-size", str(TEST_IMAGE_SIZE), "--limit", "4", "--rounds", "1", "--workers", "0"]
    # The precision is forced: this test is about the figures, and auto picks bf16 or int8 by CPU kind.
    argv += ["--device", "cpu", "--precision", "int8"]
    assert _benchmark().main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["photos"] == 4 and report["image_size"] == TEST_IMAGE_SIZE and report["rounds"] == 1
    per_round = report["per_round"]
    for name in ("forward", "fp32", "build", "wall", "ceiling", "naive"):
        assert len(per_round[f"{name}_img_s"]) == 1 and per_round[f"{name}_img_s"][0] > 0
    # Headline figures are the medians of the rounds (of one: itself), and the ratios are theirs.
    builds, forwards, loops = per_round["build_img_s"], per_round["forward_img_s"], per_round["naive_img_s"]
    assert report["end_to_end_img_s"] == pytest.approx(builds[0], abs=0.011)
    assert report["forward_only_img_s"] == pytest.approx(forwards[0], abs=0.011)
    ratio = report["end_to_end_img_s"] / report["forward_only_img_s"]
    assert report["end_to_end_over_forward_only"] == pytest.approx(ratio, rel=0.02)
    assert per_round["end_to_end_over_forward_only"] == pytest.approx(
        [b / f for b, f in zip(builds, forwards, strict=True)], rel=0.02
    )
    assert per_round["end_to_end_over_naive"] == pytest.approx(
        [b / n for b, n in zip(builds, loops, strict=True)], rel=0.02
    )
    assert report["precision"] == "int8" and report["device"] == "cpu"
