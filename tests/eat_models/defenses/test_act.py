"""ACT's collapse objective."""

from __future__ import annotations

import torch

from eat_models.defenses.act import collapse_objective
from eat_models.losses import random_triplets


def test_act_collapses_positive_and_negative():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    anchor, positive, negative = random_triplets(labels)
    assert len(anchor) == 7
    assert torch.all(labels[anchor] == labels[positive]) and torch.all(anchor != positive)
    assert torch.all(labels[anchor] != labels[negative])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    value = collapse_objective(1)(emb)
    assert value.shape == (2,) and torch.allclose(value, -torch.full((2,), 2**0.5))
