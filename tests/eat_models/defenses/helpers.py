"""Small networks, configs and class-balanced batches for the defense tests."""

from __future__ import annotations

import numpy as np
import torch

from eat_models.defenses import Batch
from eat_models.losses import MetricLoss
from eat_models.networks import NetworkConfig, build_network
from eat_models.train import TrainConfig

NET = NetworkConfig(width=4, embedding_dim=16)
P, M = 4, 4  # classes × images per class in each test batch


def make_config(defense, **overrides):
    return TrainConfig(defense=defense, train_steps=2, **overrides)


def make_members(k, loss="proxy-anchor", seed=0):
    members, losses = [], []
    for j in range(k):
        torch.manual_seed(seed + j)
        members.append(build_network(NET).train())
        losses.append(MetricLoss(loss, 10, NET.embedding_dim))
    return members, losses


def make_batches(pool, k, offset=0):
    """k class-balanced batches (P classes × M images); ``offset`` picks other images."""
    train_set, by_class = pool
    batches = []
    for j in range(k):
        rows = np.concatenate(
            [by_class[(j + c) % 10][offset + M * j : offset + M * (j + 1)] for c in range(P)]
        )
        batches.append(
            Batch(train_set.batch(rows), torch.as_tensor(train_set.labels[rows], dtype=torch.long))
        )
    return batches


def grads_of(members, loss):
    for m in members:
        m.zero_grad(set_to_none=True)
    loss.backward()
    return [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in members]


def record_forwards(members):
    """Per member, ``(training?, batch size)`` of every forward call."""
    calls = [[] for _ in members]
    handles = [
        m.register_forward_pre_hook(
            lambda mod, inp, j=j: calls[j].append((mod.training, len(inp[0])))
        )
        for j, m in enumerate(members)
    ]
    return calls, handles
