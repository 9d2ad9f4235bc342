"""HM: hardness manipulation with a gradual adversary (Zhou & Patel, "Enhancing Adversarial
Robustness for Deep Metric Learning", CVPR 2022), our own implementation from the paper's
definitions (see ../shared/REFERENCES.md).

The hardness of a triplet (a, p, n) is ``H = d(a, p) − d(a, n)`` (Euclidean distance of
L2-normalised embeddings; harder triplets have larger H, a violated one H > −margin).
Per step:

1. **Source triplets** (``hm_source``), one (anchor, positive, negative) per anchor of the
   clean batch: ``random`` (default; RobRank's source hardness ``r``), or ``softhard``
   (RobRank's ``s``, the source of its published HM, ``ghmetsmi``): the negative among those
   closer than the anchor's farthest positive, the positive among those farther than its
   nearest negative, in the clean embeddings (eval mode). A source triplet already as hard
   as the destination has no shortfall, so the manipulation leaves it clean.
2. **Destination hardness** H_D (``hm_destination``):
   * ``lga`` (default) — the *linear gradual adversary*: ``H_D = −m · clip(ℓ_{t−1}/m, 0, 1)``
     with m the triplet margin (0.2) and ℓ_{t−1} the previous step's triplet loss on the
     manipulated triplets (2.0 before the first step). While the model still has a large
     loss the destination is easy (−m); as it learns, the destination moves to 0, harder.
   * ``semihard`` — for each source anchor, the hardness of a semi-hard triplet of the same
     anchor in the clean embeddings (d(a,p) < d(a,n) < d(a,p) + m; the hardest negative
     when there is none).
3. **Hardness manipulation**: PGD (L∞ ``train_eps``, ``train_steps`` steps, no random
   start, as RobRank) on all three images of every source triplet, minimising
   ``mean max(0, H_D − H̃_S)²`` — raising each triplet's hardness to at least H_D
   (the paper's element-wise "ET" alignment).
4. **Training** on the manipulated triplets: the triplet loss
   ``mean relu(d(ã, p̃) − d(ã, ñ) + m)`` (with Proxy-Anchor, our adaptation: the member's
   metric loss of ``[ã; p̃; ñ]`` with their labels). Optionally **ICS** (intra-class
   structure, ``hm_ics_weight`` λ, 0.5 in the paper): ``λ · mean relu(d(a, ã) − d(a, p))``
   on clean a, p and the manipulated anchor ã, i.e. the triplet loss with margin 0 that
   keeps an anchor's adversarial copy closer to it than its positive is.

Cost per step: ``train_steps`` forward/backward passes on 3 × batch images for the PGD,
plus one training pass on them (and 2 × batch clean images with ICS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import AttackBudget, Objective, perturb
from ..losses import TRIPLET_MARGIN, MetricLoss, random_triplets
from ..modes import eval_mode
from .base import AdversarialDefense, Batch, Options, option
from .triplets import (
    hardness,
    softhard_triplets,
    split_triplets,
    triplet_loss,
)

HM_DESTINATIONS = ("lga", "semihard")
HM_SOURCES = ("random", "softhard")


@dataclass
class HMOptions(Options):
    """HM's destination hardness and its intra-class structure term."""

    hm_destination: str = option(
        "destination hardness of the hardness manipulation: 'lga' (linear gradual "
        "adversary, -margin * clip(previous loss / margin, 0, 1)) or 'semihard' (the "
        "hardness of a semi-hard triplet of the same anchor)",
        default="lga",
        choices=HM_DESTINATIONS,
    )
    hm_source: str = option(
        "source triplets of the hardness manipulation: 'random' (one random triplet per "
        "anchor) or 'softhard' (RobRank's soft-hard miner, the source of its published HM "
        "'ghmetsmi': negatives closer than the farthest positive, positives farther than "
        "the nearest negative, in the clean embeddings)",
        default="random",
        choices=HM_SOURCES,
    )
    hm_ics_weight: float = option(
        "weight of the intra-class structure term (0: off; the HM&ICS paper uses 0.5)",
        default=0.0,
        minimum=0.0,
    )


#: RobRank's initial "previous loss" of the gradual adversary (an easy first destination).
INITIAL_PREVIOUS_LOSS = 2.0


def linear_gradual_destination(previous_loss: float, margin: float) -> float:
    """LGA: ``−margin · clip(previous_loss / margin, 0, 1)``, in ``[−margin, 0]``."""
    return -margin * min(max(previous_loss / margin, 0.0), 1.0)


def semihard_destination(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    positives: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Per source triplet, the hardness of a semi-hard triplet ``(a, p, n*)`` of its anchor
    and positive: n* the nearest negative farther than p (within the margin band when one
    is), else the hardest (nearest) negative."""
    dist = torch.cdist(embeddings[anchors], embeddings)  # [m, B]
    d_ap = dist.gather(1, positives[:, None])  # [m, 1]
    negative = labels[None, :] != labels[anchors][:, None]
    inf = torch.tensor(float("inf"), device=dist.device)
    band = negative & (dist > d_ap) & (dist < d_ap + margin)
    in_band = torch.where(band, dist, inf).min(1).values
    hardest = torch.where(negative, dist, inf).min(1).values
    d_an = torch.where(torch.isfinite(in_band), in_band, hardest)
    return d_ap.squeeze(1) - d_an


def hardness_manipulation_objective(destination: torch.Tensor | float) -> Objective:
    """The adversary's objective on ``[a; p; n]`` embeddings, to *maximise*:
    ``−mean max(0, H_D − H)²`` (PGD raises each triplet's hardness H up to H_D)."""

    def objective(embeddings: torch.Tensor) -> torch.Tensor:
        shortfall = (destination - hardness(*split_triplets(embeddings))).clamp(min=0)
        return -shortfall.square().mean()

    return objective


def intra_class_structure_loss(
    clean_anchor: torch.Tensor, adversarial_anchor: torch.Tensor, clean_positive: torch.Tensor
) -> torch.Tensor:
    """ICS: ``mean relu(d(a, ã) − d(a, p))``, the triplet loss (a, ã, p) with margin 0."""
    return triplet_loss(clean_anchor, adversarial_anchor, clean_positive, margin=0.0)


class GradualAdversary:
    """HM's adversary (steps 1–3), one state per member: the previous step's triplet loss
    that sets the gradual destination. The HM defense trains on what it makes; EAT with
    ``member_attack hm`` composes one for its members' own examples."""

    #: triplet margin m of the hardness scale (RobRank's cosine/normalised margin, ours too)
    margin = TRIPLET_MARGIN

    def __init__(self, destination: str, budget: AttackBudget, source: str = "random") -> None:
        if destination not in HM_DESTINATIONS:
            raise ValueError(
                f"unknown hm_destination {destination!r}; choose one of {HM_DESTINATIONS}"
            )
        if source not in HM_SOURCES:
            raise ValueError(f"unknown hm_source {source!r}; choose one of {HM_SOURCES}")
        self.kind = destination
        self.source = source
        self.budget = budget.replace(random_start=False)  # from the clean images, as RobRank
        self.previous_loss: dict[int, float] = {}

    def state_dict(self) -> dict:
        return {"previous_loss": dict(self.previous_loss)}

    def load_state_dict(self, state: dict) -> None:
        self.previous_loss = {int(k): float(v) for k, v in state.get("previous_loss", {}).items()}

    def destination(
        self, member: int, clean: torch.Tensor | None, batch: Batch, anchors, positives
    ) -> torch.Tensor | float:
        """H_D for the source triplets; ``clean`` (the batch's clean embeddings) is needed
        by the ``semihard`` destination only."""
        if self.kind == "lga":
            previous = self.previous_loss.get(member, INITIAL_PREVIOUS_LOSS)
            return linear_gradual_destination(previous, self.margin)
        return semihard_destination(clean, batch.labels, anchors, positives, self.margin)

    def manipulate(
        self, member: int, net: nn.Module, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float] | None:
        """Steps 1–3 for one member: ``(triplet rows [a; p; n] of the batch, the manipulated
        images [ã; p̃; ñ], the destination)``, or None when the batch has no anchor with both
        a positive and a negative."""
        clean = None
        if self.source == "softhard" or self.kind == "semihard":
            with torch.no_grad(), eval_mode(net):
                clean = net(batch.images)
        if self.source == "softhard":
            anchor, positive, negative = softhard_triplets(clean, batch.labels, batch.pairs)
        else:
            anchor, positive, negative = random_triplets(batch.labels, batch.pairs)
        if len(anchor) == 0:
            return None
        destination = self.destination(member, clean, batch, anchor, positive)
        rows = torch.cat([anchor, positive, negative])
        objective = hardness_manipulation_objective(destination)
        manipulated = perturb(net, batch.images[rows], objective, self.budget)
        return rows, manipulated, destination

    def record(self, member: int, embeddings: torch.Tensor) -> torch.Tensor:
        """The triplet loss of the manipulated triplets' embeddings ``[ã; p̃; ñ]``, kept as
        the member's "previous loss" for the next destination; returned for training."""
        value = triplet_loss(*split_triplets(embeddings), self.margin)
        self.previous_loss[member] = value.item()
        return value


class HM(AdversarialDefense):
    """Train on triplets whose hardness PGD raised to a gradually harder destination."""

    name = "hm"
    options = HMOptions
    #: PGD starts from the clean images, as RobRank's HM does
    random_start = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self.adversary = GradualAdversary(config.hm_destination, self.budget, config.hm_source)

    def state_dict(self) -> dict:
        """The gradual adversary's previous loss per member."""
        return self.adversary.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.adversary.load_state_dict(state)

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        ics_weight = float(self.config.hm_ics_weight)
        made = self.adversary.manipulate(k, net, batch)
        if made is None:  # no anchor with both a positive and a negative
            return None, {}
        rows, manipulated, destination = made
        m = len(rows) // 3
        anchor, positive = rows[:m], rows[m : 2 * m]
        inputs = [manipulated]
        if ics_weight > 0:
            inputs += [batch.images[anchor], batch.images[positive]]
        embeddings = net(torch.cat(inputs))
        adv = embeddings[: 3 * m]
        raw_triplet = self.adversary.record(k, adv)
        value = raw_triplet if loss.takes_triplets else loss(adv, batch.labels[rows])
        logs = {
            "loss_adv": value.item(),
            "hm_destination": float(torch.as_tensor(destination).mean()),
        }
        if ics_weight > 0:
            clean_a, clean_p = embeddings[3 * m :].chunk(2)
            ics = intra_class_structure_loss(clean_a, split_triplets(adv)[0], clean_p)
            value = value + ics_weight * ics
            logs["loss_ics"] = ics.item()
        return value, logs
