"""Each metric against an independent computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eat_models.evaluate import (
    clustering_metrics,
    clustering_scores,
    kmeans_assign,
    pairwise_f1,
    retrieval_metrics,
)


def clustered_embeddings(rng, n_classes=5, per_class=30, dim=16, noise=0.8):
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm]


def brute_force_retrieval(x, labels, ks):
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    out = {}
    for k in ks:
        out[f"recall@{k}"] = np.mean(
            [np.any(labels[order[i, :k]] == labels[i]) for i in range(len(x))]
        )
    aps = []
    for i in range(len(x)):
        r = int(np.sum(labels == labels[i])) - 1
        if r == 0:
            continue
        rel = labels[order[i, :r]] == labels[i]
        precisions = [rel[: j + 1].sum() / (j + 1) for j in range(r)]
        aps.append(np.sum(np.array(precisions) * rel) / r)
    out["map@r"] = float(np.mean(aps))
    return out


def test_recall_and_map_at_r_match_brute_force(rng):
    x, labels = clustered_embeddings(rng)
    ours = retrieval_metrics(x, labels, ks=(1, 2, 4, 8), chunk=37)
    ref = brute_force_retrieval(x, labels, (1, 2, 4, 8))
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_matches_pytorch_metric_learning_accuracy_calculator(rng):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, labels = clustered_embeddings(rng, n_classes=6, per_class=25, noise=1.0)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=None
    )
    import torch

    ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    ours = retrieval_metrics(x, labels)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-5)


def test_query_is_excluded_from_its_own_ranking():
    x = np.eye(4, dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    assert retrieval_metrics(x, labels, ks=(1,))["recall@1"] == 0.0


def test_pairwise_f1_matches_pair_enumeration(rng):
    true = rng.integers(0, 4, size=60)
    pred = rng.integers(0, 5, size=60)
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(60), 2):
        same_true, same_pred = true[i] == true[j], pred[i] == pred[j]
        tp += same_true and same_pred
        fp += same_pred and not same_true
        fn += same_true and not same_pred
    expected = 2 * tp / (2 * tp + fp + fn)
    assert pairwise_f1(true, pred) == pytest.approx(expected)
    assert pairwise_f1(true, true) == pytest.approx(1.0)


def test_clustering_scores_match_sklearn_and_are_seeded(rng):
    x, labels = clustered_embeddings(rng, noise=0.3)
    assign, centroids = kmeans_assign(x, 5, seed=0)
    assert centroids.shape == (5, x.shape[1])
    scores = clustering_scores(labels, assign)
    # values known by hand: a relabelled perfect clustering, and one independent of the truth
    perfect = clustering_scores(np.array([0, 0, 1, 1, 2, 2]), np.array([2, 2, 0, 0, 1, 1]))
    assert perfect == pytest.approx({"nmi": 1.0, "f1": 1.0, "ari": 1.0})
    unrelated = clustering_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert unrelated["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert unrelated["ari"] == pytest.approx(-0.5) and unrelated["f1"] == 0.0
    assert clustering_metrics(x, labels, seed=0) == clustering_metrics(x, labels, seed=0)
    assert scores["nmi"] > 0.9
