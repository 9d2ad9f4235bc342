"""Member weight averaging: an exponential moving average (EMA) of each network's weights.

Adversarial training is reported to gain robustness from averaging its weights along the
way (the "self-ensemble" of SEAT, Wang & Wang, ICLR 2022; see ../shared/REFERENCES.md).
:class:`WeightAverage` keeps one averaged copy of every member:

    θ̄ ← d_t · θ̄ + (1 − d_t) · θ,   d_t = min(decay, (1 + t) / (10 + t))

after optimiser step t (t = 0, 1, …), starting from the initial weights. The warm-up
``(1 + t)/(10 + t)`` lets the average forget the random initialisation in short runs.
Buffers (BatchNorm running statistics) are copied from the live network, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(decay: float, step: int) -> float:
    """The decay used after optimiser step ``step`` (0-based): ``min(decay, (1+t)/(10+t))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """EMA copies of ``networks``; :meth:`update` after every optimiser step."""

    def __init__(self, networks: list[nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.averaged = [copy.deepcopy(net).eval() for net in networks]
        for net in self.averaged:
            net.requires_grad_(False)

    def state_dict(self) -> dict:
        """The averaged copies' weights and the update count (for resume points)."""
        return {"updates": self.updates, "averaged": [net.state_dict() for net in self.averaged]}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for net, weights in zip(self.averaged, state["averaged"], strict=True):
            net.load_state_dict(weights)

    @torch.no_grad()
    def update(self, networks: list[nn.Module]) -> None:
        d = ema_decay_at(self.decay, self.updates)
        for avg, net in zip(self.averaged, networks, strict=True):
            for a, p in zip(avg.parameters(), net.parameters(), strict=True):
                a.mul_(d).add_(p.detach(), alpha=1.0 - d)
            for a, b in zip(avg.buffers(), net.buffers(), strict=True):
                a.copy_(b)
        self.updates += 1
