"""The attack budget a person may ask for: ε and PGD steps (defaults and limits), and the
share of an uploaded set an attacker controls.

The numbers are the library's (:mod:`eat_models.attacks`), named here so that the UI and the
services read them from one place.
"""

from __future__ import annotations

from eat_models.attacks import DEFAULT_EPS, DEFAULT_STEPS, MAX_ATTACK_STEPS, MAX_EPS, AttackBudget

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_STEPS",
    "MAX_ATTACK_STEPS",
    "MAX_EPS",
    "AttackBudget",
    "check_budget",
    "check_fraction",
]


def check_budget(eps: float, steps: int, seed: int = 0) -> AttackBudget:
    """The budget asked for: ε in [0, :data:`MAX_EPS`] and 1 … :data:`MAX_ATTACK_STEPS` PGD
    steps, random starts seeded with ``seed``; or a ValueError that says what is wrong."""
    return AttackBudget.checked(eps, steps, seed=seed)


def check_fraction(fraction: float) -> float:
    """The attacked share of a set, in [0, 1]; or a ValueError that says so."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the attacked fraction must lie in [0, 1], got {fraction}")
    return fraction
