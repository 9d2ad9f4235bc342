"""EAT: Ensemble Adversarial Training, as DESIGN.md §2 defines it.

K members f_1 … f_K (default 3, different seeds), deployed as the averaged embedding
F(x) = normalize(mean_k f_k(x)). Every part below is a switch, so the ablation rows
(independent AT → + split → + transfer → + ensemble term) are config changes.

1. **Data split** (``member_split``): member k draws its batches from its home part S_k —
   ``stratified`` (default: K disjoint parts, every class in each), ``overlap`` (member k
   on all parts but S_k, as in bagging / k-fold), ``class-disjoint`` (K parts with
   disjoint class sets) or ``none`` (every member samples all rows). An epoch is one
   pass of the ensemble: member k passes over its own rows once.
2. **Own adversarial examples** (``member_attack``): ``pgd`` (default) — x̃_k = PGD on
   member k's metric loss L_k of its batch (x_k, y_k) (L∞ ``train_eps``, ``train_steps``
   steps, random start); ``hm`` — HM's hardness manipulation (:mod:`.hm`): random source
   triplets of the batch, raised by PGD to the member's gradual destination hardness;
   x̃_k is then the manipulated triplets [ã; p̃; ñ] with their labels (3 × batch images),
   and they are also what the other members receive by self-transfer.
3. **Self-transfer** (``lambda_transfer``): member k also trains on x̃_j, j ≠ k, the
   examples crafted against the other members in the same step, with their labels.
4. **Ensemble term** (``lambda_ensemble``): an ensemble batch x_F — rows k, k+K, k+2K, …
   of every member's batch x_k, concatenated (about one batch, every member's data in
   it) — is attacked through F itself; every member trains on the result x̃_F. The
   objective against F (``ensemble_objective``) does not use the members' loss (their
   Proxy-Anchor proxies live in their own spaces, not F's), so it is the same for any
   metric loss: ``cluster`` (default) is the clustering attack within the batch — away
   from the centroid of the image's class in clean F-space toward a random other
   class's (it uses the labels only to form those centroids); ``shift`` maximises the
   embedding shift ‖F(x̃) − F(x)‖², the ES attack on the deployed model. On the 12k-image
   tuning slice ``cluster`` gave CA NMI 0.556 vs 0.530 for ``shift``
   (``results/fashion-mnist/tuning-12k``). ``ensemble_every`` n runs the term on every
   n-th step only, and ``ensemble_steps`` sets its PGD steps (default: ``train_steps``):
   PGD through F costs K member passes per step, as much as all K member crafts.
   ``ensemble_batch`` ``all`` attacks all K member batches through F (K× the cost of
   ``share``). With ``member_crafts`` off, members craft nothing against themselves (and
   so transfer nothing): the ensemble is adversarially trained only as the deployed F
   ("adversarial training of the ensemble", Grefenstette et al. 2018).

The step loss (a zero weight skips the part, and its PGD run, entirely)::

    Σ_k [ L_k(f_k(x̃_k), y_k)
          + clean_weight        · L_k(f_k(x_k), y_k)
          + lambda_transfer/(K−1) · Σ_{j≠k} L_k(f_k(x̃_j), y_j)
          + lambda_ensemble     · L_k(f_k(x̃_F), y_F) ]

Each member's parts go through it in one forward pass; the metric loss is taken on each
part separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..attacks import Objective, clustering_objective, embedding_shift_objective, eval_mode
from ..data import class_disjoint_parts, stratified_split
from ..ensemble import AveragedEmbedding
from ..losses import MetricLoss
from .base import AdversarialDefense, Batch, LossPart, option, parts_loss

MEMBER_SPLITS = ("stratified", "overlap", "class-disjoint", "none")
MEMBER_ATTACKS = ("pgd", "hm")
ENSEMBLE_OBJECTIVES = ("shift", "cluster")
ENSEMBLE_BATCHES = ("share", "all")


@dataclass
class EATOptions:
    """How EAT splits the data, crafts, transfers, and (optionally) attacks F."""

    member_split: str = option(
        "how members' home data is split: 'stratified' (K parts, every class in each), "
        "'overlap' (member k on all stratified parts but the k-th), 'class-disjoint' (K parts, "
        "disjoint classes) or 'none' (all data for everyone)",
        default="stratified",
        choices=MEMBER_SPLITS,
    )
    lambda_transfer: float = option(
        "weight of self-transfer, each member training on the examples crafted against "
        "the other members in the same step (0: off)",
        default=1.0,
    )
    lambda_ensemble: float = option(
        "weight of the examples crafted against the averaged embedding F (0: off, and "
        "no PGD through F is run). Off by default: it doubles the cost of an epoch and did "
        "not add robustness at equal compute (results/fashion-mnist/tuning-12k-v2)",
        default=0.0,
    )
    ensemble_objective: str = option(
        "what PGD through F maximises: 'cluster' (clustering attack inside the batch: "
        "away from the own class centroid toward a random other one; the tuned default, see "
        "results/fashion-mnist/tuning-12k) or 'shift' (embedding shift ||F(x_adv) - F(x)||)",
        default="cluster",
        choices=ENSEMBLE_OBJECTIVES,
    )
    ensemble_every: int = option(
        "run the term through F on every n-th step only (1: every step)", default=1
    )
    ensemble_steps: int | None = option(
        "PGD steps of the term through F (default: --train-steps; its step size then "
        "follows the default rule)",
        default=None,
    )
    ensemble_batch: str = option(
        "which images the term through F attacks each step: 'share' (rows k::K of member "
        "k's batch, about one batch) or 'all' (all K member batches; K times the cost)",
        default="share",
        choices=ENSEMBLE_BATCHES,
    )
    member_crafts: bool = option(
        "craft examples against each member's own loss (with --no-member-crafts the "
        "members train only on the examples crafted against F, jointly, and transfer nothing)",
        default=True,
    )
    member_attack: str = option(
        "how each member's own examples are crafted: 'pgd' (PGD on the member's metric "
        "loss) or 'hm' (HM's hardness manipulation of random triplets toward the gradual "
        "destination; the manipulated triplets are also what self-transfer passes on)",
        default="pgd",
        choices=MEMBER_ATTACKS,
    )


def ensemble_batch(batches: list[Batch]) -> Batch:
    """Rows k::K of member k's batch, concatenated: about one batch drawn from all K."""
    k = len(batches)
    return Batch(
        torch.cat([b.images[i::k] for i, b in enumerate(batches)]),
        torch.cat([b.labels[i::k] for i, b in enumerate(batches)]),
    )


def batch_clustering_objective(clean_embeddings: torch.Tensor, labels: torch.Tensor) -> Objective:
    """The clustering attack inside one batch: class means of the clean embeddings are the
    centroids; each image's target is a random other class present in the batch."""
    classes, index = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return embedding_shift_objective(clean_embeddings)
    centroids = torch.stack([clean_embeddings[index == c].mean(0) for c in range(len(classes))])
    target = (index + torch.randint(1, len(classes), index.shape, device=index.device)) % len(
        classes
    )
    return clustering_objective(centroids[index], centroids[target])


@dataclass
class _Step:
    """What :meth:`EAT.prepare_step` made for the step's member losses."""

    own: list[Batch | None]  # x̃_k per member (None: nothing crafted)
    ensemble_part: LossPart | None  # x̃_F with its weight, when the term runs this step
    lambda_transfer: float
    member_crafts: bool


class EAT(AdversarialDefense):
    """Ensemble adversarial training with data split and self-transfer."""

    name = "eat"
    default_members = 3
    options = EATOptions

    def __init__(self, config) -> None:
        super().__init__(config)
        self.steps_taken = 0
        self._hm = None
        self._step: _Step | None = None

    def state_dict(self) -> dict:
        """The step count (for the every-n-th-step term) and the HM adversary's state."""
        return {
            "steps_taken": self.steps_taken,
            "hm": self._hm.state_dict() if self._hm is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps_taken = int(state.get("steps_taken", 0))
        if state.get("hm") is not None:
            from .hm import HM

            self._hm = HM(self.config)
            self._hm.load_state_dict(state["hm"])

    def member_examples(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> Batch | None:
        """x̃_k with its labels, crafted against member k alone (``member_attack``)."""
        kind = getattr(self.config, "member_attack", "pgd")
        if kind == "pgd":
            return Batch(self.craft_against_loss(net, loss, batch), batch.labels)
        if kind != "hm":
            raise ValueError(f"unknown member_attack {kind!r}; choose one of {MEMBER_ATTACKS}")
        from .hm import HM, split_triplets, triplet_loss

        if self._hm is None:
            self._hm = HM(self.config)
        made = self._hm.manipulate(k, net, batch)
        if made is None:
            return None
        rows, manipulated, _ = made
        # the gradual adversary's "previous loss": this step's triplet loss on the
        # manipulated triplets (HM takes it from its training pass; one extra forward here)
        with torch.no_grad(), eval_mode(net):
            value = triplet_loss(*split_triplets(net(manipulated)), self._hm.margin)
        self._hm.previous_loss[k] = value.item()
        return Batch(manipulated, batch.labels[rows])

    @property
    def learning_rate(self) -> float:
        """``config.lr``, else ``default_lr × K`` when members have home parts: a member then
        takes 1/K of a single model's steps per epoch, each on K batches (own + transferred);
        the larger rate made up for it on the tuning slice (CA NMI 0.532 → 0.595 at 10
        epochs, results/fashion-mnist/tuning-12k-v2)."""
        if getattr(self.config, "lr", None) is not None:
            return float(self.config.lr)
        split = self.config.member_split
        return self.default_lr * (self.num_members if split != "none" else 1)

    def member_rows(self, labels: np.ndarray) -> list[np.ndarray]:
        split, k, seed = self.config.member_split, self.num_members, self.config.seed
        if split == "stratified":
            return stratified_split(labels, k, seed=seed)
        if split == "overlap":
            if k == 1:
                return super().member_rows(labels)
            parts = stratified_split(labels, k, seed=seed)
            return [np.sort(np.concatenate(parts[:j] + parts[j + 1 :])) for j in range(k)]
        if split == "class-disjoint":
            return class_disjoint_parts(labels, k, seed=seed)
        if split == "none":
            return super().member_rows(labels)
        raise ValueError(f"unknown member_split {split!r}; choose one of {MEMBER_SPLITS}")

    def craft_against_ensemble(self, members: list[nn.Module], batch: Batch) -> torch.Tensor:
        """x̃_F: PGD through the averaged embedding F with ``ensemble_objective``."""
        ensemble = AveragedEmbedding(members)
        with torch.no_grad(), eval_mode(ensemble):
            clean = ensemble(batch.images)
        kind = self.config.ensemble_objective
        if kind == "shift":
            objective = embedding_shift_objective(clean)
        elif kind == "cluster":
            objective = batch_clustering_objective(clean, batch.labels)
        else:
            raise ValueError(
                f"unknown ensemble_objective {kind!r}; choose one of {ENSEMBLE_OBJECTIVES}"
            )
        steps = self.config.ensemble_steps
        return self.craft(ensemble, batch.images, objective, None if steps is None else int(steps))

    def ensemble_term_now(self) -> bool:
        """Whether this step trains on x̃_F (every ``ensemble_every``-th step)."""
        every = max(1, int(self.config.ensemble_every))
        return float(self.config.lambda_ensemble) > 0 and self.steps_taken % every == 0

    def prepare_step(
        self, members: list[nn.Module], losses: list[MetricLoss], batches: list[Batch]
    ) -> None:
        """Craft every member's own examples (and x̃_F) first: each member trains on all
        of them."""
        k = len(members)
        lambda_transfer = float(self.config.lambda_transfer) if k > 1 else 0.0
        lambda_ensemble = float(self.config.lambda_ensemble) if self.ensemble_term_now() else 0.0
        self.steps_taken += 1
        member_crafts = bool(self.config.member_crafts)
        if not member_crafts and not lambda_ensemble > 0:
            raise ValueError(
                "eat with member_crafts off trains only on the examples crafted against F: it "
                "needs lambda_ensemble > 0 and ensemble_every 1"
            )
        if not member_crafts:
            lambda_transfer = 0.0
        own = [
            self.member_examples(i, net, loss, batch) if member_crafts else None
            for i, (net, loss, batch) in enumerate(zip(members, losses, batches, strict=True))
        ]
        ensemble_part = None
        if lambda_ensemble > 0:
            rows = self.config.ensemble_batch
            if rows == "share":
                target = ensemble_batch(batches)
            elif rows == "all":
                target = Batch(
                    torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches])
                )
            else:
                raise ValueError(
                    f"unknown ensemble_batch {rows!r}; choose one of {ENSEMBLE_BATCHES}"
                )
            ensemble_part = LossPart(
                self.craft_against_ensemble(members, target), target.labels, lambda_ensemble
            )
        self._step = _Step(own, ensemble_part, lambda_transfer, member_crafts)

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """Member k's loss on its own x̃_k, the others' x̃_j (self-transfer) and x̃_F."""
        step = self._step
        own, n = step.own, len(step.own)
        if step.member_crafts and own[k] is not None:
            parts = self.adversarial_parts(own[k].images, batch)
            parts[0] = LossPart(own[k].images, own[k].labels)
        else:  # no triplet in the batch, or joint training on x̃_F: the clean part, if any
            parts = self.adversarial_parts(batch.images, batch)[1:]
        first_transfer = len(parts)
        others = [j for j in range(n) if j != k and own[j] is not None]
        if step.lambda_transfer > 0:
            parts += [
                LossPart(own[j].images, own[j].labels, step.lambda_transfer / (n - 1))
                for j in others
            ]
        if step.ensemble_part is not None:
            parts.append(step.ensemble_part)
        if not parts:
            return None, {}
        value, values = parts_loss(net, loss, parts)
        logs = {}
        if step.member_crafts and own[k] is not None:
            logs["loss_adv"] = values[0]
        if step.lambda_transfer > 0 and others:
            transfer = values[first_transfer : first_transfer + len(others)]
            logs["loss_transfer"] = sum(transfer) / len(transfer)
        if step.ensemble_part is not None:
            logs["loss_ensemble"] = values[-1]
        return value, logs
