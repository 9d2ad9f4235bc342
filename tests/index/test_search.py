"""Search by image: same preprocessing and model as the build; round trip through disk."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from index.build import build_index
from index.errors import FingerprintMismatchError
from index.images import DatasetSource, open_image
from index.search import embed_images, load_index, search_images


@pytest.fixture(scope="module")
def gallery_index(vanilla_model, fmnist_small):
    _, test = fmnist_small
    index, _ = build_index(vanilla_model, DatasetSource(test), thumbnails=True)
    return index


def test_a_gallery_image_finds_itself_first(gallery_index, vanilla_model, fmnist_small, tmp_path):
    _, test = fmnist_small
    path = tmp_path / "query.png"
    Image.fromarray(test.images[42].numpy()).save(path)
    results = search_images(gallery_index, vanilla_model, path, k=5)
    best = results.hits[0][0]
    assert best.id == 42 and best.score == pytest.approx(1.0, abs=1e-5)
    assert best.record["source"] == test.ref(42)
    same = search_images(gallery_index, vanilla_model, open_image(path), k=5)
    np.testing.assert_array_equal(same.ids, results.ids)


def test_build_save_load_search_round_trip_is_identical(
    gallery_index, vanilla_model, fmnist, tmp_path
):
    train, _ = fmnist
    queries = [Image.fromarray(train.images[i].numpy()) for i in range(20)]
    before = search_images(gallery_index, vanilla_model, queries, k=10)
    gallery_index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", vanilla_model)
    after = search_images(loaded, vanilla_model, queries, k=10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert [h.record for h in after.hits[5]] == [h.record for h in before.hits[5]]
    np.testing.assert_array_equal(loaded.thumbnail(3), gallery_index.thumbnail(3))


def test_same_class_neighbours_dominate(gallery_index, vanilla_model, fmnist):
    train, _ = fmnist
    queries = [Image.fromarray(train.images[i].numpy()) for i in range(50)]
    results = search_images(gallery_index, vanilla_model, queries, k=1)
    labels = np.array([h[0].record["label"] for h in results.hits])
    assert (labels == train.labels[:50]).mean() >= 0.6


def test_another_models_index_is_refused(gallery_index, vanilla_model, tmp_path):
    gallery_index.save(tmp_path / "idx")
    other = copy.copy(vanilla_model)
    other.meta = {**vanilla_model.meta, "fingerprint": "ffffffffffffffff"}
    expected = vanilla_model.meta["fingerprint"]
    with pytest.raises(FingerprintMismatchError, match=f"{expected}.*ffffffffffffffff"):
        load_index(tmp_path / "idx", other)
    with pytest.raises(FingerprintMismatchError, match="ffffffffffffffff"):
        search_images(gallery_index, other, Image.new("L", (28, 28)))


def test_embed_images_of_nothing(vanilla_model):
    assert embed_images(vanilla_model, []).shape == (0, vanilla_model.meta["embedding_dim"])
