"""The two optimisers every attack runs on: fixed-step PGD and APGD, both L∞ in pixel space.

Threat model (DESIGN.md §3): white-box, the attacker knows the deployed embedding
function — for an ensemble the averaged embedding F, never a single member — and adds an
L∞-bounded perturbation ‖x̃ − x‖∞ ≤ ε to input pixels in [0, 1]. Any normalisation lives
inside the model, so the attack works in pixel space.

An *objective* maps the embeddings of the perturbed batch ``[B, D]`` to the value the
attacker maximises: per sample ``[B]`` (every evaluation attack) or one scalar for the
whole batch (a metric loss, in training). Both optimisers return, per sample, the best
iterate by objective over all iterations and restarts, so more work never lowers it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..modes import eval_mode
from .budget import AttackBudget, default_step_size

Objective = Callable[[torch.Tensor], torch.Tensor]
"""``objective(embeddings [B, D]) -> [B]`` (per sample) or a scalar (whole batch)."""


class _Best:
    """The best iterate so far: per sample for a ``[B]`` objective, whole batch for a scalar."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.value = x.clone(), None

    def offer(self, candidate: torch.Tensor, value: torch.Tensor) -> None:
        value = value.detach()
        if self.value is None:
            self.x, self.value = candidate.detach().clone(), value.clone()
            return
        better = value > self.value
        if value.dim() == 0:
            if better:
                self.x, self.value = candidate.detach().clone(), value.clone()
            return
        self.x[better] = candidate.detach()[better]
        self.value = torch.where(better, value, self.value)


def _value_and_grad(model, objective, adv):
    adv = adv.detach().requires_grad_(True)
    value = objective(model(adv))
    if value.requires_grad:
        (grad,) = torch.autograd.grad(value.sum(), adv)
    else:  # an objective constant in x (e.g. a loss with nothing to mine)
        grad = torch.zeros_like(adv)
    return value.detach(), grad


def _random_start(x, eps, lower, upper, generator):
    noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    return torch.min(torch.max(x + noise, lower), upper)


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

    Each restart starts at ``x`` plus uniform noise in [−ε, ε] (``random_start``), then
    repeats ``steps`` times: gradient of the objective w.r.t. the input only
    (``torch.autograd.grad``), a signed step of ``step_size``, projection onto the ε-ball
    around ``x``, clamp to [0, 1], detach. The best iterate by objective is returned —
    per sample for a ``[B]`` objective, for the whole batch for a scalar one — over all
    iterates of all restarts. The model runs in eval mode (each submodule's mode restored).

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
    best = _Best(x)
    with eval_mode(model):
        for _ in range(restarts):
            adv = _random_start(x, eps, lower, upper, generator) if random_start else x.clone()
            for _ in range(steps):
                value, grad = _value_and_grad(model, objective, adv)
                best.offer(adv, value)
                adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), lower), upper)
            with torch.no_grad():
                best.offer(adv, objective(model(adv)))
    return best.x


def apgd_checkpoints(iterations: int) -> list[int]:
    """APGD's checkpoints w_j = ⌈p_j · N⌉ with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (Croce & Hein 2020, §3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    points = sorted({math.ceil(q * iterations - 1e-9) for q in p if q <= 1})
    return [w for w in points if 0 < w <= iterations]


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    objective: Objective,
    eps: float,
    iterations: int,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
) -> torch.Tensor:
    """Auto-PGD for L∞ (Croce & Hein, ICML 2020): parameter-free step size.

    Per sample: the step η starts at 2ε; every iterate after the first moves
    ``x_{k+1} = P(x_k + α (z_{k+1} − x_k) + (1 − α)(x_k − x_{k−1}))`` with
    ``z_{k+1} = P(x_k + η sign ∇f(x_k))`` and momentum α = 0.75 (the first step is the plain
    projected step). At each checkpoint (:func:`apgd_checkpoints`) η halves, and the
    iterate restarts from the best point so far, when the objective rose in fewer than
    ρ = 0.75 of the interval's steps, or when η was not cut at the previous checkpoint and
    the best value did not improve since. ``objective`` must be per sample (``[B]``).

    Args: as :func:`pgd`, with ``iterations`` instead of ``steps`` and no step size.

    Returns:
        ``x̃`` ``[B, C, H, W]``: the best iterate per sample over all restarts.

    Example:
        >>> x_adv = apgd(model, x, lambda e: (e - clean).pow(2).sum(1), eps=0.3, iterations=100)
    """
    if eps < 0 or iterations < 0 or restarts < 1:
        raise ValueError(
            f"need eps ≥ 0, iterations ≥ 0, restarts ≥ 1 (got {eps}, {iterations}, {restarts})"
        )
    x = x.detach()
    if eps == 0 or iterations == 0:
        return x.clone()
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    project = lambda z: torch.min(torch.max(z, lower), upper)  # noqa: E731
    checkpoints = set(apgd_checkpoints(iterations))
    shape = (-1,) + (1,) * (x.dim() - 1)
    overall = _Best(x)
    with eval_mode(model):
        for _ in range(restarts):
            current = _random_start(x, eps, lower, upper, generator) if random_start else x.clone()
            value, grad = _value_and_grad(model, objective, current)
            if value.dim() != 1:
                raise ValueError("APGD needs a per-sample objective [B]")
            overall.offer(current, value)
            best_x, best_value = current.clone(), value.clone()
            best_grad = grad.clone()
            eta = torch.full((len(x),), 2.0 * eps, device=x.device)
            previous = current.clone()
            rises = torch.zeros(len(x), device=x.device)
            last_checkpoint = 0
            best_at_last = best_value.clone()
            cut_last = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            for k in range(iterations):
                step = eta.view(shape)
                z = project(current + step * grad.sign())
                if k == 0:
                    new = z
                else:
                    new = project(
                        current + momentum * (z - current) + (1 - momentum) * (current - previous)
                    )
                previous, current = current, new
                new_value, grad = _value_and_grad(model, objective, current)
                rises += (new_value > value).float()
                value = new_value
                overall.offer(current, value)
                improved = value > best_value
                best_x[improved] = current[improved]
                best_grad[improved] = grad[improved]
                best_value = torch.where(improved, value, best_value)
                if k + 1 in checkpoints:
                    interval = k + 1 - last_checkpoint
                    few_rises = rises < rho * interval
                    stalled = (~cut_last) & (best_value <= best_at_last)
                    cut = few_rises | stalled
                    eta = torch.where(cut, eta / 2, eta)
                    current = torch.where(cut.view(shape), best_x, current)
                    grad = torch.where(cut.view(shape), best_grad, grad)
                    previous = torch.where(cut.view(shape), best_x, previous)
                    value = torch.where(cut, best_value, value)
                    cut_last, best_at_last = cut, best_value.clone()
                    rises.zero_()
                    last_checkpoint = k + 1
    return overall.x


def perturb(
    model: nn.Module,
    x: torch.Tensor,
    objective: Objective,
    budget: AttackBudget,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run ``budget.method`` (PGD or APGD) on ``objective`` under ``budget``: the one call
    training, evaluation and the app make. ``generator``: the random starts' generator
    (default ``budget.generator()``)."""
    generator = generator if generator is not None else budget.generator()
    if budget.method == "apgd":
        return apgd(
            model,
            x,
            objective,
            budget.eps,
            budget.steps,
            budget.restarts,
            budget.random_start,
            generator,
        )
    return pgd(
        model,
        x,
        objective,
        budget.eps,
        budget.steps,
        budget.step_size,
        budget.restarts,
        budget.random_start,
        generator,
    )
