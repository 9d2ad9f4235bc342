"""2-D maps of embeddings: UMAP fitted ahead of time, with fallbacks while it warms up.

A gallery map is best **computed ahead**: ``eat app --write-maps`` fits UMAP once and
stores each model's gallery coordinates beside the models (``MODELS/maps/KEY/``, ``.npy``
arrays loaded with ``allow_pickle=False``; UMAP's fitted model holds numba structures that
cannot be saved without pickle). A start that finds a stored map (shipped, or cached by
an earlier start) shows it at once and never refits: new points are placed against it by
their nearest gallery neighbours (milliseconds), so the map a user sees never changes.

Without a stored map UMAP is fitted in a background thread at start-up (its first fit and
first transform JIT-compile with numba: minutes on two cores); until then the map is PCA,
new points are placed by nearest neighbours, and every result says which map it shows.
All numba work is serialised by one lock: numba's default threading layer does not
allow two threads in parallel kernels at once. Requests never wait for that lock; they
fall back instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eat_models.files import atomic_save_npy

log = logging.getLogger(__name__)

UMAP_NEIGHBOURS = 15
PLACEMENT_NEIGHBOURS = 5
MIN_POINTS_FOR_UMAP = 10
_NUMBA_LOCK = threading.Lock()
_small_sets_warm = threading.Event()

METHOD_NOTES = {
    "umap": "UMAP",
    "umap-stored": "UMAP (computed ahead; new points placed by their nearest gallery "
    "neighbours on it)",
    "umap-cached": "UMAP (cached by an earlier start; new points placed by their nearest "
    "gallery neighbours on it)",
    "pca": "PCA (the UMAP map is still being computed)",
    "nearest-neighbour": "placed by nearest gallery neighbours (UMAP is still warming up)",
    "stored-neighbour": "placed by its nearest gallery neighbours on the stored UMAP map",
    "transform": "placed on the map by UMAP itself",
    "pca-small": "PCA (too few images for UMAP)",
    "pca-warming": "PCA (UMAP is still warming up; try again in a minute for a UMAP map)",
}


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors [N, D]`` (zeros for N < 2)."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    # "covariance_eigh": the eigenvectors of the small D×D covariance, far cheaper than an
    # SVD of the N×D data
    n = min(2, x.shape[1], len(x))
    out = PCA(n_components=n, svd_solver="covariance_eigh").fit_transform(x)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def _new_umap(n_points: int, seed: int = 0):
    import umap

    return umap.UMAP(
        n_neighbors=max(2, min(UMAP_NEIGHBOURS, n_points - 1)),
        min_dist=0.1,
        metric="euclidean",
        random_state=seed,
        n_jobs=1,  # a fixed seed makes UMAP single-threaded anyway; say so to keep it quiet
    )


@dataclass
class Placement:
    """Where new points land on a map, and how they were placed (a key of METHOD_NOTES)."""

    xy: np.ndarray
    method: str

    @property
    def note(self) -> str:
        return METHOD_NOTES[self.method]


class GalleryProjection:
    """The 2-D map of one model's gallery embeddings (``vectors``, L2-normalised).

    ``coords`` is always usable: a stored UMAP map (``stored_file``, computed ahead by
    ``eat app --write-maps``), UMAP coordinates cached by an earlier start
    (``cache_file``), or PCA until :meth:`fit` has run. A stored or cached map is final:
    :attr:`needs_fit` is False and new points are placed against it.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        cache_file: str | os.PathLike | None = None,
        stored_file: str | os.PathLike | None = None,
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.stored_file = Path(stored_file) if stored_file is not None else None
        self.reducer = None
        self._warm = threading.Event()
        for path, method in ((self.stored_file, "umap-stored"), (self.cache_file, "umap-cached")):
            coords = self._read_map(path)
            if coords is not None:
                self.coords, self.method = coords, method
                break
        else:
            self.coords, self.method = pca_2d(self.vectors), "pca"

    def _read_map(self, path: Path | None) -> np.ndarray | None:
        if path is None or not path.is_file():
            return None
        try:
            coords = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable UMAP map %s (%s)", path, exc)
            return None
        if coords.shape != (len(self.vectors), 2) or not np.isfinite(coords).all():
            log.warning("ignoring UMAP map %s: it does not fit this gallery", path)
            return None
        return coords.astype(np.float32)

    @property
    def warm(self) -> bool:
        """True once the UMAP model is fitted and its transform compiled."""
        return self._warm.is_set()

    @property
    def needs_fit(self) -> bool:
        """True while the map is PCA: no stored or cached UMAP map, no fit yet."""
        return self.method == "pca"

    @property
    def ready(self) -> bool:
        """True when the map shows UMAP coordinates (stored, cached or fitted)."""
        return not self.needs_fit

    @property
    def note(self) -> str:
        return METHOD_NOTES[self.method]

    def fit(self, seed: int = 0) -> float:
        """Fit UMAP on the gallery, cache the coordinates and warm ``transform``; seconds.
        (``eat app --write-maps`` calls this to compute the maps it ships.)"""
        started = time.perf_counter()
        with _NUMBA_LOCK:
            reducer = _new_umap(len(self.vectors), seed).fit(self.vectors)
            reducer.transform(self.vectors[:2])  # compiles the transform path
        coords = np.asarray(reducer.embedding_, dtype=np.float32)
        if self.cache_file is not None:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(self.cache_file, coords)
        self.reducer, self.coords, self.method = reducer, coords, "umap"
        self._warm.set()
        return time.perf_counter() - started

    def nearest_neighbour_placement(self, vectors: np.ndarray) -> np.ndarray:
        """Similarity-weighted mean map position of each vector's nearest gallery points."""
        q = np.asarray(vectors, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        sims = q @ self.vectors.T
        k = min(PLACEMENT_NEIGHBOURS, len(self.vectors))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.exp(20.0 * np.take_along_axis(sims, top, axis=1))
        weights /= weights.sum(axis=1, keepdims=True)
        return (weights[:, :, None] * self.coords[top]).sum(axis=1).astype(np.float32)

    def place(self, vectors: np.ndarray) -> Placement:
        """Map positions of new embeddings: ``UMAP.transform`` once warm and free, else
        the nearest-neighbour placement. Never waits for the background fit."""
        if self.warm and _NUMBA_LOCK.acquire(blocking=False):
            try:
                xy = self.reducer.transform(np.asarray(vectors, dtype=np.float32))
                return Placement(np.asarray(xy, dtype=np.float32), "transform")
            except Exception:  # noqa: BLE001 - UMAP can fail on odd inputs; fall back
                log.exception("UMAP transform failed; using nearest-neighbour placement")
            finally:
                _NUMBA_LOCK.release()
        method = "stored-neighbour" if self.method in ("umap-stored", "umap-cached") else None
        return Placement(self.nearest_neighbour_placement(vectors), method or "nearest-neighbour")


def project_set(vectors: np.ndarray, seed: int = 0) -> Placement:
    """A 2-D map of a small uploaded set: UMAP when warm and free, else PCA."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) < MIN_POINTS_FOR_UMAP:
        return Placement(pca_2d(vectors), "pca-small")
    if _small_sets_warm.is_set() and _NUMBA_LOCK.acquire(blocking=False):
        try:
            xy = _new_umap(len(vectors), seed).fit_transform(vectors)
            return Placement(np.asarray(xy, dtype=np.float32), "umap")
        except Exception:  # noqa: BLE001 - e.g. degenerate sets; PCA still shows them
            log.exception("UMAP on an uploaded set failed; showing PCA")
        finally:
            _NUMBA_LOCK.release()
    return Placement(pca_2d(vectors), "pca-warming")


def warm_up(projections: list[GalleryProjection], seed: int = 0) -> None:
    """Fit every gallery map that has no stored one, then one small set, so requests never
    pay the JIT cost."""
    for projection in projections:
        if not projection.needs_fit:
            continue
        try:
            seconds = projection.fit(seed)
            log.info("UMAP map of %d points ready in %.1f s", len(projection.vectors), seconds)
        except Exception:  # noqa: BLE001 - the app works without UMAP; say why in the log
            log.exception("UMAP fit failed; the app keeps its fallback maps")
    try:
        rng = np.random.default_rng(seed)
        with _NUMBA_LOCK:
            _new_umap(40, seed).fit_transform(rng.normal(size=(40, 8)).astype(np.float32))
        _small_sets_warm.set()
    except Exception:  # noqa: BLE001
        log.exception("UMAP warm-up on a small set failed; uploaded sets are shown with PCA")


def small_sets_warm() -> bool:
    return _small_sets_warm.is_set()


def start_warm_up(projections: list[GalleryProjection], seed: int = 0) -> threading.Thread:
    """Run :func:`warm_up` in a daemon thread and return it."""
    thread = threading.Thread(
        target=warm_up, args=(projections, seed), name="umap-warm-up", daemon=True
    )
    thread.start()
    return thread
