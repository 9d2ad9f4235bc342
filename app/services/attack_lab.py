"""The attack lab: attack one image live, against the vanilla model, the single-model
baseline (when shipped) and the EAT ensemble.

For each model the attack is white-box on its *deployed* embedding (for the ensemble,
the averaged embedding), L∞-bounded by ε, PGD with a random start, by any registered
attack that perturbs a query
(:mod:`eat_models.attacks`: the embedding shift, the query attacks, the clustering attack
toward a random other gallery k-means centroid, RobRank's TMA, LTM, GTM, GTT). The attack
is told what an attacker of the served gallery knows (:class:`AttackSet`: the gallery, its
labels and centroids, the image's own row) and draws its own targets, seeded.

The result holds, per model: the adversarial image, the perturbation amplified to the
full grey range, the top-k gallery items before and after, the embedding shift, the rank
of the first gallery item of the true class before and after, and both points on the
model's gallery map with an arrow from clean to adversarial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from eat_models.attacks import ATTACKS, QUERY_NEIGHBOURS, AttackSet, craft

from .budget import DEFAULT_EPS, DEFAULT_STEPS, check_budget
from .display import DISPLAY_SIDE, tensor_to_image
from .gallery import Resources
from .models import ATTACK_ORDER
from .plots import Arrow, MapPanel, gallery_maps
from .search import SearchHit, check_k, models_for, ranked_hits
from .serialize import attributes

#: the attacks of one image: every registered attack that perturbs a query
ATTACK_LABELS = {name: a.label for name, a in ATTACKS.items() if a.perturbs == "query"}
ATTACK_KINDS = tuple(ATTACK_LABELS)
SEED = 0


@dataclass
class ModelAttack:
    """One model under attack."""

    key: str
    label: str
    adversarial: Image.Image
    perturbation: Image.Image
    clean_hits: list[SearchHit]
    adversarial_hits: list[SearchHit]
    embedding_shift: float
    linf: float
    true_rank_clean: int
    true_rank_adversarial: int
    cluster_clean: str
    cluster_adversarial: str
    placement: str
    attack_seconds: float

    def to_dict(self) -> dict:
        return {
            "model": self.key,
            "embedding_shift": round(self.embedding_shift, 4),
            "linf": round(self.linf, 4),
            "true_class_rank_clean": self.true_rank_clean,
            "true_class_rank_adversarial": self.true_rank_adversarial,
            "top1_clean": self.clean_hits[0].class_name if self.clean_hits else None,
            "top1_adversarial": (
                self.adversarial_hits[0].class_name if self.adversarial_hits else None
            ),
            "cluster_clean": self.cluster_clean,
            "cluster_adversarial": self.cluster_adversarial,
            "clean_hits": [h.to_dict() for h in self.clean_hits],
            "adversarial_hits": [h.to_dict() for h in self.adversarial_hits],
            "placement": self.placement,
            "attack_seconds": round(self.attack_seconds, 3),
        }


@dataclass
class AttackLabResult:
    """The clean image, the settings, one :class:`ModelAttack` per model and the map."""

    clean_image: Image.Image
    kind: str
    eps: float
    steps: int
    true_label: int
    true_class: str
    label_source: str
    outcomes: dict[str, ModelAttack]
    figure: Image.Image
    seconds: float
    #: time spent reading (decoding) the upload before the attack, set by the caller
    read_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "attack": self.kind,
            **attributes(self, "eps", "steps", "true_class", "label_source"),
            "models": {k: o.to_dict() for k, o in self.outcomes.items()},
            "seconds": round(self.seconds, 3),
            "read_seconds": round(self.read_seconds, 3),
        }


def amplified_perturbation(delta: torch.Tensor, eps: float, side: int) -> Image.Image:
    """``δ ∈ [−ε, ε]`` mapped to [0, 1] (mid-grey = no change), enlarged."""
    scale = max(eps, 1e-8)
    return tensor_to_image((delta / (2 * scale) + 0.5).clamp(0, 1), side)


def true_class_rank(
    vector: np.ndarray, gallery: np.ndarray, labels: np.ndarray, label: int, exclude: int | None
) -> int:
    """1-based rank of the first gallery item of class ``label`` (0 if there is none)."""
    sims = gallery @ vector
    if exclude is not None:
        sims[exclude] = -np.inf
    order = np.argsort(-sims, kind="stable")
    if exclude is not None:
        order = order[order != exclude]
    hits = np.flatnonzero(labels[order] == label)
    return int(hits[0]) + 1 if len(hits) else 0


def check_kind(kind: str) -> str:
    if kind not in ATTACK_KINDS:
        raise ValueError(f"unknown attack {kind!r}; choose one of {', '.join(ATTACK_KINDS)}")
    return kind


class AttackLab:
    """Runs one attack on one image against each chosen model and gathers what to show."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def _inputs(
        self, image: Image.Image | None, gallery_id: int | None
    ) -> tuple[dict[str, torch.Tensor], int | None]:
        if gallery_id is not None and gallery_id >= 0:
            gallery_id = self.resources.check_id(gallery_id)
            keys = self.resources.keys
            return {k: self.resources.model_input(gallery_id, k) for k in keys}, gallery_id
        if not isinstance(image, Image.Image):
            raise ValueError("no image to attack: upload one or pick one from the gallery")
        return {k: self.resources.views[k].preprocess(image) for k in self.resources.keys}, None

    def run(
        self,
        image: Image.Image | None = None,
        gallery_id: int | None = None,
        kind: str = "es",
        eps: float = DEFAULT_EPS,
        steps: int = DEFAULT_STEPS,
        k: int = 5,
        models: str | list[str] = "all",
    ) -> AttackLabResult:
        """Attack the image with each of ``models`` (see :func:`app.services.search.models_for`);
        the panels go from the plain model to the ensemble: vanilla, baseline, EAT."""
        started = time.perf_counter()
        chosen = models_for(models, self.resources.keys)
        kind = check_kind(kind)
        budget = check_budget(eps, steps, seed=SEED)
        eps, steps = budget.eps, budget.steps
        k = check_k(k)
        inputs, gallery_id = self._inputs(image, gallery_id)
        res = self.resources
        labels = res.labels
        clean_vectors = {
            key: res.views[key].embed(inputs[key][None])[0] for key in {*chosen, "eat"}
        }
        if gallery_id is not None and labels[gallery_id] >= 0:
            true_label = int(labels[gallery_id])
            label_source = f"gallery item {gallery_id}"
        else:
            top = ranked_hits(res, res.views["eat"], clean_vectors["eat"], 1)
            true_label = top[0].label
            label_source = "not known for an upload: the EAT ensemble's clean top-1 class"

        outcomes, panels = {}, []
        for key in sorted(chosen, key=ATTACK_ORDER.index):
            view = res.views[key]
            x = inputs[key][None]
            clean = clean_vectors[key]
            t = time.perf_counter()
            x_adv = craft(
                view.model,
                x,
                kind,
                budget,
                self._attack_set(view, clean, true_label, gallery_id),
            )
            attack_seconds = time.perf_counter() - t
            adv = view.embed(x_adv)[0]
            own_after = int(np.argmax(view.centroids @ adv))
            own_before = int(np.argmax(view.centroids @ clean))
            placement = view.projection.place(np.stack([clean, adv]))
            outcome = ModelAttack(
                key=key,
                label=view.label,
                adversarial=tensor_to_image(x_adv[0], DISPLAY_SIDE),
                perturbation=amplified_perturbation(x_adv[0] - x[0], eps, DISPLAY_SIDE),
                clean_hits=ranked_hits(res, view, clean, k, exclude=gallery_id),
                adversarial_hits=ranked_hits(res, view, adv, k, exclude=gallery_id),
                embedding_shift=float(np.linalg.norm(adv - clean)),
                linf=float((x_adv - x).abs().max()),
                true_rank_clean=true_class_rank(
                    clean, view.vectors, labels, true_label, gallery_id
                ),
                true_rank_adversarial=true_class_rank(
                    adv, view.vectors, labels, true_label, gallery_id
                ),
                cluster_clean=self._cluster_name(key, own_before),
                cluster_adversarial=self._cluster_name(key, own_after),
                placement=placement.method,
                attack_seconds=attack_seconds,
            )
            outcomes[key] = outcome
            panels.append(
                MapPanel(
                    title=f"{view.label}: embedding shift {outcome.embedding_shift:.2f}",
                    coords=view.projection.coords,
                    labels=labels[view.map_rows],
                    class_names=res.class_names,
                    arrows=[Arrow(placement.xy[0], placement.xy[1])],
                    note=f"map: {view.projection.note}; points {placement.note}",
                )
            )
        return AttackLabResult(
            clean_image=tensor_to_image(inputs["eat"], DISPLAY_SIDE),
            kind=kind,
            eps=eps,
            steps=steps,
            true_label=true_label,
            true_class=res.class_name(true_label),
            label_source=label_source,
            outcomes=outcomes,
            figure=gallery_maps(panels),
            seconds=time.perf_counter() - started,
        )

    def _attack_set(
        self, view, clean: np.ndarray, true_label: int, gallery_id: int | None
    ) -> AttackSet:
        """What an attacker of the served gallery knows about one image: its clean
        embedding and (believed) class, the gallery with its labels, the image's own row,
        the gallery's k-means centroids and the image's nearest one; targets are seeded."""
        return AttackSet(
            clean=torch.from_numpy(clean)[None],
            labels=torch.tensor([true_label]),
            gallery=torch.from_numpy(view.vectors),
            gallery_labels=torch.from_numpy(self.resources.labels),
            self_index=torch.tensor([-1 if gallery_id is None else gallery_id]),
            centroids=torch.from_numpy(view.centroids),
            assignments=torch.tensor([int(np.argmax(view.centroids @ clean))]),
            rng=np.random.default_rng(SEED),
            neighbours=QUERY_NEIGHBOURS,
        )

    def _cluster_name(self, key: str, centroid: int) -> str:
        cls = int(self.resources.views[key].centroid_classes[centroid])
        return f"cluster {centroid + 1} (mostly {self.resources.class_name(cls)})"
