"""2-D maps: PCA, nearest-neighbour placement, and UMAP fitted ahead with its cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from app.services import projection
from app.services.projection import GalleryProjection, pca_2d, project_set, warm_up


def _clusters(n: int = 240, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 3
    x = centres[np.arange(n) % 4] + rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_pca_matches_sklearn_up_to_sign():
    x = _clusters()
    ours = pca_2d(x)
    theirs = PCA(2).fit_transform(x.astype(np.float64))
    for j in range(2):
        sign = np.sign(ours[:, j] @ theirs[:, j])
        np.testing.assert_allclose(ours[:, j], sign * theirs[:, j], atol=1e-4)
    assert pca_2d(x[:1]).shape == (1, 2)


def test_nearest_neighbour_placement_lands_on_the_neighbours(tmp_path):
    x = _clusters()
    proj = GalleryProjection(x, tmp_path / "map.npy")
    assert proj.method == "pca" and not proj.warm
    placement = proj.place(x[:5])
    assert placement.method == "nearest-neighbour"
    assert "nearest" in placement.note
    spread = np.ptp(proj.coords, axis=0).max()
    assert np.abs(placement.xy - proj.coords[:5]).max() < 0.1 * spread


def test_umap_fit_caches_coordinates_and_warms_transform(tmp_path):
    x = _clusters()
    cache = tmp_path / "map.npy"
    proj = GalleryProjection(x, cache)
    projection._small_sets_warm.clear()
    assert project_set(x[:50]).method == "pca-warming"
    assert project_set(x[:5]).method == "pca-small"
    warm_up([proj])
    assert proj.warm and proj.method == "umap"
    assert cache.is_file()
    placement = proj.place(x[:3])
    assert placement.method == "transform" and placement.xy.shape == (3, 2)
    assert project_set(x[:50]).method == "umap"

    again = GalleryProjection(x, cache)  # a later start: the map is there at once
    assert again.method == "umap-cached" and not again.warm
    np.testing.assert_array_equal(again.coords, proj.coords)
    other = GalleryProjection(x[:100], cache)  # a cache of another gallery is ignored
    assert other.method == "pca"


def test_a_corrupt_cache_is_ignored(tmp_path):
    cache = tmp_path / "map.npy"
    cache.write_bytes(b"not numpy")
    assert GalleryProjection(_clusters(), cache).method == "pca"


@pytest.mark.parametrize("n", [2, 9])
def test_tiny_sets_get_a_pca_map(n):
    placement = project_set(_clusters(n))
    assert placement.method == "pca-small" and placement.xy.shape == (n, 2)


def test_maps_computed_ahead_are_shown_at_start_and_never_refitted(
    app_models_dir, tmp_path, monkeypatch
):
    """``eat app --write-maps`` stores each model's gallery map beside the models; a start
    with a fresh cache shows it at once (no PCA phase, no background refit that would move
    the map), and new points are placed against it."""
    import shutil

    from app.services import build_services
    from app.services.gallery import load_resources, stored_maps_dir, write_maps
    from app.ui.present import status_markdown

    models = tmp_path / "models"
    shutil.copytree(app_models_dir, models)
    options = {"gallery_size": 100, "map_points": 60}
    first = load_resources(models, cache_root=tmp_path / "cache-a", **options)
    assert all(p.method == "pca" and p.needs_fit for p in first.projections)
    out = write_maps(first, models)
    assert out == stored_maps_dir(models, first.cache_dir.name)
    assert sorted(f.name for f in out.iterdir()) == [
        "gallery.json",
        "umap-baseline.npy",
        "umap-eat.npy",
        "umap-vanilla.npy",
    ]
    fitted = {k: first.views[k].projection.coords.copy() for k in first.keys}

    later = load_resources(models, cache_root=tmp_path / "cache-b", **options)
    for key in later.keys:
        projection = later.views[key].projection
        assert projection.method == "umap-stored" and projection.ready
        assert not projection.needs_fit and not projection.warm
        np.testing.assert_array_equal(projection.coords, fitted[key])
        np.testing.assert_array_equal(np.load(out / f"umap-{key}.npy"), fitted[key])
    fits = []
    monkeypatch.setattr(GalleryProjection, "fit", lambda self, seed=0: fits.append(self))
    warm_up(later.projections)  # the start-up warm-up: nothing left to fit
    assert fits == []
    view = later.views["eat"]
    placement = view.projection.place(view.vectors[view.map_rows[:4]])
    assert placement.method == "stored-neighbour" and "stored UMAP map" in placement.note
    status = build_services(later).status()
    assert status["maps_ready"] and set(status["maps"].values()) == {"umap-stored"}
    assert "UMAP maps ready (computed ahead)" in status_markdown(status)
    # another map size is another gallery map: not the stored one
    other = load_resources(models, cache_root=tmp_path / "cache-c", gallery_size=100, map_points=50)
    assert all(p.method == "pca" for p in other.projections)
