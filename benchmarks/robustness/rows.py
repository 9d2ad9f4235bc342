"""The benchmark's rows: each one trained model (:class:`Row`), all of them in the order of
the table (:func:`bench_rows`), and the named selections of rows the runner and the report
share."""

from __future__ import annotations

from dataclasses import dataclass, field

from .profiles import Profile

BASELINES = ("pgd-at", "trades", "est", "act", "hm", "at-ensemble")
#: the rows without a defense: the attacks' reference, not a defense
UNDEFENDED = ("vanilla", "vanilla-ens")
#: EAT and PGD-AT at its training compute, both with the triplet loss
TRIPLET_PAIR = ("eat-triplet", "pgd-at-triplet-eqc")
#: rows trained with further seeds by ``eat bench --seeds`` (plus the best single-model
#: row at equal training compute, chosen from the results)
SEEDED_ROWS = ("eat", "at-ensemble", "hm")
#: learning rates tuned on the 12k slice (results/fashion-mnist/tuning-12k-v2) for the rows
#: that decide whether EAT earns its place; EAT's own default is 1e-3 × K (3e-3 for K = 3)
PGD_AT_LR, HM_LR = 3e-3, 2e-3


@dataclass
class Row:
    """One trained model of the benchmark."""

    name: str
    defense: str
    description: str
    group: str  # baseline | ablation | eat | equal-compute | loss
    overrides: dict = field(default_factory=dict)
    compute_of: str | None = None  # train for as long as this row took (equal compute)
    epochs: int | None = None  # a fixed number of epochs instead of the profile's
    seed_of: str | None = None  # a further training seed of this row


def bench_rows(profile: Profile) -> list[Row]:
    """Every row of the benchmark, in the order of its table (and of a run)."""
    k = profile.members
    wide = wide_width(profile)
    return [
        Row("vanilla", "vanilla", "Vanilla DML, single model (no defense)", "baseline"),
        Row(
            "vanilla-ens",
            "vanilla",
            f"Plain ensemble of {k} vanilla models",
            "baseline",
            {"members": k},
        ),
        Row("pgd-at", "pgd-at", "PGD-AT adapted to DML (Madry)", "baseline"),
        Row("trades", "trades", "TRADES adapted to DML", "baseline"),
        Row("est", "est", "EST, embedding-shifted triplet (RobRank)", "baseline"),
        Row("act", "act", "ACT, anti-collapse triplet (RobRank)", "baseline"),
        Row(
            "hm",
            "hm",
            "HM, hardness manipulation with the linear gradual adversary (Zhou & Patel 2022)",
            "baseline",
        ),
        Row(
            "at-ensemble",
            "at-ensemble",
            f"Ablation 1: {k} independent PGD-AT members (no split, no transfer)",
            "ablation",
            {"members": k, "lr": PGD_AT_LR},
        ),
        Row(
            "eat-split",
            "eat",
            "Ablation 2: + data split (stratified home splits)",
            "ablation",
            {"members": k, "lambda_transfer": 0.0},
        ),
        Row(
            "eat",
            "eat",
            "EAT as tuned: split + self-transfer (the former term through F, ablations 3 "
            "and 4 in earlier results, doubled an epoch's cost and added no robustness)",
            "eat",
            {"members": k},
        ),
        Row(
            "pgd-at-eqc",
            "pgd-at",
            "PGD-AT trained at EAT's training compute",
            "equal-compute",
            {"lr": PGD_AT_LR},
            compute_of="eat",
        ),
        Row(
            "hm-eqc",
            "hm",
            "HM trained at EAT's training compute",
            "equal-compute",
            {"lr": HM_LR},
            compute_of="eat",
        ),
        Row(
            "pgd-at-wide-eqc",
            "pgd-at",
            f"PGD-AT, one network of the ensemble's inference FLOPs (width {wide}), "
            "at EAT's training compute",
            "equal-compute",
            {"width": wide, "lr": PGD_AT_LR},
            compute_of="eat",
        ),
        Row(
            "eat-triplet",
            "eat",
            "EAT as tuned, with the triplet loss (on the tuning slice the triplet loss lifted "
            "both EAT and PGD-AT)",
            "loss",
            {"members": k, "loss": "triplet"},
        ),
        Row(
            "pgd-at-triplet-eqc",
            "pgd-at",
            "PGD-AT with the triplet loss, at eat-triplet's training compute",
            "loss",
            {"lr": PGD_AT_LR, "loss": "triplet"},
            compute_of="eat-triplet",
        ),
        Row(
            "hm-wide-eqc",
            "hm",
            f"HM, one network of the ensemble's inference FLOPs (width {wide}), "
            "at EAT's training compute",
            "equal-compute",
            {"width": wide, "lr": HM_LR},
            compute_of="eat",
        ),
    ]


def wide_width(profile: Profile) -> int:
    """Width of one small CNN with about the FLOPs of K members: conv FLOPs grow with the
    square of the width, so ``width · √K`` (16 → 28 for K = 3)."""
    return int(round(profile.width * profile.members**0.5))
