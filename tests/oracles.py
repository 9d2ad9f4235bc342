"""Oracles the tests check the project's code against: naive loops and literal values,
written without the project's own helpers (import as ``tests.oracles``)."""

from __future__ import annotations

import math

import numpy as np

#: RobRank's ten ERS terms, in its order (Zhou et al., ECCV 2020, Table 1)
ROBRANK_ERS_TERMS = ("CA+", "CA−", "QA+", "QA−", "TMA", "ES:D", "ES:R", "LTM", "GTM", "GTT")


def dist(a, b) -> float:
    """The Euclidean distance of two vectors."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def percentile_rank(reference, probe, gallery) -> float:
    """The fraction of ``gallery`` items strictly nearer to ``reference`` than ``probe`` is,
    one item at a time (RobRank's ``prank``)."""
    limit = dist(probe, reference)
    return sum(dist(g, reference) < limit for g in gallery) / len(gallery)


def retrieval_scores(queries, query_labels, gallery, gallery_labels, exclude=None, ks=(1, 2, 4, 8)):
    """Recall@k and mAP@R of each query ranked against the gallery by inner product, one
    query at a time; ``exclude[i]`` is query i's own gallery row, left out (−1: none)."""
    queries, gallery = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    hits = dict.fromkeys(ks, 0)
    precisions = []
    for i, query in enumerate(queries):
        others = [j for j in range(len(gallery)) if exclude is None or j != exclude[i]]
        ranked = sorted(others, key=lambda j: -float(query @ gallery[j]))
        relevant = [gallery_labels[j] == query_labels[i] for j in ranked]
        for k in ks:
            hits[k] += any(relevant[:k])
        r = sum(relevant)
        if r:
            found = [sum(relevant[: p + 1]) / (p + 1) for p in range(r) if relevant[p]]
            precisions.append(sum(found) / r)
    out = {f"recall@{k}": hits[k] / len(queries) for k in ks}
    out["map@r"] = float(np.mean(precisions)) if precisions else 0.0
    return out


def pairwise_f1(labels_true, labels_pred) -> float:
    """F1 over unordered item pairs, a pair predicted positive when both share a cluster."""
    true, pred = np.asarray(labels_true), np.asarray(labels_pred)
    upper = np.triu(np.ones((len(true), len(true)), dtype=bool), k=1)
    same_true = (true[:, None] == true[None, :]) & upper
    same_pred = (pred[:, None] == pred[None, :]) & upper
    tp = float((same_true & same_pred).sum())
    precision, recall = tp / same_pred.sum(), tp / same_true.sum()
    return 2 * precision * recall / (precision + recall) if tp else 0.0


def assert_top_k(ids, scores, all_scores, k: int, tol: float = 1e-5) -> None:
    """``ids``/``scores`` are a correct top-``k`` of ``all_scores`` (one score per item):
    k distinct items, each with its own score, in non-increasing order, and no item left
    out scoring above the last one kept. Items whose scores tie within ``tol`` may come
    in either order and, at the cut, either may be kept; elsewhere the order is exact."""
    ids, scores = [int(i) for i in ids], [float(s) for s in scores]
    all_scores = np.asarray(all_scores, dtype=np.float64)
    assert len(ids) == k == len(scores) and len(set(ids)) == k
    np.testing.assert_allclose(scores, all_scores[ids], atol=tol, rtol=0)
    assert all(a >= b - tol for a, b in zip(scores, scores[1:], strict=False))
    left_out = np.setdiff1d(np.arange(len(all_scores)), ids)
    assert all_scores[left_out].max() <= scores[-1] + tol
    # where no two of the top k + 1 tie, the ranking is the brute-force one to the letter
    order = np.argsort(-all_scores, kind="stable")
    if np.all(np.diff(all_scores[order[: k + 1]]) < -tol):
        assert ids == order[:k].tolist()


def proxy_anchor_loss(embeddings, labels, proxies, margin: float = 0.1, alpha: float = 32.0):
    """Proxy-Anchor (Kim et al., CVPR 2020, eq. 4), one proxy and one item at a time:

    1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p)−δ)})
      + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p)+δ)})

    with s the cosine similarity, P⁺ the proxies of the classes in the batch, P all of them.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    prox = np.asarray(proxies, dtype=np.float64)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    prox = prox / np.linalg.norm(prox, axis=1, keepdims=True)
    labels = [int(y) for y in labels]
    positive, negative, with_positives = 0.0, 0.0, 0
    for c, p in enumerate(prox):
        sims = [float(e @ p) for e in emb]
        pos = [math.exp(-alpha * (s - margin)) for s, y in zip(sims, labels, strict=True) if y == c]
        neg = [math.exp(alpha * (s + margin)) for s, y in zip(sims, labels, strict=True) if y != c]
        if pos:
            positive += math.log1p(sum(pos))
            with_positives += 1
        negative += math.log1p(sum(neg))
    return positive / with_positives + negative / len(prox)


def squared_shift(a, b) -> float:
    """The mean over rows of ‖a_i − b_i‖², one row and one coordinate at a time."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return sum(
        sum((u - v) ** 2 for u, v in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True)
    ) / len(a)
