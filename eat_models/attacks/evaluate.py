"""The evaluation driver: embed a set, attack it, score it; one attack or a whole suite.

``strength``:

* ``"standard"``: one run under the given budget (the headline PGD-20, or RobRank's PGD-32
  for the ERS suite);
* ``"strong"``: each sample at its worst case — the highest value of the attack's own
  objective — over the standard run, PGD with :data:`~.budget.STRONG_RESTARTS` random
  restarts and APGD with :data:`~.budget.APGD_ITERATIONS` iterations; attacks with random
  targets drawn per set (the clustering attack) also take the worst score over
  :data:`~.budget.STRONG_TARGET_DRAWS` target draws. Nothing is asked of the user: no
  step size, no step count.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..evaluate import embed, kmeans_assign
from ..modes import eval_mode
from .base import QUERY_NEIGHBOURS, AttackSet, Scored, get_attack, select, subset, suite
from .budget import (
    APGD_ITERATIONS,
    ROBRANK_28,
    ROBRANK_STEP_28,
    ROBRANK_STEPS,
    STRONG_RESTARTS,
    STRONG_TARGET_DRAWS,
    AttackBudget,
)
from .ers import ers, ers_terms, raw_scores
from .keys import STRENGTHS
from .pgd import perturb

log = logging.getLogger(__name__)


def strong_runs(budget: AttackBudget) -> list[AttackBudget]:
    """The runs the strong evaluation takes the per-sample worst case over."""
    return [
        budget,
        budget.replace(restarts=STRONG_RESTARTS, random_start=True),
        AttackBudget(budget.eps, APGD_ITERATIONS, random_start=True, method="apgd"),
    ]


def describe(budget: AttackBudget) -> str:
    if budget.method == "apgd":
        return f"APGD-{budget.steps}" + (f"×{budget.restarts}" if budget.restarts > 1 else "")
    start = "random start" if budget.random_start else "from the clean image"
    restarts = f" × {budget.restarts} restarts" if budget.restarts > 1 else ""
    return f"PGD-{budget.steps} (step {budget.alpha:.4g}, {start}){restarts}"


def robrank_budget(input_size: int) -> AttackBudget:
    """RobRank's ERS budget for the input size: ε 77/255 for 28×28 data, 8/255 above."""
    if input_size <= 32:
        return ROBRANK_28
    return AttackBudget(8 / 255, ROBRANK_STEPS, ROBRANK_STEP_28, random_start=False)


def worst_case(
    crafter: nn.Module, x: torch.Tensor, objective, candidates: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the candidate with the highest objective: ``(x̃ [B, ...], values [B, R])``."""
    with torch.no_grad(), eval_mode(crafter):
        values = torch.stack([objective(crafter(c)) for c in candidates], dim=1)
    best = values.argmax(dim=1)
    stacked = torch.stack(candidates, dim=1)
    return stacked[torch.arange(len(x)), best], values


def _batches(n: int, batch_size: int, progress: bool, desc: str):
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        yield np.arange(start, min(n, start + batch_size))


def evaluate_attack(
    model: nn.Module,
    dataset,
    attack: str,
    budget: AttackBudget | None = None,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    batch_size: int = 256,
    progress: bool = False,
    k: int = QUERY_NEIGHBOURS,
    strength: str = "standard",
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    cache: dict | None = None,
) -> dict:
    """Attack ``dataset`` and report clean vs attacked metrics of the deployed ``model``.

    The dataset is both query set and gallery (each query excluded from its own
    ranking). A seeded random ``fraction`` of the images is attacked (default all); the
    rest stay clean. The attack (a name in :data:`~.base.ATTACKS`) draws its targets from
    what the attacker sees, crafts, and scores itself (see each attack's module).

    Transfer mode: with ``surrogate``, everything the attacker computes (clean gallery,
    neighbours, k-means centroids, gradients) comes from the surrogate; the results are
    measured on ``model``. ``embeddings``: the clean ``(model, crafter)`` embeddings of
    ``dataset`` when the caller has them already (a suite embeds once). ``cache``: a dict
    shared between calls on the same model and data (white-box only), holding each batch's
    adversarial images of the first target draw per (attack, fraction, seed, run), so the
    strong evaluation reuses the standard run it contains instead of crafting it again.

    Returns a dict: ``clean`` and ``attacked`` metric dicts, ``mean_embedding_shift``
    (mean ‖F(x̃) − F(x)‖ over attacked images, on ``model``), the settings, the runs
    (``strong``: each one's description; ``draws``: each target draw's attacked metrics),
    counts and timings in seconds (``clean_s``, ``attack_s``, ``total_s``).
    """
    spec = get_attack(attack)
    budget = budget if budget is not None else AttackBudget()
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {STRENGTHS}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    started = time.perf_counter()
    crafter = surrogate if surrogate is not None else model
    labels = np.asarray(dataset.labels)
    n = len(labels)
    if embeddings is not None:
        clean, crafter_clean = embeddings
    else:
        clean = embed(model, dataset, batch_size=batch_size, progress=progress, desc="clean")
        crafter_clean = (
            clean
            if surrogate is None
            else embed(
                surrogate, dataset, batch_size=batch_size, progress=progress, desc="surrogate"
            )
        )
    clean_s = time.perf_counter() - started

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))
    n_classes = len(np.unique(labels))
    assign = centroids = None
    if "centroids" in spec.needs:
        assign, centroids = kmeans_assign(crafter_clean, n_classes, seed=seed)
    runs = strong_runs(budget) if strength == "strong" else [budget]
    draws = STRONG_TARGET_DRAWS if strength == "strong" and "centroids" in spec.needs else 1
    gallery = torch.from_numpy(crafter_clean)
    index = torch.from_numpy(rows)

    attack_started = time.perf_counter()
    outcomes = []
    for draw in range(draws):
        attack_set = AttackSet(
            clean=gallery[index],
            labels=torch.from_numpy(labels)[index],
            gallery=gallery,
            gallery_labels=torch.from_numpy(labels),
            self_index=index,
            centroids=None if centroids is None else torch.from_numpy(centroids),
            assignments=None if assign is None else torch.from_numpy(assign)[index],
            rng=rng if draw == 0 else np.random.default_rng((seed, draw)),
            neighbours=k,
        )
        targets = spec.targets(attack_set)
        generators = [
            torch.Generator().manual_seed(seed + 1000 * i + 100_000 * draw)
            for i in range(len(runs))
        ]
        adversarial = clean.copy()
        standard = clean.copy() if len(runs) > 1 and draw == 0 else None
        for pos in _batches(len(rows), batch_size, progress, f"attack {attack}"):
            x = dataset.batch(rows[pos])
            sub = subset(attack_set, torch.from_numpy(pos))
            objective = spec.objective(select(targets, torch.from_numpy(pos)), sub)
            candidates = []
            for run, g in zip(runs, generators, strict=True):
                key = (attack, fraction, seed, run, draw, int(pos[0]))
                if cache is not None and surrogate is None and key in cache:
                    candidates.append(cache[key])
                    continue
                candidates.append(perturb(crafter, x, objective, run, g))
                if cache is not None and surrogate is None and run == runs[0] and draw == 0:
                    cache[key] = candidates[-1]
            x_adv = candidates[0]
            if len(candidates) > 1:
                x_adv = worst_case(crafter, x, objective, candidates)[0]
            with torch.no_grad(), eval_mode(model):
                adversarial[rows[pos]] = model(x_adv).numpy()
                if standard is not None:
                    standard[rows[pos]] = model(candidates[0]).numpy()
        scored_targets = {key: value.numpy() for key, value in targets.items()}
        # the worst case first, so that a tie on the headline keeps it
        for embeddings, runs_used in ((adversarial, runs), (standard, runs[:1])):
            if embeddings is None:
                continue
            scored = Scored(clean, embeddings, labels, rows, scored_targets, seed, n_classes)
            outcomes.append(
                {
                    "draw": draw,
                    "runs": [describe(run) for run in runs_used],
                    "attacked": spec.score(scored),
                    "adversarial": embeddings,
                    "targets": scored_targets,
                }
            )
    attack_s = time.perf_counter() - attack_started

    # strong: the least robust outcome by the attack's headline metric, over the target
    # draws and, on the first draw, the standard run alone (never weaker than it)
    worst = outcomes[0]
    for outcome in outcomes[1:]:
        if spec.less_robust(outcome["attacked"], worst["attacked"]):
            worst = outcome
    attacked_metrics, adversarial = worst["attacked"], worst["adversarial"]
    scored_targets = worst["targets"]
    clean_metrics = spec.score(Scored(clean, clean, labels, rows, scored_targets, seed, n_classes))
    shift = np.linalg.norm(adversarial - clean, axis=1)[rows]
    record = {
        "attack": attack,
        "label": spec.label,
        "eps": budget.eps,
        "steps": budget.steps,
        "step_size": budget.alpha,
        "restarts": budget.restarts,
        "random_start": budget.random_start,
        "strength": strength,
        "runs": [describe(run) for run in runs],
        "fraction": fraction,
        "seed": seed,
        "neighbours": k if spec.uses_neighbours else None,
        "transfer": surrogate is not None,
        "images": n,
        "attacked_images": len(rows),
        "clean": clean_metrics,
        "attacked": attacked_metrics,
        "mean_embedding_shift": float(shift.mean()) if len(shift) else 0.0,
        "clean_s": round(clean_s, 3),
        "attack_s": round(attack_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }
    if len(outcomes) > 1:
        record["candidates"] = [
            {"draw": o["draw"], "runs": o["runs"], "attacked": o["attacked"]} for o in outcomes
        ]
    return record


def evaluate_suite(
    model: nn.Module,
    dataset,
    name: str = "ers",
    budget: AttackBudget | None = None,
    *,
    seed: int = 0,
    strength: str = "standard",
    batch_size: int = 256,
    progress: bool = False,
    cache: dict | None = None,
) -> dict:
    """Every attack of suite ``name`` on all of ``dataset`` (the gallery), one embedding
    pass shared; for ``"ers"`` also RobRank's raw scores, the ten rescaled terms and ERS.
    ``budget`` default: :func:`robrank_budget` for the model's input size."""
    attacks = suite(name)
    if budget is None:
        size = int(dataset.batch(np.arange(1)).shape[-1])
        budget = robrank_budget(size)
    started = time.perf_counter()
    clean = embed(model, dataset, batch_size=batch_size, progress=progress, desc="clean")
    results = {}
    for spec in tqdm(attacks, desc=f"{name} suite", disable=not progress, leave=False):
        results[spec.name] = evaluate_attack(
            model,
            dataset,
            spec.name,
            budget,
            seed=seed,
            strength=strength,
            batch_size=batch_size,
            progress=progress,
            embeddings=(clean, clean),
            cache=cache,
        )
    record = {
        "suite": name,
        "strength": strength,
        "eps": budget.eps,
        "steps": budget.steps,
        "step_size": budget.alpha,
        "random_start": budget.random_start,
        "images": len(dataset),
        "attacks": results,
        "total_s": round(time.perf_counter() - started, 3),
    }
    if name == "ers":
        attacked = {a: r["attacked"] for a, r in results.items()}
        record["raw"] = raw_scores(attacked)
        record["terms"] = ers_terms(attacked)
        record["ers"] = ers(attacked)
        record["clean_ers"] = ers({a: r["clean"] for a, r in results.items()})
    return record
