"""Vanilla DML training: the clean metric loss, no defense."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import MetricLoss
from .base import Batch, Defense


class Vanilla(Defense):
    """Each member minimises its metric loss on its own clean batch."""

    name = "vanilla"

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        value = loss(net(batch.images), batch.labels)
        return value, {"loss": value.item()}
