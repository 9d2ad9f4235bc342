"""RobRank's greedy top-1 misranking (GTM): pull the query onto the nearest item of another class.

ℓ is the label of the query's clean top-1 neighbour (own row masked); the target is the
nearest clean gallery item whose label is not ℓ, and PGD minimises ``d(q̃, g_target)``.
Scored by R@1 of the attacked queries, own row masked. This is the attack as the
paper states it; RobRank's code indexes the gallery with a position inside the subset of
other-label items, so its target is an essentially arbitrary item (a weaker attack).
"""

from __future__ import annotations

import torch

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .scores import masked_recall_at_1, smooth_norm


@register
class GreedyTopMisrank(Attack):
    name = "gtm"
    label = "GTM (greedy top-1 misranking)"
    summary = "pull the query onto the nearest item of another class than its top-1; scored by R@1"
    needs = ("gallery", "gallery_labels")
    suite = ("ers",)

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        dist = s.gallery_distances()
        labels = torch.as_tensor(s.gallery_labels)
        top_label = labels[dist.argmin(dim=1)]
        other = labels[None, :] != top_label[:, None]
        return {"target": dist.masked_fill(~other, float("inf")).argmin(dim=1)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        aims = torch.as_tensor(s.gallery)[targets["target"]].detach()
        return lambda embeddings: -smooth_norm(embeddings - aims)

    def score(self, r: Scored) -> dict[str, float]:
        return {"recall@1": masked_recall_at_1(r)}
