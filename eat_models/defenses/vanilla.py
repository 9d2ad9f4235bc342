"""Vanilla DML training: the clean metric loss, no defense."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import MetricLoss
from .base import Batch, Defense


class Vanilla(Defense):
    """Each member minimises its metric loss on its own clean batch."""

    name = "vanilla"

    def training_loss(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = sum(
            loss(net(b.images), b.labels)
            for net, loss, b in zip(members, losses, batches, strict=True)
        )
        return total, {"loss": total.item() / len(members)}
