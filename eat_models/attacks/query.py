"""RobRank's query attacks QA+ and QA−: the perturbed image is a *query* q, and one gallery
candidate C is moved in its ranking.

* QA+ raises a random candidate (uniform over the gallery): PGD minimises
  ``mean_j max(0, d(q, C) − d(q, g_j))``.
* QA− buries a candidate drawn from the query's own top 1 % clean neighbours (own row
  excluded): PGD minimises ``mean_j max(0, d(q, g_j) − d(q, C))``.

Scored as the percentile rank of C in the attacked query's ranking of the whole clean
gallery (``#{j : d(q̃, g_j) < d(q̃, C)} / N``, in [0, 1]); ERS takes ``2 · 100 · QA+``
and ``100 − 100 · QA−``. One candidate per query (RobRank's M = 1, no semantics-preserving term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Attack, AttackSet, Scored, register
from .candidate import draw_any, draw_near
from .pgd import Objective
from .scores import distances, percentile_rank, smooth_distances, smooth_norm


def query_rank_objective(
    candidates: torch.Tensor, gallery: torch.Tensor, raise_: bool
) -> Objective:
    """Per sample, minus RobRank's query-attack loss for candidates ``[B, D]``."""
    candidates, gallery = candidates.detach(), gallery.detach()

    def objective(embeddings: torch.Tensor) -> torch.Tensor:
        to_gallery = smooth_distances(embeddings, gallery)
        to_candidate = smooth_norm(embeddings - candidates)[:, None]
        gap = to_candidate - to_gallery if raise_ else to_gallery - to_candidate
        return -F.relu(gap).mean(dim=1)

    return objective


class _Query(Attack):
    needs = ("gallery",)
    suite = ("ers",)
    headline = "prank"
    raise_: bool

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        return {"candidate": draw_any(s) if self.raise_ else draw_near(s)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        gallery = torch.as_tensor(s.gallery)
        return query_rank_objective(gallery[targets["candidate"]], gallery, self.raise_)

    def score(self, r: Scored) -> dict[str, float]:
        to_gallery = distances(r.adversarial[r.rows], r.clean)
        candidate = torch.as_tensor(r.targets["candidate"], dtype=torch.long)
        ranks = percentile_rank(to_gallery, to_gallery[torch.arange(len(candidate)), candidate])
        return {"prank": float(ranks.mean()) if len(ranks) else 0.0}


@register
class QueryRaise(_Query):
    name = "qa_pos"
    label = "QA+ (query attack, raise)"
    summary = "raise a random candidate in the query's ranking; scored by its percentile rank"
    raise_ = True


@register
class QueryBury(_Query):
    robust_direction = -1
    name = "qa_neg"
    label = "QA− (query attack, bury)"
    summary = "bury a top-1 % candidate in the query's ranking; scored by its percentile rank"
    raise_ = False
