"""The shared shape of every defense.

A defense decides (1) how many member networks it trains, (2) which rows of the training
set each member draws its batches from, and (3) the loss one member adds to a training
step (:meth:`Defense.member_loss`, the one method a defense implements). The base class
runs the member loop of a step: :meth:`Defense.prepare_step` first (EAT crafts every
member's examples there, since each member also trains on the others'), then each
member's loss, summed; each logged scalar is averaged over the members that report it.
The training loop in :mod:`eat_models.train` does the rest (samplers, optimiser,
progress, checkpoint), the same for all defenses.

:class:`AdversarialDefense` adds what the adversarial defenses share: the PGD budget of
the config (``train_eps``, ``train_steps``, ``train_step_size``), crafting against a
member's metric loss or by embedding shift, and the weighted loss of one member on
several batches at once. Examples are crafted with the networks in eval mode (the attack
core restores their mode); the loss is computed in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from ..attacks import AttackBudget, Objective, embedding_shift_attack, perturb
from ..losses import MetricLoss


def option(
    help_text: str,
    choices: tuple | None = None,
    minimum: float | None = None,
    **kwargs,
):
    """A config field with the help text (and choices) its ``eat train`` flag shows, and
    the smallest value it takes (``minimum``; None values always pass)."""
    return field(metadata={"help": help_text, "choices": choices, "minimum": minimum}, **kwargs)


def check_options(config) -> None:
    """Raise ValueError naming the first field whose value is not one of its choices or
    is below its minimum."""
    for f in fields(config):
        value = getattr(config, f.name)
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices is not None and value not in choices:
            raise ValueError(f"{f.name} {value!r}: choose one of {', '.join(map(str, choices))}")
        if minimum is not None and value is not None and value < minimum:
            raise ValueError(f"{f.name} {value!r}: must be at least {minimum}")


class Options:
    """Base of every option dataclass: values are checked when a config is made."""

    def __post_init__(self) -> None:
        check_options(self)


#: the L∞ budget adversarial training crafts its examples within (pixels in [0, 1])
DEFAULT_TRAIN_EPS = 0.1


@dataclass
class AdversarialOptions(Options):
    """The training attack of every adversarial defense (pgd-at, trades, est, act, hm,
    at-ensemble, eat)."""

    train_eps: float = option(
        "L-inf budget of the examples crafted during training (pixels in [0, 1])",
        default=DEFAULT_TRAIN_EPS,
        minimum=0.0,
    )
    train_steps: int = option("PGD steps per crafted batch", default=5, minimum=1)
    train_step_size: float | None = option(
        "PGD step size; default max(eps/8, 2.5*eps/steps)", default=None, minimum=0.0
    )
    clean_weight: float = option(
        "pgd-at, at-ensemble, est, eat: weight of the clean batch's metric loss added to the "
        "adversarial one (0: adversarial batch only)",
        default=0.0,
        minimum=0.0,
    )


@dataclass
class Batch:
    """One member's batch: images ``[B, C, H, W]`` in [0, 1] and labels ``[B]``.

    ``pairs``: the rows are SPC-2 pairs ``[a0, p0, a1, p1, …]`` (``--sampler spc2``); the
    defenses that build their own triplets then take one per pair, anchored at its even row,
    as RobRank's ``spc2-*`` miners do."""

    images: torch.Tensor
    labels: torch.Tensor
    pairs: bool = False


@dataclass
class LossPart:
    """A batch one member trains on, with the weight of its metric loss in the step."""

    images: torch.Tensor
    labels: torch.Tensor
    weight: float = 1.0


class Defense:
    """Base class of every defense. A concrete subclass sets ``name`` (its registry key;
    forgetting it is an error, not a silent replacement of another defense) and implements
    :meth:`member_loss`. Intermediate bases set ``abstract = True``."""

    abstract = True
    name: str
    default_members = 1
    #: the dataclass of this defense's own options (their flags form a group in --help)
    options: type | None = None
    #: AdamW learning rate when ``config.lr`` is None
    default_lr = 1e-3

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        if not isinstance(cls.__dict__.get("name"), str) or not cls.__dict__["name"]:
            raise TypeError(
                f"defense class {cls.__name__} must set its own `name` (the key it is "
                "registered and chosen under), or `abstract = True` if it is a base class"
            )

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

    def state_dict(self) -> dict:
        """What the defense carries from step to step (saved in resume points; default:
        nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def member_rows(self, labels: np.ndarray) -> list[np.ndarray]:
        """Training rows each member samples from (default: all rows for everyone)."""
        rows = np.arange(len(labels))
        return [rows for _ in range(self.num_members)]

    def prepare_step(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> None:
        """Work one step needs before any member's loss (default: none)."""

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """Member ``k``'s loss in this step and its scalars to log; ``None`` when the
        member has nothing to train on this step (e.g. no triplet in its batch)."""
        raise NotImplementedError

    def training_loss(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise for one step (the sum of the members' losses) and the
        scalars to log (each averaged over the members that logged it)."""
        self.prepare_step(members, losses, batches)
        total = 0.0
        logs: dict[str, list[float]] = {}
        for k, (net, loss, batch) in enumerate(zip(members, losses, batches, strict=True)):
            value, scalars = self.member_loss(k, net, loss, batch)
            for key, scalar in scalars.items():
                logs.setdefault(key, []).append(scalar)
            if value is not None:
                total = total + value
        if not torch.is_tensor(total):  # no member had anything to train on
            total = batches[0].images.new_zeros((), requires_grad=True)
        return total, {key: sum(v) / len(v) for key, v in logs.items()}


def metric_loss_objective(loss: MetricLoss, labels: torch.Tensor) -> Objective:
    """The inner maximisation's objective: the member's metric loss of the batch (scalar).

    For the triplet loss the semi-hard miner is bypassed (all valid triplets count): the
    miner would drop exactly the triplets the attack makes hard, and the objective would
    fall as the attack succeeds. Proxy-Anchor has no miner and is used as it is.
    """
    return lambda embeddings: loss.loss(embeddings, labels)


def parts_loss(
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
    :meth:`member_loss` when its loss has another shape.
    """

    abstract = True
    options = AdversarialOptions

    #: whether the training PGD starts from a random point of the ε-ball
    random_start = True

    @property
    def budget(self) -> AttackBudget:
        """The training attack's budget: ``train_eps``, ``train_steps``, ``train_step_size``,
        one restart, the defense's own random start."""
        return AttackBudget(
            float(self.config.train_eps),
            int(self.config.train_steps),
            self.config.train_step_size,
            random_start=self.random_start,
        )

    def craft(
        self,
        model: nn.Module,
        images: torch.Tensor,
        objective: Objective,
        steps: int | None = None,
    ) -> torch.Tensor:
        """PGD under the training :attr:`budget`; ``steps`` overrides its step count, and
        then the step size follows the default rule."""
        budget = self.budget
        if steps is not None:
            budget = budget.replace(steps=int(steps), step_size=None)
        return perturb(model, images, objective, budget)

    def craft_against_loss(self, net: nn.Module, loss: MetricLoss, batch: Batch) -> torch.Tensor:
        """Madry's inner max: examples maximising the member's own metric loss."""
        return self.craft(net, batch.images, metric_loss_objective(loss, batch.labels))

    def craft_embedding_shift(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Examples maximising ‖f(x̃) − f(x)‖ (RobRank's EST, TRADES' inner max)."""
        return embedding_shift_attack(model, images, self.budget.replace(random_start=True))

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

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        adversarial = self.craft_for_member(net, loss, batch)
        value, parts = parts_loss(net, loss, self.adversarial_parts(adversarial, batch))
        return value, {"loss_adv": parts[0]}
