"""RobRank's candidate attacks CA+ and CA− (Zhou & Patel, "Adversarial Attack and Defense in
Deep Ranking"): the perturbed image is a *candidate* c, ranked by a query Q from the gallery.

* CA+ raises c in Q's ranking: Q drawn uniformly from the whole gallery (with
  replacement), and PGD minimises ``mean_j max(0, d(c, Q) − d(g_j, Q))`` over the gallery.
* CA− buries c: Q drawn from c's own top 1 % clean neighbours (own row excluded), PGD
  minimises ``mean_j max(0, d(g_j, Q) − d(c, Q))``.

Scored as the percentile rank of c for Q among the whole clean gallery
(``#{j : d(g_j, Q) < d(c̃, Q)} / N``, in [0, 1]), averaged over the attacked images; ERS takes
``2 · 100 · CA+`` and ``100 − 100 · CA−``. One query per candidate (RobRank's W = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .scores import distances, percentile_rank, smooth_norm, top_neighbours


def top_fraction(n: int, fraction: float = 0.01) -> int:
    """How many neighbours form the top 1 % of an ``n``-item gallery (at least one)."""
    return max(1, int(fraction * n))


def draw_near(s: AttackSet) -> torch.Tensor:
    """One gallery index per image, uniform among its top 1 % clean neighbours (own row
    excluded): where CA− and QA− aim."""
    near = top_neighbours(s.gallery_distances(), top_fraction(len(s.gallery)))
    pick = s.rng.integers(0, near.shape[1], size=len(s))
    return near[torch.arange(len(s)), torch.as_tensor(pick)]


def draw_any(s: AttackSet) -> torch.Tensor:
    """One gallery index per image, uniform over the whole gallery (with replacement)."""
    return torch.as_tensor(s.rng.integers(0, len(s.gallery), size=len(s)), dtype=torch.long)


def candidate_objective(reference: torch.Tensor, gallery: torch.Tensor, raise_: bool) -> Objective:
    """Per sample, minus RobRank's candidate-attack loss for reference points ``[B, D]``."""
    to_gallery = distances(reference, gallery).detach()  # d(g_j, Q), fixed

    def objective(embeddings: torch.Tensor) -> torch.Tensor:
        to_candidate = smooth_norm(embeddings - reference)[:, None]
        gap = to_candidate - to_gallery if raise_ else to_gallery - to_candidate
        return -F.relu(gap).mean(dim=1)

    return objective


class _Candidate(Attack):
    perturbs = "candidate"
    needs = ("gallery",)
    suite = ("ers",)
    headline = "prank"
    raise_: bool

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        return {"query": draw_any(s) if self.raise_ else draw_near(s)}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        gallery = torch.as_tensor(s.gallery)
        return candidate_objective(gallery[targets["query"]], gallery, self.raise_)

    def score(self, r: Scored) -> dict[str, float]:
        reference = r.clean[r.targets["query"]]
        to_probe = torch.linalg.vector_norm(
            torch.as_tensor(reference - r.adversarial[r.rows]), dim=1
        )
        ranks = percentile_rank(distances(reference, r.clean), to_probe)
        return {"prank": float(ranks.mean()) if len(ranks) else 0.0}


@register
class CandidateRaise(_Candidate):
    name = "ca_pos"
    label = "CA+ (candidate attack, raise)"
    summary = (
        "raise a candidate in a random query's ranking; scored by percentile rank (low: attack won)"
    )
    raise_ = True


@register
class CandidateBury(_Candidate):
    robust_direction = -1
    name = "ca_neg"
    label = "CA− (candidate attack, bury)"
    summary = (
        "bury a candidate in a near query's ranking; scored by percentile rank (high: attack won)"
    )
    raise_ = False
