"""Scores shared by several attacks: retrieval of attacked queries against the clean gallery,
and the rank bookkeeping of RobRank's ranking attacks (Euclidean on the unit sphere)."""

from __future__ import annotations

import numpy as np
import torch

from ..evaluate import gallery_retrieval_metrics
from .base import Scored


def attacked_retrieval(r: Scored) -> dict[str, float]:
    """Recall@1/2/4/8 and mAP@R of every query (attacked rows perturbed, the rest clean)
    against the clean set, each query's own row excluded (the RobRank protocol)."""
    n = len(r.labels)
    return gallery_retrieval_metrics(
        r.adversarial, r.labels, r.clean, r.labels, exclude_index=np.arange(n)
    )


def distances(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` Euclidean distances."""
    return torch.cdist(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    )


def masked_recall_at_1(r: Scored) -> float:
    """The fraction of attacked queries whose nearest clean gallery item (own row masked)
    has the query's true label: RobRank's R@1 of ES:R, LTM and GTM."""
    if len(r.rows) == 0:
        return 1.0
    dist = distances(r.adversarial[r.rows], r.clean)
    dist[torch.arange(len(r.rows)), torch.as_tensor(r.rows)] = float("inf")
    nearest = dist.argmin(dim=1).numpy()
    return float(np.mean(r.labels[nearest] == r.labels[r.rows]))


def top_neighbours(dist: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` indices of the k nearest gallery items per row of ``dist`` (own row at inf)."""
    return dist.topk(min(k, dist.shape[1]), dim=1, largest=False).indices


def percentile_rank(to_gallery: torch.Tensor, to_probe: torch.Tensor) -> torch.Tensor:
    """Per row, ``#{j : to_gallery[j] < to_probe} / N`` in [0, 1]: where a probe at distance
    ``to_probe [B]`` from a reference point ranks among the whole gallery (``to_gallery
    [B, N]``, RobRank's ``prank``). A probe that is a gallery item must take its distance
    from the same ``to_gallery`` row, so that it does not count itself."""
    return (to_gallery < to_probe[:, None]).float().mean(dim=1)


def smooth_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` Euclidean distances with a finite gradient at zero distance (a
    query starts at its own clean copy in the gallery)."""
    squared = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T
    return squared.clamp(min=1e-12).sqrt()


def smooth_norm(difference: torch.Tensor) -> torch.Tensor:
    """Per-row ‖·‖ with a finite gradient at zero."""
    return (difference.pow(2).sum(1) + 1e-12).sqrt()
