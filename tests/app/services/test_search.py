"""Search: the query itself first, the ranking equal to brute force, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.oracles import assert_top_k


def _gallery_image(resources, item: int) -> Image.Image:
    return Image.fromarray((resources.model_input(item, "eat")[0].numpy() * 255).astype(np.uint8))


def test_search_finds_the_query_itself_first(services, resources):
    for item in (0, 123, 456):
        result = services.search.search(_gallery_image(resources, item), "all", 5)
        assert tuple(result.results) == resources.keys
        for key in resources.keys:
            hits = result.results[key].hits
            assert len(hits) == 5
            assert hits[0].item_id == item
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert hits[0].class_name == resources.class_name(int(resources.labels[item]))
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_search_ranking_equals_brute_force(services, resources, fmnist_test_arrays):
    """The whole top 10 of each model, ids and scores, against inner products with every
    gallery vector in NumPy (items tied within 1e-5 may swap, or swap at the cut)."""
    images, _ = fmnist_test_arrays
    outside = next(r for r in range(300, 400) if f"fashion-mnist/test:{r}" not in resources.refs)
    queries = [
        _gallery_image(resources, 42),
        Image.fromarray(images[outside]),  # not in the gallery
        Image.fromarray(np.full((28, 28), 90, dtype=np.uint8)),  # far from every item
    ]
    for image in queries:
        for key in resources.keys:
            view = resources.views[key]
            query = view.embed(view.preprocess(image)[None])[0].astype(np.float64)
            scores = view.vectors.astype(np.float64) @ query
            result = services.search.search(image, key, 10).results
            assert set(result) == {key}
            hits = result[key].hits
            assert [h.rank for h in hits] == list(range(1, 11))
            assert_top_k([h.item_id for h in hits], [h.score for h in hits], scores, k=10)
            assert [h.label for h in hits] == [int(resources.labels[h.item_id]) for h in hits]


def test_search_is_mostly_right_on_real_queries(services, resources, fmnist_test_arrays):
    images, labels = fmnist_test_arrays
    rows = [r for r in range(200, 260) if f"fashion-mnist/test:{r}" not in set(resources.refs)]
    correct = sum(
        services.search.search(Image.fromarray(images[r]), "vanilla", 1)
        .results["vanilla"]
        .hits[0]
        .label
        == labels[r]
        for r in rows
    )
    assert correct / len(rows) > 0.6


def test_light_background_photos_are_inverted_for_the_model(services):
    photo = next(e for e in services.examples if "photo" in e.name)
    assert np.asarray(photo.image.convert("L"))[:5].mean() > 180  # light background
    seen = np.asarray(services.search.search(photo.image, "eat", 3).model_input.convert("L"))
    border = np.concatenate([seen[:8].ravel(), seen[-8:].ravel()])
    assert border.mean() < 40  # dark background, like Fashion-MNIST
    assert seen.mean() > border.mean() + 20  # a bright object on it


def test_search_refuses_bad_arguments(services, resources):
    image = _gallery_image(resources, 0)
    with pytest.raises(ValueError, match="between 1 and"):
        services.search.search(image, "eat", 0)
    with pytest.raises(ValueError, match="unknown model"):
        services.search.search(image, "resnet", 3)
    with pytest.raises(ValueError, match="no query image"):
        services.search.search(None, "eat", 3)


def test_no_shipped_example_is_in_the_gallery(fmnist_test_arrays):
    """The examples come from the training set: none of them is a gallery (test-set) image,
    so a search with one never just finds the query itself at cosine 1.000."""
    from app.services.example_images import example_paths

    images, _ = fmnist_test_arrays
    flat = images.reshape(len(images), -1).astype(np.int16)
    pngs = [p for p in example_paths() if p.suffix == ".png"]
    assert len(pngs) == 8
    for path in pngs:
        pixels = np.asarray(Image.open(path).convert("L"))[::4, ::4].astype(np.int16)
        assert pixels.shape == (28, 28)
        nearest = np.abs(flat - pixels.reshape(-1)).sum(axis=1).min()
        assert nearest > 0, f"{path.name} is a gallery image"
