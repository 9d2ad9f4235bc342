"""Retrieval and clustering metrics, computed the RobRank way.

The test set is both query set and gallery; each query is excluded from its own ranking.
Embeddings are L2-normalised, so ranking by inner product equals ranking by Euclidean
distance.

* Recall@k: share of queries with at least one same-class item among the top k.
* mAP@R: per query, R = number of other same-class items; the average over the top R of
  precision@i at each relevant position i, divided by R (Musgrave et al., 2020).
* NMI, pairwise F1 and ARI of k-means (K = number of classes, fixed seed, several inits)
  against the true labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn
from tqdm.auto import tqdm

from .modes import eval_mode

RECALL_KS = (1, 2, 4, 8)


@torch.no_grad()
def embed(
    model: nn.Module,
    images,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed a dataset (anything with ``batch(indices)`` or a tensor ``[N, C, H, W]``).

    Returns ``float32 [N, D]``; every submodule's train/eval mode is restored afterwards.
    """
    n = len(images)
    out = []
    with eval_mode(model):
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
            stop = min(n, start + batch_size)
            if isinstance(images, torch.Tensor):
                batch = images[start:stop]
            else:
                batch = images.batch(np.arange(start, stop))
            out.append(model(batch.float()).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def gallery_retrieval_metrics(
    query_embeddings: np.ndarray | torch.Tensor,
    query_labels: np.ndarray,
    gallery_embeddings: np.ndarray | torch.Tensor,
    gallery_labels: np.ndarray,
    exclude_index: np.ndarray | None = None,
    ks: tuple[int, ...] = RECALL_KS,
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k and mAP@R of queries ranked against a separate gallery.

    ``exclude_index [Q]`` is each query's own gallery row (−1: none), left out of its
    ranking and of its R (the number of relevant gallery items). With queries equal to
    the gallery and ``exclude_index = arange(N)`` this is :func:`retrieval_metrics`.
    """
    q = torch.as_tensor(np.asarray(query_embeddings, dtype=np.float32))
    g = torch.as_tensor(np.asarray(gallery_embeddings, dtype=np.float32))
    q_lab = torch.as_tensor(np.asarray(query_labels))
    g_lab = torch.as_tensor(np.asarray(gallery_labels))
    excl = (
        torch.full((len(q),), -1, dtype=torch.long)
        if exclude_index is None
        else torch.as_tensor(np.asarray(exclude_index), dtype=torch.long)
    )
    r_per_query = (q_lab[:, None] == g_lab[None, :]).sum(dim=1) - (excl >= 0).long()
    depth = int(min(len(g) - int((excl >= 0).any()), max(max(ks), int(r_per_query.max()))))
    positions = torch.arange(1, depth + 1, dtype=torch.float32)
    hits = dict.fromkeys(ks, 0)
    ap_sum, ap_count = 0.0, 0
    for start in range(0, len(q), chunk):
        stop = min(len(q), start + chunk)
        sims = q[start:stop] @ g.T
        rows = torch.nonzero(excl[start:stop] >= 0).squeeze(1)
        sims[rows, excl[start:stop][rows]] = -float("inf")
        top = sims.topk(depth, dim=1).indices
        relevant = (g_lab[top] == q_lab[start:stop, None]).float()
        for k in ks:
            hits[k] += int(relevant[:, :k].amax(dim=1).sum())
        r = r_per_query[start:stop]
        rel_r = relevant * (positions[None, :] <= r[:, None].float())
        precision = rel_r.cumsum(dim=1) / positions[None, :]
        valid = r > 0
        ap_sum += float(((precision * rel_r).sum(dim=1)[valid] / r[valid].float()).sum())
        ap_count += int(valid.sum())
    out = {f"recall@{k}": hits[k] / len(q) for k in ks}
    out["map@r"] = ap_sum / max(ap_count, 1)
    return out


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    ks: Sequence[int] = RECALL_KS,
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k for each k and mAP@R, the set being both queries and gallery, each query
    excluded from its own ranking (the RobRank protocol)."""
    n = len(labels)
    if n < 2:
        raise ValueError("retrieval metrics need at least two items")
    return gallery_retrieval_metrics(
        embeddings,
        labels,
        embeddings,
        labels,
        exclude_index=np.arange(n),
        ks=tuple(ks),
        chunk=chunk,
    )


def pairwise_f1(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """F1 over item pairs: a pair is predicted positive when both share a cluster."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    # ordered pairs: [[different in both, apart in truth but together in the prediction],
    #                 [together in truth but apart in the prediction, together in both]]
    (_, false_positive), (false_negative, true_positive) = pair_confusion_matrix(
        np.asarray(labels_true), np.asarray(labels_pred)
    ).astype(np.float64)
    predicted, actual = true_positive + false_positive, true_positive + false_negative
    if predicted == 0 or actual == 0 or true_positive == 0:
        return 0.0
    precision, recall = true_positive / predicted, true_positive / actual
    return 2 * precision * recall / (precision + recall)


def kmeans_assign(
    embeddings: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """k-means (fixed seed, ``n_init`` inits) → ``(assignments [N], centroids [K, D])``."""
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    assign = km.fit_predict(np.asarray(embeddings, dtype=np.float32))
    return assign, km.cluster_centers_.astype(np.float32)


def clustering_scores(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """NMI, pairwise F1 and ARI of a clustering against true labels."""
    return {
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
        "f1": pairwise_f1(labels_true, labels_pred),
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
    }


def clustering_metrics(
    embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 5
) -> dict[str, float]:
    """k-means with K = number of true classes, scored by NMI / F1 / ARI."""
    k = len(np.unique(labels))
    assign, _ = kmeans_assign(embeddings, k, seed=seed, n_init=n_init)
    return clustering_scores(labels, assign)


def evaluate_embeddings(
    embeddings: np.ndarray, labels: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """All retrieval and clustering metrics of one embedding matrix."""
    return {**retrieval_metrics(embeddings, labels), **clustering_metrics(embeddings, labels, seed)}


def evaluate_model(
    model: nn.Module, dataset, batch_size: int = 512, progress: bool = False, seed: int = 0
) -> dict[str, float]:
    """Embed ``dataset`` with ``model`` and compute every metric."""
    embeddings = embed(model, dataset, batch_size=batch_size, progress=progress)
    return evaluate_embeddings(embeddings, dataset.labels, seed=seed)


METRIC_ORDER = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1", "ari")


def format_metrics_table(
    rows: dict[str, dict[str, float]], columns: Sequence[str] = METRIC_ORDER
) -> str:
    """A Markdown table: one row per entry of ``rows``, one column per metric."""
    present = [c for c in columns if any(c in r for r in rows.values())]
    lines = ["| | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for name, row in rows.items():
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else "–" for c in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
