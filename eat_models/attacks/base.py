"""What every attack is made of, and the registry that holds them.

An :class:`Attack` is three things, each built from what the attacker knows
(:class:`AttackSet`: the clean embeddings of the attacked images, the clean gallery, labels,
clusters):

* :meth:`Attack.targets`: what each attacked image aims at (gallery indices, clusters),
  drawn once per set with the set's seeded ``rng``;
* :meth:`Attack.objective`: the per-sample value PGD/APGD maximises for a batch;
* :meth:`Attack.score`: the attack's reported numbers, from the adversarial embeddings
  under the evaluated model (:class:`Scored`).

Attacks register themselves with :func:`register`; the CLI, the benchmark, ``eat audit``
and the app find them in :data:`ATTACKS`, so no caller branches on an attack's name.
Distances are Euclidean on L2-normalised embeddings, RobRank's ``N`` metric (every
project model normalises its output; ``eat audit`` normalises a foreign model's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..modes import eval_mode
from .budget import AttackBudget
from .pgd import Objective, perturb

#: neighbours the project's query attack (QA) pushes each query away from
QUERY_NEIGHBOURS = 5


@dataclass
class AttackSet:
    """The attacked images and what the (white-box) attacker knows, as CPU tensors.

    * ``clean [B, D]``: the attacked images' clean embeddings under the crafting model;
    * ``labels [B]``: their labels (true, or believed for an upload); None if unknown;
    * ``gallery [N, D]`` / ``gallery_labels [N]``: the clean gallery under the crafting model;
    * ``self_index [B]``: each image's own gallery row (−1: not in the gallery);
    * ``centroids [K, D]`` / ``assignments [B]``: clean clusters and each image's own one
      (default: the nearest centroid);
    * ``rng``: the random numbers of random targets (seeded by the caller);
    * ``neighbours``: how many same-class neighbours the query attack (QA) pushes from.
    """

    clean: torch.Tensor
    labels: torch.Tensor | None = None
    gallery: torch.Tensor | None = None
    gallery_labels: torch.Tensor | None = None
    self_index: torch.Tensor | None = None
    centroids: torch.Tensor | None = None
    assignments: torch.Tensor | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    neighbours: int = QUERY_NEIGHBOURS

    def __len__(self) -> int:
        return len(self.clean)

    def own_index(self) -> torch.Tensor:
        """``self_index``, or −1 for every image when it is not given."""
        if self.self_index is None:
            return torch.full((len(self),), -1, dtype=torch.long)
        return torch.as_tensor(self.self_index, dtype=torch.long)

    def own_clusters(self) -> torch.Tensor:
        """``assignments``, or each image's nearest centroid."""
        if self.assignments is not None:
            return torch.as_tensor(self.assignments, dtype=torch.long)
        return torch.cdist(self.clean, self.centroids).argmin(dim=1)

    def gallery_distances(self) -> torch.Tensor:
        """``[B, N]`` distances of each clean image to the gallery, its own row at +inf."""
        dist = torch.cdist(self.clean, self.gallery)
        own = self.own_index()
        rows = torch.nonzero(own >= 0).squeeze(1)
        dist[rows, own[rows]] = float("inf")
        return dist


@dataclass
class Scored:
    """What an attack's score reads, as NumPy arrays under the *evaluated* model (in
    transfer mode the targets came from the surrogate): the whole set's clean and
    attacked embeddings (unattacked rows stay clean), the labels, the attacked rows, the
    targets of those rows, the k-means seed and cluster count."""

    clean: np.ndarray
    adversarial: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    targets: dict[str, np.ndarray]
    seed: int = 0
    n_clusters: int = 10


class Attack:
    """One attack: its registry ``name``, the ``label`` people read, what it perturbs, the
    :class:`AttackSet` fields it ``needs``, and the three methods of the module docstring.
    ``suite``: the named suites it belongs to (``"ers"``: RobRank's ten)."""

    name: str
    label: str
    summary: str = ""
    perturbs: str = "query"
    needs: tuple[str, ...] = ()
    suite: tuple[str, ...] = ()
    #: the headline metric of the attack's scores (what a one-line summary shows)
    headline: str = "recall@1"
    #: whether the attack reads ``AttackSet.neighbours`` (the query attack's k)
    uses_neighbours: bool = False
    #: +1 when a higher headline means a more robust model, −1 when lower does
    robust_direction: int = 1

    def less_robust(self, a: dict[str, float], b: dict[str, float]) -> bool:
        """Whether scores ``a`` show the model less robust than ``b`` (headline metric)."""
        return self.robust_direction * (a[self.headline] - b[self.headline]) < 0

    def targets(self, s: AttackSet) -> dict[str, torch.Tensor]:
        """Per-image targets, one row per attacked image (default: none)."""
        return {}

    def objective(self, targets: dict[str, torch.Tensor], s: AttackSet) -> Objective:
        """The per-sample objective for the images of ``s`` with their ``targets``."""
        raise NotImplementedError

    def score(self, r: Scored) -> dict[str, float]:
        raise NotImplementedError

    def check(self, s: AttackSet) -> None:
        missing = [name for name in self.needs if getattr(s, name) is None]
        if missing:
            raise ValueError(f"the {self.label} needs {', '.join(missing)}")


ATTACKS: dict[str, Attack] = {}


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add one instance of ``cls`` to :data:`ATTACKS` under its name."""
    if cls.name in ATTACKS:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    ATTACKS[cls.name] = cls()
    return cls


def get_attack(name: str) -> Attack:
    """The registered attack ``name``, or a ValueError that lists them."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name]


def suite(name: str) -> list[Attack]:
    """The attacks of a named suite, in registry order."""
    members = [a for a in ATTACKS.values() if name in a.suite]
    if not members:
        raise ValueError(f"unknown attack suite {name!r}")
    return members


def select(targets: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """The targets of the rows ``index`` of a set."""
    return {key: value[index] for key, value in targets.items()}


def subset(s: AttackSet, index: torch.Tensor) -> AttackSet:
    """The :class:`AttackSet` of the rows ``index`` (the gallery and clusters shared)."""
    pick = lambda t: None if t is None else torch.as_tensor(t)[index]  # noqa: E731
    return AttackSet(
        clean=s.clean[index],
        labels=pick(s.labels),
        gallery=s.gallery,
        gallery_labels=s.gallery_labels,
        self_index=pick(s.self_index),
        centroids=s.centroids,
        assignments=pick(s.assignments),
        rng=s.rng,
        neighbours=s.neighbours,
    )


def clean_embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return model(x.detach())


def craft(
    model: nn.Module,
    x: torch.Tensor,
    attack: str,
    budget: AttackBudget,
    attack_set: AttackSet | None = None,
    targets: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial versions of ``x`` ``[B, C, H, W]`` by attack ``attack`` under ``budget``,
    white-box on ``model``. ``attack_set`` says what the attacker knows (default: only the
    clean embeddings of ``x``); ``targets`` (default: drawn by the attack from the set)."""
    spec = get_attack(attack)
    s = attack_set if attack_set is not None else AttackSet(clean=clean_embeddings(model, x))
    spec.check(s)
    if targets is None:
        targets = spec.targets(s)
    return perturb(model, x, spec.objective(targets, s), budget, generator)
