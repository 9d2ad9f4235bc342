"""``python -m benchmarks.train_speed``: what one training step costs, and what makes it cheaper.

Times real training steps (the defense's PGD crafting, its loss, backward, AdamW) on real
Fashion-MNIST batches, with the benchmark's networks (small CNN width 16, 128-d,
Proxy-Anchor, batch 10 × 16, PGD-5 at ε 0.1):

* **cost of each recipe** — PGD-AT, and EAT with and without the term through F or with
  it on every other step — per step and per epoch (per training image: an EAT step takes
  one batch from each of its K members' parts, so an EAT epoch has 1/K of the steps), as
  ratios to PGD-AT measured in the same process;
* **execution options** on the EAT step — ``channels_last``, bf16 autocast on the CPU and
  ``torch.compile`` of the member networks — as speed-ups over plain fp32;
* **the K members as one batched computation**: K member networks as one network of
  grouped convolutions (each member a group), forward and backward of K batches at once,
  against K separate calls. An exact rewrite of the members' crafting and update would
  need this speed-up to be worth it.

Medians over ``--steps`` timed steps after warm-up. Writes ``--out`` (JSON with the command,
commit, date and load average) and prints a table. Run it on a quiet machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eat_models.data import load_fashion_mnist, stratified_slice
from eat_models.defenses import Batch, build_defense
from eat_models.defenses.base import DEFAULT_TRAIN_EPS
from eat_models.files import write_json
from eat_models.losses import MetricLoss
from eat_models.networks import build_network
from eat_models.provenance import provenance
from eat_models.train import TrainConfig, member_samplers, network_config_for

from . import command_parser

log = logging.getLogger(__name__)

RECIPES: dict[str, tuple[str, dict]] = {
    "pgd-at": ("pgd-at", {}),
    "eat": ("eat", {"members": 3}),
    "hm": ("hm", {}),
}


class StepTimer:
    """Builds the members, optimiser and samplers of one recipe and times its steps."""

    def __init__(self, train_set, defense: str, overrides: dict, width: int, seed: int = 0):
        self.config = TrainConfig(defense=defense, width=width, seed=seed, **overrides)
        self.defense = build_defense(defense, self.config)
        net_config = network_config_for(self.config, train_set)
        self.members, self.losses = [], []
        for k in range(self.defense.num_members):
            torch.manual_seed(seed + k)
            self.members.append(build_network(net_config))
            self.losses.append(MetricLoss.for_run(self.config, 10))
        groups = [{"params": [p for m in self.members for p in m.parameters()]}]
        for loss in self.losses:
            groups += loss.parameter_groups(self.defense.learning_rate)
        self.optimiser = torch.optim.AdamW(groups, lr=self.defense.learning_rate)
        self.train_set = train_set
        self.rows = self.defense.member_rows(train_set.labels)
        self.samplers = member_samplers(
            train_set.labels, self.rows, 10, self.config.samples_per_class, seed
        )
        self.labels = torch.as_tensor(train_set.labels)

    def batches(self, channels_last: bool):
        while True:
            for step in zip(*self.samplers, strict=True):
                out = []
                for rows, local in zip(self.rows, step, strict=True):
                    idx = rows[np.asarray(local)]
                    images = self.train_set.batch(idx)
                    if channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    out.append(Batch(images, self.labels[idx]))
                yield out

    def time_steps(
        self, steps: int, warmup: int, channels_last=False, bf16=False, compiled=False
    ) -> list[float]:
        members = self.members
        if channels_last:
            members = [m.to(memory_format=torch.channels_last) for m in members]
        if compiled:
            members = [torch.compile(m) for m in members]
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        times = []
        source = self.batches(channels_last)
        for i in range(warmup + steps):
            batches = next(source)
            start = time.perf_counter()
            for m in members:
                m.train()
            with autocast:
                loss, _ = self.defense.training_loss(members, self.losses, batches)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return times


def grouped_members(members: list[nn.Module]) -> nn.Module:
    """The K small CNNs as one network of grouped convolutions (member k = group k):
    input ``[B, K·C, H, W]`` (member k's batch in channels k·C…), output ``[B, K, D]``.
    Fresh weights (copy the members' in to use it); the input normalisation is left out
    (an elementwise op, negligible in the timing)."""
    k = len(members)
    first = members[0]
    convs = [m for m in first.features if isinstance(m, nn.Conv2d)]
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [
            nn.Conv2d(
                k * conv.in_channels,
                k * conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                bias=False,
                groups=k,
            ),
            nn.BatchNorm2d(k * conv.out_channels),
            nn.ReLU(inplace=True),
        ]
    features = nn.Sequential(*layers)
    head_in, dim = first.head.in_features, first.head.out_features
    heads = nn.Conv1d(k * head_in, k * dim, 1, groups=k)

    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.heads = features, heads

        def forward(self, x):
            h = self.features(x)
            b, c = h.shape[:2]
            per = h.view(b, k, c // k, -1)
            pooled = torch.cat([per.mean(-1), per.amax(-1)], dim=2).reshape(b, -1, 1)
            return nn.functional.normalize(self.heads(pooled).view(b, k, dim), dim=2)

    return Grouped()


def time_member_passes(members: list[nn.Module], batch: int, repeats: int) -> dict:
    """Forward + backward (w.r.t. inputs and weights) of K batches: K calls vs one grouped."""
    k = len(members)
    grouped = grouped_members(members)
    xs = [torch.rand(batch, 1, 28, 28, requires_grad=True) for _ in range(k)]
    stacked = torch.cat(xs, dim=1).detach().requires_grad_(True)

    def separate():
        total = sum(m(x).sum() for m, x in zip(members, xs, strict=True))
        total.backward()

    def together():
        grouped(stacked).sum().backward()

    result = {}
    for name, fn in (("separate", separate), ("grouped", together)):
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[f"{name}_ms"] = round(1000 * statistics.median(times), 2)
    result["speedup"] = round(result["separate_ms"] / result["grouped_ms"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("train_speed", __doc__)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--width", type=int, default=16, help="small-CNN width (benchmark: 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (it compiles for minutes)"
    )
    parser.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    parser.add_argument("--out", default="results/speed/train-step.json", help="JSON output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    train_set, _ = load_fashion_mnist("standard", args.data_dir)
    train_set = stratified_slice(train_set, 12000, 0)

    recipes = {}
    for name, (defense, overrides) in RECIPES.items():
        timer = StepTimer(train_set, defense, overrides, args.width)
        median = statistics.median(timer.time_steps(args.steps, args.warmup))
        members = timer.defense.num_members
        disjoint = defense == "eat" and timer.config.member_split == "stratified"
        recipes[name] = {
            "step_s": round(median, 4),
            "members": members,
            "steps_per_epoch_divisor": members if disjoint else 1,
        }
        log.info("%s: %.3f s/step", name, median)
    reference = recipes["pgd-at"]["step_s"]
    for r in recipes.values():
        r["step_vs_pgd_at"] = round(r["step_s"] / reference, 2)
        r["epoch_vs_pgd_at"] = round(r["step_s"] / r["steps_per_epoch_divisor"] / reference, 2)

    options = {}
    timer = StepTimer(train_set, "eat", {"members": 3}, args.width)
    variants = {
        "fp32": {},
        "channels_last": {"channels_last": True},
        "bf16 autocast": {"bf16": True},
    }
    if not args.no_compile:
        variants["torch.compile"] = {"compiled": True}
    failures = {}
    for name, kwargs in variants.items():
        try:
            options[name] = round(
                statistics.median(timer.time_steps(args.steps, args.warmup, **kwargs)), 4
            )
        except RuntimeError as exc:  # e.g. bf16 gradients meeting fp32 optimiser state
            failures[name] = str(exc).splitlines()[0]
            log.warning("eat step, %s failed: %s", name, failures[name])
            continue
        log.info("eat step, %s: %.3f s", name, options[name])
    speedups = {name: round(options["fp32"] / s, 2) for name, s in options.items()}
    grouped = time_member_passes(timer.members, 160, max(10, args.steps))

    record = {
        **provenance(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "setup": {
            "width": args.width,
            "batch": "10 x 16",
            "train_steps": 5,
            "train_eps": DEFAULT_TRAIN_EPS,
            "threads": args.threads,
            "timed_steps": args.steps,
        },
        "recipes": recipes,
        "eat_step_options_s": options,
        "eat_step_speedup_over_fp32": speedups,
        "eat_step_option_failures": failures,
        "grouped_members_forward_backward": grouped,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out), record)
    print("| recipe | s/step | step vs PGD-AT | epoch vs PGD-AT |")
    print("|---|---:|---:|---:|")
    for name, r in recipes.items():
        ratios = f"{r['step_vs_pgd_at']:.2f}× | {r['epoch_vs_pgd_at']:.2f}×"
        print(f"| {name} | {r['step_s']:.3f} | {ratios} |")
    print()
    print("| EAT step option | s/step | speed-up |")
    print("|---|---:|---:|")
    for name, value in options.items():
        print(f"| {name} | {value:.3f} | {speedups[name]:.2f}× |")
    print(f"\ngrouped members (fwd+bwd of 3 batches of 160): {grouped}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
