"""The app's gallery: models, per-model indexes, the cache, folder galleries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services.gallery import load_resources
from app.services.models import MODEL_KEYS, ModelsNotFoundError, load_models
from eat_models.data import FASHION_MNIST_CLASSES


def test_resources_hold_the_three_models_over_one_gallery(resources):
    assert len(resources) == 600
    assert MODEL_KEYS == ("eat", "baseline", "hm", "vanilla")
    assert resources.keys == ("eat", "baseline", "vanilla")  # hm is optional, like baseline
    assert resources.views["baseline"].label == "baseline (perturbed-copy)"
    assert resources.views["eat"].model.meta["num_members"] == 3
    assert resources.views["vanilla"].model.meta["num_members"] == 1
    assert resources.class_names == list(FASHION_MNIST_CLASSES)
    assert np.bincount(resources.labels).tolist() == [60] * 10  # class-balanced subset
    for view in resources.views.values():
        assert view.vectors.shape == (600, view.model.meta["embedding_dim"])
        np.testing.assert_allclose(np.linalg.norm(view.vectors, axis=1), 1, atol=1e-4)
        assert view.centroids.shape[0] == 10
        assert view.projection.coords.shape == (300, 2)


def test_gallery_model_input_is_the_exact_test_image(resources, fmnist_test_arrays):
    images, labels = fmnist_test_arrays
    row = int(resources.refs[7].rsplit(":", 1)[1])
    x = resources.model_input(7, "eat")
    assert x.shape == (1, 28, 28)
    np.testing.assert_array_equal((x[0] * 255).round().numpy().astype(np.uint8), images[row])
    assert resources.labels[7] == labels[row]
    with pytest.raises(ValueError, match="does not exist"):
        resources.model_input(600, "eat")


def test_cache_is_reused_and_keyed_by_the_models(resources, app_models_dir, app_cache):
    index_file = resources.cache_dir / "index-eat" / "index.json"
    before = index_file.stat().st_mtime_ns
    again = load_resources(app_models_dir, gallery_size=600, cache_root=app_cache, map_points=300)
    assert again.cache_dir == resources.cache_dir
    assert index_file.stat().st_mtime_ns == before  # loaded, not rebuilt
    np.testing.assert_array_equal(again.views["eat"].vectors, resources.views["eat"].vectors)
    other = load_resources(app_models_dir, gallery_size=300, cache_root=app_cache, map_points=300)
    assert other.cache_dir != resources.cache_dir


def test_missing_models_give_a_message_that_says_what_to_do(tmp_path):
    with pytest.raises(ModelsNotFoundError, match="eat train"):
        load_models(tmp_path)


def test_the_baseline_model_is_optional(app_models_dir, tmp_path):
    import shutil

    for key in ("eat", "vanilla"):
        shutil.copytree(app_models_dir / key, tmp_path / key)
    assert list(load_models(tmp_path)) == ["eat", "vanilla"]
    shutil.copytree(app_models_dir / "baseline", tmp_path / "baseline")
    assert list(load_models(tmp_path)) == ["eat", "baseline", "vanilla"]
    # RobRank's HM, the field's reference, is served beside them when it is there
    shutil.copytree(app_models_dir / "baseline", tmp_path / "hm")
    assert list(load_models(tmp_path)) == ["eat", "baseline", "hm", "vanilla"]


def test_model_choices_name_loaded_models_only(services):
    from app.services.search import models_for

    loaded = ("eat", "vanilla")
    assert models_for("all", loaded) == loaded
    assert models_for("both", loaded) == loaded
    assert models_for(["vanilla", "eat"], loaded) == ("eat", "vanilla")  # display order
    assert models_for("vanilla, eat", MODEL_KEYS) == ("eat", "vanilla")
    with pytest.raises(ValueError, match="not loaded"):
        models_for("baseline", loaded)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models_for("resnet", loaded)
    with pytest.raises(ValueError, match="at least one model"):
        models_for([], loaded)
    assert models_for(" EAT , Vanilla", loaded) == ("eat", "vanilla")  # case and spaces
    assert models_for("ALL", loaded) == loaded
    with pytest.raises(ValueError, match="'all' stands for several models and is given alone"):
        models_for("all,eat", loaded)
    with pytest.raises(ValueError, match="at least one model"):
        models_for(" , ", loaded)


def test_an_image_folder_gallery(tmp_path, app_models_dir, fmnist_test_arrays):
    images, labels = fmnist_test_arrays
    root = tmp_path / "photos"
    for label, name in ((1, "trousers"), (8, "bags"), (7, "sneakers")):
        (root / name).mkdir(parents=True)
        for row in np.flatnonzero(labels == label)[:6]:
            Image.fromarray(images[row]).save(root / name / f"{row}.png")
    (root / "bags" / "broken.jpg").write_text("not an image")
    resources = load_resources(
        app_models_dir, gallery=str(root), cache_root=tmp_path / "cache", map_points=100
    )
    assert len(resources) == 18  # the broken file is skipped, the rest indexed
    assert resources.class_names == ["bags", "sneakers", "trousers"]
    from app.services.search import SearchService

    query = Image.open(next((root / "sneakers").glob("*.png")))
    hits = SearchService(resources).search(query, "vanilla", 3).results["vanilla"].hits
    assert hits[0].class_name == "sneakers" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    x = resources.model_input(hits[0].item_id, "eat")
    np.testing.assert_allclose(x[0].numpy() * 255, np.asarray(query), atol=1)


def test_the_header_names_the_runs_it_serves(services):
    """The header once said "EAT ensemble (trained with eat)" while the rows served were
    eat-triplet and pgd-at-eqc: it now names each model's training run."""
    from app.ui.present import status_markdown

    status = services.status()
    assert status["models"]["eat"]["run"] == "ensemble-of-copies"
    assert status["models"]["baseline"]["run"] == "one-copy"
    text = status_markdown(status)
    assert "run `ensemble-of-copies`" in text and "run `one-copy`" in text
    assert "trained with" not in text


def test_the_report_opens_with_the_served_models_numbers(services, resources, tmp_path):
    """The served models' folder README (their numbers, written when they were shipped) is
    what the report tab shows first; without one it names the models."""
    text = services.served_models()
    assert text.startswith("### The models served here") and "has no README.md" in text
    readme = Path(resources.views["eat"].model.meta["path"]).parent / "README.md"
    readme.write_text("# Shipped\n\n| model | ERS |\n|---|---:|\n| eat | 57.4 |\n")
    try:
        text = services.served_models()
        assert "| eat | 57.4 |" in text and "# Shipped" not in text
    finally:
        readme.unlink()
