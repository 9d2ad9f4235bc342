"""The ``eat`` commands that measure rather than serve: ``eat bench``, ``eat speed`` and
``eat index bench`` (registered on the console script by :mod:`eat_command`)."""

from __future__ import annotations

import argparse
import json


def _cmd_speed(args: argparse.Namespace) -> int:
    from .speed import run_speed_benchmark

    record = run_speed_benchmark(
        args.checkpoint, args.batch_size, args.repeats, args.threads, args.out
    )
    print(json.dumps(record["results"], indent=2))
    if args.out:
        print(f"\nwritten to {args.out}")
    return 0


def _cmd_index_bench(args: argparse.Namespace) -> int:
    from .index_bench import run_from_args

    return run_from_args(args)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``speed``, and ``bench`` under ``index`` when that command exists."""
    from .index_bench import add_bench_arguments
    from .robustness.cli import add_bench_command

    add_bench_command(sub)
    p = sub.add_parser(
        "speed",
        help="embedding throughput benchmark (images/s, median of repeats)",
        description="Measure embedding throughput of a checkpoint on random inputs of "
        "its input shape; for an ensemble also each member alone.",
    )
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument(
        "--batch-size", type=int, default=256, help="images per forward pass (default: 256)"
    )
    p.add_argument("--repeats", type=int, default=30, help="timed forward passes (default: 30)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.set_defaults(func=_cmd_speed)

    if "index" in sub.choices:
        p = _subcommands(sub.choices["index"]).add_parser(
            "bench",
            help="benchmark index kinds (build time, latency, memory, recall)",
            description="Benchmark flat, hnsw and ivf-pq against numpy and scikit-learn brute "
            "force on Fashion-MNIST embeddings (10k) and synthetic 128-d vectors (100k, 1M).",
        )
        add_bench_arguments(p)
        p.set_defaults(func=_cmd_index_bench)
