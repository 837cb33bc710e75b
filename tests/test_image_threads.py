"""Image threads: photos of a batch on their own threads, one intra-op thread each, same vectors (the
batch-independence this gives is tested in test_reproducible_vectors.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from core.encoder import Encoder
from core.image_threads import ImageThreads, idle_threads, one_intra_op_thread, resolve_parallel_images
from core.model import LoadedModel
from core.preprocess import model_pixels
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE

CPU = torch.device("cpu")


def _pixels(count: int) -> torch.Tensor:
    images = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.jpg"))[:count]]
    return torch.stack([model_pixels(image, TEST_IMAGE_SIZE) for image in images])


def _threads_of_a_new_thread() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_pool_threads_run_on_one_intra_op_thread_and_leave_the_others_alone() -> None:
    before = torch.get_num_threads()
    pool = ImageThreads(2)
    try:
        assert pool.map(lambda _: torch.get_num_threads(), range(6)) == [1] * 6
        assert torch.get_num_threads() == before
        assert _threads_of_a_new_thread() == before  # the process default is restored
    finally:
        pool.close()
    with pytest.raises(ValueError, match="at least one thread"):
        ImageThreads(0)


def test_one_intra_op_thread_is_scoped_to_the_block() -> None:
    before = torch.get_num_threads()
    with one_intra_op_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_query_takes_the_threads_of_idle_cores_only() -> None:
    assert idle_threads(8, cores=8, load=0.2) == 8
    assert idle_threads(8, cores=8, load=3.4) == 5
    assert idle_threads(2, cores=2, load=5.5) == 1  # busy machine: one thread, no stalls
    assert idle_threads(4, cores=16, load=1.0) == 4  # never more than torch would use
    assert idle_threads(0, cores=2, load=0.0) == 1


def test_parallel_images_setting() -> None:
    assert resolve_parallel_images(-1, CPU) == torch.get_num_threads()
    assert resolve_parallel_images(0, CPU) == 1  # whole-batch passes are gone: one photo at a time
    assert resolve_parallel_images(3, CPU) == 3
    assert resolve_parallel_images(-1, torch.device("cuda")) == 0
    assert resolve_parallel_images(2, torch.device("mps")) == 0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_one_or_two_image_threads_give_bit_identical_vectors(random_model: LoadedModel, precision: str) -> None:
    pixels = _pixels(6)
    single = Encoder(random_model, CPU, precision, parallel_images=1)
    threaded = Encoder(random_model, CPU, precision, parallel_images=2)
    assert (single.parallel_images, threaded.parallel_images) == (1, 2)
    expected, got = single.encode(pixels), threaded.encode(pixels)
    assert threaded.precision == single.precision == precision
    np.testing.assert_array_equal(got.embeddings, expected.embeddings)
    torch.testing.assert_close(got.patches, expected.patches, atol=0, rtol=0)
    # A sequence of single images is the same input as a stacked batch.
    np.testing.assert_array_equal(threaded.encode(list(pixels.unbind(0))).embeddings, expected.embeddings)


def test_submitted_batches_finish_in_order_with_the_vectors_of_encode(random_model: LoadedModel) -> None:
    pixels = _pixels(8)
    reference = Encoder(random_model, CPU, "int8", parallel_images=0)
    threaded = Encoder(random_model, CPU, "int8", parallel_images=2)
    first = threaded.submit(pixels[:2])  # checked against fp32 before submit returns
    assert threaded.checked_cosine is not None
    pending = [threaded.submit(pixels[start : start + 3]) for start in (2, 5)]
    for batch, start, count in ((first, 0, 2), (pending[0], 2, 3), (pending[1], 5, 3)):
        expected = reference.encode(pixels[start : start + count])
        np.testing.assert_array_equal(batch.result().embeddings, expected.embeddings)
        torch.testing.assert_close(batch.result().patches, expected.patches, atol=0, rtol=0)
    assert (threaded.calls, threaded.images) == (3, 8)


def test_unfaithful_int8_falls_back_to_fp32_before_any_batch_is_queued(random_model: LoadedModel) -> None:
    pixels = _pixels(6)
    fp32 = Encoder(random_model, CPU, "fp32").encode(pixels).embeddings
    strict = Encoder(random_model, CPU, "int8", min_cosine=1.01, parallel_images=2)  # no int8 model passes
    first = strict.submit(pixels[:3])
    assert strict.precision == "fp32"
    later = strict.submit(pixels[3:])
    np.testing.assert_array_equal(np.concatenate([first.result().embeddings, later.result().embeddings]), fp32)


def test_a_failing_photo_fails_its_batch_when_collected(
    random_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = Encoder(random_model, CPU, "fp32", parallel_images=2)
    pixels = _pixels(4)
    embed_pixels = Encoder._embed_pixels

    def failing(self: Encoder, batch: torch.Tensor, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if bool((batch == pixels[2]).all()):
            raise RuntimeError("out of memory on photo 2")
        return embed_pixels(self, batch, reference)

    monkeypatch.setattr(Encoder, "_embed_pixels", failing)
    pending = encoder.submit(pixels)
    with pytest.raises(RuntimeError, match="photo 2"):
        pending.result()
    # The threads survive a failed photo.
    np.testing.assert_array_equal(
        encoder.submit(pixels[:2]).result().embeddings,
        Encoder(random_model, CPU, "fp32").encode(pixels[:2]).embeddings,
    )


def test_wrong_shapes_are_refused_before_anything_is_queued(random_model: LoadedModel) -> None:
    encoder = Encoder(random_model, CPU, parallel_images=2)
    with pytest.raises(ValueError, match="expected"):
        encoder.submit([torch.zeros(3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, dtype=torch.uint8), torch.zeros(3, 8, 8)])
    with pytest.raises(ValueError, match="no images"):
        encoder.submit([])
    assert encoder.calls == 0
