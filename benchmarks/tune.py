"""``python -m benchmarks.tune``: the EAT tuning sweep behind the benchmark's EAT recipe.

Trains a named grid of configurations under the benchmark's full profile (same data,
width, epochs, PGD budget, seed; each entry changes only the knobs it names) and scores
each one with the benchmark's own evaluation: clean metrics on the 10k test set, and on
the stratified 2k attack subset the embedding-shift (ES) and clustering (CA) attacks at
ε = 0.1 with PGD-20, plus CA at ε = 0.2. Entries run in parallel worker processes
(``--jobs``); training may use a GPU (``--device cuda``), attacks run on the CPU.

Results: ``OUT/rows/ENTRY.json`` (the benchmark's row format, resumable) and
``OUT/results.{json,md}`` with the command line, commit, date and wall time inside.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from eat_models.attacks import evaluation_key
from eat_models.defenses.eat import RETIRED_OPTIONS
from eat_models.provenance import provenance

from . import command_parser
from .robustness.profiles import HEADLINE_EPS, HIGH_EPS, PROFILES
from .robustness.rows import Row
from .robustness.runner import Bench

log = logging.getLogger(__name__)


def current_overrides(name: str, overrides: dict) -> dict:
    """``overrides`` without the retired options that only restate today's recipe (the
    term through F off); a retired option that changes the recipe is an error."""
    kept = {k: v for k, v in overrides.items() if RETIRED_OPTIONS.get(k, object()) != v}
    if any(k in kept for k in RETIRED_OPTIONS):
        raise ValueError(
            f"tuning entry {name} trains EAT's term through F, which was removed (it added no "
            "robustness; results/fashion-mnist/tuning-12k-v2); its stored result stays"
        )
    return kept


#: name -> (defense, overrides). Overrides are TrainConfig fields (and "epochs").
GRIDS: dict[str, dict[str, tuple[str, dict]]] = {
    "eat-v1": {
        "eat": ("eat", {"members": 3}),
        "at-ensemble": ("at-ensemble", {"members": 3}),
        "eat-clean0.5": ("eat", {"members": 3, "clean_weight": 0.5}),
        "eat-cluster": ("eat", {"members": 3, "ensemble_objective": "cluster"}),
        "eat-triplet": ("eat", {"members": 3, "loss": "triplet"}),
        "eat-nosplit": ("eat", {"members": 3, "member_split": "none"}),
        "eat-lens2": ("eat", {"members": 3, "lambda_ensemble": 2.0}),
        "eat-clean1": ("eat", {"members": 3, "clean_weight": 1.0}),
        "eat-eps0.15": ("eat", {"members": 3, "train_eps": 0.15}),
        "pgd-at-triplet": ("pgd-at", {"loss": "triplet"}),
        "at-ensemble-triplet": ("at-ensemble", {"members": 3, "loss": "triplet"}),
        "eat-triplet-clean0.5": ("eat", {"members": 3, "loss": "triplet", "clean_weight": 0.5}),
        "eat-steps10": ("eat", {"members": 3, "train_steps": 10}),
        "eat-6ep": ("eat", {"members": 3, "epochs": 6}),
        "eat-w32": ("eat", {"members": 3, "width": 32}),
        "eat-k5": ("eat", {"members": 5}),
        "eat-cluster-clean0.5": (
            "eat",
            {"members": 3, "ensemble_objective": "cluster", "clean_weight": 0.5},
        ),
    },
    # After the epoch was redefined as one pass of the ensemble (member k over its own
    # part once): robustness against training compute for PGD-AT, HM and EAT variants.
    "eat-v2": {
        **{f"pgd-at-e{e}": ("pgd-at", {"epochs": e}) for e in (3, 10, 20, 40)},
        **{f"hm-e{e}": ("hm", {"epochs": e}) for e in (3, 6, 12)},
        **{f"hm-ics-e{e}": ("hm", {"epochs": e, "hm_ics_weight": 0.5}) for e in (6,)},
        **{
            f"eat-e{e}": ("eat", {"members": 3, "lambda_ensemble": 1.0, "lr": 1e-3, "epochs": e})
            for e in (3, 8, 16)
        },
        **{
            f"eat-nof-e{e}": (
                "eat",
                {"members": 3, "lambda_ensemble": 0.0, "lr": 1e-3, "epochs": e},
            )
            for e in (10, 20)
        },
        **{
            f"eat-f2-e{e}": (
                "eat",
                {
                    "members": 3,
                    "lambda_ensemble": 1.0,
                    "ensemble_every": 2,
                    "lr": 1e-3,
                    "epochs": e,
                },
            )
            for e in (8, 16)
        },
        **{
            f"eat-ema-e{e}": (
                "eat",
                {"members": 3, "lambda_ensemble": 1.0, "ema_decay": 0.98, "lr": 1e-3, "epochs": e},
            )
            for e in (8, 16)
        },
        **{f"pgd-at-ema-e{e}": ("pgd-at", {"ema_decay": 0.995, "epochs": e}) for e in (20,)},
        **{
            f"eat-joint-e{e}": (
                "eat",
                {
                    "members": 3,
                    "member_crafts": False,
                    "ensemble_batch": "all",
                    "lr": 1e-3,
                    "epochs": e,
                },
            )
            for e in (3, 6, 12)
        },
        **{
            f"eat-joint-share-e{e}": (
                "eat",
                {"members": 3, "member_crafts": False, "lr": 1e-3, "epochs": e},
            )
            for e in (10, 20)
        },
        **{f"pgd-at-w28-e{e}": ("pgd-at", {"width": 28, "epochs": e}) for e in (5, 10, 20)},
        **{
            f"eat-nof-lr2-e{e}": (
                "eat",
                {"members": 3, "lambda_ensemble": 0.0, "lr": 2e-3, "epochs": e},
            )
            for e in (10,)
        },
        **{
            f"eat-nof-lr3-e{e}": (
                "eat",
                {"members": 3, "lambda_ensemble": 0.0, "lr": 3e-3, "epochs": e},
            )
            for e in (10, 20, 30)
        },
        **{f"pgd-at-lr2-e{e}": ("pgd-at", {"lr": 2e-3, "epochs": e}) for e in (10, 20)},
        **{f"pgd-at-lr3-e{e}": ("pgd-at", {"lr": 3e-3, "epochs": e}) for e in (10,)},
        **{f"hm-lr2-e{e}": ("hm", {"lr": 2e-3, "epochs": e}) for e in (5, 10)},
        # the saturated regime: longer runs of the best learning rates
        **{f"pgd-at-lr3-e{e}": ("pgd-at", {"lr": 3e-3, "epochs": e}) for e in (20, 40)},
        # levers on the tuned EAT recipe (F term off, lr 1e-3 × K), at about its 10-epoch cost
        "eat-k2-e10": ("eat", {"members": 2, "epochs": 10}),
        "eat-k5-e10": ("eat", {"members": 5, "epochs": 10}),
        "eat-overlap-e5": ("eat", {"members": 3, "member_split": "overlap", "epochs": 5}),
        "eat-eps15-e10": ("eat", {"members": 3, "train_eps": 0.15, "epochs": 10}),
        "pgd-at-eps15-lr3-e10": ("pgd-at", {"train_eps": 0.15, "lr": 3e-3, "epochs": 10}),
        "eat-triplet-e10": ("eat", {"members": 3, "loss": "triplet", "epochs": 10}),
        "pgd-at-triplet-lr3-e10": ("pgd-at", {"loss": "triplet", "lr": 3e-3, "epochs": 10}),
        "eat-hm-e4": ("eat", {"members": 3, "member_attack": "hm", "epochs": 4}),
        **{
            f"eat-nof-ema-e{e}": (
                "eat",
                {"members": 3, "lambda_ensemble": 0.0, "ema_decay": 0.98, "lr": 1e-3, "epochs": e},
            )
            for e in (10, 20)
        },
    },
}


def _evaluate_entry(
    name: str,
    defense: str,
    overrides: dict,
    out: str,
    runs: str,
    data_dir: str | None,
    device: str,
    threads: int,
    profile_overrides: dict,
) -> dict:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    profile = dataclasses.replace(PROFILES["full"], **profile_overrides)
    bench = Bench(profile, Path(out), Path(runs), data_dir, False, threads, device)
    overrides = dict(overrides)
    epochs = overrides.pop("epochs", None)
    row = Row(name, defense, f"tuning: {defense} {overrides}", "tuning", overrides, epochs=epochs)
    bench.rows = {name: row}
    if bench.load_row(name) is None:  # to be trained now: with today's options only
        row.overrides = current_overrides(name, overrides)
    started = time.perf_counter()
    bench.ensure_trained(row, force=False)
    bench.clean(name)
    bench.attack(name, "es", HEADLINE_EPS, profile.eval_steps)
    bench.attack(name, "ca", HEADLINE_EPS, profile.eval_steps)
    bench.attack(name, "ca", HIGH_EPS, profile.eval_steps)
    log.info("[tune] %s finished in %.0f s", name, time.perf_counter() - started)
    return bench.load_row(name)


def f_term_text(record: dict) -> str | None:
    """EAT's term through F as trained: ``off``, or objective, weight and frequency."""
    if record["row"]["defense"] != "eat":
        return None
    config = record["train"]["config"]
    weight = float(config.get("lambda_ensemble", 1.0))
    if weight == 0:
        return "off"
    text = f"{config.get('ensemble_objective', 'shift')} ×{weight:g}"
    every = int(config.get("ensemble_every", 1))
    return text + (f", every {every}" if every > 1 else "")


def summarise(name: str, record: dict) -> dict:
    ev, steps = record["evals"], PROFILES["full"].eval_steps
    clean = ev["clean"]["metrics"]
    return {
        "entry": name,
        "defense": record["row"]["defense"],
        "overrides": record["row"]["overrides"],
        "epochs": record["train"]["epochs"],
        "train_wall_s": record["train"]["train_wall_s"],
        "lr": record["train"].get("learning_rate") or record["train"]["config"]["lr"],
        "seconds_per_epoch": record["train"]["train_wall_s"] / record["train"]["epochs"],
        "steps": record["train"]["steps"],
        "device": record["train"]["config"].get("device", "cpu"),
        # the recipe as trained (defaults of the commit that trained it included)
        "loss": record["train"]["config"]["loss"],
        "clean_weight": record["train"]["config"]["clean_weight"],
        "ensemble_objective": (
            record["train"]["config"].get("ensemble_objective")
            if record["row"]["defense"] == "eat"
            else None
        ),
        "f_term": f_term_text(record),
        "clean_r1": clean["recall@1"],
        "clean_nmi": clean["nmi"],
        "es_r1": ev[evaluation_key("es", HEADLINE_EPS, steps)]["attacked"]["recall@1"],
        "ca_nmi": ev[evaluation_key("ca", HEADLINE_EPS, steps)]["attacked"]["nmi"],
        "ca_nmi_eps0.2": ev[evaluation_key("ca", HIGH_EPS, steps)]["attacked"]["nmi"],
    }


def collect(out: Path) -> list[dict]:
    """A summary of every fully scored entry stored in ``out/rows`` (all invocations)."""
    summaries = []
    for path in sorted((out / "rows").glob("*.json")):
        try:
            summaries.append(summarise(path.stem, json.loads(path.read_text())))
        except KeyError:  # still being trained or scored
            continue
    return summaries


def family(entry: str) -> str:
    """``eat-f2-e8`` → ``eat-f2``: entries that differ only in epochs form one curve."""
    head, _, tail = entry.rpartition("-e")
    return head if head and tail.isdigit() else entry


def plot_compute_curves(out: Path, summaries: list[dict]) -> bool:
    """``robustness_vs_compute.png``: CA NMI (ε 0.1) and clean NMI against training seconds."""
    curves: dict[str, list[dict]] = {}
    for s in summaries:
        curves.setdefault(family(s["entry"]), []).append(s)
    if not summaries:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    colours = [*plt.get_cmap("tab20").colors, *plt.get_cmap("Dark2").colors]
    for i, (name, points) in enumerate(sorted(curves.items())):
        points = sorted(points, key=lambda s: s["train_wall_s"])
        xs = [s["train_wall_s"] for s in points]
        style = "-" if name.startswith("eat") else "--"
        marker = "os^Dv<>Ph"[i % 9]  # with the colour, no two families look alike
        for ax, key in zip(axes, ("ca_nmi", "clean_nmi"), strict=True):
            ys = [s[key] for s in points]
            ax.plot(xs, ys, style, marker=marker, color=colours[i % len(colours)], label=name)
    for ax, title in zip(
        axes, ("NMI under the clustering attack (eps 0.1, PGD-20)", "clean NMI"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (2 CPU cores)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    # the legend sits right of the plots, never over their points
    axes[1].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(out / "robustness_vs_compute.png", dpi=110)
    plt.close(fig)
    return True


def pgd_at_seconds_per_epoch(summaries: list[dict]) -> float | None:
    """Median training seconds per epoch of the plain PGD-AT entries (only epochs changed)."""
    values = sorted(
        s["seconds_per_epoch"]
        for s in summaries
        if s["defense"] == "pgd-at" and set(s["overrides"]) <= {"epochs"} and s["epochs"]
    )
    return values[len(values) // 2] if values else None


def write_results(out: Path, grid: str, summaries: list[dict], invocations: list[dict]) -> None:
    """``results.json`` and ``results.md``: every entry, and every invocation that ran some."""
    summaries = sorted(summaries, key=lambda s: -s["ca_nmi"])
    meta = invocations[-1]
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "invocations": invocations, "grid": grid, "entries": summaries},
            indent=2,
        )
    )
    reference = pgd_at_seconds_per_epoch(summaries)
    lines = [f"# EAT tuning sweep `{grid}`", ""]
    for inv in invocations:
        lines.append(
            f"- `{inv['command']}` at commit `{inv['commit']}`, {inv['date']}, wall "
            f"{inv['wall_s']:.0f} s, training on `{inv['device']}`, attacks on CPU"
        )
    lines += [
        "",
        f"Benchmark profile: {meta['profile']['max_train'] or 60000} training images, width "
        f"{meta['profile']['width']}, {meta['profile']['adversarial_epochs']} adversarial "
        f"epochs, PGD-{meta['profile']['train_steps']} at ε {meta['profile']['train_eps']}, "
        f"seed {meta['profile']['seed']}, unless the entry overrides it. Clean metrics on "
        f"the 10k test set; attacks (PGD-{meta['profile']['eval_steps']}) on a stratified "
        f"{meta['profile']['attack_images']}-image subset. Sorted by CA NMI at ε 0.1.",
        "",
        "Cost per epoch is the entry's training seconds per epoch over plain PGD-AT's "
        f"({reference:.1f} s, the median over the pgd-at entries without other overrides)."
        if reference
        else "",
        "",
        "| entry | overrides | loss | lr | clean weight | F term | train s | cost/epoch "
        "vs PGD-AT | clean R@1 | clean NMI | ES R@1 ε0.1 | CA NMI ε0.1 | CA NMI ε0.2 |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        over = dict(s["overrides"])
        if s["epochs"] != PROFILES["full"].adversarial_epochs:
            over["epochs"] = s["epochs"]
        over_text = ", ".join(f"{k}={v}" for k, v in over.items()) or "—"
        cost = f"{s['seconds_per_epoch'] / reference:.2f}×" if reference else "–"
        lines.append(
            f"| {s['entry']} | {over_text} | {s['loss']} | {s['lr']:g} | {s['clean_weight']:g} "
            f"| {s.get('f_term') or '—'} | {s['train_wall_s']:.0f} "
            f"| {cost} "
            f"| {s['clean_r1']:.3f} "
            f"| {s['clean_nmi']:.3f} | {s['es_r1']:.3f} | {s['ca_nmi']:.3f} "
            f"| {s['ca_nmi_eps0.2']:.3f} |"
        )
    if plot_compute_curves(out, summaries):
        lines += [
            "",
            "Robustness against training compute (entries named `FAMILY-eN` joined per family):",
            "",
            "![robustness vs compute](robustness_vs_compute.png)",
        ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("tune", __doc__)
    parser.add_argument("--grid", default="eat-v1", choices=sorted(GRIDS), help="which grid")
    parser.add_argument(
        "--entries", nargs="+", default=None, help="run only these entries of the grid"
    )
    parser.add_argument("--out", default="results/fashion-mnist/tuning", help="results folder")
    parser.add_argument("--runs", default="runs/tune", help="where checkpoints go")
    parser.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    parser.add_argument("--device", default="cpu", help="training device: cpu, cuda or auto")
    parser.add_argument("--jobs", type=int, default=1, help="entries run in parallel")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per job")
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="smoke runs only: a stratified training slice instead of all 60k",
    )
    parser.add_argument(
        "--attack-images",
        type=int,
        default=None,
        help="smoke runs only: attack this many test images instead of 2000",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild OUT/results.{json,md} and the plot from the stored rows",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.report_only:
        out = Path(args.out)
        stored = json.loads((out / "results.json").read_text())
        invocations = stored.get("invocations") or [stored["meta"]]
        write_results(out, stored.get("grid", args.grid), collect(out), invocations)
        rendered = provenance()
        with open(out / "results.md", "a") as fh:
            fh.write(
                f"\nTable re-rendered from the stored rows (nothing retrained) by "
                f"`{rendered['command']}` at commit `{rendered['commit']}`, {rendered['date']}.\n"
            )
        print((out / "results.md").read_text())
        return 0

    grid = GRIDS[args.grid]
    names = args.entries or list(grid)
    unknown = sorted(set(names) - set(grid))
    if unknown:
        parser.error(f"unknown entries {unknown}; the grid has {list(grid)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile_overrides = {}
    if args.max_train is not None:
        profile_overrides["max_train"] = args.max_train
    if args.attack_images is not None:
        profile_overrides["attack_images"] = args.attack_images
    meta = {
        **provenance(),
        "device": args.device,
        "jobs": args.jobs,
        "profile": dataclasses.asdict(dataclasses.replace(PROFILES["full"], **profile_overrides)),
    }
    if meta["commit"] == "unknown" and os.environ.get("EAT_SOURCE_COMMIT"):
        meta["commit"] = os.environ["EAT_SOURCE_COMMIT"] + " (source tree copied, no .git)"
    previous = out / "results.json"
    invocations = []
    if previous.is_file():
        stored = json.loads(previous.read_text())
        invocations = stored.get("invocations") or [stored["meta"]]
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # CUDA does not survive fork
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {
            pool.submit(
                _evaluate_entry,
                name,
                grid[name][0],
                grid[name][1],
                str(out),
                args.runs,
                args.data_dir,
                args.device,
                args.threads,
                profile_overrides,
            ): name
            for name in names
        }
        for future in as_completed(futures):
            try:
                future.result()
            except Exception:  # one failed entry must not lose the others
                log.exception("[tune] %s failed", futures[future])
            meta["wall_s"] = time.perf_counter() - started
            write_results(out, args.grid, collect(out), [*invocations, meta])
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
