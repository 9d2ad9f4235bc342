"""The Defense base: the registry, member counts, one step of every defense, the member loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eat_models.defenses import DEFENSES, build_defense
from eat_models.train import TrainConfig
from tests.eat_models.defenses.helpers import grads_of, make_batches, make_config, make_members


def test_every_defense_is_registered_and_a_cli_choice():
    expected = {"vanilla", "pgd-at", "trades", "est", "act", "hm", "at-ensemble", "eat"}
    assert set(DEFENSES) == expected
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["defense"]
    assert set(field.metadata["choices"]) == set(DEFENSES)
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
    with pytest.raises(ValueError, match="unknown defense"):
        build_defense("nope", TrainConfig())


def test_member_counts_default_per_defense():
    expected = {"at-ensemble": 3, "eat": 3}
    for name in DEFENSES:
        assert build_defense(name, TrainConfig(defense=name)).num_members == expected.get(name, 1)
        assert build_defense(name, TrainConfig(defense=name, members=2)).num_members == 2
    assert TrainConfig().defense == "vanilla" and TrainConfig().members is None


@pytest.mark.parametrize("name", sorted(DEFENSES))
@pytest.mark.parametrize("loss", ["proxy-anchor", "triplet"])
def test_one_step_of_each_defense_trains_every_member(pool, name, loss):
    k = 2
    members, losses = make_members(k, loss)
    defense = build_defense(name, make_config(name, members=k))
    batches = make_batches(pool, k)
    value, logs = defense.training_loss(members, losses, batches)
    assert value.dim() == 0 and torch.isfinite(value)
    assert logs and all(np.isfinite(v) for v in logs.values())
    for grad in grads_of(members, value):
        assert float(grad.abs().sum()) > 0
    assert all(m.training for m in members)  # crafting restored train mode


def test_a_defense_that_forgets_its_name_is_an_error():
    from eat_models.defenses import DEFENSES, Defense, Vanilla
    from eat_models.defenses.base import AdversarialDefense

    with pytest.raises(TypeError, match="Forgetful must set its own `name`"):

        class Forgetful(AdversarialDefense):
            def craft_for_member(self, net, loss, batch):
                return batch.images

    with pytest.raises(TypeError, match="must set its own `name`"):

        class Inherits(Vanilla):  # a name inherited from Vanilla would replace it
            pass

    class Named(Defense):
        name = "named"

    assert DEFENSES["vanilla"] is Vanilla and "named" not in DEFENSES


def test_the_base_sums_member_losses_and_averages_logs_over_reporting_members(pool):
    from eat_models.defenses import Defense

    class Half(Defense):
        """Members 0 and 2 train; member 1 has nothing to train on this step."""

        name = "half"
        default_members = 3
        prepared = 0

        def prepare_step(self, members, losses, batches):
            self.prepared += 1

        def member_loss(self, k, net, loss, batch):
            if k == 1:
                return None, {"skipped": 1.0}
            value = net(batch.images).sum() * 0 + float(k + 1)
            return value, {"value": float(k + 1)}

    members, losses = make_members(3)
    defense = Half(make_config("vanilla", members=3))
    total, logs = defense.training_loss(members, losses, make_batches(pool, 3))
    assert defense.prepared == 1
    assert total.item() == pytest.approx(1.0 + 3.0)
    assert logs == {"skipped": 1.0, "value": 2.0}
