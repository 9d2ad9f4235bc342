"""``eat bench``: the Fashion-MNIST robustness benchmark, resumable row by row.

Every defense is trained by the same loop on the same data under one stated budget
(:class:`BenchProfile`), then evaluated clean (full test set) and under attack (a
stratified subset of the test set, query set = gallery): the headline ε = 0.1 with
PGD-20 (ES, QA, CA on all samples and on a fraction p), and the RobRank setting ε = 0.3
with 32 steps. Vanilla, the best baseline and EAT also get the ε sweep and the
gradient-masking checks (more steps, restarts, transfer from a vanilla surrogate).

Each row's training record and evaluations are stored in ``OUT/rows/ROW.json`` as they
finish, so an interrupted run resumes where it stopped; ``--only ROW`` re-runs rows.
The report (``results.json``, ``results.md``, PNG plots) is rebuilt from the row files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eat_models.attacks import (
    DEFAULT_EPS,
    AttackBudget,
    evaluate_attack,
    evaluation_key,
    parse_evaluation_key,
)
from eat_models.checkpoint import load_model
from eat_models.data import load_fashion_mnist, stratified_slice
from eat_models.evaluate import evaluate_model
from eat_models.files import write_json
from eat_models.provenance import provenance
from eat_models.train import TrainConfig, train

log = logging.getLogger(__name__)

SWEEP_EPS = (0.03, 0.05, 0.1, 0.2, 0.3)
HEADLINE_EPS = DEFAULT_EPS
ROBRANK_EPS, ROBRANK_STEPS = 0.3, 32
BASELINES = ("pgd-at", "trades", "est", "act", "hm", "at-ensemble")
#: rows trained with further seeds by ``eat bench --seeds`` (plus the best single-model
#: row at equal training compute, chosen from the results)
SEEDED_ROWS = ("eat", "at-ensemble", "hm")
#: learning rates tuned on the 12k slice (results/fashion-mnist/tuning-12k-v2) for the rows
#: that decide whether EAT earns its place; EAT's own default is 1e-3 × K (3e-3 for K = 3)
PGD_AT_LR, HM_LR = 3e-3, 2e-3
#: optimiser steps timed to give a row of its own cost (a wider network) equal compute
CALIBRATION_STEPS = 12


@dataclass
class BenchProfile:
    """The budget every row is trained and evaluated under."""

    name: str
    max_train: int | None  # stratified training slice (None: all 60k)
    attack_images: int  # stratified test subset used for attacked evaluation
    clean_test_images: int | None  # None: the full 10k test set for clean metrics
    vanilla_epochs: int
    adversarial_epochs: int
    width: int
    embedding_dim: int = 128
    members: int = 3
    train_eps: float = 0.1
    train_steps: int = 5
    eval_steps: int = 20
    robrank_steps: int = ROBRANK_STEPS
    masking_steps: int = 50
    masking_restarts: int = 3
    fractions: tuple[float, ...] = (0.1, 0.3)
    sweep_eps: tuple[float, ...] = SWEEP_EPS
    seed: int = 0
    #: further attack seeds (random starts, attacked subset, targets, k-means) of the
    #: headline clustering attack, for a spread: is a gap between rows more than noise?
    extra_attack_seeds: tuple[int, ...] = (1, 2)
    #: row groups trained only when asked for (``eat bench --also GROUP``), so that the
    #: main run fits its time budget; stored rows of these groups are still reported
    optional_groups: tuple[str, ...] = ("loss",)


_FULL = BenchProfile("full", None, 2000, None, vanilla_epochs=8, adversarial_epochs=3, width=16)
#: the same pipeline in minutes: every budget cut down
_QUICK_CUTS = {
    "max_train": 2000,
    "attack_images": 300,
    "clean_test_images": 1000,
    "vanilla_epochs": 1,
    "adversarial_epochs": 1,
    "width": 8,
    "embedding_dim": 32,
    "train_steps": 2,
    "eval_steps": 5,
    "robrank_steps": 6,
    "masking_steps": 10,
    "masking_restarts": 2,
    "sweep_eps": (0.05, 0.1, 0.3),
    "extra_attack_seeds": (1,),
    "optional_groups": (),  # minutes anyway: every row
}
PROFILES = {
    "full": _FULL,
    "quick": dataclasses.replace(_FULL, name="quick", **_QUICK_CUTS),
}


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


def bench_rows(profile: BenchProfile) -> list[Row]:
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
            {"members": k, "lambda_transfer": 0.0, "lambda_ensemble": 0.0},
        ),
        Row(
            "eat-split-ens",
            "eat",
            "Ablation 3: + ensemble-adversarial term through F (clustering objective; no transfer)",
            "ablation",
            {"members": k, "lambda_transfer": 0.0, "lambda_ensemble": 1.0},
        ),
        Row(
            "eat-split-transfer-ens",
            "eat",
            "Ablation 4: split + self-transfer + the term through F (DESIGN.md's full EAT)",
            "ablation",
            {"members": k, "lambda_ensemble": 1.0},
        ),
        Row(
            "eat",
            "eat",
            "EAT as tuned: split + self-transfer, the term through F off (it doubles an "
            "epoch's cost and added no robustness at equal compute)",
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


def wide_width(profile: BenchProfile) -> int:
    """Width of one small CNN with about the FLOPs of K members: conv FLOPs grow with the
    square of the width, so ``width · √K`` (16 → 28 for K = 3)."""
    return int(round(profile.width * profile.members**0.5))


class Bench:
    """Runs the rows of one profile into ``out`` (resumable), then writes the report."""

    def __init__(
        self,
        profile: BenchProfile,
        out: Path,
        runs: Path,
        data_dir: str | None = None,
        progress: bool = True,
        threads: int = 2,
        device: str = "cpu",
    ) -> None:
        self.profile = profile
        self.out = Path(out)
        self.runs = Path(runs)
        self.data_dir = data_dir
        self.progress = progress
        self.threads = threads
        self.device = device
        self.rows = {r.name: r for r in bench_rows(profile)}
        (self.out / "rows").mkdir(parents=True, exist_ok=True)
        train_set, test_set = load_fashion_mnist("standard", data_dir)
        self.n_train = len(stratified_slice(train_set, profile.max_train, profile.seed))
        self.clean_test = stratified_slice(test_set, profile.clean_test_images, profile.seed)
        self.attack_test = stratified_slice(test_set, profile.attack_images, profile.seed)

    # ------------------------------------------------------------------ storage
    def row_path(self, name: str) -> Path:
        return self.out / "rows" / f"{name}.json"

    def load_row(self, name: str) -> dict | None:
        path = self.row_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_row(self, name: str, record: dict) -> None:
        write_json(self.row_path(name), record)

    # ------------------------------------------------------------------ training
    def train_config(self, row: Row, epochs: int) -> TrainConfig:
        p = self.profile
        fields = {
            "defense": row.defense,
            "epochs": epochs,
            "max_train": p.max_train,
            "width": p.width,
            "embedding_dim": p.embedding_dim,
            "train_eps": p.train_eps,
            "train_steps": p.train_steps,
            "seed": p.seed,
            "threads": self.threads,
            "device": self.device,
            "data_dir": self.data_dir,
            "out": str(self.runs / row.name),
        }
        fields.update(row.overrides)
        return TrainConfig(**fields)

    def epochs_for(self, row: Row) -> int:
        p = self.profile
        if row.epochs is not None:
            return row.epochs
        base = p.vanilla_epochs if row.defense == "vanilla" else p.adversarial_epochs
        if row.compute_of is None:
            return base
        reference = self.load_row(row.compute_of)
        if reference is None:
            raise RuntimeError(f"row {row.name} needs row {row.compute_of} first")
        budget = reference["train"]["train_wall_s"]
        if not row.overrides:  # the same network as the defense's base row: its time per epoch
            single = self.load_row(row.defense)
            if single is None:
                raise RuntimeError(f"row {row.name} needs row {row.defense} first")
            seconds_per_epoch = single["train"]["train_wall_s"] / single["train"]["epochs"]
        else:
            seconds_per_epoch = self.calibrate(row)
        # equal compute, not at least the base budget: a row dearer per epoch than EAT (HM
        # crafts three images per anchor) gets fewer epochs
        return max(1, int(round(budget / seconds_per_epoch)))

    def calibrate(self, row: Row) -> float:
        """Seconds per epoch of ``row``'s own configuration, from timing a few steps."""
        config = self.train_config(row, epochs=1)
        config.out = str(self.runs / "_calibration" / row.name)
        started = time.perf_counter()
        train(config, progress=False, max_steps=CALIBRATION_STEPS)
        wall = time.perf_counter() - started
        record = json.loads((Path(config.out) / "config.json").read_text())["train"]
        # the median step (the first steps pay for warm-up), plus the fixed set-up (data,
        # networks) of a run spread over the epochs of the reference row
        per_step = record["step_seconds_median"]
        setup = wall - record["train_wall_s"]
        seconds = per_step * record["steps_per_epoch"] + setup / max(
            1, self.profile.adversarial_epochs
        )
        log.info(
            "[bench] %s: %.3f s/step × %d steps/epoch (+%.1f s set-up)",
            row.name,
            per_step,
            record["steps_per_epoch"],
            setup,
        )
        shutil.rmtree(config.out, ignore_errors=True)
        return seconds

    def ensure_trained(self, row: Row, force: bool) -> dict:
        """Train ``row`` unless its record exists (``force``: always). A stored record whose
        checkpoint is gone (a fresh clone: ``runs/`` is not committed) is kept, and the
        checkpoint is made again only when an evaluation needs it (:meth:`checkpoint`)."""
        record = self.load_row(row.name)
        if record and not force:
            return record
        ckpt = self.runs / row.name
        epochs = self.epochs_for(row)
        config = self.train_config(row, epochs)
        log.info("[bench] training %s (%s, %d epochs)", row.name, row.defense, epochs)
        started = time.perf_counter()
        train(config, progress=self.progress)
        wall = time.perf_counter() - started
        model = load_model(ckpt)
        train_info = json.loads((ckpt / "config.json").read_text())["train"]
        record = {
            "row": dataclasses.asdict(row),
            "train": {
                "epochs": epochs,
                "train_wall_s": round(wall, 1),
                "loop_wall_s": train_info["train_wall_s"],
                "steps": train_info["steps"],
                "learning_rate": train_info.get("learning_rate"),
                "config": {k: v for k, v in config.__dict__.items() if k != "data_dir"},
            },
            "members": model.meta["num_members"],
            "fingerprint": model.meta["fingerprint"],
            "evals": {},
        }
        self.save_row(row.name, record)
        return record

    def checkpoint(self, name: str) -> Path:
        """Row ``name``'s checkpoint, retrained if it is missing. Training is seeded, so the
        same weights come back: the stored evaluations are kept when the fingerprint matches
        and dropped when it does not."""
        ckpt = self.runs / name
        if (ckpt / "config.json").is_file():
            return ckpt
        old = self.load_row(name)
        row = self.rows.get(name) or self.seed_row(
            old["row"]["seed_of"], old["train"]["config"]["seed"]
        )
        log.info("[bench] checkpoint of %s missing: retraining it", name)
        record = self.ensure_trained(row, force=True)
        if old and old["fingerprint"] == record["fingerprint"]:
            # the same weights: keep the evaluations and the original (quiet) training time
            retrain = {
                "train_wall_s": record["train"]["train_wall_s"],
                "date": provenance()["date"],
            }
            record["evals"], record["train"] = old["evals"], old["train"]
            record["train"]["retrained_for_checkpoint"] = retrain
        elif old:
            log.warning("[bench] %s retrained with another fingerprint: evaluations redone", name)
        self.save_row(name, record)
        return ckpt

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, name: str, key: str, fn, needs: tuple[str | None, ...] = ()) -> dict:
        """Run ``fn()`` unless ``key`` is already stored for row ``name``; store the result.
        The checkpoints of ``name`` and ``needs`` are made first (untimed) if missing."""
        record = self.load_row(name)
        if key in record["evals"]:
            return record["evals"][key]
        for other in (name, *needs):
            if other:
                self.checkpoint(other)
        started = time.perf_counter()
        result = fn()
        result["wall_s"] = round(time.perf_counter() - started, 2)
        record = self.load_row(name)
        record["evals"][key] = result
        self.save_row(name, record)
        log.info("[bench] %s %s done in %.1f s", name, key, result["wall_s"])
        return result

    def attack(
        self,
        name: str,
        attack: str,
        eps: float,
        steps: int,
        restarts: int = 1,
        fraction: float = 1.0,
        surrogate: str | None = None,
        seed: int | None = None,
        strength: str = "standard",
    ) -> dict:
        seed = self.profile.seed if seed is None else seed
        key = evaluation_key(
            attack,
            eps,
            steps,
            restarts=restarts,
            fraction=fraction,
            transfer_from=surrogate,
            seed=None if seed == self.profile.seed else seed,
            strength=strength,
        )

        def run() -> dict:
            model = load_model(self.checkpoint(name))
            sur = load_model(self.checkpoint(surrogate)) if surrogate else None
            return evaluate_attack(
                model,
                self.attack_test,
                attack,
                AttackBudget(eps, steps, restarts=restarts),
                fraction=fraction,
                seed=seed,
                surrogate=sur,
                progress=self.progress,
                strength=strength,
            )

        return self.evaluate(name, key, run, needs=(surrogate,))

    def clean(self, name: str) -> dict:
        def run() -> dict:
            model = load_model(self.checkpoint(name))
            return {
                "metrics": evaluate_model(model, self.clean_test, progress=self.progress),
                "images": len(self.clean_test),
            }

        return self.evaluate(name, "clean", run)

    def headline(self, name: str) -> None:
        p = self.profile
        self.clean(name)
        for attack in ("es", "qa", "ca"):
            self.attack(name, attack, HEADLINE_EPS, p.eval_steps)
        for fraction in p.fractions:
            self.attack(name, "ca", HEADLINE_EPS, p.eval_steps, fraction=fraction)
        self.attack(name, "es", ROBRANK_EPS, p.robrank_steps)
        self.attack(name, "ca", ROBRANK_EPS, p.robrank_steps)
        for seed in p.extra_attack_seeds:
            self.attack(name, "ca", HEADLINE_EPS, p.eval_steps, seed=seed)

    def sweep(self, name: str) -> None:
        for eps in self.profile.sweep_eps:
            self.attack(name, "ca", eps, self.profile.eval_steps)
            self.attack(name, "es", eps, self.profile.eval_steps)

    def masking_checks(self, name: str) -> None:
        p = self.profile
        for attack in ("ca", "es"):
            self.attack(name, attack, HEADLINE_EPS, p.masking_steps)
            self.attack(name, attack, HEADLINE_EPS, p.eval_steps, restarts=p.masking_restarts)
            self.attack(name, attack, HEADLINE_EPS, p.eval_steps, surrogate="vanilla")

    def strong_checks(self, name: str) -> None:
        """The headline ES and CA under the strong evaluation (worst case over PGD, PGD
        with restarts, APGD-100 and target draws): the decisive rows' ``strong`` column."""
        for attack in ("es", "ca"):
            self.attack(name, attack, HEADLINE_EPS, self.profile.eval_steps, strength="strong")

    def decisive_rows(self) -> list[str]:
        """The rows the decisive comparison rests on: the best EAT, the best single model at
        EAT's compute, and the triplet pair."""
        names = (
            self.best_eat(),
            self.best_single_equal_compute(),
            "eat-triplet",
            "pgd-at-triplet-eqc",
        )
        return [n for n in dict.fromkeys(names) if n and self.load_row(n)]

    def best_baseline(self) -> str | None:
        """The adapted baseline with the highest NMI under the headline clustering attack."""
        scores = {}
        for name in BASELINES:
            record = self.load_row(name)
            key = evaluation_key("ca", HEADLINE_EPS, self.profile.eval_steps)
            if record and key in record["evals"]:
                scores[name] = record["evals"][key]["attacked"]["nmi"]
        return max(scores, key=scores.get) if scores else None

    def optional(self, name: str) -> bool:
        """Whether row ``name`` belongs to a group the main run leaves out."""
        return self.rows[name].group in self.profile.optional_groups

    def checked_rows(self) -> list[str]:
        """Rows that get the ε sweep (and so the check that robustness falls with ε): vanilla,
        the best baseline, EAT, the best single model at equal compute and HM (the newest
        defense)."""
        names = ("vanilla", self.best_baseline(), "eat", self.best_single_equal_compute(), "hm")
        return [n for n in dict.fromkeys(names) if n and self.load_row(n)]

    def masking_rows(self) -> list[str]:
        """Rows that get the gradient-masking checks: the checked rows, then every other
        trained defense row (the vanilla rows are the attacks' reference, not a defense)."""
        rest = [n for n in self.rows if n not in ("vanilla", "vanilla-ens") and self.load_row(n)]
        return list(dict.fromkeys([*self.checked_rows(), *rest]))

    # ------------------------------------------------------------------ training seeds
    def best_single_equal_compute(self) -> str | None:
        """The single-model row at EAT's training compute with the highest headline CA NMI."""
        key = evaluation_key("ca", HEADLINE_EPS, self.profile.eval_steps)
        scores = {}
        for name, row in self.rows.items():
            record = self.load_row(name)
            if (
                row.compute_of == "eat"
                and record
                and record["members"] == 1
                and key in record["evals"]
            ):
                scores[name] = record["evals"][key]["attacked"]["nmi"]
        return max(scores, key=scores.get) if scores else None

    def best_eat(self) -> str:
        """The EAT row (either loss) with the highest headline CA NMI, averaged over its
        training seeds where it has several."""
        key = evaluation_key("ca", HEADLINE_EPS, self.profile.eval_steps)
        seeds = self.seed_records()
        scores = {}
        for name, row in self.rows.items():
            record = self.load_row(name)
            if row.defense != "eat" or row.group not in ("eat", "loss") or not record:
                continue
            values = [
                r["evals"][key]["attacked"]["nmi"]
                for r in seeds.get(name, [record])
                if key in r["evals"]
            ]
            if values:
                scores[name] = sum(values) / len(values)
        return max(scores, key=scores.get) if scores else "eat"

    def seed_row(self, name: str, seed: int) -> Row:
        """Row ``name`` again with training seed ``seed``, for as many epochs as it took."""
        base = self.rows[name]
        record = self.load_row(name)
        if record is None:
            raise RuntimeError(f"train row {name} before its seeds")
        return Row(
            f"{name}-s{seed}",
            base.defense,
            f"{base.description} (training seed {seed})",
            base.group,
            {**base.overrides, "seed": seed},
            epochs=record["train"]["epochs"],
            seed_of=name,
        )

    def run_seeds(self, seeds: list[int], rows: list[str] | None = None) -> None:
        """Train and score the decisive rows (or ``rows``; ``best-eqc`` names the best single
        model at equal compute) with further training seeds (resumable)."""
        best = self.best_single_equal_compute()
        # the decisive pair first: EAT and the best single model at equal compute
        wanted = rows or ["eat", "best-eqc", *SEEDED_ROWS]
        names = [best if n == "best-eqc" else n for n in wanted]
        names = list(dict.fromkeys(n for n in names if n))
        for name in names:
            if self.load_row(name) is None:
                log.warning("[bench] row %s not trained: no seeds for it", name)
                continue
            for seed in seeds:
                row = self.seed_row(name, seed)
                self.ensure_trained(row, force=False)
                self.clean(row.name)
                self.attack(row.name, "es", HEADLINE_EPS, self.profile.eval_steps)
                self.attack(row.name, "ca", HEADLINE_EPS, self.profile.eval_steps)
                self.attack(row.name, "ca", 0.2, self.profile.eval_steps)

    def seed_records(self) -> dict[str, list[dict]]:
        """``{row: [record of the profile's seed, records of further seeds…]}``."""
        out: dict[str, list[dict]] = {}
        for path in sorted((self.out / "rows").glob("*.json")):
            record = json.loads(path.read_text())
            base = record["row"].get("seed_of")
            if base and self.load_row(base):
                out.setdefault(base, [self.load_row(base)]).append(record)
        return out

    # ------------------------------------------------------------------ driver
    def run(
        self,
        only: list[str] | None = None,
        seeds: list[int] | None = None,
        seed_rows: list[str] | None = None,
        also: tuple[str, ...] = (),
    ) -> dict:
        started = time.perf_counter()
        skipped = set(self.profile.optional_groups) - set(also)
        default = [n for n, row in self.rows.items() if row.group not in skipped]
        names = default if not only else only
        unknown = [n for n in names if n not in self.rows]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; rows are {list(self.rows)}")
        for name in self.rows:
            if name not in names:
                continue
            row = self.rows[name]
            self.ensure_trained(row, force=bool(only))
            self.headline(name)
        for name in self.checked_rows():
            self.sweep(name)
        for name in self.masking_rows():
            if name != "vanilla":
                self.masking_checks(name)
                # a checkpoint remade with other weights (older code) lost its evaluations
                self.headline(name)
        for name in self.decisive_rows():
            self.strong_checks(name)
        if seeds:
            self.run_seeds(seeds, seed_rows)
        wall = time.perf_counter() - started
        return self.write_report(wall)

    # ------------------------------------------------------------------ report
    def write_report(self, wall: float) -> dict:
        from .bench_report import write_report

        rows = {n: self.load_row(n) for n in self.rows if self.load_row(n)}
        meta = {
            **provenance(),
            "profile": dataclasses.asdict(self.profile),
            "train_images": self.n_train,
            "clean_test_images": len(self.clean_test),
            "attack_test_images": len(self.attack_test),
            "this_invocation_wall_s": round(wall, 1),
            # the main run (optional groups left out) is what the time budget covers
            "total_row_wall_s": round(
                sum(_row_wall(r) for n, r in rows.items() if not self.optional(n)), 1
            ),
            "optional_rows_wall_s": round(
                sum(_row_wall(r) for n, r in rows.items() if self.optional(n)), 1
            ),
            "best_baseline": self.best_baseline(),
            "best_single_equal_compute": self.best_single_equal_compute(),
            "checked_rows": self.checked_rows(),
            "masking_rows": self.masking_rows(),
            "seed_rows_wall_s": round(
                sum(_row_wall(r) for recs in self.seed_records().values() for r in recs[1:]), 1
            ),
        }
        return write_report(self.out, meta, rows, self.profile, self.seed_records())


def _row_wall(record: dict) -> float:
    return record["train"]["train_wall_s"] + sum(
        e.get("wall_s", 0) for e in record["evals"].values()
    )


def ship_models(
    runs: Path, assets: Path, out: Path, baseline: str | None, eat: str = "eat"
) -> None:
    """Copy the benchmark's vanilla model, its strongest single-model defense at EAT's
    training compute (``baseline``) and the best EAT ensemble (row ``eat``) into
    ``assets/models``, with a README giving their benchmark numbers and how to reproduce
    them."""
    shipped = {"vanilla": "vanilla", "eat": eat}
    if baseline:
        shipped["baseline"] = baseline
    lines = [
        "# Shipped demo models",
        "",
        "`vanilla/`, `baseline/` and `eat/` are rows of the Fashion-MNIST benchmark: `vanilla`,",
        f"the strongest single-model defense at EAT's training compute (`{baseline}`) and the",
        f"best EAT row (`{eat}`: highest NMI under the clustering attack, over training seeds),",
        f"copied here by `eat bench --ship` (full results in `{out}`). The web app loads them.",
        "",
        "| model | benchmark row | members | train s | clean R@1 | clean NMI | ES R@1 (eps 0.1) "
        "| CA NMI (eps 0.1) | fingerprint |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for target, name in shipped.items():
        src, dst = runs / name, assets / target
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src} has not been trained")
        record = json.loads((out / "rows" / f"{name}.json").read_text())
        ev = record["evals"]
        steps = min(  # the headline steps: the fewest stored at the headline eps
            p["steps"] for p in map(parse_evaluation_key, ev) if p and p["eps"] == HEADLINE_EPS
        )
        es_key, ca_key = (evaluation_key(a, HEADLINE_EPS, steps) for a in ("es", "ca"))
        lines.append(
            f"| {target} | {name} | {record['members']} | {record['train']['train_wall_s']:.0f} "
            f"| {ev['clean']['metrics']['recall@1']:.3f} | {ev['clean']['metrics']['nmi']:.3f} "
            f"| {ev[es_key]['attacked']['recall@1']:.3f} "
            f"| {ev[ca_key]['attacked']['nmi']:.3f} | `{record['fingerprint']}` |"
        )
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)
    lines += [
        "",
        "Reproduce them (each row's full training config, every flag, is inside its",
        "`config.json` under `train`):",
        "",
        f"    eat bench --only vanilla {eat} {baseline or ''} --ship",
        "",
    ]
    (assets / "README.md").write_text("\n".join(lines))


def add_bench_command(sub) -> None:
    """Register ``eat bench`` on the ``eat`` command's subparsers."""
    p = sub.add_parser(
        "bench",
        help="train every defense on Fashion-MNIST and measure clean vs attacked metrics",
        description="The Fashion-MNIST robustness benchmark: trains every defense under one "
        "budget, evaluates clean and attacked (eps 0.1 PGD-20 and RobRank's eps 0.3 / 32 "
        "steps), the eps sweep, the EAT ablation and gradient-masking checks; writes "
        "results.json, results.md and PNG plots. Resumable: finished rows are kept.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the same pipeline on a small slice with tiny budgets (minutes, not hours)",
    )
    p.add_argument(
        "--profile",
        choices=("full", "quick", "robrank-fashion"),
        default=None,
        help="full (default), quick (= --quick), or robrank-fashion: RobRank's Fashion-MNIST "
        "protocol (triplet loss, Adam 1e-3, 16 epochs, eps 77/255; benchmarks/robrank_fashion.py),"
        " trained and evaluated row by row and epoch by epoch, resumable",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="ROW",
        default=None,
        help="retrain and re-evaluate only these rows (names as in the table)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="results folder (default: results/fashion-mnist, or "
        "results/fashion-mnist-quick with --quick)",
    )
    p.add_argument(
        "--runs", default=None, help="where row checkpoints go (default: runs/bench/PROFILE)"
    )
    p.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="override the profile's training slice (e.g. a tiny CI run)",
    )
    p.add_argument(
        "--attack-images",
        type=int,
        default=None,
        help="override the number of test images attacked",
    )
    p.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument(
        "--device",
        default="cpu",
        help="where rows are trained: cpu (default; the committed timings are CPU), cuda, "
        "or auto; attacks and metrics always run on the CPU",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="afterwards copy the vanilla model, the best EAT row and the strongest single "
        "model at EAT's compute to assets/models/{vanilla,eat,baseline}",
    )
    p.add_argument(
        "--also",
        nargs="+",
        default=(),
        choices=PROFILES["full"].optional_groups,
        metavar="GROUP",
        help="also train the optional row groups: 'loss' (eat-triplet and pgd-at-triplet-eqc, "
        "both losses side by side; about 14 min on 2 cores), which the main run leaves out to "
        "fit its 120-minute budget (stored rows of a group are reported either way)",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        default=None,
        help="also train the decisive rows (eat, at-ensemble, hm and the best single-model "
        "row at equal compute) with these further training seeds, and report mean ± sd over "
        "all seeds (resumable; e.g. --seeds 1 2)",
    )
    p.add_argument(
        "--seed-rows",
        nargs="+",
        metavar="ROW",
        default=None,
        help="with --seeds: only these rows ('best-eqc' = the best single-model row at equal "
        "compute); default: eat, best-eqc, at-ensemble, hm",
    )
    p.add_argument(
        "--strong-only",
        action="store_true",
        help="only add the strong evaluation (ES and CA at eps 0.1) of the decisive rows whose "
        "checkpoints are in --runs (never retrains), then rewrite the report",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and evaluate nothing: rebuild results.json, results.md and the plots from "
        "the stored row files (e.g. after an interrupted --seeds run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    torch.set_num_threads(args.threads)
    if args.profile == "robrank-fashion":
        from . import robrank_fashion

        out = Path(args.out or robrank_fashion.DEFAULT_OUT)
        rows = [r for r in robrank_fashion.ROWS if not args.only or r.name in args.only]
        seeds = (0, *(args.seeds or ()))
        robrank_fashion.train_rows(rows, out, args.threads, seeds, progress=not args.quiet)
        robrank_fashion.evaluate_rows(rows, out, args.threads, progress=not args.quiet)
        print(robrank_fashion.report(out))
        return 0
    profile = PROFILES["quick" if args.quick or args.profile == "quick" else "full"]
    overrides = {}
    if args.max_train is not None:
        overrides["max_train"] = args.max_train
    if args.attack_images is not None:
        overrides["attack_images"] = args.attack_images
    profile = dataclasses.replace(profile, **overrides)
    out = Path(args.out or ("results/fashion-mnist" + ("-quick" if args.quick else "")))
    runs = Path(args.runs or f"runs/bench/{profile.name}")
    bench = Bench(
        profile,
        out,
        runs,
        data_dir=args.data_dir,
        progress=not args.quiet,
        threads=args.threads,
        device=args.device,
    )
    if args.report_only:
        result = bench.write_report(0.0)
    elif args.strong_only:
        started = time.perf_counter()
        for name in bench.decisive_rows():
            if (runs / name / "config.json").is_file():
                bench.strong_checks(name)
            else:
                log.warning(
                    "[bench] %s: no checkpoint in %s, its strong column stays empty", name, runs
                )
        result = bench.write_report(time.perf_counter() - started)
    else:
        result = bench.run(args.only, args.seeds, args.seed_rows, tuple(args.also))
    if args.ship:
        baseline, eat = bench.best_single_equal_compute(), bench.best_eat()
        for name in ("vanilla", eat, baseline):
            if name:
                bench.checkpoint(name)
        ship_models(runs, Path("assets/models"), out, baseline, eat)
    print((out / "results.md").read_text())
    print(f"results written to {out} ({result['meta']['this_invocation_wall_s']:.0f} s)")
    return 0
