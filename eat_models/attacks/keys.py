"""The names evaluations are stored under: ``ca@0.1/20x3/p0.1/from-vanilla/s1/strong``."""

from __future__ import annotations

import re

STRENGTHS = ("standard", "strong")


def evaluation_key(
    attack: str,
    eps: float,
    steps: int,
    *,
    restarts: int = 1,
    fraction: float = 1.0,
    transfer_from: str | None = None,
    seed: int | None = None,
    strength: str = "standard",
) -> str:
    """``ATTACK@EPS/STEPS``, plus ``x3`` for restarts, ``/p0.1`` for an attacked fraction,
    ``/from-vanilla`` for transfer, ``/s1`` for a seed other than the default one and
    ``/strong`` for the worst case over runs (:func:`parse_evaluation_key` reads it back)."""
    key = f"{attack}@{eps:g}/{steps}"
    if restarts > 1:
        key += f"x{restarts}"
    if fraction < 1:
        key += f"/p{fraction:g}"
    if transfer_from:
        key += f"/from-{transfer_from}"
    if seed is not None:
        key += f"/s{seed}"
    if strength != "standard":
        key += f"/{strength}"
    return key


_KEY = re.compile(
    r"^(?P<attack>\w+)@(?P<eps>[0-9.e+-]+)/(?P<steps>\d+)(?:x(?P<restarts>\d+))?"
    r"(?:/p(?P<fraction>[0-9.e+-]+))?(?:/from-(?P<transfer_from>[\w-]+?))?(?:/s(?P<seed>\d+))?"
    r"(?:/(?P<strength>strong))?$"
)


def parse_evaluation_key(key: str) -> dict | None:
    """The settings of an :func:`evaluation_key` (None for another key, e.g. ``clean``)."""
    match = _KEY.match(key)
    if match is None:
        return None
    g = match.groupdict()
    return {
        "attack": g["attack"],
        "eps": float(g["eps"]),
        "steps": int(g["steps"]),
        "restarts": int(g["restarts"] or 1),
        "fraction": float(g["fraction"] or 1.0),
        "transfer_from": g["transfer_from"],
        "seed": None if g["seed"] is None else int(g["seed"]),
        "strength": g["strength"] or "standard",
    }
