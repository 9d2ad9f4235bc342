"""EST: Embedding-Shifted Triplet (Zhou et al., ECCV 2020; RobRank).

Adversarial training on examples crafted by the embedding-shift attack: x̃ maximises
‖f(x̃) − f(x)‖ within the L∞ ball (label-free), and the member minimises its metric loss
on f(x̃) — RobRank pairs this with the triplet loss, the step works with any metric loss.
RobRank trains on the adversarial batch only; ``clean_weight`` > 0 adds the clean batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import MetricLoss
from .base import AdversarialDefense, Batch


class EST(AdversarialDefense):
    """Metric loss on embedding-shifted examples."""

    name = "est"

    def craft_for_member(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        return self.craft_embedding_shift(net, batch.images)
