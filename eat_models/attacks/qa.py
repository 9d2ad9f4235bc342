"""The project's retrieval query attack (QA): push each query from its true matches.

The targets are the query's ``neighbours`` (default 5) nearest same-class items of the
*clean* gallery under the attacked model; the attack maximises the query's mean distance to
them, so true matches fall down the ranking. Scored by Recall@k and mAP@R of the attacked
queries against the clean gallery. (RobRank's QA− is :mod:`.query`: one candidate from the
query's top 1 %, pushed behind the whole gallery.)
"""

from __future__ import annotations

import torch

from .base import Attack, AttackSet, Scored, register
from .pgd import Objective
from .scores import attacked_retrieval


def query_neighbours(
    query_embeddings: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    gallery_labels: torch.Tensor,
    k: int,
    exclude_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``[B, k]`` of each query's k most similar same-class gallery items.

    ``exclude_index [B]`` names each query's own gallery row (−1 or None: none). Returns
    ``(indices, valid)``; ``valid`` is False where a query has fewer than k such items.
    """
    sims = query_embeddings @ gallery_embeddings.T
    sims = sims.masked_fill(query_labels[:, None] != gallery_labels[None, :], -float("inf"))
    if exclude_index is not None:
        rows = torch.nonzero(exclude_index >= 0).squeeze(1)
        sims[rows, exclude_index[rows]] = -float("inf")
    k = min(k, gallery_embeddings.shape[0])
    top = sims.topk(k, dim=1)
    return top.indices, torch.isfinite(top.values)


def query_objective(neighbours: torch.Tensor, valid: torch.Tensor | None = None) -> Objective:
    """Per-sample minus the mean similarity to the query's neighbours ``[B, k, D]``.

    On the unit sphere ``‖e − g‖² = 2 − 2⟨e, g⟩``, so this maximises the mean distance.
    ``valid [B, k]`` masks padding (queries with fewer than k same-class neighbours).
    """
    neighbours = neighbours.detach()
    if valid is None:
        valid = torch.ones(neighbours.shape[:2], dtype=torch.bool)
    weights = valid.float() / valid.float().sum(dim=1, keepdim=True).clamp(min=1)
    return lambda embeddings: -(torch.einsum("bd,bkd->bk", embeddings, neighbours) * weights).sum(1)


@register
class QueryAttack(Attack):
    name = "qa"
    label = "retrieval query attack (QA)"
    summary = "push each query from its clean same-class top-k gallery neighbours"
    needs = ("labels", "gallery", "gallery_labels")
    uses_neighbours = True

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        gallery = torch.as_tensor(s.gallery).to(s.clean)
        indices, valid = query_neighbours(
            s.clean,
            torch.as_tensor(s.labels),
            gallery,
            torch.as_tensor(s.gallery_labels),
            s.neighbours,
            s.own_index(),
        )
        return {"neighbours": indices, "valid": valid}

    def objective(self, targets: dict, s: AttackSet) -> Objective:
        gallery = torch.as_tensor(s.gallery).to(s.clean)
        return query_objective(gallery[targets["neighbours"]], targets["valid"])

    def score(self, r: Scored) -> dict[str, float]:
        return attacked_retrieval(r)
