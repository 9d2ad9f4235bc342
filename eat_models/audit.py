"""``eat audit``: a robustness card for any embedding model, for retrieval and clustering.

The model is one of (:data:`MODEL_FORMATS`, the first that matches):

* ``checkpoint``: a directory written by ``eat train`` (safetensors + JSON, no code runs);
* ``torchscript``: a ``torch.jit.save`` file (``.pt``, ``.pth``, ``.ts``);
* ``export``: a ``torch.export`` program (``.pt2``);
* ``factory``: ``module:function``, a Python factory returning an ``nn.Module``. **This
  imports and runs that code**: audit only factories you trust.

A foreign model is wrapped (:class:`AuditedModel`) so that it takes pixels in [0, 1]:
resized to ``--input-size``, greyscale repeated to ``--channels``, ``(x − mean) / std``
inside, the output flattened and L2-normalised (RobRank's ``N`` metric).

The card: clean R@k, mAP@R and NMI; RobRank's ten attacks and ERS at RobRank's budget; the
clustering attack's NMI (all samples, p 0.1, p 0.3) and the headline ES / QA at the
headline ε; an ε sweep; the gradient-masking checks; each robust number ``standard`` and
``strong`` (:mod:`eat_models.attacks.evaluate`). Nothing is tuned by the user.
"""

from __future__ import annotations

import importlib
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attacks import (
    DEFAULT_EPS,
    DEFAULT_STEPS,
    ERS_TERMS,
    AttackBudget,
    embedding_shift_objective,
    evaluate_attack,
    evaluate_suite,
    get_attack,
    robrank_budget,
)
from .evaluate import embed, evaluate_embeddings

log = logging.getLogger(__name__)

#: images attacked at once (512 ran fastest on the 2 cores)
AUDIT_BATCH = 512
#: attacked fractions of the clustering attack on the card
CLUSTER_FRACTIONS = (1.0, 0.1, 0.3)
#: robust numbers may rise by at most this much where they must not (masking checks): R@1,
#: and NMI, whose k-means on a few thousand attacked images moves by a few hundredths
MASKING_TOLERANCE = {"es_recall@1": 0.02, "ca_nmi": 0.05}


class AuditedModel(nn.Module):
    """A foreign embedding network as the attacks expect it: ``[B, C, H, W]`` pixels in [0, 1]
    → L2-normalised ``[B, D]``. Resizes to ``input_size``, repeats greyscale to ``channels``,
    normalises by ``mean``/``std`` (None: the network takes [0, 1] itself)."""

    def __init__(
        self,
        net: nn.Module,
        input_size: int | None = None,
        channels: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.input_size, self.channels = net, input_size, channels
        stats = [(mean, "mean"), (std, "std")]
        for value, name in stats:
            tensor = None if value is None else torch.tensor(value).view(1, -1, 1, 1)
            self.register_buffer(name, tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear")
        if self.channels and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return F.normalize(out.flatten(1).float(), dim=1)


@dataclass(frozen=True)
class ModelFormat:
    name: str
    description: str
    matches: Callable[[str], bool]
    load: Callable[[str], tuple[nn.Module, dict]]


def _is_checkpoint(spec: str) -> bool:
    return (Path(spec) / "config.json").is_file()


def _load_checkpoint(spec: str):
    from .checkpoint import load_model

    model = load_model(spec)
    return model, dict(model.meta)


def _is_torchscript(spec: str) -> bool:
    path = Path(spec)
    return path.is_file() and path.suffix in (".pt", ".pth", ".ts") and zipfile.is_zipfile(path)


def _load_torchscript(spec: str):
    return torch.jit.load(spec, map_location="cpu"), {"kind": "torchscript"}


def _is_export(spec: str) -> bool:
    return Path(spec).is_file() and Path(spec).suffix == ".pt2"


def _load_export(spec: str):
    return torch.export.load(spec).module(), {"kind": "torch.export"}


def _is_factory(spec: str) -> bool:
    module, _, function = spec.partition(":")
    return bool(module) and bool(function) and not Path(spec).exists()


def _load_factory(spec: str):
    module_name, _, function = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{spec}: cannot import the factory ({exc})") from exc
    net = factory()
    if not isinstance(net, nn.Module):
        raise ValueError(f"{spec}: the factory returned {type(net).__name__}, not an nn.Module")
    return net, {"kind": "factory"}


MODEL_FORMATS = (
    ModelFormat(
        "checkpoint", "a directory written by 'eat train'", _is_checkpoint, _load_checkpoint
    ),
    ModelFormat(
        "torchscript", "a TorchScript file (.pt, .pth, .ts)", _is_torchscript, _load_torchscript
    ),
    ModelFormat("export", "a torch.export program (.pt2)", _is_export, _load_export),
    ModelFormat(
        "factory", "module:function returning an nn.Module (runs code)", _is_factory, _load_factory
    ),
)


def load_audited_model(
    spec: str,
    input_size: int | None = None,
    channels: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> tuple[nn.Module, dict]:
    """``(model, meta)`` for a model ``spec`` of any :data:`MODEL_FORMATS`. Our checkpoints
    carry their input size, channels and normalisation; a foreign model needs the flags."""
    for fmt in MODEL_FORMATS:
        if fmt.matches(spec):
            net, meta = fmt.load(spec)
            meta = {**meta, "format": fmt.name, "source": spec}
            if fmt.name == "checkpoint":
                return net.eval(), meta
            if input_size is None or channels is None:
                raise ValueError(
                    f"{spec}: a {fmt.description} carries no input shape: give --input-size "
                    "and --channels (and --mean/--std if it expects normalised inputs)"
                )
            model = AuditedModel(net.eval(), input_size, channels, mean, std).eval()
            meta.update(input_size=input_size, channels=channels, mean=mean, std=std)
            return model, meta
    formats = "; ".join(f"{f.name}: {f.description}" for f in MODEL_FORMATS)
    raise ValueError(f"{spec}: not a model this command reads ({formats})")


def headline_eps(input_size: int) -> float:
    """The headline ε: DESIGN.md's 0.1 for 28×28 data, 8/255 for larger images."""
    return DEFAULT_EPS if input_size <= 32 else 8 / 255


def sweep_eps(input_size: int) -> tuple[float, ...]:
    return (
        (0.03, 0.05, 0.1, 0.2, 0.3)
        if input_size <= 32
        else tuple(e / 255 for e in (1, 2, 4, 8, 16))
    )


def gradient_coverage(model: nn.Module, dataset, images: int = 256) -> float:
    """Share of images whose input gradient of the embedding-shift objective (from a random
    start, ε = 0.01) is not all zero; RobustBench admits only non-zero input gradients."""
    x = dataset.batch(np.arange(min(images, len(dataset))))
    with torch.no_grad():
        clean = model(x)
    start = (
        x + torch.empty_like(x).uniform_(-0.01, 0.01, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    start.requires_grad_(True)
    value = embedding_shift_objective(clean)(model(start)).sum()
    (grad,) = torch.autograd.grad(value, start)
    return float((grad.flatten(1).abs().amax(dim=1) > 0).float().mean())


def run_audit(
    model: nn.Module,
    dataset,
    *,
    input_size: int,
    strengths: tuple[str, ...] = ("standard", "strong"),
    surrogate: nn.Module | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Every number of the card (see the module docstring) as one dict."""
    started = time.perf_counter()
    labels = np.asarray(dataset.labels)
    clean_embeddings = embed(model, dataset, progress=progress, desc="clean")
    shared = (clean_embeddings, clean_embeddings)
    cache: dict = {}  # the strong evaluation reuses the standard runs it contains
    eps = headline_eps(input_size)
    headline = AttackBudget(eps, DEFAULT_STEPS)
    card: dict = {
        "images": len(dataset),
        "classes": int(len(np.unique(labels))),
        "clean": evaluate_embeddings(clean_embeddings, labels, seed),
        "headline_budget": {"eps": eps, "steps": DEFAULT_STEPS, "step_size": headline.alpha},
        "ers_budget": None,
        "strengths": {},
    }
    for strength in strengths:
        timer = time.perf_counter()
        suite_result = evaluate_suite(
            model,
            dataset,
            "ers",
            robrank_budget(input_size),
            seed=seed,
            strength=strength,
            progress=progress,
            cache=cache,
            batch_size=AUDIT_BATCH,
        )
        card["ers_budget"] = {
            k: suite_result[k] for k in ("eps", "steps", "step_size", "random_start")
        }
        runs = {}
        plan = [("es", "es", 1.0), ("qa", "qa", 1.0)]
        plan += [(f"ca/p{fraction:g}", "ca", fraction) for fraction in CLUSTER_FRACTIONS]
        for key, name, fraction in plan:
            runs[key] = evaluate_attack(
                model,
                dataset,
                name,
                headline,
                fraction=fraction,
                seed=seed,
                strength=strength,
                embeddings=shared,
                progress=progress,
                cache=cache,
                batch_size=AUDIT_BATCH,
            )
        card["strengths"][strength] = {
            "ers": suite_result["ers"],
            "clean_ers": suite_result["clean_ers"],
            "terms": suite_result["terms"],
            "raw": suite_result["raw"],
            "ers_attacks": {
                a: {"clean": r["clean"], "attacked": r["attacked"], "runs": r["runs"]}
                for a, r in suite_result["attacks"].items()
            },
            "headline": {
                key: {
                    "clean": r["clean"],
                    "attacked": r["attacked"],
                    "runs": r["runs"],
                    "fraction": r["fraction"],
                }
                for key, r in runs.items()
            },
            "wall_s": round(time.perf_counter() - timer, 1),
        }
    card["sweep"] = _sweep(model, dataset, input_size, shared, seed, progress)
    card["masking"] = _masking_checks(model, dataset, card, headline, shared, surrogate, seed)
    card["wall_s"] = round(time.perf_counter() - started, 1)
    return card


def _sweep(model, dataset, input_size, shared, seed, progress) -> dict:
    points = []
    for eps in tqdm(sweep_eps(input_size), desc="eps sweep", disable=not progress, leave=False):
        budget = AttackBudget(eps, DEFAULT_STEPS)
        es = evaluate_attack(model, dataset, "es", budget, seed=seed, embeddings=shared)
        ca = evaluate_attack(model, dataset, "ca", budget, seed=seed, embeddings=shared)
        points.append(
            {"eps": eps, "es_recall@1": es["attacked"]["recall@1"], "ca_nmi": ca["attacked"]["nmi"]}
        )
    return {"steps": DEFAULT_STEPS, "points": points}


def _masking_checks(model, dataset, card, headline, shared, surrogate, seed) -> list[dict]:
    """DESIGN.md §3's sanity checks against gradient masking, each with its numbers."""
    checks = []
    points = card["sweep"]["points"]
    for metric in ("es_recall@1", "ca_nmi"):
        values = [p[metric] for p in points]
        rises = [b - a for a, b in zip(values, values[1:], strict=False)]
        checks.append(
            {
                "check": f"{metric} falls as ε grows",
                "values": values,
                "passed": all(r <= MASKING_TOLERANCE[metric] for r in rises),
            }
        )
    more = evaluate_attack(
        model,
        dataset,
        "es",
        headline.replace(steps=5 * headline.steps, step_size=None),
        seed=seed,
        embeddings=shared,
    )
    base = card["strengths"][next(iter(card["strengths"]))]["headline"]["es"]["attacked"][
        "recall@1"
    ]
    checks.append(
        {
            "check": f"ES R@1: {5 * headline.steps} steps no higher than {headline.steps}",
            "values": [base, more["attacked"]["recall@1"]],
            "passed": more["attacked"]["recall@1"] <= base + MASKING_TOLERANCE["es_recall@1"],
        }
    )
    if {"standard", "strong"} <= set(card["strengths"]):
        standard, strong = card["strengths"]["standard"], card["strengths"]["strong"]
        ok = all(
            not get_attack(key.split("/")[0]).less_robust(
                standard["headline"][key]["attacked"], strong["headline"][key]["attacked"]
            )
            for key in standard["headline"]
        )
        checks.append(
            {
                "check": "strong is never weaker than standard (every headline number)",
                "values": [standard["ers"], strong["ers"]],
                "passed": ok and strong["ers"] <= standard["ers"] + 1e-9,
            }
        )
    if surrogate is not None:
        transfer = evaluate_attack(model, dataset, "es", headline, seed=seed, surrogate=surrogate)
        white = evaluate_attack(model, dataset, "es", headline, seed=seed, embeddings=shared)
        checks.append(
            {
                "check": "a transfer attack from the surrogate is weaker than white-box",
                "values": [white["attacked"]["recall@1"], transfer["attacked"]["recall@1"]],
                "passed": transfer["attacked"]["recall@1"]
                >= white["attacked"]["recall@1"] - MASKING_TOLERANCE["es_recall@1"],
            }
        )
    if "strong" in card["strengths"]:
        strong_es = card["strengths"]["strong"]["headline"]["es"]["attacked"]["recall@1"]
        half = evaluate_attack(
            model,
            dataset,
            "es",
            headline.replace(eps=headline.eps / 2),
            seed=seed,
            strength="strong",
            embeddings=shared,
        )
        checks.append(
            {
                "check": "strong: ES R@1 at ε/2 is no lower than at ε",
                "values": [half["attacked"]["recall@1"], strong_es],
                "passed": half["attacked"]["recall@1"]
                >= strong_es - MASKING_TOLERANCE["es_recall@1"],
            }
        )
        if surrogate is not None:
            transfer = evaluate_attack(
                model, dataset, "es", headline, seed=seed, surrogate=surrogate, strength="strong"
            )
            checks.append(
                {
                    "check": "strong: transfer from the surrogate is weaker than white-box",
                    "values": [strong_es, transfer["attacked"]["recall@1"]],
                    "passed": transfer["attacked"]["recall@1"]
                    >= strong_es - MASKING_TOLERANCE["es_recall@1"],
                }
            )
    coverage = gradient_coverage(model, dataset)
    checks.append(
        {"check": "input gradients are non-zero", "values": [coverage], "passed": coverage >= 0.99}
    )
    return checks


# --------------------------------------------------------------------------- reports


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def summary_lines(card: dict, name: str) -> list[str]:
    """The one-screen summary the terminal shows."""
    c = card["clean"]
    lines = [
        f"robustness card of {name} ({card['images']} images, {card['classes']} classes)",
        f"  clean: R@1 {_f(c['recall@1'])} · mAP@R {_f(c['map@r'])} · NMI {_f(c['nmi'])}",
    ]
    for strength, s in card["strengths"].items():
        h = s["headline"]
        lines.append(
            f"  {strength:8s}: ERS {s['ers']:.1f} · ES R@1 {_f(h['es']['attacked']['recall@1'])}"
            f" · QA R@1 {_f(h['qa']['attacked']['recall@1'])} · CA-clu NMI "
            f"{_f(h['ca/p1']['attacked']['nmi'])} (p 0.1 {_f(h['ca/p0.1']['attacked']['nmi'])},"
            f" p 0.3 {_f(h['ca/p0.3']['attacked']['nmi'])}) [{s['wall_s']:.0f} s]"
        )
    failed = [m["check"] for m in card["masking"] if not m["passed"]]
    lines.append(
        "  gradient-masking checks: "
        + ("all passed" if not failed else "FAILED: " + "; ".join(failed))
    )
    return lines


def markdown(card: dict, name: str, provenance: dict) -> str:
    eb, hb = card["ers_budget"], card["headline_budget"]
    out = [
        f"# Robustness card: {name}",
        "",
        f"`{provenance['command']}` · commit {provenance['commit']} · {provenance['date']} · "
        f"load {provenance['load_average']} · {card['wall_s']:.0f} s",
        "",
        f"{card['images']} images, {card['classes']} classes; query set = gallery. ERS budget: "
        f"ε {eb['eps']:.4g}, {eb['steps']} steps of {eb['step_size']:.4g} "
        f"({'random start' if eb['random_start'] else 'from the clean image'}, RobRank's). "
        f"Headline budget: ε {hb['eps']:.4g}, PGD-{hb['steps']}. `strong`: per-image worst case "
        "over the standard run, PGD with restarts and APGD-100 (clustering: also 3 target draws).",
        "",
        "## Clean",
        "",
        "| R@1 | R@2 | R@4 | R@8 | mAP@R | NMI | F1 | ARI |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| "
        + " | ".join(
            _f(card["clean"][k])
            for k in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1", "ari")
        )
        + " |",
        "",
        "## Headline numbers",
        "",
        "| | " + " | ".join(card["strengths"]) + " |",
        "|---|" + "---:|" * len(card["strengths"]),
    ]
    rows = [
        ("ERS", lambda s: f"{s['ers']:.1f}"),
        ("ES R@1", lambda s: _f(s["headline"]["es"]["attacked"]["recall@1"])),
        ("QA R@1", lambda s: _f(s["headline"]["qa"]["attacked"]["recall@1"])),
        ("CA-clu NMI, all", lambda s: _f(s["headline"]["ca/p1"]["attacked"]["nmi"])),
        ("CA-clu NMI, p 0.1", lambda s: _f(s["headline"]["ca/p0.1"]["attacked"]["nmi"])),
        ("CA-clu NMI, p 0.3", lambda s: _f(s["headline"]["ca/p0.3"]["attacked"]["nmi"])),
    ]
    for label, cell in rows:
        out.append(f"| {label} | " + " | ".join(cell(s) for s in card["strengths"].values()) + " |")
    out += ["", "## RobRank's ten attacks (ERS terms: 100 robust, 0 broken)", ""]
    out.append("| term | " + " | ".join(f"raw {k} | term {k}" for k in card["strengths"]) + " |")
    out.append("|---|" + "---:|---:|" * len(card["strengths"]))
    for term in ERS_TERMS:
        cells = [
            f"{s['raw'][term]:.4f} | {s['terms'][term]:.1f}" for s in card["strengths"].values()
        ]
        out.append(f"| {term} | " + " | ".join(cells) + " |")
    out += ["", "## ε sweep (PGD-20)", "", "| ε | ES R@1 | CA-clu NMI |", "|---:|---:|---:|"]
    for p in card["sweep"]["points"]:
        out.append(f"| {p['eps']:.4g} | {_f(p['es_recall@1'])} | {_f(p['ca_nmi'])} |")
    out += ["", "## Gradient-masking checks", "", "| check | values | passed |", "|---|---|---|"]
    for m in card["masking"]:
        values = ", ".join(f"{v:.3f}" for v in m["values"])
        out.append(f"| {m['check']} | {values} | {'yes' if m['passed'] else '**NO**'} |")
    out += ["", "Plots: `eps_sweep.png`, `ers_terms.png`.", ""]
    return "\n".join(out)


def plot(card: dict, out: Path, name: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    points = card["sweep"]["points"]
    eps = [p["eps"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, (metric, title) in zip(
        axes,
        (
            ("es_recall@1", "R@1 under the embedding shift"),
            ("ca_nmi", "NMI under the clustering attack"),
        ),
        strict=True,
    ):
        ax.plot(eps, [p[metric] for p in points], marker="o")
        ax.set_xlabel("ε (L∞, pixels in [0, 1])")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{name}: robustness against ε (PGD-{card['sweep']['steps']})", fontsize=11)
    paths.append(out / "eps_sweep.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    terms = list(ERS_TERMS)
    fig, ax = plt.subplots(figsize=(9, 3.8), constrained_layout=True)
    width = 0.8 / max(1, len(card["strengths"]))
    for i, (strength, s) in enumerate(card["strengths"].items()):
        xs = np.arange(len(terms)) + i * width
        ax.bar(xs, [s["terms"][t] for t in terms], width, label=f"{strength} (ERS {s['ers']:.1f})")
    ax.set_xticks(np.arange(len(terms)) + width * (len(card["strengths"]) - 1) / 2, terms)
    ax.set_ylim(0, 105)
    ax.set_ylabel("ERS term (100: robust)")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(f"{name}: RobRank's ten attacks", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    paths.append(out / "ers_terms.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
