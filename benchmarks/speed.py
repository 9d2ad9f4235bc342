"""Embedding throughput benchmark (a command, not a timed test)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from eat_models.attacks import DEFAULT_EPS
from eat_models.checkpoint import load_model
from eat_models.files import write_json
from eat_models.provenance import provenance


@torch.inference_mode()
def time_forward(
    model: nn.Module, batch: torch.Tensor, repeats: int, warmup: int = 5
) -> list[float]:
    """Wall seconds of ``repeats`` forward passes of ``batch`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return times


def throughput(model: nn.Module, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    times = sorted(time_forward(model, batch, repeats))
    median = statistics.median(times)
    return {
        "images_per_s_median": round(len(batch) / median, 1),
        "batch_ms_median": round(1000 * median, 3),
        "batch_ms_p95": round(1000 * times[min(len(times) - 1, int(0.95 * len(times)))], 3),
    }


def pgd_latency(
    model: nn.Module, image: torch.Tensor, steps: int, repeats: int, eps: float = DEFAULT_EPS
) -> dict[str, float]:
    """Seconds for one embedding-shift PGD attack on one image (median, p95, of ``repeats``)."""
    from eat_models.attacks import AttackBudget, embedding_shift_attack

    embedding_shift_attack(model, image, AttackBudget(eps, steps))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedding_shift_attack(model, image, AttackBudget(eps, steps))
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "steps": steps,
        "eps": eps,
        "seconds_median": round(statistics.median(times), 4),
        "seconds_p95": round(times[min(len(times) - 1, int(0.95 * len(times)))], 4),
    }


def run_speed_benchmark(
    checkpoint: str,
    batch_size: int = 256,
    repeats: int = 30,
    threads: int = 2,
    out: str | None = None,
) -> dict:
    """Throughput of the deployed model (and of one member, for an ensemble), and the time
    of one PGD-20 embedding-shift attack on one image against the deployed model."""
    torch.set_num_threads(threads)
    model = load_model(checkpoint)
    c, h, w = model.expected_shape
    batch = torch.rand(batch_size, c, h, w, generator=torch.Generator().manual_seed(0))
    results = {
        "model": {
            "kind": model.meta["kind"],
            "members": model.meta["num_members"],
            **throughput(model, batch, repeats),
        }
    }
    if len(model.members) > 1:
        member = throughput(model.members[0], batch, repeats)
        results["single_member"] = member
        results["ensemble_over_member_time_ratio"] = round(
            results["model"]["batch_ms_median"] / member["batch_ms_median"], 2
        )
    results["pgd20_one_image"] = pgd_latency(model, batch[:1], steps=20, repeats=max(5, repeats))
    record = {
        **provenance(),
        "checkpoint": str(checkpoint),
        "batch_size": batch_size,
        "repeats": repeats,
        "results": results,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), record)
    return record
