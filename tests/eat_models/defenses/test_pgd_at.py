"""PGD-AT crafts within the training budget."""

from __future__ import annotations

import eat_models.defenses.base as defense_base
from eat_models.defenses import build_defense
from tests.eat_models.defenses.helpers import make_batches, make_config, make_members


def test_pgd_at_crafts_within_the_training_budget(pool, monkeypatch):
    crafted = []
    original = defense_base.perturb

    def spy(model, x, *args, **kwargs):
        out = original(model, x, *args, **kwargs)
        crafted.append((x, out, args))
        return out

    monkeypatch.setattr(defense_base, "perturb", spy)
    members, losses = make_members(1)
    defense = build_defense("pgd-at", make_config("pgd-at", train_eps=0.05))
    defense.training_loss(members, losses, make_batches(pool, 1))
    (x, out, args) = crafted[0]
    budget = args[1]  # the training budget, as an AttackBudget
    assert (budget.eps, budget.steps, budget.step_size, budget.restarts) == (0.05, 2, None, 1)
    assert 0 < float((out - x).abs().max()) <= 0.05 + 1e-6
