"""EST (RobRank's embedding-shifted training): the step loss is the metric loss of the
embedding-shifted batch, L(f(x̃), y) with x̃ maximising ‖f(x̃) − f(x)‖ in the ε-ball (plus
``clean_weight`` · L(f(x), y)), against a hand computation on a tiny network and batch."""

from __future__ import annotations

import copy

import pytest
import torch

from eat_models.defenses.est import EST
from tests import oracles
from tests.eat_models.defenses.shift_checks import (
    EPS,
    check_embedding_shift_examples,
    shift_defense,
    squared_shift_of,
    step,
    tiny_member,
)


def test_est_is_registered():
    assert isinstance(shift_defense("est"), EST)


@pytest.mark.parametrize("clean_weight", [0.0, 0.5])
@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_est_loss_is_the_metric_loss_of_the_shifted_batch(pool, clean_weight, training):
    net, loss, batch = tiny_member(pool, training)
    pristine = copy.deepcopy(net)
    value, logs, inputs = step(shift_defense("est", clean_weight=clean_weight), net, loss, batch)
    n = len(batch.images)
    # RobRank trains on the adversarial batch alone; a clean weight adds the clean batch
    assert inputs.shape[0] == (2 * n if clean_weight else n)
    adversarial_images = inputs[:n]
    if clean_weight:
        assert torch.equal(inputs[n:], batch.images)
    assert float(squared_shift_of(pristine, batch.images, adversarial_images).min()) > 1e-3
    with torch.no_grad():
        if training:  # BatchNorm takes its statistics over every part, as in the step
            embeddings = net(inputs)
            adversarial, clean = embeddings[:n], embeddings[n:]
        else:
            adversarial, clean = net(adversarial_images), net(batch.images)
    proxies = loss.loss.proxies.detach()
    adversarial_loss = oracles.proxy_anchor_loss(adversarial, batch.labels, proxies)
    expected = adversarial_loss
    if clean_weight:
        expected += clean_weight * oracles.proxy_anchor_loss(clean, batch.labels, proxies)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert logs == pytest.approx({"loss_adv": adversarial_loss}, rel=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_est_crafts_a_label_free_embedding_shift_in_the_eps_ball(pool, training):
    net, loss, batch = tiny_member(pool, training)
    pristine = copy.deepcopy(net)

    def craft(b):
        return step(shift_defense("est"), copy.deepcopy(pristine), loss, b)[2]

    check_embedding_shift_examples(pristine, batch, craft(batch), craft)


def test_est_from_the_clean_image_starts_there(pool):
    """``est_start`` 'clean' (RobRank's ``embShift``): no random start, so the examples do
    not depend on the RNG and lie within steps × step of the clean images, and they still
    move (the ES objective's gradient is not zero at x); 'random' ones start anywhere."""
    net, loss, batch = tiny_member(pool, training=False)
    pristine = copy.deepcopy(net)
    reach = 5 * EPS / 20  # PGD-5 at a step of ε/20

    def craft(start, seed):
        defense = shift_defense("est", est_start=start, train_step_size=EPS / 20)
        return step(defense, copy.deepcopy(pristine), loss, batch, seed=seed)[2]

    clean = craft("clean", 0)
    assert torch.equal(clean, craft("clean", 1))
    assert float((clean - batch.images).abs().max()) <= reach + 1e-6
    assert float(squared_shift_of(pristine, batch.images, clean).min()) > 0
    random = craft("random", 0)
    assert not torch.equal(random, craft("random", 1))
    assert float((random - batch.images).abs().max()) > reach
    with pytest.raises(ValueError, match="est_start"):
        shift_defense("est", est_start="middle")
