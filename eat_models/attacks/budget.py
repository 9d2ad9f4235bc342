"""How hard an attack may try: :class:`AttackBudget`, with every default and limit in one place.

* the project's headline evaluation (DESIGN.md §3): ε = 0.1, PGD-20, step ``max(ε/8, 2.5ε/T)``;
* RobRank's 28×28 budget (:data:`ROBRANK_28`): ε = 77/255, step 3/255, 32 steps from the
  clean image (no random start), as its ``rob28`` profile runs the ten ERS attacks;
* the limits a person may ask for through the app (:meth:`AttackBudget.checked`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

#: the headline evaluation budget of DESIGN.md: ε = 0.1, PGD-20
DEFAULT_EPS = 0.1
DEFAULT_STEPS = 20
#: what a person may ask of the app's attack lab and "attack this set"
MAX_EPS = 0.35
MAX_ATTACK_STEPS = 50
#: RobRank's 28×28 attack budget (robrank cmdline.py, profile rob28)
ROBRANK_EPS_28 = 77 / 255
ROBRANK_STEP_28 = 3 / 255
ROBRANK_STEPS = 32
#: APGD's iterations in the strong evaluation (Croce & Hein 2020; AutoAttack's default)
APGD_ITERATIONS = 100
#: PGD restarts in the strong evaluation
STRONG_RESTARTS = 2
#: random target draws of the clustering attack in the strong evaluation
STRONG_TARGET_DRAWS = 3

METHODS = ("pgd", "apgd")


def default_step_size(eps: float, steps: int) -> float:
    """``max(ε/8, 2.5·ε/steps)``: ε/8 for ≥ 20 steps, Madry's 2.5·ε/steps for few steps."""
    return max(eps / 8, 2.5 * eps / max(steps, 1))


@dataclass(frozen=True)
class AttackBudget:
    """How hard an attack may try: the L∞ radius ``eps``, the iterations ``steps``, the step
    size (PGD; None: :func:`default_step_size`), ``restarts``, the random start, the seed of
    its random numbers (None: torch's global RNG) and the ``method``: ``"pgd"`` (fixed step,
    signed gradient) or ``"apgd"`` (Croce & Hein's step-size schedule with momentum; it
    ignores ``step_size``)."""

    eps: float = DEFAULT_EPS
    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    seed: int | None = None
    method: str = "pgd"

    def __post_init__(self) -> None:
        if not (self.eps >= 0 and self.steps >= 0 and self.restarts >= 1):
            raise ValueError(
                f"need eps ≥ 0, steps ≥ 0, restarts ≥ 1 (got {self.eps}, {self.steps}, "
                f"{self.restarts})"
            )
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"the step size must be positive, got {self.step_size}")
        if self.method not in METHODS:
            raise ValueError(f"unknown attack method {self.method!r}; choose one of {METHODS}")

    @classmethod
    def checked(cls, eps: float, steps: int, seed: int = 0) -> AttackBudget:
        """The budget a person asked for through the app: ε in [0, :data:`MAX_EPS`] and
        1 … :data:`MAX_ATTACK_STEPS` steps, or a ValueError that says so; random starts
        seeded with ``seed`` (repeatable results)."""
        try:
            eps, steps = float(eps), int(steps)
        except (TypeError, ValueError):
            raise ValueError(f"ε and steps must be numbers, got {eps!r} and {steps!r}") from None
        if not 0.0 <= eps <= MAX_EPS:
            raise ValueError(f"ε must lie between 0 and {MAX_EPS} (pixels in [0, 1]), got {eps}")
        if not 1 <= steps <= MAX_ATTACK_STEPS:
            raise ValueError(f"PGD steps must lie between 1 and {MAX_ATTACK_STEPS}, got {steps}")
        return cls(eps, steps, seed=seed)

    @property
    def alpha(self) -> float:
        """The PGD step size used: ``step_size`` or :func:`default_step_size`."""
        return default_step_size(self.eps, self.steps) if self.step_size is None else self.step_size

    def generator(self) -> torch.Generator | None:
        """A fresh generator seeded with ``seed`` (None without a seed)."""
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def replace(self, **changes) -> AttackBudget:
        return dataclasses.replace(self, **changes)


#: RobRank's budget for 28×28 data: what its ERS numbers were measured with
ROBRANK_28 = AttackBudget(ROBRANK_EPS_28, ROBRANK_STEPS, ROBRANK_STEP_28, random_start=False)
