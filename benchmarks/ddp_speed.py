"""``python -m benchmarks.ddp_speed``: one training run in one process vs under torchrun.

Runs the same ``eat train`` (same global batch, same steps) as one process and as
``torchrun --nproc_per_node N`` (gloo, CPU), each in a fresh subprocess, and records the
wall time of the training loop as each checkpoint reports it, the steps and the median
step time. Writes ``results/speed/ddp.json`` and ``ddp.md`` with the command, commit, date
and load average. On a machine with fewer cores than ranks × threads the ranks share the
cores, so no speed-up is expected there; the point is to measure the overhead honestly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eat_models.files import write_json
from eat_models.provenance import provenance

from . import command_parser

DEFAULT_OUT = Path("results/speed")


def _run(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("ddp_speed", __doc__)
    parser.add_argument(
        "--defense", default="pgd-at", help="defense trained (default: %(default)s)"
    )
    parser.add_argument("--ranks", type=int, default=2, help="torchrun processes (default: 2)")
    parser.add_argument(
        "--max-train", type=int, default=12000, help="training images (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process; the single process gets ranks × this (default: 1)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    common = [
        "--defense", args.defense, "--max-train", str(args.max_train), "--epochs",
        str(args.epochs), "--width", "16", "--quiet",
    ]  # fmt: skip
    runs = {}
    with tempfile.TemporaryDirectory(prefix="eat-ddp-speed-") as tmp:
        single_out = Path(tmp) / "single"
        single_threads = str(args.threads * args.ranks)
        wall = _run(
            [sys.executable, "-m", "eat_command", "train", *common, "--threads", single_threads,
             "--out", str(single_out)]
        )  # fmt: skip
        runs["1 process"] = (single_out, wall, int(single_threads))
        ddp_out = Path(tmp) / "ddp"
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        wall = _run(
            [*torchrun, f"--nproc_per_node={args.ranks}", "-m", "eat_command", "train", *common,
             "--threads", str(args.threads), "--out", str(ddp_out)]
        )  # fmt: skip
        runs[f"torchrun {args.ranks} ranks"] = (ddp_out, wall, args.threads)
        rows = {}
        for name, (path, wall, threads) in runs.items():
            record = json.loads((path / "config.json").read_text())["train"]
            rows[name] = {
                "world_size": record["world_size"],
                "threads_per_process": threads,
                "global_batch_size": record["global_batch_size"],
                "steps": record["steps"],
                "train_loop_s": record["train_wall_s"],
                "step_median_s": record["step_seconds_median"],
                "command_wall_s": round(wall, 1),
            }
    base = rows["1 process"]["train_loop_s"]
    for row in rows.values():
        row["speedup_vs_1_process"] = round(base / row["train_loop_s"], 2)
    record = {
        **provenance(),
        "load_average_before": [round(x, 2) for x in load_before],
        "cpu_count": os.cpu_count(),
        "settings": vars(args),
        "runs": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ddp.json", record)
    lines = [
        "# Data-parallel training: one process vs torchrun",
        "",
        f"`{record['command']}` at commit `{record['commit']}`, {record['date']}, load average "
        f"before {load_before[0]:.2f}, {os.cpu_count()} CPUs. `eat train --defense "
        f"{args.defense}`, {args.max_train} images, {args.epochs} epoch(s), width 16; gloo.",
        "",
        "| run | ranks | threads each | global batch | steps | training loop | step median "
        "| speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['world_size']} | {row['threads_per_process']} | "
            f"{row['global_batch_size']} | {row['steps']} | {row['train_loop_s']:.1f} s | "
            f"{row['step_median_s'] * 1000:.0f} ms | {row['speedup_vs_1_process']:.2f}× |"
        )
    (out / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
