"""Clustering a set of embeddings: k-means, agglomerative (Ward) or HDBSCAN, with K fixed
or chosen by silhouette; and the limits on what may be asked for."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import HDBSCAN, AgglomerativeClustering
from sklearn.metrics import silhouette_score

from eat_models.evaluate import kmeans_assign

from .uploads import UploadError

ALGORITHMS = ("kmeans", "agglomerative", "hdbscan")
ALGORITHM_LABELS = {
    "kmeans": "k-means",
    "agglomerative": "agglomerative (Ward)",
    "hdbscan": "HDBSCAN",
}
AUTO_K_RANGE = (2, 10)
MAX_K = 20


def labels_problem(labels) -> str | None:
    """Why folder labels cannot score a clustering (every folder holds one image, or all
    images are in one folder), or None when they can. With such labels NMI and ARI come
    out as 1.000 or 0.000 whatever the clustering is."""
    if not labels:
        return None
    distinct = len(set(labels))
    if distinct == len(labels):
        return (
            "Every folder of the zip holds one image, so its folder labels cannot score a "
            "clustering (NMI/ARI would be 1.000 or 0.000 whatever the clusters): put several "
            "images of a kind in each folder."
        )
    if distinct == 1:
        return (
            "All images are in one folder, so the folder labels cannot score a clustering: "
            "use one folder per class."
        )
    return None


def n_clusters_of(assignments: np.ndarray) -> int:
    """Number of clusters, noise (−1) not counted."""
    return int((np.unique(assignments) >= 0).sum())


def check_options(n: int, k: int | None, algorithm: str) -> None:
    """Refuse, with a message that says why, what cannot cluster ``n`` images."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if n < 2:
        raise UploadError(
            f"Clustering needs at least 2 images; {n} usable image was uploaded. "
            "Add more images (or a zip of them)."
        )
    if k is not None and algorithm != "hdbscan" and not 2 <= k <= min(MAX_K, n):
        raise ValueError(
            f"K must lie between 2 and {min(MAX_K, n)} for {n} images (got {k}); "
            "or choose automatic K"
        )


def _fit(embeddings: np.ndarray, algorithm: str, k: int) -> np.ndarray:
    if algorithm == "kmeans":
        return kmeans_assign(embeddings, k, seed=0, n_init=5)[0]
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(embeddings)


def assign_clusters(
    embeddings: np.ndarray, algorithm: str, k: int | None
) -> tuple[np.ndarray, dict[int, float]]:
    """Cluster ids per row (−1 for HDBSCAN noise), and silhouette per K when K is automatic."""
    n = len(embeddings)
    if algorithm == "hdbscan":
        min_size = max(2, min(5, n // 10))
        assign = HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(embeddings)
        return np.asarray(assign, dtype=np.int64), {}
    if k is not None:
        return np.asarray(_fit(embeddings, algorithm, k), dtype=np.int64), {}
    low, high = AUTO_K_RANGE
    candidates = range(low, min(high, n - 1) + 1)
    scores: dict[int, float] = {}
    best = None
    for candidate in candidates:
        assign = _fit(embeddings, algorithm, candidate)
        if len(np.unique(assign)) < 2:
            continue
        scores[candidate] = float(silhouette_score(embeddings, assign))
        if best is None or scores[candidate] > scores[best[0]]:
            best = (candidate, assign)
    if best is None:  # two images, or all identical: nothing to choose from
        return np.asarray(_fit(embeddings, algorithm, min(2, n)), dtype=np.int64), scores
    return np.asarray(best[1], dtype=np.int64), scores
