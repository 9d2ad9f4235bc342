"""The shared shape of every defense.

A defense decides (1) how many member networks it trains, (2) which rows of the training
set each member draws its batches from, and (3) the loss of one training step given every
member's batch. The training loop in :mod:`eat_models.train` does the rest (samplers,
optimiser, progress, checkpoint), the same for all defenses.

:class:`AdversarialDefense` adds what the adversarial defenses share: the PGD budget of
the config (``train_eps``, ``train_steps``, ``train_step_size``), crafting against a
member's metric loss or by embedding shift, and the weighted loss of one member on
several batches at once. Examples are crafted with the networks in eval mode (the attack
core restores their mode); the loss is computed in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..attacks import Objective, embedding_shift_attack, pgd
from ..losses import MetricLoss


@dataclass
class Batch:
    """One member's batch: images ``[B, C, H, W]`` in [0, 1] and labels ``[B]``."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class LossPart:
    """A batch one member trains on, with the weight of its metric loss in the step."""

    images: torch.Tensor
    labels: torch.Tensor
    weight: float = 1.0


class Defense:
    """Base class: vanilla training of ``members`` independent networks on all the data."""

    name = "vanilla"
    default_members = 1
    #: AdamW learning rate when ``config.lr`` is None
    default_lr = 1e-3

    def __init__(self, config) -> None:
        self.config = config

    @property
    def learning_rate(self) -> float:
        """``config.lr``, or the defense's own default when it is None."""
        lr = getattr(self.config, "lr", None)
        return self.default_lr if lr is None else float(lr)

    @property
    def num_members(self) -> int:
        """``config.members``, or the defense's own default when it is None."""
        members = getattr(self.config, "members", None)
        return self.default_members if members is None else max(1, int(members))

    def member_rows(self, labels: np.ndarray) -> list[np.ndarray]:
        """Training rows each member samples from (default: all rows for everyone)."""
        rows = np.arange(len(labels))
        return [rows for _ in range(self.num_members)]

    def training_loss(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to minimise for one step and a dict of scalars to log."""
        raise NotImplementedError


def metric_loss_objective(loss: MetricLoss, labels: torch.Tensor) -> Objective:
    """The inner maximisation's objective: the member's metric loss of the batch (scalar).

    For the triplet loss the semi-hard miner is bypassed (all valid triplets count): the
    miner would drop exactly the triplets the attack makes hard, and the objective would
    fall as the attack succeeds. Proxy-Anchor has no miner and is used as it is.
    """
    return lambda embeddings: loss.loss(embeddings, labels)


def member_loss(
    net: nn.Module, loss: MetricLoss, parts: list[LossPart]
) -> tuple[torch.Tensor, list[float]]:
    """``Σ_part weight · loss(net(images), labels)`` and each part's unweighted value.

    One forward pass over all parts (so BatchNorm sees them together); the metric loss
    is computed on each part separately, so mining never pairs items of different parts.
    """
    embeddings = net(torch.cat([p.images for p in parts]))
    total = embeddings.new_zeros(())
    values = []
    for emb, part in zip(embeddings.split([len(p.images) for p in parts]), parts, strict=True):
        value = loss(emb, part.labels)
        total = total + part.weight * value
        values.append(value.item())
    return total, values


class AdversarialDefense(Defense):
    """A defense that trains on PGD examples within ``config.train_eps`` (L∞).

    By default each member minimises its metric loss on the examples
    :meth:`craft_for_member` makes from its batch (plus the clean batch when
    ``clean_weight`` > 0); a subclass fills in that one method, or replaces
    :meth:`training_loss` when its step has another shape.
    """

    @property
    def eps(self) -> float:
        return float(self.config.train_eps)

    @property
    def steps(self) -> int:
        return int(self.config.train_steps)

    @property
    def step_size(self) -> float | None:
        return self.config.train_step_size

    #: whether the training PGD starts from a random point of the ε-ball
    random_start = True

    def craft(
        self,
        model: nn.Module,
        images: torch.Tensor,
        objective: Objective,
        steps: int | None = None,
        step_size: float | None = None,
    ) -> torch.Tensor:
        """PGD with the training budget (one restart); ``steps`` overrides the budget's
        step count, and then the step size follows the default rule unless given."""
        if steps is None:
            steps, step_size = self.steps, self.step_size
        return pgd(
            model, images, objective, self.eps, steps, step_size, random_start=self.random_start
        )

    def craft_against_loss(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        """Madry's inner max: examples maximising the member's own metric loss."""
        return self.craft(net, batch.images, metric_loss_objective(loss, batch.labels))

    def craft_embedding_shift(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Examples maximising ‖f(x̃) − f(x)‖ (RobRank's EST, TRADES' inner max)."""
        return embedding_shift_attack(model, images, self.eps, self.steps, self.step_size)

    def adversarial_parts(self, adversarial: torch.Tensor, batch: Batch) -> list[LossPart]:
        """The adversarial batch (weight 1), plus the clean one if ``clean_weight`` > 0."""
        parts = [LossPart(adversarial, batch.labels)]
        clean_weight = float(self.config.clean_weight)
        if clean_weight > 0:
            parts.append(LossPart(batch.images, batch.labels, clean_weight))
        return parts

    def craft_for_member(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        """The adversarial version of ``batch`` this member trains on."""
        raise NotImplementedError

    def training_loss(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total, adv_values = 0.0, []
        for net, loss, batch in zip(members, losses, batches, strict=True):
            adversarial = self.craft_for_member(net, loss, batch)
            value, parts = member_loss(net, loss, self.adversarial_parts(adversarial, batch))
            total = total + value
            adv_values.append(parts[0])
        return total, {"loss_adv": sum(adv_values) / len(adv_values)}
