"""Clustering of an uploaded image set, and the clustering attack on that set.

:meth:`ClusterService.cluster` embeds the uploads with one model, clusters them
(k-means, agglomerative or HDBSCAN; K fixed or chosen by silhouette), draws the set on a
2-D map, scores the clustering against folder labels when the uploads carry them, and
writes the downloads (CSV of file → cluster, zip of the images by cluster) into a
directory the caller names.

With ``attack_fraction > 0`` it also plays the attacker who controls a fraction p of the
uploads: for each loaded model in turn (vanilla, the single-model baseline when shipped,
the EAT ensemble), the clustering attack (DESIGN.md §3: away from the own k-means
centroid, toward a random other one, PGD on the deployed embedding) perturbs those
images, and the set is clustered again, so the models' clusterings can be compared side
by side.
"""

from __future__ import annotations

import csv
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from eat_models.attacks import DEFAULT_EPS, DEFAULT_STEPS, AttackBudget, AttackSet, craft
from eat_models.evaluate import clustering_scores

from .gallery import Resources
from .ood import model_cues
from .plots import ClusterPanel, cluster_maps
from .projection import Placement, project_set
from .text import plural
from .uploads import UploadBatch, UploadError

ALGORITHMS = ("kmeans", "agglomerative", "hdbscan")
ALGORITHM_LABELS = {
    "kmeans": "k-means",
    "agglomerative": "agglomerative (Ward)",
    "hdbscan": "HDBSCAN",
}
AUTO_K_RANGE = (2, 10)
MAX_K = 20
THUMB_SIDE = 96
#: the attack of "attack this set": the clustering attack toward random other clusters
SET_ATTACK = "ca"


@dataclass
class SetAttackOutcome:
    """One model under the clustering attack on the uploaded set."""

    key: str
    label: str
    clean_assignments: np.ndarray
    attacked_assignments: np.ndarray
    attacked_rows: np.ndarray
    agreement_ari: float
    moved: int
    clean_scores: dict[str, float] | None
    attacked_scores: dict[str, float] | None
    seconds: float

    def to_dict(self) -> dict:
        return {
            "model": self.key,
            "attacked_images": len(self.attacked_rows),
            "moved_images": self.moved,
            "agreement_ari": round(self.agreement_ari, 4),
            "clean": _rounded(self.clean_scores),
            "attacked": _rounded(self.attacked_scores),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SetAttackResult:
    fraction: float
    eps: float
    steps: int
    k: int
    outcomes: dict[str, SetAttackOutcome]
    figure: Image.Image

    def to_dict(self) -> dict:
        return {
            "fraction": self.fraction,
            "eps": self.eps,
            "steps": self.steps,
            "k": self.k,
            "models": {k: o.to_dict() for k, o in self.outcomes.items()},
        }


@dataclass
class ClusterResult:
    """A clustering of an uploaded set, its map, downloads and (optionally) the attack."""

    names: list[str]
    thumbnails: list[Image.Image]
    assignments: np.ndarray
    algorithm: str
    model: str
    k_scores: dict[int, float]
    labels: list[str] | None
    scores: dict[str, float] | None
    figure: Image.Image
    placement: Placement
    csv_path: Path
    zip_path: Path
    skipped: list = field(default_factory=list)
    attack: SetAttackResult | None = None
    seconds: float = 0.0
    #: time spent reading (decoding) the uploads before clustering, set by the caller
    read_seconds: float = 0.0
    #: per uploaded image, the model's out-of-domain verdict (empty without a detector)
    ood: list = field(default_factory=list)

    @property
    def out_of_domain_names(self) -> list[str]:
        return [n for n, o in zip(self.names, self.ood, strict=False) if o.out_of_domain]

    @property
    def clusters(self) -> list[int]:
        """Cluster ids, largest first, noise (−1) last."""
        ids, counts = np.unique(self.assignments, return_counts=True)
        order = sorted(
            zip(ids.tolist(), counts.tolist(), strict=True), key=lambda t: (t[0] < 0, -t[1])
        )
        return [cid for cid, _ in order]

    @property
    def n_clusters(self) -> int:
        return n_clusters_of(self.assignments)

    def cluster_title(self, cluster: int) -> str:
        count = int((self.assignments == cluster).sum())
        name = "noise (no cluster)" if cluster < 0 else f"Cluster {cluster + 1}"
        return f"{name} · {count} image{'s' if count != 1 else ''}"

    def members(self, cluster: int) -> list[tuple[Image.Image, str]]:
        rows = np.flatnonzero(self.assignments == cluster)
        return [(self.thumbnails[i], self._caption(i)) for i in rows]

    def _caption(self, i: int) -> str:
        name = PurePosixPath(self.names[i]).name
        return f"{name} ({self.labels[i]})" if self.labels else name

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "algorithm": self.algorithm,
            "images": len(self.names),
            "clusters": self.n_clusters,
            "assignments": {n: int(a) for n, a in zip(self.names, self.assignments, strict=True)},
            "silhouette": {str(k): round(v, 4) for k, v in self.k_scores.items()},
            "scores": _rounded(self.scores),
            "map": self.placement.method,
            "skipped": [{"file": s.name, "reason": s.reason} for s in self.skipped],
            "attack": self.attack.to_dict() if self.attack else None,
            "out_of_domain": self.out_of_domain_names,
            "seconds": round(self.seconds, 3),
            "read_seconds": round(self.read_seconds, 3),
        }


def n_clusters_of(assignments: np.ndarray) -> int:
    """Number of clusters, noise (−1) not counted."""
    return int((np.unique(assignments) >= 0).sum())


def _rounded(scores: dict[str, float] | None) -> dict[str, float] | None:
    return None if scores is None else {k: round(v, 4) for k, v in scores.items()}


def _check_options(n: int, k: int | None, algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if n < 2:
        raise UploadError(
            f"Clustering needs at least 2 images; {n} usable image was uploaded. "
            "Add more images (or a zip of them)."
        )
    if k is not None and algorithm != "hdbscan" and not 2 <= k <= min(MAX_K, n):
        raise ValueError(
            f"K must lie between 2 and {min(MAX_K, n)} for {n} images (got {k}); "
            "or choose automatic K"
        )


def _fit(embeddings: np.ndarray, algorithm: str, k: int) -> np.ndarray:
    if algorithm == "kmeans":
        return KMeans(n_clusters=k, n_init=5, random_state=0).fit_predict(embeddings)
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(embeddings)


def assign_clusters(
    embeddings: np.ndarray, algorithm: str, k: int | None
) -> tuple[np.ndarray, dict[int, float]]:
    """Cluster ids per row (−1 for HDBSCAN noise), and silhouette per K when K is automatic."""
    n = len(embeddings)
    if algorithm == "hdbscan":
        min_size = max(2, min(5, n // 10))
        assign = HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(embeddings)
        return np.asarray(assign, dtype=np.int64), {}
    if k is not None:
        return np.asarray(_fit(embeddings, algorithm, k), dtype=np.int64), {}
    low, high = AUTO_K_RANGE
    candidates = range(low, min(high, n - 1) + 1)
    scores: dict[int, float] = {}
    best = None
    for candidate in candidates:
        assign = _fit(embeddings, algorithm, candidate)
        if len(np.unique(assign)) < 2:
            continue
        scores[candidate] = float(silhouette_score(embeddings, assign))
        if best is None or scores[candidate] > scores[best[0]]:
            best = (candidate, assign)
    if best is None:  # two images, or all identical: nothing to choose from
        return np.asarray(_fit(embeddings, algorithm, min(2, n)), dtype=np.int64), scores
    return np.asarray(best[1], dtype=np.int64), scores


def _safe_name(index: int, name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name or "image"
    base = re.sub(r"[^\w.\-]+", "_", base)[:80]
    return f"{index:03d}_{base}"


def csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, a tab or a
    carriage return gets a leading apostrophe (OWASP's advice on CSV injection)."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def write_downloads(
    batch: UploadBatch, assignments: np.ndarray, out_dir: Path
) -> tuple[Path, Path]:
    """``clusters.csv`` (file, cluster[, folder label]) and ``clusters.zip`` (the original
    files under ``cluster_NN/``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = batch.labels
    csv_path = out_dir / "clusters.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "cluster"] + (["folder_label"] if labels else []))
        for i, item in enumerate(batch.images):
            cluster = "noise" if assignments[i] < 0 else int(assignments[i]) + 1
            row = [item.name, cluster] + ([labels[i]] if labels else [])
            writer.writerow([csv_cell(v) for v in row])
    zip_path = out_dir / "clusters.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, item in enumerate(batch.images):
            folder = "noise" if assignments[i] < 0 else f"cluster_{int(assignments[i]) + 1:02d}"
            zf.writestr(f"{folder}/{_safe_name(i, item.name)}", item.data)
    return csv_path, zip_path


def _thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.copy()
    if max(thumb.size) < THUMB_SIDE:
        factor = max(1, THUMB_SIDE // max(thumb.size))
        return thumb.resize((thumb.width * factor, thumb.height * factor), Image.NEAREST)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    return thumb


class ClusterService:
    """Clusters uploaded sets with either model; optionally attacks them."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def out_of_domain(self, key: str, inputs: torch.Tensor, embeddings: np.ndarray) -> list:
        """Each upload's out-of-domain verdict from model ``key``'s detector."""
        detector = self.resources.ood.get(key)
        if detector is None:
            return []
        view = self.resources.views[key]
        top1 = np.asarray([hits[0].score for hits in view.index.search(embeddings, 1).hits])
        members, activations = model_cues(view.model, inputs)
        flat = inputs.reshape(len(inputs), -1).numpy()
        return detector.score(flat, top1, members, activations)

    def inputs(self, batch: UploadBatch, key: str) -> torch.Tensor:
        view = self.resources.views[key]
        return torch.stack([view.preprocess(item.image) for item in batch.images])

    def cluster(
        self,
        batch: UploadBatch,
        model: str = "eat",
        k: int | None = None,
        algorithm: str = "kmeans",
        out_dir: str | Path | None = None,
        attack_fraction: float = 0.0,
        eps: float = DEFAULT_EPS,
        steps: int = DEFAULT_STEPS,
    ) -> ClusterResult:
        started = time.perf_counter()
        loaded = self.resources.keys
        if model not in loaded:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(loaded)}")
        k = None if k in (None, 0) else int(k)
        _check_options(len(batch), k, algorithm)
        if not 0.0 <= attack_fraction <= 1.0:
            raise ValueError(f"the attacked fraction must lie in [0, 1], got {attack_fraction}")
        budget = AttackBudget.checked(eps, steps) if attack_fraction > 0 else None
        view = self.resources.views[model]
        inputs = self.inputs(batch, model)
        embeddings = view.embed(inputs)
        ood = self.out_of_domain(model, inputs, embeddings)
        assignments, k_scores = assign_clusters(embeddings, algorithm, k)
        labels = batch.labels
        scores = clustering_scores(labels, assignments) if labels else None
        placement = project_set(embeddings)
        title = (
            f"{view.label}: {ALGORITHM_LABELS[algorithm]}, "
            f"{plural(n_clusters_of(assignments), 'cluster')}"
        )
        figure = cluster_maps([ClusterPanel(title, placement.xy, assignments, note=placement.note)])
        out = (
            Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="eat-cluster-"))
        )
        csv_path, zip_path = write_downloads(batch, assignments, out)
        attack = None
        if attack_fraction > 0:
            # The attacked set is clustered with the K of the clean result above (fixed or
            # chosen by silhouette), so the clean NMI of the attack table and the headline
            # NMI are the same clustering.
            attack_k = int(np.clip(n_clusters_of(assignments), 2, len(batch)))
            attack = self.attack_set(batch, attack_fraction, budget, attack_k)
        return ClusterResult(
            names=batch.names,
            thumbnails=[_thumbnail(item.image) for item in batch.images],
            assignments=assignments,
            algorithm=algorithm,
            model=model,
            k_scores=k_scores,
            labels=labels,
            scores=scores,
            figure=figure,
            placement=placement,
            csv_path=csv_path,
            zip_path=zip_path,
            skipped=list(batch.skipped),
            attack=attack,
            seconds=time.perf_counter() - started,
            ood=ood,
        )

    def attack_set(
        self,
        batch: UploadBatch,
        fraction: float,
        budget: AttackBudget,
        k: int,
        models: tuple[str, ...] | None = None,
    ) -> SetAttackResult:
        """The clustering attack on a fraction of the set, against each model in turn
        (``models``, default every loaded one, from vanilla to the ensemble).

        Each model is attacked white-box on its own deployed embedding; the set is
        clustered by k-means with ``k`` clusters before and after.
        """
        n = len(batch)
        labels = batch.labels
        seed = 0 if budget.seed is None else budget.seed
        rng = np.random.default_rng(seed)
        count = max(1, int(round(fraction * n)))
        rows = np.sort(rng.choice(n, size=count, replace=False))
        outcomes, panels = {}, []
        order = ("vanilla", "baseline", "eat")
        for key in [name for name in order if name in (models or self.resources.keys)]:
            started = time.perf_counter()
            view = self.resources.views[key]
            x = self.inputs(batch, key)
            clean = view.embed(x)
            km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(clean)
            clean_assign = km.labels_.astype(np.int64)
            centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
            attack_set = AttackSet(
                clean=torch.from_numpy(clean[rows]),
                centroids=centroids,
                assignments=torch.from_numpy(clean_assign[rows]),
                rng=np.random.default_rng(seed),
            )
            x_adv = x.clone()
            x_adv[rows] = craft(view.model, x[rows], SET_ATTACK, budget, attack_set)
            attacked = view.embed(x_adv)
            attacked_assign = (
                KMeans(n_clusters=k, n_init=5, random_state=seed)
                .fit_predict(attacked)
                .astype(np.int64)
            )
            agreement = float(adjusted_rand_score(clean_assign, attacked_assign))
            same = _matched(clean_assign, attacked_assign)
            outcomes[key] = SetAttackOutcome(
                key=key,
                label=view.label,
                clean_assignments=clean_assign,
                attacked_assignments=attacked_assign,
                attacked_rows=rows,
                agreement_ari=agreement,
                moved=int((~same[rows]).sum()),
                clean_scores=clustering_scores(labels, clean_assign) if labels else None,
                attacked_scores=clustering_scores(labels, attacked_assign) if labels else None,
                seconds=time.perf_counter() - started,
            )
            placement = project_set(attacked)
            marked = np.zeros(n, dtype=bool)
            marked[rows] = True
            panels.append(
                ClusterPanel(
                    f"{view.label} after the attack (ARI vs clean {agreement:.2f})",
                    placement.xy,
                    attacked_assign,
                    marked=marked,
                    note=f"× attacked images · {placement.note}",
                )
            )
        return SetAttackResult(
            fraction, budget.eps, budget.steps, k, outcomes, cluster_maps(panels)
        )


def _matched(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per item: does it sit in the cluster that most of its old cluster moved to?

    Cluster ids of two k-means runs are arbitrary; each old cluster is mapped to the new
    cluster that holds most of its members.
    """
    mapping = {}
    for cluster in np.unique(before):
        members = after[before == cluster]
        mapping[int(cluster)] = int(np.bincount(members).argmax())
    return np.asarray([mapping[int(b)] == a for b, a in zip(before, after, strict=True)])
