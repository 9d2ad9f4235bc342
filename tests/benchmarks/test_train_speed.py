"""The batched-members rewrite timed by ``python -m benchmarks.train_speed`` computes
exactly what the K separate members compute."""

from __future__ import annotations

import torch

from benchmarks.train_speed import grouped_members
from eat_models.networks import NetworkConfig, build_network


def _copy_weights(grouped, members):
    """Load the K members' weights into the grouped network (member k = group k)."""
    convs = [m for m in grouped.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in grouped.features if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for layer, (conv, norm) in enumerate(zip(convs, norms, strict=True)):
            src_convs = [
                [x for x in m.features if isinstance(x, torch.nn.Conv2d)][layer] for m in members
            ]
            src_norms = [
                [x for x in m.features if isinstance(x, torch.nn.BatchNorm2d)][layer]
                for m in members
            ]
            conv.weight.copy_(torch.cat([c.weight for c in src_convs]))
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).copy_(torch.cat([getattr(n, name) for n in src_norms]))
        grouped.heads.weight.copy_(torch.cat([m.head.weight for m in members])[:, :, None])
        grouped.heads.bias.copy_(torch.cat([m.head.bias for m in members]))


def test_grouped_members_equal_the_separate_members():
    config = NetworkConfig(width=4, embedding_dim=8, mean=(0.0,), std=(1.0,))
    members = []
    for k in range(3):
        torch.manual_seed(k)
        members.append(build_network(config).eval())
    grouped = grouped_members(members).eval()
    _copy_weights(grouped, members)
    xs = [torch.rand(5, 1, 28, 28) for _ in members]
    together = grouped(torch.cat(xs, dim=1))
    for k, (member, x) in enumerate(zip(members, xs, strict=True)):
        assert torch.allclose(together[:, k], member(x), atol=1e-5)
