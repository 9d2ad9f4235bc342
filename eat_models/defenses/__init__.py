"""Defenses, one file each, sharing :class:`~eat_models.defenses.base.Defense`.

=============  ==================================================================
vanilla        clean metric loss (with ``members`` > 1: a plain ensemble)
pgd-at         Madry PGD adversarial training on the metric loss
trades         clean metric loss + β·‖f(x) − f(x̃)‖², x̃ maximising the shift
est            RobRank's embedding-shifted triplet: metric loss on ES examples
act            RobRank's anti-collapse triplet: collapse (p, n), learn to separate
hm             hardness manipulation with a gradual adversary (Zhou & Patel, CVPR 2022)
at-ensemble    K independent PGD-AT members (default K = 3)
eat            Ensemble Adversarial Training: split + own AT + self-transfer
=============  ==================================================================
"""

from __future__ import annotations

from .act import ACT
from .at_ensemble import ATEnsemble
from .base import AdversarialDefense, AdversarialOptions, Batch, Defense, LossPart
from .eat import EAT, MEMBER_ATTACKS, MEMBER_SPLITS, EATOptions
from .est import EST
from .hm import HM, HM_DESTINATIONS, HM_SOURCES, HMOptions
from .pgd_at import PGDAT
from .trades import TRADES, TradesOptions
from .vanilla import Vanilla

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (Vanilla, PGDAT, TRADES, EST, ACT, HM, ATEnsemble, EAT)
}


#: each option dataclass once, in the order its flags appear in ``eat train --help``
OPTION_GROUPS: tuple[type, ...] = tuple(
    dict.fromkeys(cls.options for cls in DEFENSES.values() if cls.options is not None)
)


def option_owners(options: type) -> list[str]:
    """The names of the defenses that read ``options`` (for its --help group title)."""
    return [
        name
        for name, cls in DEFENSES.items()
        if any(getattr(base, "options", None) is options for base in cls.__mro__)
    ]


def build_defense(name: str, config) -> Defense:
    """Instantiate the defense registered under ``name``."""
    try:
        return DEFENSES[name](config)
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}") from None


__all__ = [
    "DEFENSES",
    "HM_DESTINATIONS",
    "HM_SOURCES",
    "MEMBER_ATTACKS",
    "MEMBER_SPLITS",
    "OPTION_GROUPS",
    "AdversarialDefense",
    "AdversarialOptions",
    "Batch",
    "EATOptions",
    "HMOptions",
    "TradesOptions",
    "Defense",
    "LossPart",
    "build_defense",
    "option_owners",
]
