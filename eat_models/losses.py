"""Deep-metric-learning losses, taken from pytorch-metric-learning rather than rewritten.

* ``triplet``: triplet margin loss (margin :data:`TRIPLET_MARGIN` 0.2, Euclidean distance
  on the unit sphere) on the triplets a miner picks from the batch: pytorch-metric-learning's
  semi-hard miner (``semihard``, the default), or one random triplet per anchor
  (``random``; on SPC-2 batches one per pair, RobRank's ``spc2-random`` miner of the
  ``ptripletN`` loss its Fashion-MNIST rows train with).
* ``proxy-anchor``: Proxy-Anchor loss (Kim et al., 2020), the seed paper's loss. Its
  proxies are parameters: :meth:`MetricLoss.parameter_groups` hands them to the optimiser
  with their own (larger) learning rate.
"""

from __future__ import annotations

import functools

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.reducers import MeanReducer
from torch import nn

LOSSES = ("triplet", "proxy-anchor")
#: which triplets of a batch the triplet loss trains on
TRIPLET_MINERS = ("semihard", "random")
#: the triplet margin, the one of the whole project (the loss, HM's hardness scale, ACT)
TRIPLET_MARGIN = 0.2
#: Proxy-Anchor's margin δ (Kim et al. 2020)
PROXY_ANCHOR_MARGIN = 0.1


def anchor_masks(
    labels: torch.Tensor, pairs: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(anchors, positives, negatives)``: the anchors that have both a positive and a
    negative in the batch, and their rows of the positive and negative masks ``[m, B]``.
    With ``pairs`` (SPC-2 rows ``[a0, p0, a1, p1, …]``) only the even rows are anchors."""
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negatives = ~same
    usable = positives.any(1) & negatives.any(1)
    if pairs:
        usable[1::2] = False
    anchors = torch.nonzero(usable).squeeze(1)
    return anchors, positives[anchors], negatives[anchors]


def random_triplets(
    labels: torch.Tensor, pairs: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ``(anchor, positive, negative)`` index triple per anchor that has both a
    positive and a negative in the batch, anchors in batch order (RobRank's random
    triplets; torch's RNG).

    With ``pairs`` (SPC-2 batches, ``[a0, p0, a1, p1, …]``): one triplet per pair, its
    anchor the even row, its positive the pair's other row and a random negative
    (RobRank's ``spc2-random`` miner).

    pytorch-metric-learning's ``get_random_triplet_indices(labels, t_per_anchor=1)`` draws
    the same distribution, but class by class: using it would change every ACT and HM
    run's draws (and the restructure check's bit-identical rows) for no gain.
    """
    anchors, positives, negatives = anchor_masks(labels, pairs)
    if len(anchors) == 0:
        return anchors, anchors, anchors
    if pairs:
        pos = anchors + 1
    else:
        pos = torch.multinomial(positives.float(), 1).squeeze(1)
    neg = torch.multinomial(negatives.float(), 1).squeeze(1)
    return anchors, pos, neg


def _random_miner(
    embeddings: torch.Tensor, labels: torch.Tensor, pairs: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``random`` miner: :func:`random_triplets` of the labels (the embeddings are not
    looked at). On SPC-2 batches it checks that the rows are pairs of one class each."""
    if pairs and (len(labels) % 2 or bool((labels[0::2] != labels[1::2]).any())):
        raise ValueError(
            "the random miner on SPC-2 batches needs rows [a0, p0, a1, p1, …] with each pair "
            "of one class; this batch is not laid out so"
        )
    return random_triplets(labels, pairs)


class MetricLoss(nn.Module):
    """``loss(embeddings [B, D], labels [B]) -> scalar`` with an optional miner."""

    def __init__(
        self,
        name: str,
        num_classes: int,
        embedding_dim: int,
        margin: float | None = None,
        miner: str = "semihard",
        pairs: bool = False,
    ):
        """``miner`` (the triplet loss only): ``semihard`` or ``random``; ``pairs``: the
        batches are SPC-2 pairs ``[a0, p0, a1, p1, …]``, and the random miner takes one
        triplet per pair (anchor the even row, positive its partner, a random negative)."""
        super().__init__()
        if miner not in TRIPLET_MINERS:
            raise ValueError(f"unknown triplet miner {miner!r}; choose one of {TRIPLET_MINERS}")
        if name != "triplet" and miner != "semihard":
            raise ValueError(
                f"the {miner!r} triplet miner applies to the triplet loss, not to {name!r}"
            )
        if name == "triplet":
            margin = TRIPLET_MARGIN if margin is None else margin
            if miner == "semihard":
                # a semi-hard triplet's loss is non-zero (but exactly at the margin): the
                # default mean over the non-zero ones is the mean over all
                self.loss = losses.TripletMarginLoss(margin=margin)
                self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
            else:
                # the mean over every drawn triplet, the easy ones' zeros included (RobRank's
                # ``ptriplet``), not pytorch-metric-learning's mean over the non-zero ones
                self.loss = losses.TripletMarginLoss(margin=margin, reducer=MeanReducer())
                self.miner = functools.partial(_random_miner, pairs=pairs)
        elif name == "proxy-anchor":
            margin = PROXY_ANCHOR_MARGIN if margin is None else margin
            self.loss = losses.ProxyAnchorLoss(num_classes, embedding_dim, margin=margin, alpha=32)
            self.miner = None
        else:
            raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
        self.name = name
        self.margin = margin

    @classmethod
    def for_run(cls, config, num_classes: int) -> MetricLoss:
        """The loss a training run's config asks for (``loss``, ``embedding_dim``,
        ``triplet_miner``; SPC-2 pairs when ``sampler`` is ``spc2``)."""
        return cls(
            config.loss,
            num_classes,
            config.embedding_dim,
            miner=config.triplet_miner,
            pairs=config.sampler == "spc2",
        )

    @property
    def takes_triplets(self) -> bool:
        """Whether the loss is defined on triplets (the defenses that build their own
        triplets hand them to it; other losses take the images with their labels)."""
        return self.name == "triplet"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.miner is not None:
            triplets = self.miner(embeddings, labels)
            if len(triplets[0]) == 0:
                # No mined triplet in this batch: fall back to all valid triplets.
                return self.loss(embeddings, labels)
            return self.loss(embeddings, labels, triplets)
        return self.loss(embeddings, labels)

    def parameter_groups(self, lr: float, proxy_lr_multiplier: float = 100.0) -> list[dict]:
        """Optimiser groups for the loss's own parameters (the proxies), if any."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr * proxy_lr_multiplier}] if params else []
