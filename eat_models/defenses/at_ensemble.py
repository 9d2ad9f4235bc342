"""An ensemble of independent PGD-AT members (the "just ensembling" baseline).

K members (default 3) from different seeds, each trained by :mod:`.pgd_at` on batches
drawn from all the training data, with no interaction between members. The deployed model
is their averaged embedding, like EAT's; comparing the two isolates what EAT's data split
and self-transfer add.
"""

from __future__ import annotations

from .pgd_at import PGDAT


class ATEnsemble(PGDAT):
    """K independent PGD-AT members on all data, different seeds."""

    name = "at-ensemble"
    default_members = 3
