"""A photo's stored vector depends on its own pixels only: not on its batch-mates, the batch size, the
number of photos run at once, or a resume.

On the CPU this holds by construction (the encoder runs every photo in a forward pass of its own on a
thread with one intra-op thread; :mod:`core.image_threads`), not by what one CPU's kernels happen to
do: the first test checks the construction itself, so it means the same on AVX2-only machines and on
machines with AVX512-BF16/AMX, where multi-image bf16 passes were measured to give batch-dependent bytes.
The others check the bytes a build stores, in every precision the CPU can run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.catalog import Catalog
from core.encoder import Encoder
from core.model import LoadedModel
from core.preprocess import model_pixels
from indexer.pipeline import run_build
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE, small_config

CPU = torch.device("cpu")
PRECISIONS = ("fp32", "int8", "bf16")
# Below 192 px the encoder used to run whole batches (the size at which bf16 bytes were seen to change
# with the batch size); 128 px keeps the builds quick.
BUILD_SIZE = 128


def _pixels(count: int) -> torch.Tensor:
    images = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.jpg"))[:count]]
    return torch.stack([model_pixels(image, TEST_IMAGE_SIZE) for image in images])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_cpu_forward_pass_is_one_photo_on_one_intra_op_thread(
    random_model: LoadedModel, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[tuple[int, int, bool]] = []
    embed_pixels = Encoder._embed_pixels

    def recorded(self: Encoder, pixels: torch.Tensor, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        passes.append((int(pixels.shape[0]), torch.get_num_threads(), reference))
        return embed_pixels(self, pixels, reference)

    monkeypatch.setattr(Encoder, "_embed_pixels", recorded)
    pixels = _pixels(5)
    for parallel_images in (0, 3):  # 0 is read as 1
        encoder = Encoder(random_model, CPU, precision, min_cosine=0.0, parallel_images=parallel_images)
        encoder.encode(pixels)  # the first batch, with its fp32 check for int8 and bf16
        encoder.encode(pixels[:1])  # a single query photo
        encoder.submit(pixels[1:4]).result()
        encoder.encode(list(pixels.unbind(0)))
    assert passes, "the encoder ran no forward pass"
    assert {(size, threads) for size, threads, _ in passes} == {(1, 1)}
    assert any(reference for *_, reference in passes) == (precision != "fp32")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batch_mates_and_batch_size_never_change_a_vector(random_model: LoadedModel, precision: str) -> None:
    pixels = _pixels(6)
    reference = Encoder(random_model, CPU, precision, min_cosine=0.0, parallel_images=1)
    expected = reference.encode(pixels)
    assert reference.precision == precision
    for parallel_images, groups in ((2, [[0, 1, 2, 3, 4, 5]]), (3, [[5, 0], [3], [1, 4, 2]]), (1, [[2, 0, 4]])):
        encoder = Encoder(random_model, CPU, precision, min_cosine=0.0, parallel_images=parallel_images)
        for group in groups:
            got = encoder.encode(pixels[group])
            np.testing.assert_array_equal(got.embeddings, expected.embeddings[group])
            torch.testing.assert_close(got.patches, expected.patches[group], atol=0, rtol=0)


def _stored(data_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    """Each path's embedding and pooled patch grid, as the catalog stores them."""
    catalog = Catalog.open(small_config(data_dir).resolved_db_url, create=False)
    try:
        ids, _ = catalog.indexed_ids()
        paths = catalog.path_of(ids.tolist())
        embeddings = {
            int(i): v.tobytes()
            for chunk, vectors in catalog.embeddings_for(ids, 384)
            for i, v in zip(chunk, vectors, strict=True)
        }
        grids = {
            int(i): g.tobytes()
            for chunk, batch in catalog.patch_grids(ids, 384)
            for i, g in zip(chunk, batch, strict=True)
        }
    finally:
        catalog.close()
    assert embeddings.keys() == grids.keys() == set(paths)
    return {paths[i]: (embeddings[i], grids[i]) for i in embeddings}


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_builds_in_batches_of_1_and_16_store_the_same_bytes(photo_dir: Path, tmp_path: Path, precision: str) -> None:
    """The catalog a resumed build would make (other batches, other batch-mates) is the same to the byte."""
    stored = []
    for batch_size, parallel_images in ((1, 1), (16, 2)):
        data = tmp_path / f"b{batch_size}"
        config = small_config(
            data,
            **{
                "model.image_size": BUILD_SIZE,
                "runtime.precision": precision,
                "runtime.batch_size": batch_size,
                "runtime.parallel_images": parallel_images,
            },
        )
        summary = run_build(config, [photo_dir], show_progress=False)
        assert summary.precision == precision and summary.failed == 0
        stored.append(_stored(data))
    assert len(stored[0]) == len(list(photo_dir.glob("*.jpg")))
    for other in stored[1:]:
        assert other == stored[0]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_query_uses_every_thread_and_matches_the_stored_vector_to_a_cosine(
    random_model: LoadedModel, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries are not stored: one photo runs on the calling thread with all intra-op threads (twice as
    fast on 2 quiet cores), and its vector agrees with the stored one to a cosine near 1."""
    monkeypatch.setattr("core.image_threads.os.getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine
    pixels = _pixels(3)
    stored = Encoder(random_model, CPU, precision, min_cosine=0.0).encode(pixels)
    query = Encoder(random_model, CPU, precision, min_cosine=0.0)
    threads: list[int] = []
    embed_pixels = Encoder._embed_pixels

    def recorded(self: Encoder, batch: torch.Tensor, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not reference:
            threads.append(torch.get_num_threads())
        return embed_pixels(self, batch, reference)

    monkeypatch.setattr(Encoder, "_embed_pixels", recorded)
    for i in range(3):
        got = query.encode_query(pixels[i : i + 1])
        assert float(got.embeddings[0] @ stored.embeddings[i]) > 0.9999
    assert threads == [torch.get_num_threads()] * 3
