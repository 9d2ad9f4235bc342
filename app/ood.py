"""Out-of-domain signal: does a query look like anything the model was trained on?

A metric-learning model maps *every* image somewhere, and its nearest gallery neighbour can
score as high for a temple photo as for a shirt. So each model view carries a small
detector calibrated on the gallery itself (in-domain by construction), with three cues,
each larger for stranger inputs:

* ``pixels`` — the model input's reconstruction error under a PCA of gallery inputs (fitted
  on one half of the gallery, calibrated on the other): photos, noise and logos at 28×28
  look nothing like centred clothing on a dark background;
* ``neighbour`` — 1 − the cosine of the query's nearest gallery embedding, against the
  gallery's own leave-one-out nearest-neighbour cosines;
* ``disagreement`` (ensembles) — 1 − the mean pairwise cosine of the members' embeddings:
  members trained on different data agree on what they know and diverge elsewhere.

Each cue becomes a tail probability (the share of calibration values at least as large);
the OOD score is ``1 − min(tails)``, and a query is flagged when the score reaches
``QUANTILE`` (0.995: some cue beyond what 99.5 % of the gallery shows). ``python -m
app.ood_bench`` measures the AUROC against images made on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA

QUANTILE = 0.995
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
        return min(self.tails, key=self.tails.get)


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


class OODDetector:
    """Calibrated cues of one model view; :meth:`score` rates new inputs."""

    def __init__(self, pca: PCA, references: dict[str, np.ndarray], quantile: float = QUANTILE):
        self.pca = pca
        self.references = {k: np.sort(v.astype(np.float64)) for k, v in references.items()}
        self.quantile = quantile

    @classmethod
    def calibrate(
        cls,
        inputs: np.ndarray,
        vectors: np.ndarray,
        member_vectors: np.ndarray | None = None,
        seed: int = 0,
        quantile: float = QUANTILE,
    ) -> OODDetector:
        """``inputs`` ``[N, C·H·W]`` gallery model inputs, ``vectors`` ``[N, D]`` their
        embeddings, ``member_vectors`` ``[K, N, D]`` for an ensemble."""
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
        return cls(pca, references, quantile)

    def tail(self, cue: str, value: float) -> float:
        """Share of calibration values ≥ ``value`` (with one pseudo-count: never 0)."""
        ref = self.references[cue]
        above = len(ref) - np.searchsorted(ref, value, side="left")
        return float((above + 1) / (len(ref) + 1))

    def score(
        self,
        inputs: np.ndarray,
        top1: np.ndarray,
        member_vectors: np.ndarray | None = None,
    ) -> list[OODScore]:
        """Scores of ``inputs`` ``[B, C·H·W]`` with top-1 gallery cosines ``[B]`` and, for
        an ensemble, member embeddings ``[K, B, D]``."""
        cues = {
            "pixels": reconstruction_error(self.pca, inputs),
            "neighbour": 1.0 - np.asarray(top1, dtype=np.float64),
        }
        if "disagreement" in self.references and member_vectors is not None:
            cues["disagreement"] = member_disagreement(member_vectors)
        out = []
        for b in range(len(inputs)):
            values = {k: float(v[b]) for k, v in cues.items()}
            tails = {k: self.tail(k, v) for k, v in values.items()}
            score = 1.0 - min(tails.values())
            out.append(OODScore(score, score >= self.quantile, values, tails))
        return out


def reconstruction_error(pca: PCA, inputs: np.ndarray) -> np.ndarray:
    """Mean squared error of each row's reconstruction from the PCA subspace."""
    x = np.asarray(inputs, dtype=np.float64)
    back = pca.inverse_transform(pca.transform(x))
    return np.mean((x - back) ** 2, axis=1)


@torch.no_grad()
def member_embeddings(model, inputs: torch.Tensor) -> np.ndarray | None:
    """``[K, B, D]`` embeddings of each member of an ensemble (None for a single model)."""
    members = model.members
    if len(members) < 2:
        return None
    return np.stack([m(inputs.float()).numpy() for m in members]).astype(np.float32)


def describe(score: OODScore) -> str:
    """One sentence for people."""
    what = {
        "pixels": "its pixels look unlike the training images",
        "neighbour": "nothing in the gallery is close to it",
        "disagreement": "the ensemble's members disagree about it",
    }[score.strongest]
    return (
        f"⚠ This does not look like anything the model was trained on ({what}; OOD score "
        f"{score.score:.3f}): treat its matches as unreliable."
    )
