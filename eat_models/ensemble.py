"""The deployed ensemble: the averaged embedding F(x) = normalize(mean_k f_k(x))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def averaged_embedding(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-normalised mean of the members' L2-normalised embeddings ``[B, D]`` each."""
    return F.normalize(torch.stack(list(embeddings)).mean(dim=0), dim=1)


class AveragedEmbedding(nn.Module):
    """An ensemble of embedding networks that outputs their averaged embedding.

    Attacks on the deployed model differentiate through this module, so their gradient
    reaches every member.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return averaged_embedding([member(x) for member in self.members])
