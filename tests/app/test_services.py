"""The services called directly: gallery + cache, search, clustering, attack lab, report."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from app.services.attack_lab import true_class_rank
from app.services.gallery import MODEL_KEYS, ModelsNotFoundError, load_models, load_resources
from app.services.report import load_report
from app.services.uploads import UploadBatch, UploadedImage, UploadError
from eat_models.data import FASHION_MNIST_CLASSES

# --------------------------------------------------------------------------- gallery


def test_resources_hold_the_three_models_over_one_gallery(resources):
    assert len(resources) == 600
    assert resources.keys == MODEL_KEYS == ("eat", "baseline", "vanilla")
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


# --------------------------------------------------------------------------- search


def _gallery_image(resources, item: int) -> Image.Image:
    return Image.fromarray((resources.model_input(item, "eat")[0].numpy() * 255).astype(np.uint8))


def test_search_finds_the_query_itself_first(services, resources):
    for item in (0, 123, 456):
        result = services.search.search(_gallery_image(resources, item), "all", 5)
        assert tuple(result.results) == MODEL_KEYS
        for key in MODEL_KEYS:
            hits = result.results[key].hits
            assert len(hits) == 5
            assert hits[0].item_id == item
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert hits[0].class_name == resources.class_name(int(resources.labels[item]))
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_search_ranking_equals_brute_force(services, resources):
    image = _gallery_image(resources, 42)
    view = resources.views["eat"]
    query = view.embed(view.preprocess(image)[None])[0]
    expected = np.argsort(-(view.vectors @ query), kind="stable")[:10]
    hits = services.search.search(image, "eat", 10).results["eat"].hits
    assert [h.item_id for h in hits][:3] == expected[:3].tolist()
    assert set(services.search.search(image, "eat", 10).results) == {"eat"}


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


# --------------------------------------------------------------------------- clustering


@pytest.fixture(scope="module")
def labelled_batch(resources, png_bytes) -> UploadBatch:
    """12 gallery images each of trousers, bags and sneakers, labelled like a zip's folders."""
    items = []
    for label in (1, 8, 7):
        for item in np.flatnonzero(resources.labels == label)[:12]:
            pixels = (resources.model_input(int(item), "eat")[0].numpy() * 255).astype(np.uint8)
            name = f"{FASHION_MNIST_CLASSES[label]}/{item}.png"
            items.append(
                UploadedImage(
                    name, Image.fromarray(pixels), png_bytes(pixels), FASHION_MNIST_CLASSES[label]
                )
            )
    return UploadBatch(images=items)


def test_clustering_recovers_distinct_classes(services, labelled_batch, tmp_path):
    # The shared vanilla test model is the better trained one; the test ensemble is tiny.
    result = services.cluster.cluster(labelled_batch, "vanilla", k=None, out_dir=tmp_path)
    assert result.k_scores and set(result.k_scores) == set(range(2, 11))
    assert result.n_clusters == max(result.k_scores, key=result.k_scores.get)
    assert result.scores["nmi"] > 0.6
    assert result.figure.size[0] > 200
    assert sum(len(result.members(c)) for c in result.clusters) == len(labelled_batch)


def test_clustering_downloads_list_every_file(services, labelled_batch, tmp_path):
    result = services.cluster.cluster(labelled_batch, "vanilla", k=3, out_dir=tmp_path)
    assert result.csv_path.parent == tmp_path and result.zip_path.parent == tmp_path
    rows = list(csv.DictReader(io.StringIO(result.csv_path.read_text())))
    assert [r["file"] for r in rows] == labelled_batch.names
    assert {r["cluster"] for r in rows} == {"1", "2", "3"}
    assert [r["folder_label"] for r in rows] == labelled_batch.labels
    with zipfile.ZipFile(result.zip_path) as zf:
        names = zf.namelist()
        assert len(names) == len(labelled_batch)
        assert all(n.startswith("cluster_0") and "/" in n and ".." not in n for n in names)
        first = next(n for n in names if n.split("/", 1)[1].startswith("000_"))
        assert zf.read(first) == labelled_batch.images[0].data


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan"])
def test_other_algorithms_run(services, labelled_batch, tmp_path, algorithm):
    result = services.cluster.cluster(
        labelled_batch, "eat", k=3, algorithm=algorithm, out_dir=tmp_path
    )
    assert len(result.assignments) == len(labelled_batch)
    # three well-separated classes: both algorithms find them (HDBSCAN picks its own K)
    if algorithm == "agglomerative":
        assert result.n_clusters == 3
    assert result.scores["nmi"] > 0.5, result.scores


def test_clustering_refuses_what_it_cannot_do(services, labelled_batch, tmp_path):
    one = UploadBatch(images=labelled_batch.images[:1])
    with pytest.raises(UploadError, match="at least 2 images"):
        services.cluster.cluster(one, "eat", out_dir=tmp_path)
    with pytest.raises(ValueError, match="K must lie between 2 and"):
        services.cluster.cluster(labelled_batch, "eat", k=99, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown algorithm"):
        services.cluster.cluster(labelled_batch, "eat", algorithm="dbscan", out_dir=tmp_path)
    two = UploadBatch(images=labelled_batch.images[:2])
    assert len(services.cluster.cluster(two, "eat", out_dir=tmp_path).assignments) == 2


def test_attacking_the_set_reports_every_model(services, labelled_batch, tmp_path):
    result = services.cluster.cluster(
        labelled_batch, "eat", k=3, out_dir=tmp_path, attack_fraction=0.25, eps=0.1, steps=5
    )
    attack = result.attack
    assert list(attack.outcomes) == ["vanilla", "baseline", "eat"]
    for outcome in attack.outcomes.values():
        assert len(outcome.attacked_rows) == 9
        assert 0 <= outcome.moved <= 9
        assert -1 <= outcome.agreement_ari <= 1
        assert outcome.attacked_scores is not None
    assert attack.figure.size[0] > 2 * attack.figure.size[1]  # three panels side by side
    zero = services.cluster.cluster(
        labelled_batch, "eat", k=3, out_dir=tmp_path, attack_fraction=0.25, eps=0.0
    )
    for outcome in zero.attack.outcomes.values():  # ε = 0 changes nothing
        assert outcome.moved == 0 and outcome.agreement_ari == pytest.approx(1.0)


# --------------------------------------------------------------------------- attack lab


@pytest.mark.parametrize("kind", ["es", "qa", "ca"])
def test_attack_lab_runs_each_attack_on_the_chosen_models(services, kind):
    result = services.lab.run(gallery_id=10, kind=kind, eps=0.1, steps=10)
    assert list(result.outcomes) == ["vanilla", "baseline", "eat"]  # plain model first
    assert result.label_source == "gallery item 10"
    for outcome in result.outcomes.values():
        assert outcome.linf <= 0.1 + 1e-6
        assert outcome.embedding_shift > 0
        assert outcome.true_rank_clean >= 1 and outcome.true_rank_adversarial >= 1
        assert len(outcome.clean_hits) == len(outcome.adversarial_hits) == 5
        assert all(h.item_id != 10 for h in outcome.clean_hits)  # the query itself left out
        assert outcome.adversarial.size == outcome.perturbation.size
    assert result.figure.size[0] > result.figure.size[1]


def test_attack_lab_attacks_only_the_chosen_models(services):
    result = services.lab.run(gallery_id=10, kind="es", eps=0.05, steps=3, models=["eat"])
    assert list(result.outcomes) == ["eat"]
    with pytest.raises(ValueError, match="at least one model"):
        services.lab.run(gallery_id=10, kind="es", eps=0.05, steps=3, models=[])


def test_embedding_shift_attack_moves_embeddings_more_than_noise(services, resources):
    result = services.lab.run(gallery_id=3, kind="es", eps=0.1, steps=20)
    view = resources.views["vanilla"]
    x = resources.model_input(3, "vanilla")[None]
    noise = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    random_shift = float(np.linalg.norm(view.embed(noise)[0] - view.embed(x)[0]))
    assert result.outcomes["vanilla"].embedding_shift > random_shift


def test_zero_budget_changes_nothing(services):
    result = services.lab.run(gallery_id=5, kind="es", eps=0.0, steps=5)
    for outcome in result.outcomes.values():
        assert outcome.embedding_shift == pytest.approx(0.0, abs=1e-5)
        assert outcome.true_rank_clean == outcome.true_rank_adversarial
        assert [h.item_id for h in outcome.clean_hits] == [
            h.item_id for h in outcome.adversarial_hits
        ]
        assert len(set(np.asarray(outcome.perturbation.convert("L")).ravel().tolist())) == 1


def test_attack_lab_on_an_upload_uses_the_clean_top1_class(services):
    photo = next(e for e in services.examples if "photo" in e.name)
    result = services.lab.run(image=photo.image, kind="qa", eps=0.05, steps=5)
    assert "upload" in result.label_source
    assert result.true_class == result.outcomes["eat"].clean_hits[0].class_name


def test_attack_lab_refuses_bad_settings(services):
    with pytest.raises(ValueError, match="unknown attack"):
        services.lab.run(gallery_id=1, kind="fgsm")
    with pytest.raises(ValueError, match="ε must lie between"):
        services.lab.run(gallery_id=1, eps=0.9)
    with pytest.raises(ValueError, match="steps must lie between"):
        services.lab.run(gallery_id=1, steps=0)
    with pytest.raises(ValueError, match="no image to attack"):
        services.lab.run(image=None, gallery_id=None)


def test_true_class_rank_matches_a_naive_loop(rng):
    gallery = rng.normal(size=(50, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=50)
    query = rng.normal(size=8).astype(np.float32)
    for exclude in (None, 3):
        order = sorted(
            (i for i in range(50) if i != exclude), key=lambda i: -float(gallery[i] @ query)
        )
        for label in range(4):
            expected = next(r for r, i in enumerate(order, start=1) if labels[i] == label)
            assert true_class_rank(query, gallery, labels, label, exclude) == expected


# --------------------------------------------------------------------------- report


def test_report_without_results_says_how_to_get_them(tmp_path):
    report = load_report(tmp_path / "missing")
    assert not report.found and "eat bench" in report.markdown and report.plots == []


def test_report_reads_table_and_plots(tmp_path, bad_files):
    (tmp_path / "results.md").write_text(
        "| defense | NMI |\n|---|---|\n| eat | 0.8 |\n![x](x.png)\n"
    )
    Image.new("RGB", (60, 40), "white").save(tmp_path / "nmi_vs_eps.png")
    (tmp_path / "broken.png").write_bytes(bad_files["corrupt"].read_bytes())
    report = load_report(tmp_path)
    assert report.found and "| eat | 0.8 |" in report.markdown and "![x]" not in report.markdown
    assert [caption for _, caption in report.plots] == ["nmi vs eps"]


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


def test_attacking_the_set_uses_the_k_of_the_clean_result(services, labelled_batch, tmp_path):
    """Auto-K (silhouette) picks the K; the attack table clusters with the same K, so its
    clean NMI is the headline's (it once used the folder count instead)."""
    result = services.cluster.cluster(
        labelled_batch, "eat", k=None, out_dir=tmp_path, attack_fraction=0.25, eps=0.0
    )
    assert result.attack.k == result.n_clusters
    fixed = services.cluster.cluster(
        labelled_batch, "eat", k=5, out_dir=tmp_path, attack_fraction=0.25, eps=0.0
    )
    assert fixed.attack.k == 5 != len(set(labelled_batch.labels))


def test_texts_pluralise_and_escape_user_names():
    from app.services.text import escape_markdown, plural
    from app.services.uploads import Skipped
    from app.ui.present import skipped_markdown

    assert plural(1, "cluster") == "1 cluster" and plural(2, "image") == "2 images"
    assert plural(0, "image") == "0 images"
    assert escape_markdown("**bold** [x](http://e) <b>") == (
        "\\*\\*bold\\*\\* \\[x\\]\\(http://e\\) \\<b\\>"
    )
    lines = skipped_markdown([Skipped(f"f_{i}.txt", "not an image") for i in range(25)], 20)
    assert lines.count("\n") == 20 and lines.endswith("… and 5 more skipped files")
    assert lines.startswith("- f\\_0\\.txt: not an image")
