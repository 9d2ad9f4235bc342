"""The clustering attack on an uploaded set ("attack this set" in the Cluster tab).

The attacker controls a fraction p of the uploads. For each loaded model in turn (vanilla,
the single-model baseline when shipped, the EAT ensemble), the clustering attack (DESIGN.md
§3: away from the own k-means centroid, toward a random other one, PGD on the deployed
embedding) perturbs those images, and the set is clustered again by k-means, so the models'
clusterings can be compared side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from eat_models.attacks import AttackBudget, AttackSet, craft
from eat_models.evaluate import clustering_scores, kmeans_assign

from .cluster_algorithms import labels_problem
from .gallery import Resources
from .models import ATTACK_ORDER
from .plots import ClusterPanel, cluster_maps
from .projection import project_set
from .serialize import attributes, rounded
from .uploads import UploadBatch

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
            "clean": rounded(self.clean_scores),
            "attacked": rounded(self.attacked_scores),
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
            **attributes(self, "fraction", "eps", "steps", "k"),
            "models": {k: o.to_dict() for k, o in self.outcomes.items()},
        }


def attack_set(
    resources: Resources,
    batch: UploadBatch,
    fraction: float,
    budget: AttackBudget,
    k: int,
    models: tuple[str, ...] | None = None,
) -> SetAttackResult:
    """The clustering attack on a fraction of the set, against each model in turn
    (``models``, default every loaded one, from vanilla to the ensemble).

    Each model is attacked white-box on its own deployed embedding; the set is clustered by
    k-means with ``k`` clusters before and after.
    """
    n = len(batch)
    labels = batch.labels if not labels_problem(batch.labels) else None
    seed = 0 if budget.seed is None else budget.seed
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * n)))
    rows = np.sort(rng.choice(n, size=count, replace=False))
    images = [item.image for item in batch.images]
    outcomes, panels = {}, []
    for key in [name for name in ATTACK_ORDER if name in (models or resources.keys)]:
        started = time.perf_counter()
        view = resources.views[key]
        x = view.inputs(images)
        clean = view.embed(x)
        clean_assign, centroids = kmeans_assign(clean, k, seed=seed, n_init=5)
        clean_assign = clean_assign.astype(np.int64)
        known = AttackSet(
            clean=torch.from_numpy(clean[rows]),
            centroids=torch.from_numpy(centroids),
            assignments=torch.from_numpy(clean_assign[rows]),
            rng=np.random.default_rng(seed),
        )
        x_adv = x.clone()
        x_adv[rows] = craft(view.model, x[rows], SET_ATTACK, budget, known)
        attacked = view.embed(x_adv)
        attacked_assign = kmeans_assign(attacked, k, seed=seed, n_init=5)[0].astype(np.int64)
        agreement = float(adjusted_rand_score(clean_assign, attacked_assign))
        same = matched_clusters(clean_assign, attacked_assign)
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
        # one map of the clean set and the attacked images: each attacked image is drawn
        # where it moved, with an arrow from where it was
        placement = project_set(np.concatenate([clean, attacked[rows]]))
        xy = placement.xy[:n].copy()
        origins = xy[rows].copy()
        xy[rows] = placement.xy[n:]
        marked = np.zeros(n, dtype=bool)
        marked[rows] = True
        panels.append(
            ClusterPanel(
                f"{view.label} after the attack (ARI vs clean {agreement:.2f})",
                xy,
                attacked_assign,
                marked=marked,
                note=f"× attacked images, ○ → × where each moved · {placement.note}",
                origins=origins,
            )
        )
    return SetAttackResult(fraction, budget.eps, budget.steps, k, outcomes, cluster_maps(panels))


def matched_clusters(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per item: does it sit in the cluster that most of its old cluster moved to?

    Cluster ids of two k-means runs are arbitrary; each old cluster is mapped to the new
    cluster that holds most of its members.
    """
    mapping = {}
    for cluster in np.unique(before):
        members = after[before == cluster]
        mapping[int(cluster)] = int(np.bincount(members).argmax())
    return np.asarray([mapping[int(b)] == a for b, a in zip(before, after, strict=True)])
