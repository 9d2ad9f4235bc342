"""The shared shape of every defense.

A defense decides (1) how many member networks it trains, (2) which rows of the training
set each member draws its batches from, and (3) the loss of one training step given every
member's batch. The training loop in :mod:`eat_models.train` does the rest (samplers,
optimiser, progress, checkpoint), the same for all defenses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..losses import MetricLoss


@dataclass
class Batch:
    """One member's batch: images ``[B, C, H, W]`` in [0, 1] and labels ``[B]``."""

    images: torch.Tensor
    labels: torch.Tensor


class Defense:
    """Base class: vanilla training of ``members`` independent networks on all the data."""

    name = "vanilla"

    def __init__(self, config) -> None:
        self.config = config

    @property
    def num_members(self) -> int:
        return max(1, int(getattr(self.config, "members", 1)))

    def member_rows(self, labels: np.ndarray) -> list[np.ndarray]:
        """Training rows each member samples from (default: all rows for everyone)."""
        rows = np.arange(len(labels))
        return [rows for _ in range(self.num_members)]

    def training_loss(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to minimise for one step and a dict of scalars to log."""
        raise NotImplementedError
