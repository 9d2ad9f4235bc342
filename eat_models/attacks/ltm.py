"""RobRank's learning-to-misrank attack (LTM): every wrong-class item before the nearest match.

PGD minimises ``max(0, max_{j: y_j ≠ y} d(q̃, g_j) − min_{j: y_j = y, j ≠ self} d(q̃, g_j))``:
the farthest negative is pulled in front of the nearest positive. Scored by R@1
of the attacked queries against the clean gallery, own row masked. RobRank's code keeps the
query's own clean copy among the positives (a discarded ``scatter``); the paper's attack,
and this one, exclude it, which can only make the attack stronger.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .scores import masked_recall_at_1, smooth_distances


@register
class LearningToMisrank(Attack):
    name = "ltm"
    label = "LTM (learning to misrank)"
    summary = (
        "rank every wrong-class item before the nearest true match; scored by R@1 (low: attack won)"
    )
    needs = ("labels", "gallery", "gallery_labels")
    suite = ("ers",)

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        gallery = torch.as_tensor(s.gallery).detach()
        same = torch.as_tensor(s.labels)[:, None] == torch.as_tensor(s.gallery_labels)[None, :]
        own = s.own_index()
        rows = torch.nonzero(own >= 0).squeeze(1)
        positive = same.clone()
        positive[rows, own[rows]] = False

        def objective(embeddings: torch.Tensor) -> torch.Tensor:
            dist = smooth_distances(embeddings, gallery)
            farthest_negative = dist.masked_fill(same, -float("inf")).amax(dim=1)
            nearest_positive = dist.masked_fill(~positive, float("inf")).amin(dim=1)
            gap = farthest_negative - nearest_positive
            return -F.relu(torch.nan_to_num(gap, posinf=0.0, neginf=0.0))

        return objective

    def score(self, r: Scored) -> dict[str, float]:
        return {"recall@1": masked_recall_at_1(r)}
