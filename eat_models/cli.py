"""Commands of ``eat`` that belong to the library: ``train``, ``eval``, ``attack``.

The console script lives in :mod:`eat_command`, which adds the ``index`` and ``app`` commands.

Flags of ``eat train`` are generated from :class:`~eat_models.train.TrainConfig`, so each
default lives in one place and every flag carries its help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import typing
from pathlib import Path

from .files import write_json

log = logging.getLogger("eat")

#: packages of the optional extras (pyproject.toml), for a clear message when one is missing
EXTRA_OF = {
    "faiss": "index",
    "pymilvus": "milvus",
    "milvus_lite": "milvus",
    "gradio": "app",
    "umap": "app",
    "matplotlib": "app",
    "httpx": "app",
}


def add_dataclass_arguments(parser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, with its default and ``metadata['help']``
    (``parser``: a parser or an argument group)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "") + " (default: %(default)s)"
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text
            )
            continue
        args = typing.get_args(hint)
        kind = next((a for a in args if a is not type(None)), hint) if args else hint
        parser.add_argument(
            flag,
            type=kind,
            default=f.default,
            help=help_text,
            dest=f.name,
            choices=f.metadata.get("choices"),
        )


def add_run_flags(parser, out_help: str, seed_help: str | None = None) -> None:
    """The flags most commands share: ``--seed`` (when it has a meaning), ``--threads``,
    ``--out`` and ``--quiet``."""
    if seed_help:
        parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def dataclass_from_args(cls, args: argparse.Namespace):
    return cls(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    config = dataclass_from_args(TrainConfig, args)
    out = train(config, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 wrote it
        return 0
    if out.name == "resume":
        print(f"stopped early; resume point in {out} (continue with the same flags and --resume)")
    else:
        print(f"checkpoint written to {out}")
    return 0


def _checkpoint_test_set(args: argparse.Namespace, meta: dict):
    """``(dataset, split, test set)`` a checkpoint is evaluated on: its own dataset and split
    unless ``--dataset``/``--split`` override them, sliced to ``--max-test`` if given."""
    from .data import checkpoint_data, load_dataset, stratified_slice

    dataset, data_dir = checkpoint_data(meta, args.dataset, args.data_dir)
    split = args.split or meta.get("split", "standard")
    _, test = load_dataset(
        dataset,
        split,
        data_dir,
        args.download,
        image_size=meta["input_size"],
        channels=meta["channels"],
    )
    if args.max_test and args.max_test < len(test):
        test = stratified_slice(test, args.max_test, seed=0)
    return dataset, split, test


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from . import load_model
    from .evaluate import evaluate_model, format_metrics_table
    from .provenance import provenance

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    meta = model.meta
    started = time.perf_counter()
    dataset, split, test = _checkpoint_test_set(args, meta)
    metrics = evaluate_model(
        model, test, batch_size=args.batch_size, progress=not args.quiet, seed=args.seed
    )
    record = {
        "checkpoint": str(args.checkpoint),
        "fingerprint": meta["fingerprint"],
        "dataset": dataset,
        "split": split,
        "test_images": len(test),
        "metrics": metrics,
        "eval_wall_s": round(time.perf_counter() - started, 2),
        "provenance": provenance(),
    }
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(format_metrics_table({Path(args.checkpoint).name: metrics}))
    print(f"\nmetrics written to {out}")
    return 0


def _attack_budget(args: argparse.Namespace, input_size: int):
    """The budget the flags ask for; what they leave out comes from the headline budget
    (single attacks) or RobRank's (a suite)."""
    from .attacks import DEFAULT_EPS, DEFAULT_STEPS, AttackBudget, robrank_budget

    if args.suite:
        base = robrank_budget(input_size)
    else:
        base = AttackBudget(DEFAULT_EPS, DEFAULT_STEPS)
    changes = {
        key: value
        for key, value in (
            ("eps", args.eps),
            ("steps", args.steps),
            ("step_size", args.step_size),
            ("restarts", args.restarts),
        )
        if value is not None
    }
    if "eps" in changes or "steps" in changes:
        changes.setdefault("step_size", None)
    return base.replace(**changes)


def _cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from . import load_model
    from .attacks import evaluate_attack, evaluate_suite
    from .evaluate import format_metrics_table
    from .provenance import provenance

    if bool(args.attack) == bool(args.suite):
        print("eat attack: give one of --attack NAME or --suite ers", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    surrogate = load_model(args.surrogate) if args.surrogate else None
    if args.suite and (surrogate is not None or args.fraction != 1.0):
        print(
            "eat attack --suite: attacks every image white-box (no --surrogate, --fraction)",
            file=sys.stderr,
        )
        return 2
    meta = model.meta
    dataset, split, test = _checkpoint_test_set(args, meta)
    budget = _attack_budget(args, meta["input_size"])
    header = {
        "checkpoint": str(args.checkpoint),
        "fingerprint": meta["fingerprint"],
        "defense": meta.get("defense"),
        "dataset": dataset,
        "split": split,
    }
    if args.suite:
        result = evaluate_suite(
            model,
            test,
            args.suite,
            budget,
            seed=args.seed,
            strength=args.strength,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        name = f"suite_{args.suite}" + ("_strong" if args.strength == "strong" else "")
        out = Path(args.out) if args.out else Path(args.checkpoint) / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, {**header, **result, "provenance": provenance()})
        print(format_suite(result))
        print(f"written to {out}")
        return 0
    result = evaluate_attack(
        model,
        test,
        args.attack,
        budget,
        fraction=args.fraction,
        seed=args.seed,
        surrogate=surrogate,
        batch_size=args.batch_size,
        progress=not args.quiet,
        k=args.neighbours,
        strength=args.strength,
    )
    record = {
        **header,
        "surrogate": str(args.surrogate) if surrogate is not None else None,
        "surrogate_fingerprint": surrogate.meta["fingerprint"] if surrogate is not None else None,
        **result,
        "provenance": provenance(),
    }
    name = f"attack_{args.attack}" + ("_strong" if args.strength == "strong" else "")
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    mode = "transfer" if surrogate is not None else "white-box"
    label = f"{args.attack} eps={budget.eps:g} steps={budget.steps} {args.strength} ({mode})"
    print(format_metrics_table({"clean": result["clean"], label: result["attacked"]}))
    print(
        f"\n{result['attacked_images']}/{result['images']} images attacked "
        f"({'; '.join(result['runs'])}), mean embedding shift "
        f"{result['mean_embedding_shift']:.4f}, attack {result['attack_s']:.1f} s"
    )
    print(f"written to {out}")
    return 0


def format_suite(result: dict) -> str:
    """A suite's table: each attack's headline metric clean → attacked, then ERS's terms."""
    lines = [
        f"{result['suite']} suite, {result['strength']}: eps {result['eps']:.4g}, "
        f"{result['steps']} steps, {result['images']} images",
        "",
        "| attack | metric | clean | attacked |",
        "|---|---|---:|---:|",
    ]
    from .attacks import get_attack

    for name, r in result["attacks"].items():
        metric = get_attack(name).headline
        lines.append(
            f"| {r['label']} | {metric} | {r['clean'][metric]:.4f} | {r['attacked'][metric]:.4f} |"
        )
    if "ers" in result:
        terms = " · ".join(f"{t} {v:.1f}" for t, v in result["terms"].items())
        lines += [
            "",
            f"ERS terms: {terms}",
            f"ERS {result['ers']:.1f} (clean {result['clean_ers']:.1f})",
        ]
    return "\n".join(lines)


def _cmd_audit(args: argparse.Namespace) -> int:
    import torch

    from .audit import load_audited_model, markdown, plot, run_audit, summary_lines
    from .data import checkpoint_data, load_dataset, stratified_slice
    from .provenance import provenance

    torch.set_num_threads(args.threads)
    try:
        model, meta = load_audited_model(
            args.model,
            args.input_size,
            args.channels,
            tuple(args.mean) if args.mean else None,
            tuple(args.std) if args.std else None,
        )
    except ValueError as exc:
        print(f"eat audit: {exc}", file=sys.stderr)
        return 2
    if args.data is None:  # an `eat train` checkpoint's own data, where training found it
        name, data_dir = checkpoint_data(meta, None, args.data_dir)
    elif Path(args.data).is_dir():
        name, data_dir = "folder", args.data
    else:
        name, data_dir = args.data, args.data_dir
    size = int(meta["input_size"])
    _, test = load_dataset(
        name, "standard", data_dir, False, image_size=size, channels=meta["channels"]
    )
    test = stratified_slice(test, args.max_images, seed=0) if args.max_images else test
    surrogate = None
    if args.surrogate:
        surrogate, _ = load_audited_model(args.surrogate, size, meta["channels"])
    strengths = ("standard", "strong") if args.strength == "both" else (args.strength,)
    label = Path(args.model.rstrip("/")).name.replace(":", "-")
    out = Path(args.out) if args.out else Path("results/audit") / label
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    card = run_audit(
        model,
        test,
        input_size=size,
        strengths=strengths,
        surrogate=surrogate,
        seed=args.seed,
        progress=not args.quiet,
    )
    record = {
        "model": args.model,
        "format": meta["format"],
        "fingerprint": meta.get("fingerprint"),
        "data": name if name != "folder" else str(data_dir),
        "data_dir": None if data_dir is None else str(data_dir),
        "surrogate": args.surrogate,
        "threads": args.threads,
        **card,
        "audit_wall_s": round(time.perf_counter() - started, 1),
        "provenance": provenance(),
    }
    write_json(out / "audit.json", record)
    (out / "audit.md").write_text(markdown(card, label, record["provenance"]))
    plots = plot(card, out, label)
    print("\n".join(summary_lines(card, label)))
    print(f"\ncard written to {out}/audit.md ({', '.join(p.name for p in plots)}, audit.json)")
    return 0


def _add_test_set_flags(p: argparse.ArgumentParser, max_test_help: str) -> None:
    """The flags that pick the test set a checkpoint is scored on (eval and attack)."""
    p.add_argument("--dataset", default=None, help="override the dataset stored in the checkpoint")
    p.add_argument("--split", default=None, help="override the split stored in the checkpoint")
    p.add_argument("--data-dir", default=None, help="where the data is (see 'eat train --help')")
    p.add_argument(
        "--download", action="store_true", help="allow downloading Fashion-MNIST if not found"
    )
    p.add_argument("--max-test", type=int, default=None, help=max_test_help)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``attack`` to the ``eat`` command's subparsers."""
    from .attacks import ATTACKS, DEFAULT_EPS, DEFAULT_STEPS, QUERY_NEIGHBOURS, STRENGTHS
    from .defenses import OPTION_GROUPS, option_owners
    from .train import TrainConfig

    p = sub.add_parser(
        "train",
        help="train an embedding model (or ensemble) and save a checkpoint",
        description="Train a DML model with a defense and save safetensors + JSON config.",
    )
    own = {f.name for group in OPTION_GROUPS for f in dataclasses.fields(group)}
    add_dataclass_arguments(p, TrainConfig, skip=tuple(own))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for group in OPTION_GROUPS:
        owners = option_owners(group)
        title = f"{', '.join(owners)} options" if len(owners) < 3 else "adversarial defenses"
        add_dataclass_arguments(p.add_argument_group(title, group.__doc__), group)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="retrieval and clustering metrics of a checkpoint on its test set",
        description="Embed the test set (query = gallery, query excluded) and report "
        "Recall@1/2/4/8, mAP@R, and NMI / pairwise F1 / ARI of k-means "
        "with K = number of classes.",
    )
    p.add_argument("checkpoint", help="checkpoint directory written by 'eat train'")
    _add_test_set_flags(p, "evaluate on a stratified slice of this size")
    p.add_argument(
        "--batch-size", type=int, default=512, help="embedding batch size (default: 512)"
    )
    add_run_flags(p, "metrics JSON path (default: CHECKPOINT/eval.json)", "k-means seed")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "attack",
        help="clean vs attacked metrics of a checkpoint under an L-inf attack, or a suite (ERS)",
        description="Attack the deployed embedding (an ensemble's averaged embedding) on the "
        "test set (query set = gallery), one attack (--attack) or RobRank's ten with their "
        "Empirical Robustness Score (--suite ers, at RobRank's budget: eps 77/255, step 3/255, "
        "32 steps for 28x28 data). --strength strong takes each image at its worst case over "
        "the standard run, PGD with restarts and APGD-100 (and 3 target draws for the "
        "clustering attack), with no step size or count to choose.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="attacks:\n"
        + "\n".join(f"  {a.name:8s} {a.label}: {a.summary}" for a in ATTACKS.values()),
    )
    p.add_argument("checkpoint", help="checkpoint directory written by 'eat train'")
    p.add_argument(
        "--attack",
        default=None,
        choices=list(ATTACKS),
        help="one attack (listed below)",
    )
    p.add_argument(
        "--suite",
        default=None,
        choices=sorted({s for a in ATTACKS.values() for s in a.suite}),
        help="ers: RobRank's ten ranking attacks and ERS",
    )
    p.add_argument(
        "--strength",
        default="standard",
        choices=STRENGTHS,
        help="standard: one run; strong: the per-image worst case over PGD, PGD with "
        "restarts and APGD (default: %(default)s)",
    )
    p.add_argument(
        "--eps",
        type=float,
        default=None,
        help=f"L-inf budget, pixels in [0, 1] (default: {DEFAULT_EPS}; a suite: RobRank's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"PGD steps (default: {DEFAULT_STEPS}; a suite: RobRank's 32)",
    )
    p.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="PGD step size (default: max(eps/8, 2.5*eps/steps); a suite: 3/255)",
    )
    p.add_argument(
        "--restarts", type=int, default=None, help="random restarts, best kept (default: 1)"
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of the test images attacked, the rest stay clean (default: 1.0)",
    )
    p.add_argument(
        "--neighbours",
        type=int,
        default=QUERY_NEIGHBOURS,
        help="qa: how many clean same-class neighbours a query is pushed from "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--surrogate",
        default=None,
        help="transfer mode: craft on this checkpoint, evaluate on CHECKPOINT",
    )
    _add_test_set_flags(p, "attack a stratified slice of this size")
    p.add_argument(
        "--batch-size", type=int, default=256, help="images attacked at once (default: 256)"
    )
    add_run_flags(
        p,
        "result JSON path (default: CHECKPOINT/attack_<ATTACK>.json)",
        "seed of random starts, attacked subset, targets and k-means",
    )
    p.set_defaults(func=_cmd_attack)

    p = sub.add_parser(
        "audit",
        help="a robustness card for any embedding model (ERS, clustering attack, strong)",
        description="Audit any embedding model for retrieval and clustering: clean R@k, mAP@R "
        "and NMI; RobRank's ten attacks and ERS at RobRank's budget; the clustering attack "
        "(all images, p 0.1, p 0.3) and ES / QA at the headline eps; an eps sweep; the "
        "gradient-masking checks; each robust number standard and strong (the per-image worst "
        "case over PGD, PGD with restarts and APGD-100). Writes audit.json, audit.md and plots.",
    )
    p.add_argument(
        "model",
        help="an 'eat train' checkpoint directory, a TorchScript file (.pt/.pth/.ts), a "
        "torch.export program (.pt2), or module:function, a factory returning an nn.Module "
        "(this imports and RUNS that code: audit only factories you trust)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="a dataset name (fashion-mnist, cub200, cars196, inshop: under --data-dir or "
        "their default location) or an image folder (root/class/*.jpg); its test split is "
        "used (default: an 'eat train' checkpoint's own dataset, where training found it; "
        "fashion-mnist for other models)",
    )
    p.add_argument("--data-dir", default=None, help="where the data is (see 'eat train --help')")
    p.add_argument(
        "--max-images",
        type=int,
        default=2000,
        help="audit a stratified slice of this many test images (0: all; default: %(default)s)",
    )
    p.add_argument(
        "--strength",
        default="both",
        choices=("standard", "strong", "both"),
        help="which evaluations to run (default: %(default)s)",
    )
    p.add_argument("--input-size", type=int, default=None, help="foreign models: input side length")
    p.add_argument("--channels", type=int, default=None, help="foreign models: input channels")
    p.add_argument(
        "--mean",
        type=float,
        nargs="+",
        default=None,
        help="foreign models: per-channel mean subtracted inside (default: none, [0, 1] input)",
    )
    p.add_argument(
        "--std", type=float, nargs="+", default=None, help="foreign models: per-channel std"
    )
    p.add_argument(
        "--surrogate",
        default=None,
        help="a model to craft transfer attacks on, for the masking check (default: none)",
    )
    add_run_flags(
        p,
        "output folder (default: results/audit/<model name>)",
        "seed of random starts, targets and k-means",
    )
    p.set_defaults(func=_cmd_audit)


def build_parser(registrars=()) -> argparse.ArgumentParser:
    """The ``eat`` parser: this package's commands plus those of ``registrars``.

    Packages downstream of ``eat_models`` (``index``, ``app``) pass their own
    ``register(sub)`` functions here, so dependencies point one way.
    """
    parser = argparse.ArgumentParser(
        prog="eat",
        description="Adversarially robust deep metric learning with EAT "
        "(Ensemble Adversarial Training).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    for extra in registrars:
        extra(sub)
    return parser


def main(argv: list[str] | None = None, registrars=()) -> int:
    """Parse ``argv`` and run the chosen command; known user errors exit 2 with one message."""
    parser = build_parser(registrars)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .checkpoint import CheckpointError
    from .data import DatasetNotFoundError

    try:
        return args.func(args)
    except (DatasetNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"error: 'eat {args.command}' needs {exc.name}, which the core install lacks: "
            f"pip install '.[{extra}]' (or '.[all]')",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
