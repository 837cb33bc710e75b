"""The Ray engine builds the same catalog as the local engine, on a local Ray instance.

Ray starts once per session (about 10-20 s); each Ray build then costs a few seconds of actor start-up
and model loading on top of the work itself. The tests that need Ray are skipped where it cannot be
imported, and fail instead with ``LOUPE_REQUIRE_RAY=1`` (``.ci/run`` sets it); the others run either way.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from core.catalog import Catalog
from core.config import RuntimeConfig
from core.decode import DecodeLimits
from core.encoder import Encoder
from core.errors import ConfigError, EngineError, EngineUnavailableError, WeightsError
from core.index.source import patch_vectors_of
from core.index.verify import check_index
from core.model import LoadedModel
from core.patches import pool_patches
from core.photo_metadata import PhotoMetadata
from core.reader import ReadResult, WorkItem, read_one
from indexer.engines.ray import (
    DecodeStage,
    EmbedStage,
    KnownHashes,
    _engine_error,
    _model_actors,
    job_runtime_env,
    require_ray,
)
from indexer.engines.ray_rows import batch_outputs, batch_to_results, results_to_batch
from indexer.pipeline import run_build
from indexer.summary import BuildSummary
from search.engine import SearchEngine
from tests.conftest import PHOTOS, RAY_REQUIRE_ENV, required_module, small_config

# Ray Data reads its own deprecated settings when a dataset runs: not ours to fix, and not worth a screen.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

N_PHOTOS = 12
COUNTS = ("scanned", "unchanged", "new", "changed", "moved", "copied", "touched", "removed", "failed", "embedded")


@pytest.fixture(scope="session")
def ray() -> ModuleType:
    """Ray, with the Ray Data the engine runs on (``indexer.engines.ray.require_ray`` asks for the same)."""
    required_module("ray.data", RAY_REQUIRE_ENV, "pip install 'loupe[ray]'")
    return importlib.import_module("ray")


@pytest.fixture(scope="session")
def ray_instance(ray: ModuleType) -> Iterator[None]:
    """One local Ray instance for the whole session: its start-up is the expensive part."""
    if ray.is_initialized():  # pragma: no cover - someone else's instance
        yield
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env=job_runtime_env(),
    )
    yield
    ray.shutdown()


@dataclass(frozen=True)
class Built:
    photos: Path
    local: Path
    ray: Path
    local_summary: BuildSummary
    ray_summary: BuildSummary


def _ray_config(data_dir: Path, **overrides: Any) -> Any:
    return small_config(data_dir, **{"runtime.engine": "ray", **overrides})


@pytest.fixture(scope="module")
def built(ray_instance: None, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The test photos plus an exact duplicate and a truncated file, built once per engine."""
    root = tmp_path_factory.mktemp("ray-engine")
    photos = root / "photos"
    shutil.copytree(PHOTOS, photos)
    shutil.copy2(PHOTOS / "scikit-image__coffee.jpg", photos / "coffee-duplicate.jpg")
    moon = (PHOTOS / "scikit-image__moon.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(moon[: len(moon) // 2])
    local_summary = run_build(small_config(root / "local"), [photos], show_progress=False)
    ray_summary = run_build(_ray_config(root / "ray"), [photos], show_progress=False)
    return Built(photos, root / "local", root / "ray", local_summary, ray_summary)


def _open(data_dir: Path) -> Catalog:
    return Catalog.open(small_config(data_dir).resolved_db_url, create=False)


def _contents(data_dir: Path) -> dict[str, Any]:
    """Everything a build decides, keyed by path (row ids depend on commit order, which Ray does not keep)."""
    catalog = _open(data_dir)
    try:
        ids, _ = catalog.indexed_ids()
        photos = catalog.photos(ids.tolist())
        rows = {
            p.path: (p.size_bytes, p.mtime_ns, p.sha256, p.width, p.height, p.file_format, p.capture_time)
            for p in photos.values()
        }
        vectors = {
            photos[int(i)].path: v
            for chunk, vs in catalog.embeddings_for(ids, 384)
            for i, v in zip(chunk, vs, strict=True)
        }
        grids = {
            photos[int(i)].path: g
            for chunk, gs in catalog.patch_grids(ids, 384)
            for i, g in zip(chunk, gs, strict=True)
        }
        states = {path: (s.size_bytes, s.mtime_ns, s.status, s.sha256) for path, s in catalog.file_states().items()}
        return {
            "rows": rows,
            "vectors": vectors,
            "grids": grids,
            "states": states,
            "failures": sorted(catalog.failures()),
            "counts": catalog.counts(),
            "problems": check_index(catalog, data_dir)
            + check_index(catalog, data_dir, source=patch_vectors_of(catalog)),
            "without_grid": catalog.photos_without_grid(),
        }
    finally:
        catalog.close()


@pytest.mark.slow
def test_ray_build_equals_local_build(built: Built) -> None:
    local, on_ray = _contents(built.local), _contents(built.ray)
    assert local["counts"] == on_ray["counts"] == {"images": N_PHOTOS + 2, "indexed": N_PHOTOS + 1, "failed": 1}
    assert on_ray["rows"] == local["rows"]
    assert {row[5] for row in on_ray["rows"].values()} == {"JPEG"}  # header metadata came through Ray too
    assert on_ray["states"] == local["states"]
    assert on_ray["failures"] == local["failures"]
    assert [Path(path).name for path, _, _ in on_ray["failures"]] == ["truncated.jpg"]
    # Same weights, same pixels, fp32 on the CPU: the vectors are bit for bit the local engine's.
    assert on_ray["vectors"].keys() == local["vectors"].keys()
    for path, vector in local["vectors"].items():
        np.testing.assert_array_equal(on_ray["vectors"][path], vector, err_msg=path)
    # Every indexed photo has its grid, the duplicate included (it carries its twin's).
    assert on_ray["grids"].keys() == local["grids"].keys() == on_ray["vectors"].keys()
    for path, grid in local["grids"].items():
        np.testing.assert_array_equal(on_ray["grids"][path], grid, err_msg=path)
    duplicate = str((built.photos / "coffee-duplicate.jpg").resolve())
    original = str((built.photos / "scikit-image__coffee.jpg").resolve())
    np.testing.assert_array_equal(on_ray["vectors"][duplicate], on_ray["vectors"][original])
    np.testing.assert_array_equal(on_ray["grids"][duplicate], on_ray["grids"][original])
    assert on_ray["without_grid"] == local["without_grid"] == []
    assert on_ray["problems"] == local["problems"] == []

    for name in COUNTS:
        assert getattr(built.ray_summary, name) == getattr(built.local_summary, name), name
    assert built.ray_summary.embedded == N_PHOTOS  # the duplicate's content went through the model once
    assert built.ray_summary.failures_by_reason == built.local_summary.failures_by_reason == {"truncated": 1}
    assert built.ray_summary.index is not None and built.ray_summary.index.ntotal == N_PHOTOS + 1
    assert built.ray_summary.patch_index is not None and built.ray_summary.patch_index.ntotal > 0


@pytest.mark.slow
def test_search_results_are_identical(built: Built) -> None:
    engines = [SearchEngine.open(small_config(data_dir)) for data_dir in (built.local, built.ray)]
    try:
        for photo in sorted(PHOTOS.glob("*.jpg"))[:4]:
            # Exact duplicates tie; their order follows row ids, which differ between the two catalogs.
            answers = [
                sorted(
                    (round(r.score, 6), r.path, r.label) for r in engine.search_similar(built.photos / photo.name, 5)
                )
                for engine in engines
            ]
            assert answers[0] == answers[1]
            assert len(answers[0]) == 5
    finally:
        for engine in engines:
            engine.close()


@pytest.mark.slow
def test_incremental_ray_run_reuses_known_content(built: Built, tmp_path: Path) -> None:
    # A copy of the Ray catalog, so the other tests keep theirs; the photos' paths stay the same.
    data = tmp_path / "data"
    shutil.copytree(built.ray, data)
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy2(PHOTOS / "scikit-image__rocket.jpg", extra / "rocket-copy.jpg")
    before = _contents(data)
    rocket = str((built.photos / "scikit-image__rocket.jpg").resolve())

    summary = run_build(_ray_config(data), [built.photos, extra], show_progress=False)

    assert (summary.copied, summary.embedded, summary.failed) == (1, 0, 0)
    assert summary.unchanged == N_PHOTOS + 2
    after = _contents(data)
    copy_path = str((extra / "rocket-copy.jpg").resolve())
    np.testing.assert_array_equal(after["vectors"][copy_path], before["vectors"][rocket])
    np.testing.assert_array_equal(after["grids"][copy_path], before["grids"][rocket])
    assert after["problems"] == [] and after["without_grid"] == []
    # Nothing new at all: the plan is empty and Ray is not even asked.
    again = run_build(_ray_config(data), [built.photos, extra], show_progress=False)
    assert (again.unchanged, again.processed, again.embedded) == (N_PHOTOS + 3, 0, 0)

    # A move carries the grid to the new row; the old row's grid goes with it.
    mirrored = extra / "rocket-mirrored.jpg"
    with Image.open(PHOTOS / "scikit-image__rocket.jpg") as image:
        ImageOps.mirror(image).save(mirrored, quality=90)  # content of its own
    assert run_build(_ray_config(data), [built.photos, extra], show_progress=False).embedded == 1
    grid = _contents(data)["grids"][str(mirrored.resolve())]
    (extra / "sub").mkdir()
    moved_to = extra / "sub" / "rocket-moved.jpg"
    shutil.move(mirrored, moved_to)
    moved = run_build(_ray_config(data), [built.photos, extra], show_progress=False)
    assert (moved.moved, moved.embedded) == (1, 0)
    final = _contents(data)
    np.testing.assert_array_equal(final["grids"][str(moved_to.resolve())], grid)
    assert str(mirrored.resolve()) not in final["grids"]
    assert final["problems"] == [] and final["without_grid"] == []


# fast checks, no Ray cluster needed ---------------------------------------------------------------


def test_rows_survive_the_trip_through_arrow_columns() -> None:
    item = WorkItem(path="/p/a.jpg", size_bytes=10, mtime_ns=5)
    pixels = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(3, 32, 32)
    metadata = PhotoMetadata("JPEG", datetime(2016, 8, 14, 7, 5, 9, 250), "FUJIFILM", None)
    results = [
        ReadResult(item=item, sha256="aa", width=40, height=30, pixels=pixels, metadata=metadata),
        ReadResult(item=WorkItem("/p/b.jpg", 11, 6), sha256="bb", known=True),
        ReadResult(item=WorkItem("/p/c.jpg", 12, 7), sha256=None, error_reason="truncated", error_message="cut"),
    ]
    back = batch_to_results(results_to_batch(results), image_size=32)
    assert back[1:] == results[1:]
    assert back[0].item == item and (back[0].sha256, back[0].width, back[0].height) == ("aa", 40, 30)
    assert back[0].metadata == metadata
    assert back[0].pixels is not None and torch.equal(back[0].pixels, pixels)
    # Without image_size (the driver's side) decoded rows come back without pixels.
    assert batch_to_results(results_to_batch(results))[0].pixels is None


def test_model_outputs_are_keyed_by_content() -> None:
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal(8).astype(np.float32)
    grid = rng.standard_normal((2, 2, 8)).astype(np.float16)
    batch = {
        "sha256": np.array(["aa", "bb"], dtype=object),
        "embedding": np.array([embedding.tobytes(), b""], dtype=object),
        "patches": np.array([grid.tobytes(), b""], dtype=object),
    }
    outputs = batch_outputs(batch, dim=8, patch_grid=2)
    assert list(outputs) == ["aa"]
    np.testing.assert_array_equal(outputs["aa"].embedding, embedding)
    assert outputs["aa"].patches is not None
    np.testing.assert_array_equal(outputs["aa"].patches, grid)


def test_model_actors_follow_the_cluster() -> None:
    def runtime(**overrides: object) -> RuntimeConfig:
        return small_config(Path("d"), **overrides).runtime

    assert _model_actors(runtime(**{"runtime.device": "auto"}), {"CPU": 8.0}) == (1, 0.0)
    assert _model_actors(runtime(**{"runtime.device": "auto"}), {"CPU": 8.0, "GPU": 4.0}) == (4, 1.0)
    assert _model_actors(runtime(**{"runtime.device": "cpu"}), {"CPU": 8.0, "GPU": 4.0}) == (1, 0.0)
    two = runtime(**{"runtime.device": "auto", "runtime.ray_actors": 2})
    assert _model_actors(two, {"CPU": 8.0, "GPU": 4.0}) == (2, 1.0)
    with pytest.raises(ConfigError, match="no GPU"):
        _model_actors(runtime(**{"runtime.device": "cuda"}), {"CPU": 8.0})


def test_missing_ray_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(EngineUnavailableError, match=r"pip install 'loupe\[ray\]'"):
        require_ray()
    with pytest.raises(EngineUnavailableError):
        run_build(_ray_config(tmp_path / "data"), [PHOTOS], show_progress=False)
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_engine_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.engine"):
        small_config(Path("d"), **{"runtime.engine": "spark"})


def _stage_input(paths: list[Path]) -> dict[str, np.ndarray]:
    return {
        "path": np.array([str(p) for p in paths], dtype=object),
        "size_bytes": np.array([p.stat().st_size for p in paths], dtype=np.int64),
        "mtime_ns": np.array([p.stat().st_mtime_ns for p in paths], dtype=np.int64),
    }


def random_model_config() -> Any:
    return small_config(Path("unused")).model


def test_stages_in_process_match_the_local_encoder(random_model: LoadedModel, tmp_path: Path) -> None:
    """The two stages, run here without Ray, give the local engine's vectors; known content skips the model."""
    photos = sorted(PHOTOS.glob("*.jpg"))[:3]
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photos[0].read_bytes()[:2000])
    paths = [*photos, photos[0], truncated]  # a duplicate within the batch, and a failure
    limits = DecodeLimits(max_pixels=10**8, max_file_bytes=10**8)
    known_sha = read_one(WorkItem(str(photos[2]), 0, 0), 64, limits, frozenset()).sha256
    assert known_sha is not None
    decoded = DecodeStage(64, limits, KnownHashes([known_sha]))(_stage_input(paths))
    assert list(decoded["known"]) == [False, False, True, False, False]
    assert list(decoded["error_reason"]) == ["", "", "", "", "truncated"]

    threads = torch.get_num_threads()
    try:
        stage = EmbedStage(random_model_config(), "cpu", "fp32", 0.995, 2, random_model.weights.sha256, threads)
        embedded = stage(decoded)
    finally:
        torch.set_num_threads(threads)
    assert "pixels" not in embedded
    assert [len(e) > 0 for e in embedded["embedding"]] == [True, True, False, False, False]

    pixels = torch.stack([r.pixels for r in batch_to_results(decoded, 64)[:2]])  # type: ignore[misc]
    reference = Encoder(random_model, torch.device("cpu")).encode(pixels)
    outputs = batch_outputs(embedded, random_model.dim, 2)
    for i in range(2):
        output = outputs[str(decoded["sha256"][i])]
        np.testing.assert_array_equal(output.embedding, reference.embeddings[i])
        assert output.patches is not None
        np.testing.assert_array_equal(output.patches, pool_patches(reference.patches, 2)[i])


def test_a_model_actor_with_other_weights_refuses_to_embed(random_model: LoadedModel) -> None:
    other_seed = replace(random_model_config(), random_seed=1)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(WeightsError, match="every node must read the same weights"):
            EmbedStage(other_seed, "cpu", "fp32", 0.995, 2, random_model.weights.sha256, threads)
    finally:
        torch.set_num_threads(threads)


def test_ray_failures_become_typed_errors(ray: ModuleType) -> None:
    remote = ray.exceptions.ActorDiedError()
    remote.error_msg = "The actor died...\n  File x\ncore.errors.WeightsError: weights differ"  # type: ignore[attr-defined]
    error = _engine_error(remote)
    assert isinstance(error, EngineError)
    assert str(error) == "the Ray engine failed: core.errors.WeightsError: weights differ"


def test_known_hashes_answer_like_a_set() -> None:
    rng = np.random.default_rng(0)
    digests = [rng.bytes(32) for _ in range(200)]
    digests += [bytes(31) + b"\x01", bytes(32), b"\xff" * 30 + bytes(2)]  # leading and trailing zero bytes
    members = [d.hex() for d in digests[::2]]
    known = KnownHashes(members)
    assert len(known) == len(members)
    for digest in digests:
        assert (digest.hex() in known) == (digest.hex() in set(members)), digest.hex()
    assert "not-a-hash" not in known and "z" * 64 not in known and None not in known
    assert bytes(32).hex() not in KnownHashes([])
