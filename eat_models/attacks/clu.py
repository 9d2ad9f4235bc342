"""The clustering attack (CA-clu): send each image toward a random other cluster.

k-means (K = the number of classes) on the clean embeddings; each attacked image gets a
target cluster drawn uniformly among the *other* clusters (seeded), and PGD maximises
``d(F(x̃), c_own) − d(F(x̃), c_target)``. The attacked set is re-embedded, re-clustered and
scored by NMI / pairwise F1 / ARI. Random targets matter: a shared nearest target only
relocates a cluster, which NMI does not see (DESIGN.md §3). RobRank has no clustering
attack; this is the seed paper's setting.
"""

from __future__ import annotations

import numpy as np
import torch

from ..evaluate import clustering_scores, kmeans_assign
from .base import Attack, AttackSet, Scored, register
from .pgd import Objective


def random_other_clusters(
    assignments: np.ndarray, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """For each item a cluster id drawn uniformly among the ``n_clusters − 1`` others."""
    assignments = np.asarray(assignments)
    if n_clusters < 2:
        raise ValueError("the clustering attack needs at least two clusters")
    offsets = rng.integers(1, n_clusters, size=len(assignments))
    return (assignments + offsets) % n_clusters


def clustering_objective(own_centroids: torch.Tensor, target_centroids: torch.Tensor) -> Objective:
    """Per-sample ``d(e, c_own) − d(e, c_target)`` with Euclidean distance d."""
    own, target = own_centroids.detach(), target_centroids.detach()
    return lambda embeddings: (
        torch.linalg.vector_norm(embeddings - own, dim=1)
        - torch.linalg.vector_norm(embeddings - target, dim=1)
    )


@register
class ClusteringAttack(Attack):
    name = "ca"
    label = "clustering attack (CA-clu)"
    summary = "move each image from its k-means cluster toward a random other one; scored by NMI"
    needs = ("centroids",)
    headline = "nmi"
    #: the evaluation driver clusters the clean set first (k-means, K = classes)
    clusters = True

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        own = s.own_clusters()
        target = random_other_clusters(own.numpy(), len(s.centroids), s.rng)
        return {"own": own, "target": torch.as_tensor(target, dtype=torch.long)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        centroids = torch.as_tensor(s.centroids)
        return clustering_objective(centroids[targets["own"]], centroids[targets["target"]])

    def score(self, r: Scored) -> dict[str, float]:
        assign = kmeans_assign(r.adversarial, r.n_clusters, r.seed)[0]
        return clustering_scores(r.labels, assign)
