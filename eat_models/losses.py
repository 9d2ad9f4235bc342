"""Deep-metric-learning losses, taken from pytorch-metric-learning rather than rewritten.

* ``triplet``: triplet margin loss (margin :data:`TRIPLET_MARGIN` 0.2, Euclidean distance
  on the unit sphere) on the triplets a semi-hard triplet
  miner picks from the batch — the RobRank recipe.
* ``proxy-anchor``: Proxy-Anchor loss (Kim et al., 2020), the seed paper's loss. Its
  proxies are parameters: :meth:`MetricLoss.parameter_groups` hands them to the optimiser
  with their own (larger) learning rate.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

LOSSES = ("triplet", "proxy-anchor")
#: the triplet margin, the one of the whole project (the loss, HM's hardness scale, ACT)
TRIPLET_MARGIN = 0.2
#: Proxy-Anchor's margin δ (Kim et al. 2020)
PROXY_ANCHOR_MARGIN = 0.1


class MetricLoss(nn.Module):
    """``loss(embeddings [B, D], labels [B]) -> scalar`` with an optional miner."""

    def __init__(
        self, name: str, num_classes: int, embedding_dim: int, margin: float | None = None
    ):
        super().__init__()
        if name == "triplet":
            margin = TRIPLET_MARGIN if margin is None else margin
            self.loss = losses.TripletMarginLoss(margin=margin)
            self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
        elif name == "proxy-anchor":
            margin = PROXY_ANCHOR_MARGIN if margin is None else margin
            self.loss = losses.ProxyAnchorLoss(num_classes, embedding_dim, margin=margin, alpha=32)
            self.miner = None
        else:
            raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
        self.name = name
        self.margin = margin

    @property
    def takes_triplets(self) -> bool:
        """Whether the loss is defined on triplets (the defenses that build their own
        triplets hand them to it; other losses take the images with their labels)."""
        return self.name == "triplet"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.miner is not None:
            triplets = self.miner(embeddings, labels)
            if len(triplets[0]) == 0:
                # No semi-hard triplet in this batch: fall back to all valid triplets.
                return self.loss(embeddings, labels)
            return self.loss(embeddings, labels, triplets)
        return self.loss(embeddings, labels)

    def parameter_groups(self, lr: float, proxy_lr_multiplier: float = 100.0) -> list[dict]:
        """Optimiser groups for the loss's own parameters (the proxies), if any."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr * proxy_lr_multiplier}] if params else []
