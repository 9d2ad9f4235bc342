"""The budgets the benchmark runs under (:class:`Profile`, :data:`PROFILES`: full and quick)
and the attack settings every row is scored at."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eat_models.attacks import DEFAULT_EPS
from eat_models.defenses.base import DEFAULT_TRAIN_EPS

#: the headline ε: ES, QA and CA with PGD-``eval_steps``, the masking checks, the targets
HEADLINE_EPS = DEFAULT_EPS
#: the larger ε of the targets (DESIGN.md §7) and of the training-seed table
HIGH_EPS = 0.2
SWEEP_EPS = (0.03, 0.05, 0.1, 0.2, 0.3)
#: the RobRank setting: ε = 0.3 with 32 steps
ROBRANK_EPS, ROBRANK_STEPS = 0.3, 32


@dataclass
class Profile:
    """The budget every row is trained and evaluated under."""

    name: str
    max_train: int | None  # stratified training slice (None: all 60k)
    attack_images: int  # stratified test subset used for attacked evaluation
    clean_test_images: int | None  # None: the full 10k test set for clean metrics
    vanilla_epochs: int
    adversarial_epochs: int
    width: int
    embedding_dim: int = 128
    members: int = 3
    train_eps: float = DEFAULT_TRAIN_EPS
    train_steps: int = 5
    eval_steps: int = 20
    robrank_steps: int = ROBRANK_STEPS
    masking_steps: int = 50
    masking_restarts: int = 3
    fractions: tuple[float, ...] = (0.1, 0.3)
    sweep_eps: tuple[float, ...] = SWEEP_EPS
    seed: int = 0
    #: further attack seeds (random starts, attacked subset, targets, k-means) of the
    #: headline clustering attack, for a spread: is a gap between rows more than noise?
    extra_attack_seeds: tuple[int, ...] = (1, 2)
    #: row groups trained only when asked for (``eat bench --also GROUP``), so that the
    #: main run fits its time budget; stored rows of these groups are still reported
    optional_groups: tuple[str, ...] = ("loss",)


_FULL = Profile("full", None, 2000, None, vanilla_epochs=8, adversarial_epochs=3, width=16)
#: the same pipeline in minutes: every budget cut down
_QUICK_CUTS = {
    "max_train": 2000,
    "attack_images": 300,
    "clean_test_images": 1000,
    "vanilla_epochs": 1,
    "adversarial_epochs": 1,
    "width": 8,
    "embedding_dim": 32,
    "train_steps": 2,
    "eval_steps": 5,
    "robrank_steps": 6,
    "masking_steps": 10,
    "masking_restarts": 2,
    "sweep_eps": (0.05, 0.1, 0.3),
    "extra_attack_seeds": (1,),
    "optional_groups": (),  # minutes anyway: every row
}
PROFILES = {
    "full": _FULL,
    "quick": dataclasses.replace(_FULL, name="quick", **_QUICK_CUTS),
}
