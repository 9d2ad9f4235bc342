"""Short Markdown texts for the results: what the layout shows next to images and plots."""

from __future__ import annotations

from ..services.attack_lab import ATTACK_LABELS, AttackLabResult
from ..services.cluster_algorithms import ALGORITHM_LABELS, labels_problem
from ..services.clustering import ClusterResult
from ..services.ood import describe
from ..services.search import SearchResult
from ..services.text import escape_markdown, plural
from ..services.uploads import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_PIXELS,
    MAX_SKIPPED_LINES,
    summarise_skipped,
)

#: what the out-of-domain warning catches and misses, in plain words (results/app/ood.md,
#: at most 1 % false alarms on unseen Fashion-MNIST images)
OOD_COVERAGE = (
    "A warning marks queries unlike these: it catches noise, blank images, patterns, "
    "gradients and enlarged small pictures, almost all text and line drawings, and most "
    "photographs, but it misses about 1 in 10 photographs and may miss handwriting "
    "drawn at this size, so no warning does not prove a query is clothing."
)

SHORT_LABELS = {"eat": "EAT", "baseline": "baseline", "hm": "HM", "vanilla": "vanilla"}

#: what the attack lab's words mean, shown under its controls
GLOSSARY = (
    "**ε (epsilon)**: the attacker's budget, the most any pixel may change (pixels in [0, 1]; "
    "0.1 = 10 % of the grey range). "
    "**ES** (embedding shift): push the image's embedding as far as possible from where it "
    "was, so every neighbour changes. "
    "**QA** (query attack): push a search query away from its nearest gallery items of its "
    "own class, so the right answers drop down the ranking. "
    "**CA** (clustering attack): push an image away from its cluster's centre toward "
    "another cluster, so clustering puts it in the wrong group. "
    "Each attack is white-box PGD (repeated gradient steps, kept within ε) on the model's "
    "deployed embedding — for the ensemble, the averaged one. "
    "**Maps**: each dot is a gallery image, laid out so that images the model finds alike "
    "sit close together (UMAP; PCA is a quicker, rougher layout used while UMAP is not ready)."
)


def limits_text() -> str:
    return (
        f"at most {MAX_FILES} images per request, {MAX_FILE_BYTES // (1024 * 1024)} MB per file, "
        f"{MAX_PIXELS // 1_000_000} megapixels per image"
    )


def _members(n: int) -> str:
    return f"{n} member" + ("s" if n != 1 else "")


def status_markdown(status: dict) -> str:
    models = status["models"]
    maps = set((status.get("maps") or {}).values())
    umap = (
        "UMAP maps ready" + (" (computed ahead)" if maps == {"umap-stored"} else "")
        if status["umap_warm"]
        else "UMAP off (--no-umap): cached or PCA maps, new points placed by nearest neighbours"
        if not status["umap_enabled"]
        else "gallery UMAP maps ready; maps of uploaded sets use PCA for about a minute more"
        if status.get("maps_ready")
        else "UMAP maps being computed in the background (this gallery has no map stored "
        "ahead: minutes on a small machine; until then maps use PCA and new points are "
        "placed by nearest neighbours)"
    )
    knows = status.get("knows") or {}
    known = (
        f"The models know **{len(knows['classes'])} kinds of "
        f"{'clothing' if knows.get('dataset') == 'fashion-mnist' else 'image'}** "
        f"({', '.join(knows['classes'])}) as **{knows['input']}** images: anything else is "
        "mapped to the nearest of these, with a score that can look just as confident. "
        f"{OOD_COVERAGE}\n\n"
        if knows.get("classes")
        else ""
    )
    parts = []
    for key, info in models.items():
        detail = [_members(info["members"])] if info["members"] > 1 else []
        if info.get("run") and info["run"] != key:
            detail.append(f"run `{info['run']}`")  # the training run (benchmark row) served
        parts.append(f"**{info['label']}**" + (f" ({', '.join(detail)})" if detail else ""))
    return known + (
        f"Gallery: **{status['gallery_images']:,}** images of `{status['gallery']}` · "
        f"models: {', '.join(parts)} · {umap}"
    )


def skipped_markdown(skipped, limit: int = MAX_SKIPPED_LINES) -> str:
    """The skipped files, names escaped, at most ``limit`` lines and then a count."""
    return summarise_skipped(skipped, limit, escape_markdown)


def search_markdown(result: SearchResult) -> str:
    lines = [f"Searched with {escape_markdown(result.query)}."] if result.query else []
    if result.out_of_domain:
        lines.append(f"**{describe(result.ood)}**")
    for res in result.results.values():
        if not res.hits:
            continue
        top = res.hits[0]
        classes = [h.class_name for h in res.hits]
        share = classes.count(top.class_name) / len(classes)
        lines.append(
            f"**{res.label}**: top hit *{top.class_name}* (cosine {top.score:.3f}); "
            f"{share:.0%} of the top {len(classes)} share its class · {res.seconds * 1000:.0f} ms"
        )
    if result.read_seconds:
        lines.append(f"Reading the image took {result.read_seconds * 1000:.0f} ms.")
    return "\n\n".join(lines)


def _scores_line(scores: dict[str, float] | None) -> str:
    if not scores:
        return "–"
    return f"NMI {scores['nmi']:.3f} · ARI {scores['ari']:.3f}"


def cluster_markdown(result: ClusterResult) -> str:
    lines = [
        f"**{plural(len(result.names), 'image')} → {plural(result.n_clusters, 'cluster')}** "
        f"({ALGORITHM_LABELS[result.algorithm]}, {result.model} model, "
        f"{result.seconds + result.read_seconds:.1f} s"
        + (f", reading the files {result.read_seconds:.1f} s" if result.read_seconds else "")
        + ")."
    ]
    strange = result.out_of_domain_names
    if strange:
        shown = ", ".join(escape_markdown(n) for n in strange[:8])
        more = f" and {len(strange) - 8} more" if len(strange) > 8 else ""
        lines.append(
            f"⚠ **{plural(len(strange), 'image')} of {len(result.names)} "
            f"look{'s' if len(strange) == 1 else ''} like nothing the model was trained on** "
            f"({shown}{more}): their clusters say little."
        )
    if result.k_scores:
        best = max(result.k_scores, key=result.k_scores.get)
        scores = ", ".join(f"{k}: {v:.2f}" for k, v in result.k_scores.items())
        lines.append(f"K chosen by silhouette: **{best}** ({scores}).")
    if (result.assignments < 0).any():
        noise = int((result.assignments < 0).sum())
        lines.append(f"{plural(noise, 'image')} fit{'s' if noise == 1 else ''} no cluster (noise).")
    if result.scores:
        lines.append(
            f"Against the folder labels of the zip: **{_scores_line(result.scores)}** "
            f"(pairwise F1 {result.scores['f1']:.3f})."
        )
    elif labels_problem(result.labels):
        lines.append(labels_problem(result.labels))
    else:
        lines.append("No folder labels (upload a zip with one folder per class to get NMI/ARI).")
    if result.skipped:
        lines.append("**Skipped files:**\n" + skipped_markdown(result.skipped))
    return "\n\n".join(lines)


def set_attack_markdown(result: ClusterResult) -> str:
    attack = result.attack
    if attack is None:
        return ""
    scored = bool(result.labels) and not labels_problem(result.labels)
    header = (
        f"**Clustering attack on {next(iter(attack.outcomes.values())).attacked_rows.size} of "
        f"{plural(len(result.names), 'image')}** (p = {attack.fraction:.2f}, ε = {attack.eps:.3f}, "
        f"PGD-{attack.steps}, k-means with K = {attack.k}; each model attacked white-box).\n\n"
        "| model | attacked images that changed cluster | ARI attacked vs clean clustering |"
        + (" labels: clean | labels: attacked |" if scored else "")
        + "\n|---|---:|---:|"
        + ("---:|---:|" if scored else "")
    )
    rows = []
    for outcome in attack.outcomes.values():
        row = (
            f"| {outcome.label} | {outcome.moved} / {outcome.attacked_rows.size} | "
            f"{outcome.agreement_ari:.3f} |"
        )
        if scored:
            row += (
                f" {_scores_line(outcome.clean_scores)} | {_scores_line(outcome.attacked_scores)} |"
            )
        rows.append(row)
    return header + "\n" + "\n".join(rows)


def attack_markdown(result: AttackLabResult) -> str:
    header = (
        f"**{ATTACK_LABELS[result.kind]}**, ε = {result.eps:.3f}, PGD-{result.steps} · "
        f"true class *{result.true_class}* ({result.label_source}) · "
        f"{result.seconds + result.read_seconds:.2f} s\n\n"
        "| model | emb. shift | true-class rank (clean → adv.) | top-1 class (clean → adv.) "
        "| nearest gallery cluster (clean → adv.) | time |\n|---|---:|---:|---|---|---:|"
    )
    rows = []
    for o in result.outcomes.values():
        top_clean = o.clean_hits[0].class_name if o.clean_hits else "–"
        top_adv = o.adversarial_hits[0].class_name if o.adversarial_hits else "–"
        rows.append(
            f"| **{SHORT_LABELS[o.key]}** | {o.embedding_shift:.3f} | {o.true_rank_clean} → "
            f"{o.true_rank_adversarial} | {top_clean} → {top_adv} | {o.cluster_clean} → "
            f"{o.cluster_adversarial} | {o.attack_seconds * 1000:.0f} ms |"
        )
    return header + "\n" + "\n".join(rows)
