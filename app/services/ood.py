"""Out-of-domain signal: does a query look like anything the model was trained on?

A metric-learning model maps *every* image somewhere, and its nearest gallery neighbour can
score as high for a temple photo as for a shirt. So each model view carries a small
detector calibrated on the gallery itself (in-domain by construction). Three cues are
**scored**, each larger for stranger inputs:

* ``neighbour`` — 1 − the cosine of the query's nearest gallery embedding, against the
  gallery's own leave-one-out nearest-neighbour cosines;
* ``activation`` — minus the norm of the network's penultimate features (the input of its
  embedding head; for an ensemble, the mean over the members): the filters that respond
  to clothing stay quiet on noise, blank images, gradients and drawings, which an
  adversarially trained embedding still maps close to some gallery item;
* ``feature`` — the Mahalanobis distance of those penultimate features (for an ensemble,
  the members' mean) to the nearest class centre of the gallery, under one covariance
  shared by the classes (Lee et al., NeurIPS 2018), fitted on half of the gallery: photos,
  gradients and text that some gallery item still resembles in the embedding sit far
  from every class in the features.

Two more are computed and reported with every verdict, but not scored, because they
*lowered* the AUROC on the prototype images (``python -m benchmarks.ood_bench --seed 0``; EAT
ensemble: neighbour alone 0.932, neighbour + activation 0.987, adding either of these
0.95–0.98 with more false alarms):

* ``pixels`` — the model input's reconstruction error under a PCA of gallery inputs
  (AUROC 0.66 alone: blank and text images reconstruct well);
* ``disagreement`` (ensembles) — 1 − the mean pairwise cosine of the members' embeddings
  (AUROC 0.66 alone: adversarially trained members agree on strange inputs too).

Each cue becomes a tail probability (the share of calibration values at least as large);
the OOD score is ``1 − min(tails of the scored cues)``. A query is flagged when its score
reaches the detector's ``threshold``: the score that only ``FALSE_ALARMS`` (0.5 %) of the
calibration half of the gallery reach, so the flag's false-alarm rate on in-domain images
is set where it is used, whatever the number of cues. The feature cue and the threshold were
chosen on ``python -m benchmarks.ood_bench --seed 0`` (images made with seed 0, photos of one
half of scikit-image's samples); the benchmark reports them on ``--seed 1`` (other images,
the other photos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from sklearn.decomposition import PCA

QUANTILE = 0.995
#: the share of the gallery's calibration half the flag may fire on (its false-alarm rate)
FALSE_ALARMS = 0.005
#: the cues the score and the flag use; the others are reported only (see above)
SCORED_CUES = ("neighbour", "activation", "feature")
PCA_COMPONENTS = 32
#: calibration items at most (a random half of the gallery fits the PCA, the rest calibrates)
MAX_CALIBRATION = 4000


@dataclass
class OODScore:
    """One query's verdict: the score in [0, 1], the flag, and each cue with its tail."""

    score: float
    out_of_domain: bool
    cues: dict[str, float]
    tails: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "out_of_domain": self.out_of_domain,
            "score": round(self.score, 4),
            "cues": {k: round(v, 4) for k, v in self.cues.items()},
        }

    @property
    def strongest(self) -> str:
        scored = {k: v for k, v in self.tails.items() if k in SCORED_CUES} or self.tails
        return min(scored, key=scored.get)


def member_disagreement(member_vectors: np.ndarray) -> np.ndarray:
    """``[K, N, D]`` L2-normalised member embeddings → ``[N]`` 1 − mean pairwise cosine."""
    k = member_vectors.shape[0]
    if k < 2:
        return np.zeros(member_vectors.shape[1], dtype=np.float32)
    total = np.zeros(member_vectors.shape[1], dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            total += np.sum(member_vectors[i] * member_vectors[j], axis=1)
    return (1.0 - total / (k * (k - 1) / 2)).astype(np.float32)


def leave_one_out_top1(queries: np.ndarray, rows: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Top-1 cosine of ``queries`` (gallery rows ``rows``) to the gallery, itself excluded."""
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ gallery.T
        sims[np.arange(len(sims)), rows[start : start + 1024]] = -np.inf
        out[start : start + 1024] = sims.max(axis=1)
    return out


class FeatureDistance:
    """Squared Mahalanobis distance of penultimate features to the nearest class centre,
    under one covariance shared by the classes (shrunk by 0.1 % of its mean variance)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = np.asarray(features, dtype=np.float64)
        if labels is None or np.any(np.asarray(labels) < 0) or len(np.unique(labels)) < 2:
            labels = np.zeros(len(x), dtype=np.int64)  # unlabelled gallery: one Gaussian
        labels = np.asarray(labels)
        classes = np.unique(labels)
        centres = np.stack([x[labels == c].mean(axis=0) for c in classes])
        centred = x - centres[np.searchsorted(classes, labels)]
        cov = centred.T @ centred / max(1, len(x) - len(classes))
        cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))
        # whitening W with W Wᵀ = cov⁻¹: distances are then Euclidean
        self.whiten = np.linalg.cholesky(np.linalg.inv(cov))
        self.centres = centres @ self.whiten

    def __call__(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ self.whiten
        d = (z * z).sum(1)[:, None] - 2 * z @ self.centres.T + (self.centres**2).sum(1)[None]
        return d.min(axis=1)


class OODDetector:
    """Calibrated cues of one model view; :meth:`score` rates new inputs."""

    def __init__(
        self,
        pca: PCA,
        references: dict[str, np.ndarray],
        quantile: float = QUANTILE,
        distance: FeatureDistance | None = None,
        threshold: float | None = None,
    ):
        self.pca = pca
        self.references = {k: np.sort(v.astype(np.float64)) for k, v in references.items()}
        self.quantile = quantile
        self.distance = distance
        #: the score at which a query is flagged (default: ``quantile``)
        self.threshold = quantile if threshold is None else threshold

    @classmethod
    def calibrate(
        cls,
        inputs: np.ndarray,
        vectors: np.ndarray,
        member_vectors: np.ndarray | None = None,
        seed: int = 0,
        quantile: float = QUANTILE,
        activations: np.ndarray | None = None,
        features: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        false_alarms: float | None = FALSE_ALARMS,
    ) -> OODDetector:
        """``inputs`` ``[N, C·H·W]`` gallery model inputs, ``vectors`` ``[N, D]`` their
        embeddings, ``member_vectors`` ``[K, N, D]`` for an ensemble, ``activations``
        ``[N]`` their penultimate-feature norms and ``features`` ``[N, F]`` the features
        themselves (:func:`model_cues`), ``labels`` ``[N]`` their classes (-1: unknown).
        The flag's threshold is set so that ``false_alarms`` of the calibration half reach
        it (None: at ``quantile``)."""
        n = len(inputs)
        order = np.random.default_rng(seed).permutation(n)
        fit_rows = order[: n // 2]
        cal_rows = np.sort(order[n // 2 :][:MAX_CALIBRATION])
        pca = PCA(n_components=min(PCA_COMPONENTS, len(fit_rows) - 1), random_state=seed)
        pca.fit(inputs[fit_rows])
        references = {
            "pixels": reconstruction_error(pca, inputs[cal_rows]),
            "neighbour": 1.0 - leave_one_out_top1(vectors[cal_rows], cal_rows, vectors),
        }
        if member_vectors is not None and len(member_vectors) > 1:
            references["disagreement"] = member_disagreement(member_vectors[:, cal_rows])
        if activations is not None:
            references["activation"] = -np.asarray(activations, dtype=np.float64)[cal_rows]
        distance = None
        if features is not None:
            distance = FeatureDistance(
                np.asarray(features)[fit_rows], None if labels is None else labels[fit_rows]
            )
            references["feature"] = distance(np.asarray(features)[cal_rows])
        detector = cls(pca, references, quantile, distance)
        if false_alarms is not None:
            scored = [k for k in SCORED_CUES if k in references] or list(references)
            tails = np.stack([detector.tails(k, references[k]) for k in scored])
            scores = 1.0 - tails.min(axis=0)
            detector.threshold = float(np.quantile(scores, 1.0 - false_alarms))
        return detector

    def tails(self, cue: str, values: np.ndarray) -> np.ndarray:
        """:meth:`tail` of many values at once."""
        ref = self.references[cue]
        above = len(ref) - np.searchsorted(ref, np.asarray(values, np.float64), side="left")
        return (above + 1) / (len(ref) + 1)

    def tail(self, cue: str, value: float) -> float:
        """Share of calibration values ≥ ``value`` (with one pseudo-count: never 0)."""
        return float(self.tails(cue, np.asarray([value]))[0])

    def score(
        self,
        inputs: np.ndarray,
        top1: np.ndarray,
        member_vectors: np.ndarray | None = None,
        activations: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> list[OODScore]:
        """Scores of ``inputs`` ``[B, C·H·W]`` with top-1 gallery cosines ``[B]``, member
        embeddings ``[K, B, D]`` of an ensemble, penultimate-feature norms ``[B]`` and the
        features ``[B, F]``."""
        cues = {
            "pixels": reconstruction_error(self.pca, inputs),
            "neighbour": 1.0 - np.asarray(top1, dtype=np.float64),
        }
        if "disagreement" in self.references and member_vectors is not None:
            cues["disagreement"] = member_disagreement(member_vectors)
        if "activation" in self.references and activations is not None:
            cues["activation"] = -np.asarray(activations, dtype=np.float64)
        if self.distance is not None and features is not None:
            cues["feature"] = self.distance(features)
        scored = [k for k in SCORED_CUES if k in cues] or list(cues)
        out = []
        for b in range(len(inputs)):
            values = {k: float(v[b]) for k, v in cues.items()}
            tails = {k: self.tail(k, v) for k, v in values.items()}
            score = 1.0 - min(tails[k] for k in scored)
            out.append(OODScore(score, score >= self.threshold, values, tails))
        return out


def reconstruction_error(pca: PCA, inputs: np.ndarray) -> np.ndarray:
    """Mean squared error of each row's reconstruction from the PCA subspace."""
    x = np.asarray(inputs, dtype=np.float64)
    back = pca.inverse_transform(pca.transform(x))
    return np.mean((x - back) ** 2, axis=1)


class ModelCues(NamedTuple):
    """What one pass over a model's members gives the detector."""

    #: ``[K, B, D]`` the members' embeddings (None for a single model)
    members: np.ndarray | None
    #: ``[B]`` the mean over the members of their penultimate features' norms
    activations: np.ndarray
    #: ``[B, F]`` the members' mean penultimate features (the input of each ``head``)
    features: np.ndarray


@torch.no_grad()
def member_embeddings(model, inputs: torch.Tensor) -> np.ndarray | None:
    """``[K, B, D]`` embeddings of each member of an ensemble (None for a single model)."""
    return model_cues(model, inputs).members


@torch.no_grad()
def model_cues(model, inputs: torch.Tensor) -> ModelCues:
    """One pass over the members: their embeddings, and their penultimate features (the
    input of each member's embedding ``head``) with those features' norms."""
    members = model.members
    features, embeddings = [], []
    for member in members:
        seen: list[torch.Tensor] = []
        hook = member.head.register_forward_pre_hook(
            lambda _module, args, seen=seen: seen.append(args[0])
        )
        try:
            embeddings.append(member(inputs.float()).numpy())
        finally:
            hook.remove()
        features.append(seen[0].numpy())
    stacked = np.stack(embeddings).astype(np.float32) if len(members) > 1 else None
    norms = np.mean([np.linalg.norm(f, axis=1) for f in features], axis=0)
    return ModelCues(
        stacked, norms.astype(np.float32), np.mean(features, axis=0).astype(np.float32)
    )


def describe(score: OODScore) -> str:
    """One sentence for people."""
    what = {
        "pixels": "its pixels look unlike the training images",
        "neighbour": "nothing in the gallery is close to it",
        "disagreement": "the ensemble's members disagree about it",
        "activation": "the network's features barely respond to it",
        "feature": "its features are far from those of every kind of thing it knows",
    }[score.strongest]
    tail = 1.0 - score.score  # the share of in-domain images at least this unusual
    rarity = "fewer than 0.1 %" if tail < 0.001 else f"only {tail:.1%}"
    return (
        f"⚠ This does not look like anything the model was trained on ({what}: {rarity} of "
        "the images it was trained on look this unusual): treat its matches as unreliable."
    )
