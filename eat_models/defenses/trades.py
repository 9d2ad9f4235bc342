"""TRADES (Zhang et al., 2019) adapted to deep metric learning.

Classification TRADES minimises CE(f(x), y) + β·KL(f(x) ‖ f(x̃)) with x̃ maximising the
KL term. For embeddings the natural counterpart of the KL between predictions is the
distance between embeddings, so the step loss is

    L(f(x), y) + β · mean_i ‖f(x_i) − f(x̃_i)‖²,

with x̃ crafted by PGD to maximise ‖f(x̃) − f(x)‖ (the embedding-shift objective; TRADES'
inner max does not use labels either). β = ``trades_beta`` (default 6, TRADES' value for
CIFAR-10). Clean and adversarial batches go through the network in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import MetricLoss
from .base import AdversarialDefense, Batch, Options, option


@dataclass
class TradesOptions(Options):
    """TRADES' weight of the embedding-shift term."""

    trades_beta: float = option(
        "weight beta of the squared embedding shift ||f(x) - f(x_adv)||^2",
        default=6.0,
        minimum=0.0,
    )


class TRADES(AdversarialDefense):
    """Clean metric loss plus β times the squared embedding shift of a crafted x̃."""

    name = "trades"
    options = TradesOptions

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        beta = float(self.config.trades_beta)
        adversarial = self.craft_embedding_shift(net, batch.images)
        clean, adv = net(torch.cat([batch.images, adversarial])).chunk(2)
        clean_loss = loss(clean, batch.labels)
        shift = (clean - adv).pow(2).sum(dim=1).mean()
        return clean_loss + beta * shift, {"loss_clean": clean_loss.item(), "shift": shift.item()}
