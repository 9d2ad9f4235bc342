"""PGD adversarial training (Madry et al., 2018) adapted to deep metric learning.

Inner max: PGD (L∞, random start, ``train_steps`` steps within ``train_eps``) maximising
the member's metric loss of the whole batch — the loss with all valid triplets, or
Proxy-Anchor. Outer min: the same metric loss on the adversarial batch (plus the clean
batch with weight ``clean_weight``, 0 by default). With ``members`` > 1 every member does
this on its own batches, independently.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import MetricLoss
from .base import AdversarialDefense, Batch


class PGDAT(AdversarialDefense):
    """Each member minimises its metric loss on examples crafted to maximise it."""

    name = "pgd-at"

    def craft_for_member(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        return self.craft_against_loss(net, loss, batch)
