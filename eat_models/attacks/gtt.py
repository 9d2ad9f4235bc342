"""RobRank's greedy top-1 translocation (GTT): push the clean top-1 neighbour out of the top 4.

The target is the query's clean top-1 neighbour (own row masked); PGD minimises
``mean_j max(0, d(q̃, g_j) − d(q̃, g_top1))`` over the whole gallery (QA− with that one
candidate). Scored as retain@4: the fraction of attacked queries whose clean top-1 is still
among their 4 nearest clean gallery items (own row masked).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .query import query_rank_objective
from .scores import distances


@register
class GreedyTopTranslocation(Attack):
    name = "gtt"
    label = "GTT (greedy top-1 translocation)"
    summary = (
        "push the clean top-1 neighbour out of the top 4; scored by retain@4 (low: attack won)"
    )
    needs = ("gallery",)
    suite = ("ers",)
    headline = "retain@4"

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        return {"top1": s.gallery_distances().argmin(dim=1)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        gallery = torch.as_tensor(s.gallery)
        return query_rank_objective(gallery[targets["top1"]], gallery, raise_=False)

    def score(self, r: Scored) -> dict[str, float]:
        if len(r.rows) == 0:
            return {"retain@4": 1.0}
        dist = distances(r.adversarial[r.rows], r.clean)
        dist[torch.arange(len(r.rows)), torch.as_tensor(r.rows)] = float("inf")
        top4 = dist.topk(min(4, dist.shape[1]), dim=1, largest=False).indices.numpy()
        kept = (top4 == np.asarray(r.targets["top1"])[:, None]).any(axis=1)
        return {"retain@4": float(kept.mean())}
