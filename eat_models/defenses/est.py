"""EST: Embedding-Shifted Triplet (Zhou et al., ECCV 2020; RobRank).

Adversarial training on examples crafted by the embedding-shift attack: x̃ maximises
‖f(x̃) − f(x)‖ within the L∞ ball (label-free), and the member minimises its metric loss
on f(x̃) — RobRank pairs this with the triplet loss, the step works with any metric loss.
RobRank trains on the adversarial batch only; ``clean_weight`` > 0 adds the clean batch.
The attack starts from a random point of the ball (``est_start`` ``random``, the default)
or, as RobRank's ``AdvRank.embShift`` does, from the clean image (``clean``; the ES
objective has a non-zero gradient there, :func:`~eat_models.attacks.es.embedding_shift_objective`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import embedding_shift_attack
from ..losses import MetricLoss
from .base import AdversarialDefense, Batch, Options, option

#: where EST's training attack starts
EST_STARTS = ("random", "clean")


@dataclass
class ESTOptions(Options):
    """Where EST's training attack starts."""

    est_start: str = option(
        "where EST's training embedding-shift attack starts: 'random' (a uniform point of "
        "the eps-ball) or 'clean' (the clean image, as RobRank's EST)",
        default="random",
        choices=EST_STARTS,
    )


class EST(AdversarialDefense):
    """Metric loss on embedding-shifted examples."""

    name = "est"
    options = ESTOptions

    def craft_for_member(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        start = self.budget.replace(random_start=self.config.est_start == "random")
        return embedding_shift_attack(net, batch.images, start)
