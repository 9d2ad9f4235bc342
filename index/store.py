"""The search index: FAISS vectors plus per-item metadata and thumbnails, saved atomically.

A :class:`VectorIndex` holds L2-normalised vectors in a FAISS ``IndexIDMap2`` (see
:mod:`index.kinds`), a JSON record per item (source, label, class name …), optional small
thumbnails, and a header: model fingerprint, dimension, metric, kind, creation time.
Searches share a read lock; ``add`` and ``remove`` take the write lock, so concurrent use
from several threads is safe.

On disk an index is one directory, saved atomically and loaded with validation
(:mod:`index.persist`). Nothing is pickled.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .errors import (
    DimensionMismatchError,
    EmptyIndexError,
    SearchIndexError,
    UnknownIdError,
)
from .kinds import (
    KINDS,
    METRIC,
    IndexParams,
    empty_copy,
    exact_vectors,
    new_index,
    one_thread,
    resolve_kind,
    search_parameters,
)
from .rwlock import ReadWriteLock

log = logging.getLogger(__name__)

SMALL_BATCH = 8  # fewer queries than this are answered on one thread (see one_thread)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Hit:
    """One search result: the item id, its cosine similarity to the query, its record."""

    id: int
    score: float
    record: dict = field(default_factory=dict)


@dataclass
class SearchResults:
    """Top-k results of ``Q`` queries.

    ``ids`` and ``scores`` are ``[Q, k']`` with ``k' = min(k, len(index))``, best first;
    an approximate index may find fewer than ``k'`` items for a query, in which case the
    row is padded with id ``-1`` and score ``-inf``. ``hits[q]`` lists the real results of
    query ``q`` (no padding) with their metadata.
    """

    ids: np.ndarray
    scores: np.ndarray
    hits: list[list[Hit]]


def normalised_vectors(vectors, dim: int, what: str, fingerprint: str | None = None) -> np.ndarray:
    """``vectors`` as contiguous float32 ``[N, dim]`` rows of unit length, or a clear error
    (wrong shape or dimension, NaN/inf, all-zero rows). Every backend checks with this."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise DimensionMismatchError(f"{what} must be [N, {dim}], got shape {x.shape}")
    if x.shape[1] != dim:
        fp = f" (model fingerprint {fingerprint})" if fingerprint else ""
        raise DimensionMismatchError(
            f"{what} have dimension {x.shape[1]}, but the index holds {dim}-d "
            f"vectors{fp}; embed with the model the index was built with"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} contain all-zero vectors, which have no direction")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _numpy_search(index):
    """faiss's own numpy ``search`` (which takes ``params=``).

    Importing ``faiss.contrib.torch_utils`` (pytorch-metric-learning does) replaces
    ``Index.search`` with a torch-aware wrapper that drops ``params``; it keeps the
    original as ``search_numpy``.
    """
    return getattr(index, "search_numpy", None) or index.search


class IndexBase:
    """What every backend shares: the thumbnail setting (``(h, w, c)`` of the small image
    kept per item, or None; switchable only while the index is empty) and the search entry
    point, which checks ``k`` and the queries before the backend's :meth:`_search`."""

    _thumbnail_shape: tuple[int, ...] | None = None

    @property
    def has_thumbnails(self) -> bool:
        return self._thumbnail_shape is not None

    @property
    def thumbnail_shape(self) -> tuple[int, ...] | None:
        """``(h, w, c)`` of the thumbnails kept for every item, or None."""
        return self._thumbnail_shape

    @thumbnail_shape.setter
    def thumbnail_shape(self, shape: Sequence[int] | None) -> None:
        if len(self):
            raise SearchIndexError("thumbnails can only be switched on or off while empty")
        self._thumbnail_shape = tuple(int(v) for v in shape) if shape is not None else None
        self._header_changed()

    def _header_changed(self) -> None:
        """A backend that stores every change at once writes its header here."""

    def _common_header(self) -> dict:
        """The header fields every backend records (it adds its own)."""
        return {
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "count": len(self),
            "next_id": self._next_id,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "preprocess": self.preprocess,
            "thumbnail_shape": list(self._thumbnail_shape) if self._thumbnail_shape else None,
            "created": self.created,
            "updated": self.updated,
        }

    def search(
        self,
        queries,
        k: int = 10,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
        refine_k_factor: int | None = None,
    ) -> SearchResults:
        """Top-``k`` items by cosine similarity for each query vector (``[D]`` or ``[Q, D]``).

        ``k`` larger than the index returns every item. The knobs override the index's
        defaults for this call only (``ef_search`` for hnsw; ``nprobe`` for ivf-pq and
        Milvus IVF_FLAT; ``refine_k_factor`` for ivf-pq).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = normalised_vectors(queries, self.dim, "query vectors", self.fingerprint)
        return self._search(q, int(k), ef_search, nprobe, refine_k_factor)

    def _search(self, q: np.ndarray, k: int, ef_search, nprobe, refine_k_factor) -> SearchResults:
        raise NotImplementedError


class VectorIndex(IndexBase):
    """A thread-safe FAISS index of L2-normalised embeddings with metadata.

    ``kind`` is ``flat``, ``hnsw``, ``ivf-pq`` or ``auto`` (decided by ``expected_size``,
    or by the size of the first batch added). ``fingerprint`` names the model whose
    embeddings the index holds; :meth:`load` refuses another. ``model`` is a free-form
    description of that model (path, input size, channels, class names …) and
    ``preprocess`` the image preprocessing options searches by image must repeat.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "auto",
        *,
        params: IndexParams | None = None,
        fingerprint: str | None = None,
        model: Mapping | None = None,
        preprocess: Mapping | None = None,
        expected_size: int | None = None,
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if kind != "auto" and kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of auto, {', '.join(KINDS)}")
        self.dim = int(dim)
        self.kind = resolve_kind(kind, expected_size) if expected_size is not None else kind
        self.params = copy.deepcopy(params) if params is not None else IndexParams()
        self.fingerprint = fingerprint
        self.model = dict(model or {})
        self.preprocess = dict(preprocess or {})
        self.created = _now()
        self.updated = self.created
        self._index: faiss.IndexIDMap2 | None = None
        self._records: dict[int, dict] = {}
        self._thumbnails: dict[int, np.ndarray] = {}
        self._thumbnail_shape: tuple[int, ...] | None = None
        self._next_id = 0
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()  # one save at a time (they share the directory)

    # ------------------------------------------------------------------ properties

    metric = METRIC

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self.kind!r}, dim={self.dim}, count={len(self)}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def info(self) -> dict:
        """The header: kind, metric, dim, count, fingerprint, model, params, dates."""
        with self._lock.read():
            return self._header()

    def _header(self) -> dict:
        return {**self._common_header(), "params": self.params.to_dict()}

    def ids(self) -> np.ndarray:
        """The ids held, sorted."""
        with self._lock.read():
            if self._index is None:
                return np.zeros(0, dtype=np.int64)
            return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def record(self, item_id: int) -> dict:
        """The metadata record of one item (a copy)."""
        with self._lock.read():
            if not self._holds(item_id):
                raise UnknownIdError(f"the index holds no item with id {item_id}")
            return dict(self._records.get(int(item_id), {"id": int(item_id)}))

    def records(self) -> dict[int, dict]:
        """``{id: record}`` of every item (copies), in one read."""
        with self._lock.read():
            if self._index is None:
                return {}
            held = np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))
            return {int(i): dict(self._records.get(int(i), {"id": int(i)})) for i in held}

    def thumbnail(self, item_id: int) -> np.ndarray | None:
        """The item's thumbnail (``uint8 [h, w, c]``), or None when none was stored."""
        with self._lock.read():
            if not self._holds(item_id):
                raise UnknownIdError(f"the index holds no item with id {item_id}")
            return self._thumbnails.get(int(item_id))

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of all items (sorted by id) or of ``ids``, exactly as stored."""
        with self._lock.read():
            if self._index is None:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
            held, vecs = exact_vectors(self._index)
            order = np.argsort(held, kind="stable")
            held, vecs = held[order], vecs[order]
            if ids is None:
                return held, vecs
            want = np.asarray(ids, dtype=np.int64).reshape(-1)
            pos = np.minimum(np.searchsorted(held, want), max(len(held) - 1, 0))
            ok = held[pos] == want if len(held) else np.zeros(len(want), dtype=bool)
            if not ok.all():
                raise UnknownIdError(f"the index holds no items with ids {want[~ok][:5].tolist()}")
            return want, vecs[pos]

    def _holds(self, item_id: int) -> bool:
        if self._index is None:
            return False
        if int(item_id) in self._records:
            return True
        return bool(np.isin(int(item_id), faiss.vector_to_array(self._index.id_map)))

    # ------------------------------------------------------------------ validation

    def _as_vectors(self, vectors, what: str) -> np.ndarray:
        return normalised_vectors(vectors, self.dim, what, self.fingerprint)

    # ------------------------------------------------------------------ writes

    def add(
        self,
        vectors,
        records: Sequence[Mapping] | None = None,
        thumbnails: Sequence[np.ndarray] | np.ndarray | None = None,
        ids: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Add ``vectors [N, D]`` (L2-normalised on the way in); returns their ids.

        ``records``: one JSON-serialisable dict per vector (stored with ``id`` set).
        ``thumbnails``: one ``uint8 [h, w, c]`` array per vector, the same shape for
        all; an index keeps thumbnails for every item or for none. ``ids``: explicit
        non-negative ids not yet used; by default new ids follow the largest ever given.
        """
        x = self._as_vectors(vectors, "vectors")
        n = len(x)
        if records is not None and len(records) != n:
            raise ValueError(f"{n} vectors but {len(records)} records")
        recs = [dict(r) for r in records] if records is not None else None
        if recs is not None:
            try:
                json.dumps(recs)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"records must be JSON-serialisable: {exc}") from exc
        thumbs = self._check_thumbnails(thumbnails, n)
        with self._lock.write():
            if n == 0:
                return np.zeros(0, dtype=np.int64)
            new_ids = self._new_ids(ids, n)
            if self.has_thumbnails and thumbs is None:
                raise ValueError("this index stores a thumbnail for every item; pass thumbnails")
            if self._index is None:
                if self.kind == "auto":
                    self.kind = resolve_kind("auto", n)
                self._index = new_index(self.kind, self.dim, self.params, x)
            self._index.add_with_ids(x, new_ids)
            if recs is not None:
                for item_id, rec in zip(new_ids.tolist(), recs, strict=True):
                    rec["id"] = item_id
                    self._records[item_id] = rec
            if thumbs is not None:
                self._thumbnail_shape = thumbs.shape[1:]
                self._thumbnails.update(zip(new_ids.tolist(), thumbs, strict=True))
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
            self.updated = _now()
            return new_ids

    def _check_thumbnails(self, thumbnails, n: int) -> np.ndarray | None:
        if thumbnails is None:
            return None
        if len(thumbnails) != n:
            raise ValueError(f"{n} vectors but {len(thumbnails)} thumbnails")
        if n == 0:
            return None
        try:
            thumbs = np.stack([np.asarray(t) for t in thumbnails])
        except ValueError as exc:
            raise ValueError(f"thumbnails must all have the same shape ({exc})") from exc
        if thumbs.dtype != np.uint8 or thumbs.ndim != 4:
            raise ValueError(
                f"thumbnails must be uint8 arrays [h, w, c]; got {thumbs.dtype} {thumbs.shape[1:]}"
            )
        if self._thumbnail_shape is not None and thumbs.shape[1:] != self._thumbnail_shape:
            raise ValueError(
                f"thumbnails of shape {thumbs.shape[1:]} differ from the index's "
                f"{self._thumbnail_shape}"
            )
        return thumbs

    def _new_ids(self, ids: Sequence[int] | None, n: int) -> np.ndarray:
        if ids is None:
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(new_ids) != n:
            raise ValueError(f"{n} vectors but {len(new_ids)} ids")
        if (new_ids < 0).any():
            raise ValueError("ids must be non-negative")
        if len(np.unique(new_ids)) != n:
            raise ValueError("ids must be unique")
        if self._index is not None:
            taken = np.isin(new_ids, faiss.vector_to_array(self._index.id_map))
            if taken.any():
                raise ValueError(f"ids already in the index: {new_ids[taken][:5].tolist()}")
        return new_ids

    def remove(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        """Remove items by id; returns how many were removed.

        Unknown ids raise :class:`UnknownIdError` unless ``missing_ok``. ``flat`` removes in
        place; ``hnsw`` and ``ivf-pq`` are rebuilt from their exact vectors (seconds per
        100k items; the ivf-pq codebooks are kept).
        """
        drop = np.unique(np.asarray(list(ids), dtype=np.int64))
        with self._lock.write():
            if self._index is None or len(drop) == 0:
                if len(drop) and not missing_ok:
                    raise UnknownIdError(f"the index holds no items with ids {drop[:5].tolist()}")
                return 0
            held = faiss.vector_to_array(self._index.id_map)
            present = np.isin(drop, held)
            if not present.all() and not missing_ok:
                raise UnknownIdError(
                    f"the index holds no items with ids {drop[~present][:5].tolist()}"
                )
            drop = drop[present]
            if len(drop) == 0:
                return 0
            if self.kind == "flat":
                removed = int(self._index.remove_ids(drop))
            else:
                all_ids, vecs = exact_vectors(self._index)
                keep = ~np.isin(all_ids, drop)
                rebuilt = empty_copy(self._index, self.kind, self.params)
                if keep.any():
                    rebuilt.add_with_ids(np.ascontiguousarray(vecs[keep]), all_ids[keep])
                removed = int(self._index.ntotal - rebuilt.ntotal)
                self._index = rebuilt
            for item_id in drop.tolist():
                self._records.pop(item_id, None)
                self._thumbnails.pop(item_id, None)
            self.updated = _now()
            return removed

    # ------------------------------------------------------------------ search

    def _search(self, q: np.ndarray, k: int, ef_search, nprobe, refine_k_factor) -> SearchResults:
        with self._lock.read():
            if self._index is None or self._index.ntotal == 0:
                raise EmptyIndexError("the index is empty: add images before searching")
            k_eff = int(min(k, self._index.ntotal))
            params = search_parameters(self.kind, self.params, ef_search, nprobe, refine_k_factor)
            with one_thread(len(q) < SMALL_BATCH):
                scores, ids = _numpy_search(self._index)(q, k_eff, params=params)
            hits = [
                [
                    Hit(int(i), float(s), dict(self._records.get(int(i), {"id": int(i)})))
                    for i, s in zip(row_ids, row_scores, strict=True)
                    if i >= 0
                ]
                for row_ids, row_scores in zip(ids, scores, strict=True)
            ]
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return SearchResults(ids=ids, scores=scores, hits=hits)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` atomically (see :mod:`index.persist`)."""
        from .persist import save_index

        return save_index(self, directory)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, *, fingerprint: str | None = None, verify: bool = True
    ) -> VectorIndex:
        """Read an index directory, validating format, version, files and dimensions.

        ``fingerprint``: the fingerprint of the model that will query the index; a
        different one raises :class:`FingerprintMismatchError`. ``verify`` checks each
        data file's SHA-256 (a second or so per GB).
        """
        from .persist import load_index_dir

        return load_index_dir(cls, directory, fingerprint=fingerprint, verify=verify)
