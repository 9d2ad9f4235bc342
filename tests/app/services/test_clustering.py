"""Clustering uploaded sets, the downloads, and attacking a set."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from app.services.uploads import UploadBatch, UploadError


def _moved(before: np.ndarray, after: np.ndarray, rows: np.ndarray) -> int:
    """Oracle: attacked rows that did not follow most of their old cluster (ties: the lowest
    new cluster id), counted with plain loops."""
    destination = {}
    for old in sorted(set(before.tolist())):
        counts: dict[int, int] = {}
        for b, a in zip(before.tolist(), after.tolist(), strict=True):
            if b == old:
                counts[a] = counts.get(a, 0) + 1
        destination[old] = min(counts, key=lambda new: (-counts[new], new))
    return sum(1 for r in rows.tolist() if after[r] != destination[before[r]])


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
    assert attack.k == 3 and attack.fraction == 0.25 and attack.eps == 0.1 and attack.steps == 5
    rows = attack.outcomes["eat"].attacked_rows
    # one attacker: the same 9 distinct images (a quarter of 36) against every model
    assert len(set(rows.tolist())) == 9 and rows.tolist() == sorted(rows.tolist())
    assert 0 <= rows.min() and rows.max() < len(labelled_batch)
    images = [item.image for item in labelled_batch.images]
    for key, outcome in attack.outcomes.items():
        np.testing.assert_array_equal(outcome.attacked_rows, rows)
        # the clean clustering is k-means (K 3, seed 0) of the model's clean embeddings
        view = services.resources.views[key]
        clean = view.embed(view.inputs(images))
        expected = KMeans(n_clusters=3, n_init=5, random_state=0).fit_predict(clean)
        np.testing.assert_array_equal(outcome.clean_assignments, expected)
        before, after = outcome.clean_assignments, outcome.attacked_assignments
        assert outcome.moved == _moved(before, after, rows)
        assert outcome.agreement_ari == pytest.approx(adjusted_rand_score(before, after))
        labels = labelled_batch.labels
        assert outcome.clean_scores["nmi"] == pytest.approx(
            normalized_mutual_info_score(labels, before)
        )
        assert outcome.attacked_scores["nmi"] == pytest.approx(
            normalized_mutual_info_score(labels, after)
        )
        assert outcome.attacked_scores["ari"] == pytest.approx(adjusted_rand_score(labels, after))
    assert attack.figure.size[0] > 2 * attack.figure.size[1]  # three panels side by side
    zero = services.cluster.cluster(
        labelled_batch, "eat", k=3, out_dir=tmp_path, attack_fraction=0.25, eps=0.0
    )
    for outcome in zero.attack.outcomes.values():  # ε = 0 changes nothing
        np.testing.assert_array_equal(outcome.attacked_assignments, outcome.clean_assignments)
        assert outcome.moved == 0 and outcome.agreement_ari == pytest.approx(1.0)


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


def test_the_csv_holds_the_attacked_clustering_too(services, labelled_batch, tmp_path):
    result = services.cluster.cluster(
        labelled_batch, "eat", k=3, out_dir=tmp_path, attack_fraction=0.25, eps=0.1, steps=5
    )
    rows = list(csv.DictReader(io.StringIO(result.csv_path.read_text())))
    assert [r["file"] for r in rows] == labelled_batch.names
    for key, outcome in result.attack.outcomes.items():
        attacked = set(outcome.attacked_rows.tolist())
        assert [r[f"{key}_attacked"] for r in rows] == [
            "yes" if i in attacked else "no" for i in range(len(rows))
        ]
        assert [int(r[f"{key}_clean_cluster"]) for r in rows] == [
            int(a) + 1 for a in outcome.clean_assignments
        ]
        assert [int(r[f"{key}_attacked_cluster"]) for r in rows] == [
            int(a) + 1 for a in outcome.attacked_assignments
        ]
    plain = services.cluster.cluster(labelled_batch, "eat", k=3, out_dir=tmp_path / "plain")
    assert next(csv.reader(io.StringIO(plain.csv_path.read_text()))) == [
        "file",
        "cluster",
        "folder_label",
    ]


def test_labels_that_cannot_score_a_clustering_give_no_scores(services, labelled_batch, tmp_path):
    """One image per folder (or one folder) once gave "NMI 1.000 · ARI 1.000 (pairwise F1
    0.000)": such labels say nothing, and the page says why instead."""
    from app.services.uploads import UploadedImage
    from app.ui.present import cluster_markdown, set_attack_markdown

    images = labelled_batch.images[:6]
    for labels, words in (
        ([f"folder{i}" for i in range(6)], "Every folder of the zip holds one image"),
        (["one"] * 6, "No folder labels"),
    ):
        batch = UploadBatch(
            images=[
                UploadedImage(
                    name=f"{label}/{i}.png", image=item.image, data=item.data, label=label
                )
                for i, (item, label) in enumerate(zip(images, labels, strict=True))
            ]
        )
        assert batch.labels == (labels if len(set(labels)) > 1 else None)
        result = services.cluster.cluster(
            batch, "eat", k=2, out_dir=tmp_path, attack_fraction=0.5, eps=0.0
        )
        assert result.scores is None
        assert all(o.clean_scores is None for o in result.attack.outcomes.values())
        text = cluster_markdown(result)
        assert words in text and "NMI 1.000" not in text and "pairwise F1" not in text
        assert "labels: clean" not in set_attack_markdown(result)
