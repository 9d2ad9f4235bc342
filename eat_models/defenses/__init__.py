"""Defenses, one file each, sharing :class:`~eat_models.defenses.base.Defense`."""

from __future__ import annotations

from .base import Batch, Defense
from .vanilla import Vanilla

DEFENSES: dict[str, type[Defense]] = {"vanilla": Vanilla}


def build_defense(name: str, config) -> Defense:
    """Instantiate the defense registered under ``name``."""
    try:
        return DEFENSES[name](config)
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}") from None


__all__ = ["DEFENSES", "Batch", "Defense", "build_defense"]
