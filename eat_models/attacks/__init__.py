"""Adversarial attacks on embedding models, one module per attack (torchattacks' shape).

* :mod:`.budget`: :class:`AttackBudget` with every default and user-facing limit;
* :mod:`.pgd`: the two optimisers, fixed-step PGD and parameter-free APGD, and
  :func:`perturb` that runs either under a budget;
* :mod:`.base`: :class:`Attack` (targets, objective, score), :class:`AttackSet` (what the
  attacker knows), the registry :data:`ATTACKS` and :func:`craft`;
* one module per attack: :mod:`.es` (embedding shift, ES:D/ES:R), :mod:`.qa` (the project's
  query attack), :mod:`.clu` (the clustering attack, CA-clu), and RobRank's ranking attacks
  :mod:`.candidate` (CA+, CA−), :mod:`.query` (QA+, QA−), :mod:`.tma`, :mod:`.ltm`,
  :mod:`.gtm`, :mod:`.gtt`;
* :mod:`.ers`: RobRank's Empirical Robustness Score over the ten;
* :mod:`.evaluate`: the driver (one attack, or a suite; ``standard`` or ``strong``);
* :mod:`.keys`: the names evaluations are stored under.

Add an attack: one module with an :class:`Attack` subclass decorated by :func:`register`,
imported below; the CLI, the benchmark, ``eat audit`` and the app's lab find it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modes import eval_mode
from . import candidate, clu, es, gtm, gtt, ltm, qa, query, tma  # noqa: F401  (registers)
from .base import (
    ATTACKS,
    QUERY_NEIGHBOURS,
    Attack,
    AttackSet,
    Scored,
    clean_embeddings,
    craft,
    get_attack,
    register,
    suite,
)
from .budget import (
    APGD_ITERATIONS,
    DEFAULT_EPS,
    DEFAULT_STEPS,
    MAX_ATTACK_STEPS,
    MAX_EPS,
    ROBRANK_28,
    ROBRANK_EPS_28,
    ROBRANK_STEP_28,
    ROBRANK_STEPS,
    AttackBudget,
    default_step_size,
)
from .clu import clustering_objective, random_other_clusters
from .ers import ERS_ATTACKS, ERS_TERMS, ers, ers_terms
from .es import embedding_shift_objective
from .evaluate import evaluate_attack, evaluate_suite, robrank_budget, strong_runs, worst_case
from .keys import STRENGTHS, evaluation_key, parse_evaluation_key
from .pgd import Objective, apgd, apgd_checkpoints, perturb, pgd
from .qa import query_neighbours, query_objective

# the order people read them in: the project's three (ES, QA, CA-clu), then RobRank's
_OURS = ("es", "qa", "ca")
for _name in sorted(
    ATTACKS, key=lambda n: (n not in _OURS, _OURS.index(n) if n in _OURS else ERS_ATTACKS.index(n))
):
    ATTACKS[_name] = ATTACKS.pop(_name)


def embedding_shift_attack(
    model: nn.Module, x: torch.Tensor, budget: AttackBudget, generator=None
) -> torch.Tensor:
    """The embedding-shift attack (ES) on a batch: maximise ‖F(x̃) − F(x)‖ under ``budget``.

    Example:
        >>> x_adv = embedding_shift_attack(model, x, AttackBudget(eps=0.1, steps=20))
    """
    return craft(model, x, "es", budget, generator=generator)


__all__ = [
    "APGD_ITERATIONS",
    "ATTACKS",
    "DEFAULT_EPS",
    "DEFAULT_STEPS",
    "ERS_ATTACKS",
    "ERS_TERMS",
    "MAX_ATTACK_STEPS",
    "MAX_EPS",
    "QUERY_NEIGHBOURS",
    "ROBRANK_28",
    "ROBRANK_EPS_28",
    "ROBRANK_STEPS",
    "ROBRANK_STEP_28",
    "STRENGTHS",
    "Attack",
    "AttackBudget",
    "AttackSet",
    "Objective",
    "Scored",
    "apgd",
    "apgd_checkpoints",
    "clean_embeddings",
    "clustering_objective",
    "craft",
    "default_step_size",
    "embedding_shift_attack",
    "embedding_shift_objective",
    "ers",
    "ers_terms",
    "eval_mode",
    "evaluate_attack",
    "evaluate_suite",
    "evaluation_key",
    "get_attack",
    "parse_evaluation_key",
    "perturb",
    "pgd",
    "query_neighbours",
    "query_objective",
    "random_other_clusters",
    "register",
    "robrank_budget",
    "strong_runs",
    "suite",
    "worst_case",
]
