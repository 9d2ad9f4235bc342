"""Clustering an uploaded image set: the Cluster tab's service.

:meth:`ClusterService.cluster` embeds the uploads with one model, clusters them
(:mod:`app.services.cluster_algorithms`: k-means, agglomerative or HDBSCAN; K fixed or chosen
by silhouette), draws the set on a 2-D map, scores the clustering against folder labels when
the uploads carry them, and writes the downloads (:mod:`app.services.downloads`) into a
directory the caller names.

With ``attack_fraction > 0`` it also plays the attacker who controls a fraction p of the
uploads (:mod:`app.services.set_attack`), so the models' clusterings under attack can be
compared side by side.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from eat_models.evaluate import clustering_scores

from .budget import DEFAULT_EPS, DEFAULT_STEPS, check_budget, check_fraction
from .cluster_algorithms import (
    ALGORITHM_LABELS,
    assign_clusters,
    check_options,
    labels_problem,
    n_clusters_of,
)
from .display import upload_thumbnail
from .downloads import write_downloads
from .gallery import Resources
from .ood import model_cues
from .plots import ClusterPanel, cluster_maps
from .projection import Placement, project_set
from .serialize import rounded
from .set_attack import SetAttackResult, attack_set
from .text import plural
from .uploads import UploadBatch


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
            "scores": rounded(self.scores),
            "map": self.placement.method,
            "skipped": [{"file": s.name, "reason": s.reason} for s in self.skipped],
            "attack": self.attack.to_dict() if self.attack else None,
            "out_of_domain": self.out_of_domain_names,
            "seconds": round(self.seconds, 3),
            "read_seconds": round(self.read_seconds, 3),
        }


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
        cues = model_cues(view.model, inputs)
        flat = inputs.reshape(len(inputs), -1).numpy()
        return detector.score_cues(flat, top1, cues)

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
        check_options(len(batch), k, algorithm)
        check_fraction(attack_fraction)
        budget = check_budget(eps, steps) if attack_fraction > 0 else None
        view = self.resources.views[model]
        inputs = view.inputs([item.image for item in batch.images])
        embeddings = view.embed(inputs)
        ood = self.out_of_domain(model, inputs, embeddings)
        assignments, k_scores = assign_clusters(embeddings, algorithm, k)
        labels = batch.labels
        scores = (
            clustering_scores(labels, assignments)
            if labels and not labels_problem(labels)
            else None
        )
        placement = project_set(embeddings)
        title = (
            f"{view.label}: {ALGORITHM_LABELS[algorithm]}, "
            f"{plural(n_clusters_of(assignments), 'cluster')}"
        )
        figure = cluster_maps([ClusterPanel(title, placement.xy, assignments, note=placement.note)])
        out = (
            Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="eat-cluster-"))
        )
        attack = None
        if attack_fraction > 0:
            # The attacked set is clustered with the K of the clean result above (fixed or
            # chosen by silhouette), so the clean NMI of the attack table and the headline
            # NMI are the same clustering.
            attack_k = int(np.clip(n_clusters_of(assignments), 2, len(batch)))
            attack = attack_set(self.resources, batch, attack_fraction, budget, attack_k)
        csv_path, zip_path = write_downloads(batch, assignments, out, attack)
        return ClusterResult(
            names=batch.names,
            thumbnails=[upload_thumbnail(item.image) for item in batch.images],
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
