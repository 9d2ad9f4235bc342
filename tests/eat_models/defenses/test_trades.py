"""TRADES for metric learning: the step loss L(f(x), y) + β · mean_i ‖f(x_i) − f(x̃_i)‖²
against a hand computation on a tiny network and batch, and the x̃ it crafts."""

from __future__ import annotations

import copy

import pytest
import torch

from eat_models.defenses.trades import TRADES
from tests import oracles
from tests.eat_models.defenses.shift_checks import (
    check_embedding_shift_examples,
    shift_defense,
    step,
    tiny_member,
)


def test_trades_is_registered_with_beta_6_by_default():
    defense = shift_defense("trades")
    assert isinstance(defense, TRADES) and defense.config.trades_beta == 6.0


@pytest.mark.parametrize("beta", [6.0, 0.5, 0.0])
@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_trades_loss_is_the_clean_loss_plus_beta_times_the_squared_shift(pool, beta, training):
    net, loss, batch = tiny_member(pool, training)
    value, logs, inputs = step(shift_defense("trades", trades_beta=beta), net, loss, batch)
    # one forward pass over the clean batch and then its adversarial copy
    assert inputs.shape[0] == 2 * len(batch.images)
    assert torch.equal(inputs[: len(batch.images)], batch.images)
    with torch.no_grad():
        if training:  # BatchNorm takes its statistics over both halves, as in the step
            clean, adversarial = net(inputs).chunk(2)
        else:
            clean, adversarial = net(batch.images), net(inputs[len(batch.images) :])
    clean_loss = oracles.proxy_anchor_loss(clean, batch.labels, loss.loss.proxies.detach())
    shift = oracles.squared_shift(clean, adversarial)
    assert shift > 0.01  # the adversarial half is not the clean batch again
    assert value.item() == pytest.approx(clean_loss + beta * shift, rel=1e-5)
    assert logs["loss_clean"] == pytest.approx(clean_loss, rel=1e-5)
    assert logs["shift"] == pytest.approx(shift, rel=1e-5)
    value.backward()
    assert loss.loss.proxies.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_trades_crafts_a_label_free_embedding_shift_in_the_eps_ball(pool, training):
    net, loss, batch = tiny_member(pool, training)
    pristine = copy.deepcopy(net)  # the step's forward pass moves BatchNorm's running stats
    n = len(batch.images)

    def craft(b):
        return step(shift_defense("trades"), copy.deepcopy(pristine), loss, b)[2][n:]

    check_embedding_shift_examples(pristine, batch, craft(batch), craft)
