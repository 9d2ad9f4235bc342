"""Adversarial attacks on embedding models: one PGD core driven by objective functions.

Threat model (DESIGN.md §3): white-box, the attacker knows the deployed embedding
function — for an ensemble the averaged embedding F, never a single member — and adds an
L∞-bounded perturbation ‖x̃ − x‖∞ ≤ ε to input pixels in [0, 1]. Any normalisation lives
inside the model, so the attack works in pixel space.

One PGD loop (:func:`pgd`) serves every attack; an attack is an *objective*: a callable
that maps the embeddings of the perturbed batch ``[B, D]`` to the value the attacker
maximises, either per sample ``[B]`` or one scalar for the whole batch (a metric loss).

* :func:`embedding_shift_attack` (ES): maximise ‖F(x̃) − F(x)‖.
* :func:`query_attack` (QA−): push each query away from its clean same-class top-k
  gallery neighbours.
* :func:`clustering_attack` (CA): move each image away from its own k-means centroid
  toward a random other one.
* :data:`ATTACKS`: the registry of the three, by name; :func:`craft` runs any of them on a
  batch of tensors under an :class:`AttackBudget` (evaluation, the app's attack lab and
  its "attack this set" all go through it).
* :func:`evaluate_attack`: embed a dataset, attack it (optionally crafting on a
  surrogate: transfer mode), and report clean vs attacked retrieval or clustering metrics,
  stored under :func:`evaluation_key`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .evaluate import (
    clustering_scores,
    embed,
    gallery_retrieval_metrics,
    kmeans_assign,
    retrieval_metrics,
)

log = logging.getLogger(__name__)

QUERY_NEIGHBOURS = 5
#: the evaluation budget of DESIGN.md (the headline): ε = 0.1, PGD-20
DEFAULT_EPS = 0.1
DEFAULT_STEPS = 20

Objective = Callable[[torch.Tensor], torch.Tensor]
"""``objective(embeddings [B, D]) -> [B]`` (per sample) or a scalar (whole batch)."""


# --------------------------------------------------------------------------- PGD core


def default_step_size(eps: float, steps: int) -> float:
    """``max(ε/8, 2.5·ε/steps)``: ε/8 for ≥ 20 steps, Madry's 2.5·ε/steps for few steps."""
    return max(eps / 8, 2.5 * eps / max(steps, 1))


@dataclass(frozen=True)
class AttackBudget:
    """How hard an attack may try: the L∞ radius, PGD steps and step size, restarts, the
    random start, and the seed of its random numbers (None: torch's global RNG)."""

    eps: float = DEFAULT_EPS
    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 0 or self.restarts < 1:
            raise ValueError(
                f"need eps ≥ 0, steps ≥ 0, restarts ≥ 1 (got {self.eps}, {self.steps}, "
                f"{self.restarts})"
            )

    @property
    def alpha(self) -> float:
        """The step size used: ``step_size`` or :func:`default_step_size`."""
        return default_step_size(self.eps, self.steps) if self.step_size is None else self.step_size

    def generator(self) -> torch.Generator | None:
        """A fresh generator seeded with ``seed`` (None without a seed)."""
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def replace(self, **changes) -> AttackBudget:
        return dataclasses.replace(self, **changes)


def evaluation_key(
    attack: str,
    eps: float,
    steps: int,
    *,
    restarts: int = 1,
    fraction: float = 1.0,
    transfer_from: str | None = None,
    seed: int | None = None,
) -> str:
    """The name an evaluation is stored under: ``ca@0.1/20``, plus ``x3`` for restarts,
    ``/p0.1`` for an attacked fraction, ``/from-vanilla`` for transfer, ``/s1`` for a
    seed other than the default one (:func:`parse_evaluation_key` reads it back)."""
    key = f"{attack}@{eps:g}/{steps}"
    if restarts > 1:
        key += f"x{restarts}"
    if fraction < 1:
        key += f"/p{fraction:g}"
    if transfer_from:
        key += f"/from-{transfer_from}"
    if seed is not None:
        key += f"/s{seed}"
    return key


_KEY = re.compile(
    r"^(?P<attack>\w+)@(?P<eps>[0-9.e+-]+)/(?P<steps>\d+)(?:x(?P<restarts>\d+))?"
    r"(?:/p(?P<fraction>[0-9.e+-]+))?(?:/from-(?P<transfer_from>[\w-]+?))?(?:/s(?P<seed>\d+))?$"
)


def parse_evaluation_key(key: str) -> dict | None:
    """The settings of an :func:`evaluation_key` (None for another key, e.g. ``clean``)."""
    match = _KEY.match(key)
    if match is None:
        return None
    g = match.groupdict()
    return {
        "attack": g["attack"],
        "eps": float(g["eps"]),
        "steps": int(g["steps"]),
        "restarts": int(g["restarts"] or 1),
        "fraction": float(g["fraction"] or 1.0),
        "transfer_from": g["transfer_from"],
        "seed": None if g["seed"] is None else int(g["seed"]),
    }


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    objective: Objective,
    eps: float,
    steps: int,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L∞ projected gradient ascent on ``objective(model(x̃))`` (Madry et al., 2018).

    Threat model: white-box, ‖x̃ − x‖∞ ≤ ``eps``, pixels in [0, 1].

    Each restart starts at ``x`` plus uniform noise in [−ε, ε] (``random_start``), then
    repeats ``steps`` times: gradient of the objective w.r.t. the input only
    (``torch.autograd.grad``), a signed step of ``step_size``, projection onto the ε-ball
    around ``x``, clamp to [0, 1], detach. The best iterate by objective is returned —
    per sample for a ``[B]`` objective, for the whole batch for a scalar one — over all
    iterates of all restarts, so more restarts never lower the objective. The model runs
    in eval mode; each submodule's mode is restored afterwards.

    Args:
        model: maps ``[B, C, H, W]`` in [0, 1] to embeddings ``[B, D]``.
        x: clean images ``[B, C, H, W]`` in [0, 1].
        objective: ``embeddings [B, D] -> [B]`` or scalar, the value to maximise.
        eps: L∞ radius ε (e.g. 0.1 for Fashion-MNIST).
        steps: gradient steps per restart (≥ 20 for evaluation, 5 for training).
        step_size: step α; default :func:`default_step_size` ``max(ε/8, 2.5·ε/steps)``.
        restarts: independent random starts (default 1).
        random_start: start from a uniform random point of the ball (default True).
        generator: torch generator for the random starts (default: the global RNG).

    Returns:
        ``x̃`` ``[B, C, H, W]``, detached, with ``‖x̃ − x‖∞ ≤ ε`` and pixels in [0, 1].

    Example:
        >>> clean = model(x).detach()
        >>> x_adv = pgd(model, x, lambda e: (e - clean).pow(2).sum(1), eps=0.1, steps=20)
    """
    if eps < 0 or steps < 0 or restarts < 1:
        raise ValueError(f"need eps ≥ 0, steps ≥ 0, restarts ≥ 1 (got {eps}, {steps}, {restarts})")
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    best_x, best_value = x.clone(), None

    def keep_best(candidate: torch.Tensor, value: torch.Tensor) -> None:
        nonlocal best_x, best_value
        value = value.detach()
        if best_value is None:
            best_x, best_value = candidate.clone(), value.clone()
            return
        better = value > best_value
        if value.dim() == 0:
            if better:
                best_x, best_value = candidate.clone(), value.clone()
            return
        best_x[better] = candidate[better]
        best_value = torch.where(better, value, best_value)

    with eval_mode(model):
        for _ in range(restarts):
            adv = x.clone()
            if random_start:
                noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
                adv = torch.min(torch.max(x + noise, lower), upper)
            for _ in range(steps):
                adv.requires_grad_(True)
                value = objective(model(adv))
                if value.requires_grad:
                    (grad,) = torch.autograd.grad(value.sum(), adv)
                else:  # an objective constant in x (e.g. a loss with nothing to mine)
                    grad = torch.zeros_like(adv)
                adv = adv.detach()
                keep_best(adv, value)
                adv = torch.min(torch.max(adv + alpha * grad.sign(), lower), upper)
            with torch.no_grad():
                keep_best(adv, objective(model(adv)))
    return best_x


# --------------------------------------------------------------------------- objectives


def embedding_shift_objective(clean_embeddings: torch.Tensor) -> Objective:
    """Per-sample ``‖e − e_clean‖²`` (same maximiser and gradient sign as ‖e − e_clean‖)."""
    clean = clean_embeddings.detach()
    return lambda embeddings: (embeddings - clean).pow(2).sum(dim=1)


def query_objective(neighbours: torch.Tensor, valid: torch.Tensor | None = None) -> Objective:
    """Per-sample minus the mean similarity to the query's neighbours ``[B, k, D]``.

    On the unit sphere ``‖e − g‖² = 2 − 2⟨e, g⟩``, so this maximises the mean distance.
    ``valid [B, k]`` masks padding (queries with fewer than k same-class neighbours).
    """
    neighbours = neighbours.detach()
    if valid is None:
        valid = torch.ones(neighbours.shape[:2], dtype=torch.bool)
    weights = valid.float() / valid.float().sum(dim=1, keepdim=True).clamp(min=1)
    return lambda embeddings: -(torch.einsum("bd,bkd->bk", embeddings, neighbours) * weights).sum(1)


def clustering_objective(own_centroids: torch.Tensor, target_centroids: torch.Tensor) -> Objective:
    """Per-sample ``d(e, c_own) − d(e, c_target)`` with Euclidean distance d."""
    own, target = own_centroids.detach(), target_centroids.detach()
    return lambda embeddings: (
        torch.linalg.vector_norm(embeddings - own, dim=1)
        - torch.linalg.vector_norm(embeddings - target, dim=1)
    )


# --------------------------------------------------------------------------- attacks


def _clean_embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return model(x.detach())


def embedding_shift_attack(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    **budget,
) -> torch.Tensor:
    """Embedding-shift attack (ES): maximise ‖F(x̃) − F(x)‖ within the L∞ ε-ball.

    Untargeted and label-free: it moves each embedding as far as it can from where it
    was. ``budget``: the other :class:`AttackBudget` fields (``step_size``, ``restarts``,
    ``random_start``); ``x`` ``[B, C, H, W]`` in [0, 1] → ``x̃`` of the same shape.

    Example:
        >>> x_adv = embedding_shift_attack(model, x, eps=0.1, steps=20)
        >>> shift = (model(x_adv) - model(x)).norm(dim=1)
    """
    return craft(model, x, "es", AttackBudget(eps, steps, **budget), generator=generator)


def query_neighbours(
    query_embeddings: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    gallery_labels: torch.Tensor,
    k: int = QUERY_NEIGHBOURS,
    exclude_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``[B, k]`` of each query's k most similar same-class gallery items.

    ``exclude_index [B]`` names each query's own gallery row (−1 or None: none). Returns
    ``(indices, valid)``; ``valid`` is False where a query has fewer than k such items.
    """
    sims = query_embeddings @ gallery_embeddings.T
    sims = sims.masked_fill(query_labels[:, None] != gallery_labels[None, :], -float("inf"))
    if exclude_index is not None:
        rows = torch.nonzero(exclude_index >= 0).squeeze(1)
        sims[rows, exclude_index[rows]] = -float("inf")
    k = min(k, gallery_embeddings.shape[0])
    top = sims.topk(k, dim=1)
    return top.indices, torch.isfinite(top.values)


def query_attack(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    gallery_labels: torch.Tensor,
    *,
    eps: float,
    steps: int,
    k: int = QUERY_NEIGHBOURS,
    exclude_index: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **budget,
) -> torch.Tensor:
    """Retrieval query attack (QA−): push each query away from its same-class neighbours.

    The neighbours are the query's ``k`` (default 5) nearest same-class items of the
    *clean* gallery under ``model``; the attack maximises the query's mean distance to
    them, so true matches fall down the ranking (scored by Recall@1 of the attacked
    queries against the clean gallery).

    Args:
        x: queries ``[B, C, H, W]`` in [0, 1]; ``labels`` ``[B]``.
        gallery_embeddings: clean gallery ``[N, D]`` (L2-normalised); ``gallery_labels [N]``.
        exclude_index: ``[B]`` gallery row of each query itself (−1: not in the gallery).
        eps, steps, generator, budget: as in :func:`embedding_shift_attack`.

    Returns:
        ``x̃`` ``[B, C, H, W]``.

    Example:
        >>> g = model(gallery_images).detach()
        >>> x_adv = query_attack(model, g_x[:8], y[:8], g, y, eps=0.1, steps=20,
        ...                      exclude_index=torch.arange(8))
    """
    targets = AttackTargets(
        labels=labels,
        gallery=gallery_embeddings,
        gallery_labels=gallery_labels,
        exclude_index=exclude_index,
        k=k,
    )
    return craft(model, x, "qa", AttackBudget(eps, steps, **budget), targets, generator)


def random_other_clusters(
    assignments: np.ndarray, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """For each item a cluster id drawn uniformly among the ``n_clusters − 1`` others."""
    assignments = np.asarray(assignments)
    if n_clusters < 2:
        raise ValueError("the clustering attack needs at least two clusters")
    offsets = rng.integers(1, n_clusters, size=len(assignments))
    return (assignments + offsets) % n_clusters


def clustering_attack(
    model: nn.Module,
    x: torch.Tensor,
    own_centroids: torch.Tensor,
    target_centroids: torch.Tensor,
    eps: float,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    **budget,
) -> torch.Tensor:
    """Clustering attack (CA): maximise d(F(x̃), c_own) − d(F(x̃), c_target).

    ``own_centroids`` and ``target_centroids`` ``[B, D]`` are, per image, the centroid of
    its clean k-means cluster and of a target cluster (drawn at random among the others
    by :func:`random_other_clusters` — a shared nearest target would only relocate a
    cluster, which NMI does not see). Other args as in :func:`embedding_shift_attack`.

    Example:
        >>> assign, centroids = kmeans_assign(clean_embeddings, 10)
        >>> target = random_other_clusters(assign, 10, np.random.default_rng(0))
        >>> x_adv = clustering_attack(model, x, torch.from_numpy(centroids[assign]),
        ...                           torch.from_numpy(centroids[target]), eps=0.1, steps=20)
    """
    targets = AttackTargets(own_centroids=own_centroids, target_centroids=target_centroids)
    return craft(model, x, "ca", AttackBudget(eps, steps, **budget), targets, generator)


# --------------------------------------------------------------------------- registry


@dataclass
class AttackTargets:
    """What an attack aims at, one row per image of the batch, for the attacks that need it.

    * ``es``: ``clean`` — the clean embeddings (computed from ``x`` when None).
    * ``qa``: ``labels``, the clean ``gallery`` embeddings and ``gallery_labels``, each
      query's own gallery row ``exclude_index`` (−1: not in the gallery), and ``k``.
    * ``ca``: ``own_centroids`` and ``target_centroids``.
    """

    clean: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    gallery: torch.Tensor | None = None
    gallery_labels: torch.Tensor | None = None
    exclude_index: torch.Tensor | None = None
    k: int = QUERY_NEIGHBOURS
    own_centroids: torch.Tensor | None = None
    target_centroids: torch.Tensor | None = None


def _es_objective(model: nn.Module, x: torch.Tensor, t: AttackTargets) -> Objective:
    return embedding_shift_objective(
        t.clean if t.clean is not None else _clean_embeddings(model, x)
    )


def _qa_objective(model: nn.Module, x: torch.Tensor, t: AttackTargets) -> Objective:
    clean = _clean_embeddings(model, x)
    gallery = torch.as_tensor(t.gallery).to(clean)
    exclude = None if t.exclude_index is None else torch.as_tensor(t.exclude_index)
    indices, valid = query_neighbours(
        clean, torch.as_tensor(t.labels), gallery, torch.as_tensor(t.gallery_labels), t.k, exclude
    )
    return query_objective(gallery[indices], valid)


def _ca_objective(model: nn.Module, x: torch.Tensor, t: AttackTargets) -> Objective:
    return clustering_objective(t.own_centroids, t.target_centroids)


@dataclass(frozen=True)
class Attack:
    """One registered attack: its name, what people read, the objective PGD maximises
    (built from the model, the batch and its targets) and the targets it needs."""

    name: str
    label: str
    objective: Callable[[nn.Module, torch.Tensor, AttackTargets], Objective]
    needs: tuple[str, ...] = ()


ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack("es", "embedding shift (ES)", _es_objective),
        Attack(
            "qa",
            "retrieval query attack (QA−)",
            _qa_objective,
            ("labels", "gallery", "gallery_labels"),
        ),
        Attack(
            "ca", "clustering attack (CA)", _ca_objective, ("own_centroids", "target_centroids")
        ),
    )
}


def get_attack(name: str) -> Attack:
    """The registered attack ``name``, or a ValueError that lists them."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name]


def craft(
    model: nn.Module,
    x: torch.Tensor,
    attack: str,
    budget: AttackBudget,
    targets: AttackTargets | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial versions of the batch ``x`` ``[B, C, H, W]`` by attack ``attack`` under
    ``budget``, white-box on ``model``. ``generator``: the random starts' generator (one
    shared across the batches of a set); default ``budget.generator()``."""
    spec = get_attack(attack)
    targets = targets or AttackTargets()
    missing = [name for name in spec.needs if getattr(targets, name) is None]
    if missing:
        raise ValueError(f"the {spec.label} needs {', '.join(missing)}")
    objective = spec.objective(model, x, targets)
    return pgd(
        model,
        x,
        objective,
        budget.eps,
        budget.steps,
        budget.step_size,
        budget.restarts,
        budget.random_start,
        generator if generator is not None else budget.generator(),
    )


# --------------------------------------------------------------------------- evaluation


def _batches(rows: np.ndarray, batch_size: int, progress: bool, desc: str):
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        yield rows[start : start + batch_size]


def evaluate_attack(
    model: nn.Module,
    dataset,
    attack: str,
    budget: AttackBudget,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    batch_size: int = 256,
    progress: bool = False,
    k: int = QUERY_NEIGHBOURS,
) -> dict:
    """Attack ``dataset`` and report clean vs attacked metrics of the deployed ``model``.

    The dataset is both query set and gallery (each query excluded from its own
    ranking). A seeded random ``fraction`` of the images is attacked (default all); the
    rest stay clean.

    * ``"es"`` / ``"qa"``: Recall@1/2/4/8 and mAP@R of the attacked queries against the
      *clean* gallery; ``"qa"`` pushes each query from its ``k`` clean same-class
      neighbours.
    * ``"ca"``: k-means (K = number of classes, ``seed``) on clean embeddings; each
      attacked image gets a random other cluster as target; the attacked set is
      re-embedded, re-clustered and scored by NMI / F1 / ARI. ``fraction=0`` gives
      metrics identical to clean.

    Transfer mode: with ``surrogate``, everything the attacker computes (clean gallery,
    neighbours, k-means centroids, gradients) comes from the surrogate; the results are
    measured on ``model``. Pass the loaded model as is (for an ensemble, the averaged
    embedding); both models are used in eval mode.

    Returns a dict: ``clean`` and ``attacked`` metric dicts, ``mean_embedding_shift``
    (mean ‖F(x̃) − F(x)‖ over attacked images, on ``model``), the settings, counts and
    timings in seconds (``clean_s``, ``attack_s``, ``total_s``).
    """
    get_attack(attack)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    started = time.perf_counter()
    crafter = surrogate if surrogate is not None else model
    labels = np.asarray(dataset.labels)
    n = len(labels)
    clean = embed(model, dataset, batch_size=batch_size, progress=progress, desc="clean")
    crafter_clean = (
        clean
        if surrogate is None
        else embed(surrogate, dataset, batch_size=batch_size, progress=progress, desc="surrogate")
    )
    clean_s = time.perf_counter() - started

    rng = np.random.default_rng(seed)
    attacked_rows = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))
    generator = torch.Generator().manual_seed(seed)
    n_classes = len(np.unique(labels))
    if attack == "ca":
        assign, centroids = kmeans_assign(crafter_clean, n_classes, seed=seed)
        targets = random_other_clusters(assign[attacked_rows], n_classes, rng)
        target_of = dict(zip(attacked_rows.tolist(), targets.tolist(), strict=True))
        centroids = torch.from_numpy(centroids)
    gallery = torch.from_numpy(crafter_clean)
    gallery_labels = torch.from_numpy(labels)
    adv_embeddings = clean.copy()

    attack_started = time.perf_counter()
    for rows in _batches(attacked_rows, batch_size, progress, f"attack {attack}"):
        x = dataset.batch(rows)
        index = torch.from_numpy(rows)
        if attack == "es":
            targets = AttackTargets(clean=gallery[index])
        elif attack == "qa":
            targets = AttackTargets(
                labels=gallery_labels[index],
                gallery=gallery,
                gallery_labels=gallery_labels,
                exclude_index=index,
                k=k,
            )
        else:
            targets = AttackTargets(
                own_centroids=centroids[assign[rows]],
                target_centroids=centroids[[target_of[int(r)] for r in rows]],
            )
        x_adv = craft(crafter, x, attack, budget, targets, generator)
        with torch.no_grad(), eval_mode(model):
            adv_embeddings[rows] = model(x_adv).numpy()
    attack_s = time.perf_counter() - attack_started

    shift = np.linalg.norm(adv_embeddings - clean, axis=1)[attacked_rows]
    if attack == "ca":
        clean_assign = assign if surrogate is None else kmeans_assign(clean, n_classes, seed)[0]
        clean_metrics = clustering_scores(labels, clean_assign)
        attacked_metrics = clustering_scores(
            labels, kmeans_assign(adv_embeddings, n_classes, seed)[0]
        )
    else:
        clean_metrics = retrieval_metrics(clean, labels)
        attacked_metrics = gallery_retrieval_metrics(
            adv_embeddings, labels, clean, labels, exclude_index=np.arange(n)
        )
    return {
        "attack": attack,
        "eps": budget.eps,
        "steps": budget.steps,
        "step_size": budget.alpha,
        "restarts": budget.restarts,
        "fraction": fraction,
        "seed": seed,
        "neighbours": k if attack == "qa" else None,
        "transfer": surrogate is not None,
        "images": n,
        "attacked_images": len(attacked_rows),
        "clean": clean_metrics,
        "attacked": attacked_metrics,
        "mean_embedding_shift": float(shift.mean()) if len(shift) else 0.0,
        "clean_s": round(clean_s, 3),
        "attack_s": round(attack_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }
