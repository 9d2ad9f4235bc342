"""RobRank's targeted mismatch attack (TMA): make the query look like an arbitrary item.

Each query gets one target drawn uniformly from the gallery (with replacement); PGD
minimises ``1 − cos(q̃, g_t)``. Scored as the mean cosine of the attacked
queries to their targets (raw, near 1 when the attack wins); ERS takes ``100 · (1 − TMA)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Attack, AttackSet, Scored, register
from .candidate import draw_any
from .pgd import Objective


@register
class TargetedMismatch(Attack):
    robust_direction = -1
    name = "tma"
    label = "TMA (targeted mismatch)"
    summary = (
        "pull the query toward a random gallery item; scored by their cosine (high: attack won)"
    )
    needs = ("gallery",)
    suite = ("ers",)
    headline = "cosine"

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        return {"target": draw_any(s)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        aims = torch.as_tensor(s.gallery)[targets["target"]].detach()
        return lambda embeddings: F.cosine_similarity(embeddings, aims, dim=1) - 1.0

    def score(self, r: Scored) -> dict[str, float]:
        adv = torch.as_tensor(r.adversarial[r.rows])
        aims = torch.as_tensor(r.clean[r.targets["target"]])
        cosine = F.cosine_similarity(adv, aims, dim=1)
        return {"cosine": float(cosine.mean()) if len(cosine) else 0.0}
