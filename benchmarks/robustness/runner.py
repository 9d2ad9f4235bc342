"""Trains and evaluates the benchmark's rows (:class:`Bench`), resumable row by row.

Each row's training record and evaluations are stored in ``OUT/rows/ROW.json`` as they
finish (an evaluation under its :func:`~eat_models.attacks.evaluation_key`), so an
interrupted run resumes where it stopped; a row's checkpoint under ``RUNS/ROW`` is made again,
seeded, when an evaluation needs it and it is gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from eat_models.attacks import (
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

from . import report
from .profiles import HEADLINE_EPS, HIGH_EPS, ROBRANK_EPS, Profile
from .rows import BASELINES, SEEDED_ROWS, TRIPLET_PAIR, UNDEFENDED, Row, bench_rows

log = logging.getLogger(__name__)

#: optimiser steps timed to give a row of its own cost (a wider network) equal compute
CALIBRATION_STEPS = 12


class Bench:
    """Runs the rows of one profile into ``out`` (resumable), then writes the report."""

    def __init__(
        self,
        profile: Profile,
        out: Path,
        runs: Path,
        data_dir: str | None = None,
        progress: bool = True,
        threads: int = 2,
        device: str = "cpu",
        equal_compute_from: str | Path | None = None,
    ) -> None:
        self.profile = profile
        #: a results folder whose equal-compute rows' epochs are reused (no timing)
        self.equal_compute_from = None if equal_compute_from is None else Path(equal_compute_from)
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
        if self.equal_compute_from is not None:
            recorded = self.equal_compute_from / "rows" / f"{row.name}.json"
            if not recorded.is_file():
                raise RuntimeError(f"--equal-compute-from: {recorded} does not exist")
            return int(json.loads(recorded.read_text())["train"]["epochs"])
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

    def attack(self, name: str, attack: str, eps: float, steps: int, **options) -> dict:
        """Row ``name`` under ``attack`` at ``eps`` with ``steps`` PGD steps; ``options`` are
        those of :func:`~eat_models.attacks.evaluation_key` (``restarts``, ``fraction``,
        ``transfer_from``: the surrogate row, ``seed``: the profile's by default,
        ``strength``), and the evaluation runs as its key reads back."""
        if options.get("seed") == self.profile.seed:
            del options["seed"]  # the profile's seed is the key's default one
        key = evaluation_key(attack, eps, steps, **options)
        settings = parse_evaluation_key(key)
        surrogate = settings["transfer_from"]
        seed = self.profile.seed if settings["seed"] is None else settings["seed"]

        def run() -> dict:
            model = load_model(self.checkpoint(name))
            sur = load_model(self.checkpoint(surrogate)) if surrogate else None
            return evaluate_attack(
                model,
                self.attack_test,
                attack,
                AttackBudget(eps, steps, restarts=settings["restarts"]),
                fraction=settings["fraction"],
                seed=seed,
                surrogate=sur,
                progress=self.progress,
                strength=settings["strength"],
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
            self.attack(name, attack, HEADLINE_EPS, p.eval_steps, transfer_from="vanilla")

    def strong_checks(self, name: str) -> None:
        """The headline ES and CA under the strong evaluation (worst case over PGD, PGD
        with restarts, APGD-100 and target draws): the decisive rows' ``strong`` column."""
        for attack in ("es", "ca"):
            self.attack(name, attack, HEADLINE_EPS, self.profile.eval_steps, strength="strong")

    def decisive_rows(self) -> list[str]:
        """The rows the decisive comparison rests on: the best EAT, the best single model at
        EAT's compute, and the triplet pair."""
        names = (self.best_eat(), self.best_single_equal_compute(), *TRIPLET_PAIR)
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
        rest = [n for n in self.rows if n not in UNDEFENDED and self.load_row(n)]
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
                self.attack(row.name, "ca", HIGH_EPS, self.profile.eval_steps)

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
        return report.write_report(self.out, meta, rows, self.profile, self.seed_records())


def _row_wall(record: dict) -> float:
    return record["train"]["train_wall_s"] + sum(
        e.get("wall_s", 0) for e in record["evals"].values()
    )
