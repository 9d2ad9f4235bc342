"""Embedding shift (ES): move each embedding as far as it can from where it was.

Untargeted and label-free: maximise ‖F(x̃) − F(x)‖ (PGD on its square, whose signed
gradient is the same). Scored as retrieval of the attacked queries against the clean
gallery (Recall@k, mAP@R) and by the mean shift; RobRank reports the same attack as two of
its ten ERS terms, ES:D (the mean shift, in [0, 2] on the unit sphere) and ES:R (R@1 in
percent, each query's own gallery row masked).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .scores import attacked_retrieval

#: the reference point sits this far from the clean embedding, so that an attack starting
#: at the clean image (RobRank's budget: no random start) has a gradient (RobRank: 1e-7)
REFERENCE_OFFSET = 1e-6


def embedding_shift_objective(clean_embeddings: torch.Tensor) -> Objective:
    """Per-sample ``‖e − r‖²`` with ``r`` the clean embedding moved by
    :data:`REFERENCE_OFFSET` along the all-ones direction (same maximiser and gradient sign
    as ‖e − e_clean‖, and a non-zero gradient at the clean image)."""
    clean = clean_embeddings.detach()
    reference = clean + REFERENCE_OFFSET / clean.shape[1] ** 0.5
    return lambda embeddings: (embeddings - reference).pow(2).sum(dim=1)


@register
class EmbeddingShift(Attack):
    name = "es"
    label = "embedding shift (ES)"
    summary = (
        "maximise ‖F(x̃) − F(x)‖; scored by R@1 of the attacked queries (ES:R) and the shift (ES:D)"
    )
    suite = ("ers",)

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        return embedding_shift_objective(s.clean)

    def score(self, r: Scored) -> dict[str, float]:
        metrics = attacked_retrieval(r)
        shift = np.linalg.norm(r.adversarial[r.rows] - r.clean[r.rows], axis=1)
        metrics["embedding_shift"] = float(shift.mean()) if len(shift) else 0.0
        return metrics
