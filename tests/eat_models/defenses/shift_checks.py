"""What the TRADES and EST tests share: one training step of a defense on the tiny network,
the batch its loss was computed on (the network's last forward pass), and the checks of
the embedding-shift examples it crafted."""

from __future__ import annotations

import torch

from eat_models.defenses import Batch, build_defense
from eat_models.losses import MetricLoss
from eat_models.networks import build_network
from eat_models.train import TrainConfig
from tests.eat_models.defenses.helpers import NET, make_batches

EPS = 0.1


def shift_defense(name: str, **overrides):
    """Defense ``name`` with a PGD-5 training attack at ε = :data:`EPS`."""
    return build_defense(name, TrainConfig(defense=name, train_eps=EPS, train_steps=5, **overrides))


def tiny_member(pool, training: bool):
    """A fixed width-4 network (train or eval mode), its Proxy-Anchor loss and one 16-image
    batch of 4 classes."""
    torch.manual_seed(0)
    net = build_network(NET).train(training)
    loss = MetricLoss("proxy-anchor", 10, NET.embedding_dim)
    return net, loss, make_batches(pool, 1)[0]


def step(defense, net, loss, batch: Batch, seed: int = 0):
    """``(loss, logs, input of the network's last forward pass)`` of one training step, the
    random starts drawn after ``torch.manual_seed(seed)``."""
    seen = []
    hook = net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    try:
        torch.manual_seed(seed)
        value, logs = defense.training_loss([net], [loss], [batch])
    finally:
        hook.remove()
    return value, logs, seen[-1]


def squared_shift_of(net, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Per image ``‖f(x̃) − f(x)‖²`` in eval mode, the attack's view of the network."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return (net(points) - net(x)).pow(2).sum(dim=1)
    finally:
        net.train(was_training)


def check_embedding_shift_examples(net, batch: Batch, x_adv: torch.Tensor, recraft) -> None:
    """``x_adv``, crafted from ``batch`` on ``net`` (as it was before the step), lies in the
    ε-ball and the pixel range, reaches the ball's surface, moves every embedding further
    than a random point of the ball does, and does not depend on the labels:
    ``recraft(batch)`` (the same step, the same random start) with the labels shuffled
    crafts the same images, so the objective is the label-free embedding shift, not the
    metric loss."""
    x = batch.images
    assert x_adv.shape == x.shape
    delta = float((x_adv - x).abs().max())
    assert 0.9 * EPS <= delta <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    g = torch.Generator().manual_seed(1)
    random_point = (x + torch.empty_like(x).uniform_(-EPS, EPS, generator=g)).clamp(0, 1)
    crafted, random = squared_shift_of(net, x, x_adv), squared_shift_of(net, x, random_point)
    assert torch.all(crafted > random)
    assert float(crafted.mean()) > 3 * float(random.mean())
    shuffled = batch.labels[torch.randperm(len(x), generator=g)]
    assert not torch.equal(shuffled, batch.labels)
    assert torch.equal(recraft(Batch(x, shuffled)), x_adv)
