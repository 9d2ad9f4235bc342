"""``eat bench``: the command line of the robustness benchmark (registered on the ``eat``
console script by :func:`benchmarks.cli.register`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from .profiles import HEADLINE_EPS, PROFILES, ROBRANK_EPS, ROBRANK_STEPS
from .runner import Bench
from .ship import ship_models

log = logging.getLogger(__name__)


def add_bench_command(sub) -> None:
    """Register ``eat bench`` on the ``eat`` command's subparsers."""
    p = sub.add_parser(
        "bench",
        help="train every defense on Fashion-MNIST and measure clean vs attacked metrics",
        description="The Fashion-MNIST robustness benchmark: trains every defense under one "
        f"budget, evaluates clean and attacked (eps {HEADLINE_EPS:g} "
        f"PGD-{PROFILES['full'].eval_steps} and RobRank's eps {ROBRANK_EPS:g} / {ROBRANK_STEPS} "
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
        "--equal-compute-from",
        default=None,
        metavar="DIR",
        help="give each equal-compute row the epochs it was trained for in the results "
        "folder DIR instead of timing its budget on this machine (timings move with the "
        "machine's load; the restructure check compares rows bit for bit)",
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
        help=f"only add the strong evaluation (ES and CA at eps {HEADLINE_EPS:g}) of the decisive "
        "rows whose checkpoints are in --runs (never retrains), then rewrite the report",
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
        from .. import robrank_fashion

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
        equal_compute_from=args.equal_compute_from,
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
