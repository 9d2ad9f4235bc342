"""Turn the benchmark's row files into results.json, results.md and PNG plots."""

from __future__ import annotations

from pathlib import Path

from eat_models.attacks import evaluation_key
from eat_models.files import write_json

from .profiles import HEADLINE_EPS, HIGH_EPS, ROBRANK_EPS
from .rows import TRIPLET_PAIR, UNDEFENDED

# Tolerance for "did not rise" where no spread was measured (ES): k-means / ranking jitter.
MASKING_TOLERANCE = 0.01
# For CA the tolerance is this many pooled standard deviations of the headline CA NMI over
# attack seeds (measured in the same run, every row), if that is larger.
NOISE_SDS = 2.0

#: how far EAT's CA NMI must clear the row it is compared with (DESIGN.md §7)
MARGIN = 0.03

#: wall-time budget of a whole benchmark run on the 2-core machine, by profile
BUDGET_S = {"full": 120 * 60, "quick": 5 * 60}

TARGETS = (
    ("clean Recall@1", "clean", "recall@1", 0.85),
    ("clean NMI", "clean", "nmi", 0.75),
    (f"NMI under CA, eps {HEADLINE_EPS:g}, all samples", ("ca", HEADLINE_EPS), "nmi", 0.72),
    (f"NMI under CA, eps {HIGH_EPS:g}, all samples", ("ca", HIGH_EPS), "nmi", 0.45),
    (f"Recall@1 under ES, eps {HEADLINE_EPS:g}", ("es", HEADLINE_EPS), "recall@1", 0.78),
)


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class RowView:
    """Convenient reads of one row's stored evaluations."""

    def __init__(self, name: str, record: dict, steps: int) -> None:
        self.name, self.record, self.steps = name, record, steps
        self.evals = record["evals"]

    def clean(self, metric: str):
        return self.evals.get("clean", {}).get("metrics", {}).get(metric)

    def attacked(self, key: str, metric: str):
        return self.evals.get(key, {}).get("attacked", {}).get(metric)

    def at(self, attack: str, eps: float, metric: str, steps: int | None = None, **options):
        """``metric`` of the stored evaluation of ``attack`` at ``eps`` (``options``: those
        of :func:`~eat_models.attacks.evaluation_key`)."""
        return self.attacked(evaluation_key(attack, eps, steps or self.steps, **options), metric)

    def ca_seed_values(self, seeds: tuple[int, ...]) -> list[float]:
        """NMI under the headline CA for the profile's seed and each extra attack seed found."""
        values = [self.at("ca", HEADLINE_EPS, "nmi")]
        values += [self.at("ca", HEADLINE_EPS, "nmi", seed=s) for s in seeds]
        return [v for v in values if v is not None]

    def ca_seed_text(self, seeds: tuple[int, ...]) -> str:
        values = self.ca_seed_values(seeds)
        if len(values) < 2:
            return "–"
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return f"{mean:.3f} ± {sd:.3f}"

    def target_value(self, source: str | tuple[str, float], metric: str):
        if source == "clean":
            return self.clean(metric)
        attack, eps = source
        return self.at(attack, eps, metric)


def _mean_sd(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    sd = (
        (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        if len(values) > 1
        else 0.0
    )
    return {"values": values, "mean": mean, "sd": sd}


SEED_METRICS = (
    ("clean_r1", "clean R@1", lambda v: v.clean("recall@1")),
    ("clean_nmi", "clean NMI", lambda v: v.clean("nmi")),
    ("es_r1", "ES R@1", lambda v: v.at("es", HEADLINE_EPS, "recall@1")),
    ("ca_nmi", "CA NMI", lambda v: v.at("ca", HEADLINE_EPS, "nmi")),
    (f"ca_nmi_eps{HIGH_EPS:g}", f"CA NMI eps {HIGH_EPS:g}", lambda v: v.at("ca", HIGH_EPS, "nmi")),
)


def seed_summaries(seeds: dict[str, list[dict]], steps: int) -> dict[str, dict]:
    """Per row: each metric's values over training seeds (the profile's seed first)."""
    out = {}
    for name, records in seeds.items():
        views = [RowView(name, r, steps) for r in records]
        summary = {"seeds": [r["train"]["config"]["seed"] for r in records]}
        for key, _, read in SEED_METRICS:
            values = [read(v) for v in views]
            if all(x is not None for x in values):
                summary[key] = _mean_sd(values)
        out[name] = summary
    return out


#: the other EAT row / single model at its compute pairs with training seeds (other losses)
SEED_PAIRS = (TRIPLET_PAIR,)


def _seed_section(summaries: dict[str, dict], best_single: str | None) -> tuple[list, list[str]]:
    """The training-seed table, and the decisive target: EAT's mean CA NMI over training
    seeds ≥ the best single-model row at equal compute + MARGIN, the gap also > 2 pooled sd."""
    lines = [
        "",
        "## Training seeds",
        "",
        "Decisive rows trained with further seeds (`eat bench --seeds`), same budget and "
        "attack subset; mean ± sd over training seeds.",
        "",
        "| row | seeds | " + " | ".join(label for _, label, _ in SEED_METRICS) + " |",
        "|---|---|" + "---:|" * len(SEED_METRICS),
    ]
    for name, summary in summaries.items():
        cells = [
            f"{summary[key]['mean']:.3f} ± {summary[key]['sd']:.3f}" if key in summary else "–"
            for key, _, _ in SEED_METRICS
        ]
        seeds = ", ".join(str(x) for x in summary["seeds"])
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    targets = []
    # EAT against the single model at its training compute, for each loss benchmarked
    pairs = [("eat", best_single or ""), *SEED_PAIRS]
    for eat_name, single in pairs:
        eat, other = summaries.get(eat_name), summaries.get(single)
        if not (eat and other and "ca_nmi" in eat and "ca_nmi" in other):
            continue
        # the pair's pooled training-seed spread
        pooled = ((eat["ca_nmi"]["sd"] ** 2 + other["ca_nmi"]["sd"] ** 2) / 2) ** 0.5
        gap = eat["ca_nmi"]["mean"] - other["ca_nmi"]["mean"]
        met = gap >= MARGIN and gap > NOISE_SDS * pooled
        targets.append(
            {
                "target": f"decisive: {eat_name} CA NMI (mean over training seeds) >= {single} "
                f"(the single model at its training compute) + {MARGIN:g}, and the gap > "
                f"{NOISE_SDS:g} pooled sd",
                "value": eat["ca_nmi"]["mean"],
                "goal": other["ca_nmi"]["mean"] + MARGIN,
                "best_other": single,
                "gap": gap,
                "pooled_sd": pooled,
                "met": met,
            }
        )
        lines += [
            "",
            f"Decisive target ({eat_name}): {eat['ca_nmi']['mean']:.3f} vs {single} "
            f"{other['ca_nmi']['mean']:.3f}: gap {gap:+.3f}, pooled training-seed sd of the "
            f"pair {pooled:.3f} ({NOISE_SDS:g} sd = {NOISE_SDS * pooled:.3f}); goal gap ≥ "
            f"+{MARGIN:g} and > {NOISE_SDS:g} sd: **{'met' if met else 'MISSED'}**.",
        ]
    return targets, lines


def write_report(
    out: Path,
    meta: dict,
    rows: dict[str, dict],
    profile,
    seeds: dict[str, list[dict]] | None = None,
) -> dict:
    steps, rsteps = profile.eval_steps, profile.robrank_steps
    views = {name: RowView(name, rec, steps) for name, rec in rows.items()}
    lines = [
        "# Fashion-MNIST robustness benchmark",
        "",
        f"Written by `{meta['command']}` at commit `{meta['commit']}` on {meta['date']}; "
        f"profile `{profile.name}`; this invocation {meta['this_invocation_wall_s']:.0f} s wall, "
        f"all rows of the main run together {meta['total_row_wall_s']:.0f} s (training + "
        f"evaluation; the optional groups {', '.join(profile.optional_groups) or 'none'}, run "
        f"with `--also`: {meta.get('optional_rows_wall_s', 0):.0f} s) on "
        f"{meta['cpu_count']} CPU cores.",
        "",
        f"Training: {meta['train_images']} images (standard split), small CNN width "
        f"{profile.width}, embedding {profile.embedding_dim}, Proxy-Anchor loss; adversarial "
        f"training with PGD-{profile.train_steps} at eps {profile.train_eps}; "
        f"{profile.vanilla_epochs} epochs for vanilla rows, {profile.adversarial_epochs} for "
        "adversarial rows (equal-compute rows: as long as full EAT took). Clean metrics on "
        f"{meta['clean_test_images']} test images; attacks on a stratified subset of "
        f"{meta['attack_test_images']} test images (query set = gallery, query excluded), "
        f"white-box against the deployed model (ensembles: the averaged embedding), PGD-{steps}"
        " with random start. ES: embedding shift, QA: retrieval query attack, CA: clustering "
        "attack with random target clusters (DESIGN.md §3).",
        "",
        f"## Main table (eps = {HEADLINE_EPS:g} unless stated)",
        "",
        "| row | K | clean R@1 | clean mAP@R | clean NMI | ES R@1 | QA R@1 | CA NMI | CA F1 | "
        "CA ARI | "
        + "".join(f"CA NMI p={f:g} | " for f in profile.fractions)
        + f"ES R@1 eps {ROBRANK_EPS:g}/{rsteps} | CA NMI eps {ROBRANK_EPS:g}/{rsteps} "
        f"| CA NMI, {1 + len(profile.extra_attack_seeds)} attack seeds (mean ± sd) "
        "| ES R@1 strong | CA NMI strong | train s | inference cost |",
        "|---|---:|" + "---:|" * (15 + len(profile.fractions)),
    ]
    for name, v in views.items():
        k = v.record["members"]
        cells = [
            _fmt(v.clean("recall@1")),
            _fmt(v.clean("map@r")),
            _fmt(v.clean("nmi")),
            _fmt(v.at("es", HEADLINE_EPS, "recall@1")),
            _fmt(v.at("qa", HEADLINE_EPS, "recall@1")),
            _fmt(v.at("ca", HEADLINE_EPS, "nmi")),
            _fmt(v.at("ca", HEADLINE_EPS, "f1")),
            _fmt(v.at("ca", HEADLINE_EPS, "ari")),
            *(_fmt(v.at("ca", HEADLINE_EPS, "nmi", fraction=f)) for f in profile.fractions),
            _fmt(v.at("es", ROBRANK_EPS, "recall@1", rsteps)),
            _fmt(v.at("ca", ROBRANK_EPS, "nmi", rsteps)),
            v.ca_seed_text(profile.extra_attack_seeds),
            _fmt(v.at("es", HEADLINE_EPS, "recall@1", strength="strong")),
            _fmt(v.at("ca", HEADLINE_EPS, "nmi", strength="strong")),
            f"{v.record['train']['train_wall_s']:.0f}",
            f"{k}×",
        ]
        lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Row descriptions: "
        + "; ".join(f"**{n}**: {r['row']['description']}" for n, r in rows.items())
        + ".",
    ]

    targets, target_lines = _targets(views, meta.get("best_baseline"), profile)
    if profile.name in BUDGET_S:
        budget = BUDGET_S[profile.name]
        total = meta["total_row_wall_s"]
        met = total <= budget
        targets.append(
            {
                "target": f"{profile.name} bench wall time (s)",
                "value": total,
                "goal": budget,
                "met": met,
            }
        )
        target_lines.append(
            f"| whole `{profile.name}` benchmark, main run (training + evaluation) | "
            f"{total / 60:.1f} min | ≤ {budget / 60:.0f} min | {'yes' if met else 'NO'} |"
        )
    lines += [
        "",
        "## Targets (DESIGN.md §7), EAT row and cost",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---:|:---:|",
        *target_lines,
    ]

    summaries = seed_summaries(seeds or {}, steps)
    if summaries:
        seed_targets, seed_lines = _seed_section(summaries, meta.get("best_single_equal_compute"))
        targets += seed_targets
        lines += seed_lines

    checked = meta.get("checked_rows") or ("vanilla", meta.get("best_baseline"), "eat")
    sweep_names = [n for n in checked if n in views]
    lines += [
        "",
        f"## Epsilon sweep (PGD-{steps})",
        "",
        "| row | attack | " + " | ".join(f"eps {e:g}" for e in profile.sweep_eps) + " |",
        "|---|---|" + "---:|" * len(profile.sweep_eps),
    ]
    for name in sweep_names:
        v = views[name]
        for attack, metric in (("ca", "nmi"), ("es", "recall@1")):
            cells = [_fmt(v.at(attack, e, metric)) for e in profile.sweep_eps]
            lines.append(f"| {name} | {attack.upper()} {metric} | " + " | ".join(cells) + " |")

    ca_tol, pooled_sd = ca_tolerance(views, profile)
    masked = meta.get("masking_rows") or sweep_names
    checks, check_lines = _masking_checks(views, [n for n in masked if n in views], profile, ca_tol)
    lines += [
        "",
        "## Gradient-masking checks",
        "",
        f"A check fails when the attacked metric moves the wrong way by more than the "
        f"tolerance: ES {MASKING_TOLERANCE}; CA {ca_tol:.3f} = max({MASKING_TOLERANCE}, "
        f"{NOISE_SDS:g} × {pooled_sd:.4f}, the pooled sd of CA NMI over "
        f"{1 + len(profile.extra_attack_seeds)} attack seeds of every row). k-means after a "
        "clustering attack is noisy, and the CA objective (toward a target centroid) is not "
        "NMI itself, so small rises with more steps are expected even without masking.",
        "",
        "| row | check | values | pass |",
        "|---|---|---|:---:|",
        *check_lines,
    ]
    plots = _plots(out, views, sweep_names, profile)
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    result = {
        "meta": meta,
        "rows": rows,
        "targets": targets,
        "masking_checks": checks,
        "training_seeds": summaries,
        "masking_tolerance": {"es": MASKING_TOLERANCE, "ca": ca_tol, "ca_pooled_sd": pooled_sd},
    }
    write_json(out / "results.json", result)
    return result


def _targets(
    views: dict[str, RowView], best_baseline: str | None, profile
) -> tuple[list, list[str]]:
    out, lines = [], []
    eat = views.get("eat")
    if eat is None:
        return out, ["| (EAT row not run yet) | | | |"]
    for label, source, metric, goal in TARGETS:
        value = eat.target_value(source, metric)
        met = value is not None and value >= goal
        out.append({"target": label, "value": value, "goal": goal, "met": met})
        lines.append(f"| {label} | {_fmt(value)} | ≥ {goal} | {'yes' if met else 'NO'} |")
    eat_nmi = eat.at("ca", HEADLINE_EPS, "nmi")
    loss = eat.record["train"]["config"].get("loss")
    others = {
        n: v.at("ca", HEADLINE_EPS, "nmi")
        for n, v in views.items()
        if n != "eat"
        and n not in UNDEFENDED
        and not n.startswith("eat-")
        and v.record["train"]["config"].get("loss") == loss  # the same loss as the eat row
    }
    others = {n: x for n, x in others.items() if x is not None}
    if eat_nmi is not None and others:
        best = max(others, key=others.get)
        met = eat_nmi > others[best]
        out.append(
            {
                "target": "above every adapted baseline of the same loss (CA NMI, eps "
                f"{HEADLINE_EPS:g})",
                "value": eat_nmi,
                "goal": others[best],
                "best_other": best,
                "met": met,
            }
        )
        lines.append(
            f"| CA NMI above every adapted baseline, same loss (best: {best}) | {_fmt(eat_nmi)} | "
            f"> {_fmt(others[best])} | {'yes' if met else 'NO'} |"
        )
    if eat_nmi is not None and "at-ensemble" in views:
        ref = views["at-ensemble"].at("ca", HEADLINE_EPS, "nmi")
        if ref is not None:
            met = eat_nmi >= ref + MARGIN
            out.append(
                {
                    "target": f"CA NMI >= at-ensemble + {MARGIN:g}",
                    "value": eat_nmi,
                    "goal": ref + MARGIN,
                    "met": met,
                }
            )
            lines.append(
                f"| CA NMI ≥ at-ensemble + {MARGIN:g} | {_fmt(eat_nmi)} | ≥ {_fmt(ref + MARGIN)} "
                f"| {'yes' if met else 'NO'} |"
            )
    seeds = profile.extra_attack_seeds
    eat_values = eat.ca_seed_values(seeds)
    if "at-ensemble" in views and len(eat_values) > 1:
        ref_values = views["at-ensemble"].ca_seed_values(seeds)
        if len(ref_values) == len(eat_values):
            eat_mean = sum(eat_values) / len(eat_values)
            ref_mean = sum(ref_values) / len(ref_values)
            met = eat_mean >= ref_mean + MARGIN
            out.append(
                {
                    "target": f"CA NMI >= at-ensemble + {MARGIN:g}, mean of {len(eat_values)} "
                    "attack seeds",
                    "value": eat_mean,
                    "goal": ref_mean + MARGIN,
                    "met": met,
                }
            )
            lines.append(
                f"| same, mean over {len(eat_values)} attack seeds | {_fmt(eat_mean)} | "
                f"≥ {_fmt(ref_mean + MARGIN)} | {'yes' if met else 'NO'} |"
            )
    return out, lines


def ca_tolerance(views, profile) -> tuple[float, float]:
    """(CA tolerance, pooled sd of the headline CA NMI over attack seeds across rows)."""
    variances = []
    for v in views.values():
        values = v.ca_seed_values(profile.extra_attack_seeds)
        if len(values) > 1:
            mean = sum(values) / len(values)
            variances.append(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
    pooled = (sum(variances) / len(variances)) ** 0.5 if variances else 0.0
    return max(MASKING_TOLERANCE, NOISE_SDS * pooled), pooled


def _masking_checks(views, names, profile, ca_tol: float) -> tuple[list, list[str]]:
    out, lines = [], []
    steps = profile.eval_steps
    for name in names:
        v = views[name]
        for attack, metric in (("ca", "nmi"), ("es", "recall@1")):
            tol = ca_tol if metric == "nmi" else MASKING_TOLERANCE
            series = [v.at(attack, e, metric) for e in profile.sweep_eps]
            if all(x is not None for x in series):
                ok = all(b <= a + tol for a, b in zip(series, series[1:], strict=False))
                out.append(
                    {"row": name, "check": f"{attack} falls with eps", "values": series, "pass": ok}
                )
                lines.append(
                    f"| {name} | {attack.upper()} {metric} falls with eps | "
                    + ", ".join(_fmt(x) for x in series)
                    + f" | {'yes' if ok else 'NO'} |"
                )
            if name == "vanilla":
                continue
            base = v.at(attack, HEADLINE_EPS, metric)
            more = v.at(attack, HEADLINE_EPS, metric, profile.masking_steps)
            restart = v.at(attack, HEADLINE_EPS, metric, restarts=profile.masking_restarts)
            transfer = v.at(attack, HEADLINE_EPS, metric, transfer_from="vanilla")
            for check, value, ok in (
                (
                    f"{profile.masking_steps} steps ≤ {steps} steps",
                    more,
                    None if more is None or base is None else more <= base + tol,
                ),
                (
                    f"{profile.masking_restarts} restarts ≤ 1",
                    restart,
                    None if restart is None or base is None else restart <= base + tol,
                ),
                (
                    "transfer from vanilla weaker than white-box",
                    transfer,
                    None if transfer is None or base is None else transfer >= base - tol,
                ),
            ):
                if ok is None:
                    continue
                out.append(
                    {"row": name, "check": f"{attack} {check}", "values": [base, value], "pass": ok}
                )
                lines.append(
                    f"| {name} | {attack.upper()} {metric}: {check} | white-box "
                    f"{_fmt(base)} vs {_fmt(value)} | {'yes' if ok else 'NO'} |"
                )
    return out, lines


def _plots(out: Path, views, sweep_names, profile) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # the ε sweep: two panels, one shared legend under them, readable at the page's size
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    for name in sweep_names:
        v = views[name]
        for ax, (attack, metric) in zip(axes, (("ca", "nmi"), ("es", "recall@1")), strict=True):
            eps = [0.0] + list(profile.sweep_eps)
            ys = [v.clean(metric)] + [v.at(attack, e, metric) for e in profile.sweep_eps]
            pts = [(e, y) for e, y in zip(eps, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name, linewidth=2)
    for ax, title in zip(
        axes, ("NMI under the clustering attack", "Recall@1 under embedding shift"), strict=True
    ):
        ax.set_xlabel("ε (L∞, pixels in [0, 1])", fontsize=12)
        ax.set_title(title, fontsize=13)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=12, frameon=False
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    paths.append(out / "robustness_vs_eps.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    # clean vs robust: numbered points and a key beside the axes, so no two labels overlap
    points = []
    for name, v in views.items():
        x, y = v.clean("nmi"), v.at("ca", HEADLINE_EPS, "nmi")
        if x is not None and y is not None:
            points.append((name, x, y, v.record["members"]))
    points.sort(key=lambda t: -t[2])  # the key lists the most robust first
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for number, (_name, x, y, members) in enumerate(points, 1):
        ax.scatter([x], [y], s=60 * members, alpha=0.6)
        ax.annotate(str(number), (x, y), ha="center", va="center", fontsize=8, weight="bold")
    key = "\n".join(f"{n:>2}  {name}" for n, (name, *_rest) in enumerate(points, 1))
    ax.text(1.03, 1.0, key, transform=ax.transAxes, va="top", fontsize=9, family="monospace")
    ax.set_xlabel("clean NMI", fontsize=12)
    ax.set_ylabel(f"NMI under the clustering attack (ε {HEADLINE_EPS:g})", fontsize=12)
    ax.set_title("Clean vs robust (marker size = members, the inference cost)", fontsize=12)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "clean_vs_robust.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
