"""Triplets, shared by the defenses that build their own (ACT, HM, and EAT with HM's
adversary): soft-hard sampling, the hardness, and the triplet loss on given triplets
(pytorch-metric-learning's triplet margin loss with explicit triplets and its
``LpDistance``), with the one triplet margin of the project
(:data:`eat_models.losses.TRIPLET_MARGIN`). Random sampling, one triplet per anchor, is
:func:`eat_models.losses.random_triplets`, with the losses whose ``random`` miner draws it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.reducers import MeanReducer

from ..losses import TRIPLET_MARGIN, anchor_masks

#: Euclidean distance of embeddings that the networks have already L2-normalised
DISTANCE = LpDistance(normalize_embeddings=False)


def softhard_triplets(
    embeddings: torch.Tensor, labels: torch.Tensor, pairs: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One soft-hard ``(anchor, positive, negative)`` per anchor that has both a positive
    and a negative in the batch (RobRank's ``spc2-softhard`` miner, the source hardness
    ``s`` of its published HM, ``ghmetsmi``), from the embeddings' Euclidean distances.

    For anchor a: the negative is drawn uniformly among the negatives closer to a than its
    farthest positive, the positive among the positives farther from a than its nearest
    negative; where no such one exists, among all its negatives (positives). RobRank draws
    one anchor per SPC-2 pair (``pairs``: the even rows); without ``pairs`` every anchor of
    our class-balanced batches is one. Draws use torch's RNG."""
    anchors, positives, negatives = anchor_masks(labels, pairs)
    if len(anchors) == 0:
        return anchors, anchors, anchors
    dist = torch.cdist(embeddings[anchors].detach(), embeddings.detach())  # [m, B]
    inf = torch.tensor(float("inf"), device=dist.device)
    farthest_positive = torch.where(positives, dist, -inf).max(1, keepdim=True).values
    nearest_negative = torch.where(negatives, dist, inf).min(1, keepdim=True).values
    soft_neg = negatives & (dist < farthest_positive)
    soft_pos = positives & (dist > nearest_negative)
    soft_neg = torch.where(soft_neg.any(1, keepdim=True), soft_neg, negatives)
    soft_pos = torch.where(soft_pos.any(1, keepdim=True), soft_pos, positives)
    positive = torch.multinomial(soft_pos.float(), 1).squeeze(1)
    negative = torch.multinomial(soft_neg.float(), 1).squeeze(1)
    return anchors, positive, negative


def hardness(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``H = d(a, p) − d(a, n)`` per triplet (rows of the three ``[m, D]`` tensors).

    Exact Euclidean distances (torch's ``pairwise_distance`` without the 1e-6 that
    pytorch-metric-learning's ``LpDistance.pairwise_distance`` adds to each difference):
    HM's destinations are hardness values near 0, where that offset would show."""
    return F.pairwise_distance(anchor, positive, eps=0) - F.pairwise_distance(
        anchor, negative, eps=0
    )


def split_triplets(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[a; p; n]`` (3·m rows) → ``(a, p, n)``."""
    return embeddings.chunk(3)


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = TRIPLET_MARGIN,
) -> torch.Tensor:
    """``mean relu(d(a, p) − d(a, n) + margin)`` over the given triplets (no mining):
    pytorch-metric-learning's triplet margin loss on explicit triplets, mean-reduced."""
    m = len(anchor)
    if m == 0:
        return anchor.new_zeros((), requires_grad=anchor.requires_grad)
    rows = torch.arange(m, device=anchor.device)
    loss = TripletMarginLoss(margin=margin, distance=DISTANCE, reducer=MeanReducer())
    return loss(
        torch.cat([anchor, positive, negative]),
        indices_tuple=(rows, rows + m, rows + 2 * m),
    )
