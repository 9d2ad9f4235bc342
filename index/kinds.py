"""The FAISS index kinds, their knobs, and the rule that picks one by size.

Every kind scores by inner product on L2-normalised vectors (= cosine similarity) and
sits inside an ``IndexIDMap2``, so item ids are the caller's and stay stable across add,
remove and save:

* ``flat`` — exact search by brute force. Default, and right up to about a million vectors.
* ``hnsw`` — a navigable small-world graph (``IndexHNSWFlat``): fast approximate search,
  slower to build; knobs ``hnsw_m`` (graph degree), ``ef_construction``, ``ef_search``.
* ``ivf-pq`` — an inverted file of product-quantised codes whose candidates are re-ranked
  with the exact vectors (``IndexRefineFlat``); knobs ``nlist``, ``nprobe``, ``pq_m``,
  ``refine_k_factor``. Fast to build and to search; it keeps the exact vectors for the
  re-ranking, so it saves time, not memory.

All three keep the exact vectors, so :func:`exact_vectors` can rebuild any of them (which
is how ``hnsw`` and ``ivf-pq`` remove items: faiss cannot delete from those in place).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from .errors import SearchIndexError
from .params import (  # noqa: F401  (re-exported: the kinds' names and knobs live there)
    AUTO_FLAT_MAX,
    KIND_CHOICES,
    KINDS,
    METRIC,
    IndexParams,
    default_nlist,
    default_pq_m,
    resolve_kind,
)

log = logging.getLogger(__name__)

PQ_BITS = 8
PQ_MIN_TRAIN = 1 << PQ_BITS  # each sub-quantizer has 256 centroids to learn
PQ_WELL_TRAINED = 39  # faiss's rule of thumb: training points per centroid
IVF_TRAIN_PER_LIST = 40  # training sample: this many vectors per inverted list, at most
KMEANS_ITERATIONS = 10  # faiss's default 25 triples the training time for little gain


@contextmanager
def one_thread(active: bool = True) -> Iterator[None]:
    """Run faiss on the calling thread alone while ``active``.

    faiss opens an OpenMP parallel region per query batch and per k-means step. With
    few queries, or the small k-means of product quantisation, a second thread gains
    little, while waiting for it costs a scheduler tick whenever the cores are busy
    (measured on the 2-core machine under load: single flat query on 100k 44 ms → 3 ms,
    ivf-pq training 6.6 s → 0.5 s). OpenMP's thread count belongs to the calling thread,
    so this does not affect faiss calls made by other threads.
    """
    if not active:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def new_index(kind: str, dim: int, params: IndexParams, train_vectors: np.ndarray) -> faiss.Index:
    """An empty ``IndexIDMap2`` of ``kind``; ``ivf-pq`` is trained on ``train_vectors``."""
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params.ef_construction
        inner.hnsw.efSearch = params.ef_search
    elif kind == "ivf-pq":
        inner = _trained_ivf_pq(dim, params, train_vectors)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    return faiss.IndexIDMap2(inner)


def _trained_ivf_pq(dim: int, params: IndexParams, vectors: np.ndarray) -> faiss.Index:
    n = len(vectors)
    if n < PQ_MIN_TRAIN:
        raise SearchIndexError(
            f"an ivf-pq index learns its codebooks from the first vectors added and needs at "
            f"least {PQ_MIN_TRAIN} of them; got {n}. Use kind 'flat' (exact) or 'hnsw' for "
            "small collections."
        )
    nlist = params.nlist or default_nlist(n)
    pq_m = params.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the vector dimension {dim}")
    if nlist > n:
        raise SearchIndexError(
            f"nlist={nlist} inverted lists need at least {nlist} vectors; got {n}"
        )
    params.nlist, params.pq_m = nlist, pq_m
    quantizer = faiss.IndexFlatIP(dim)
    base = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    base.nprobe = params.nprobe
    base.cp.niter = KMEANS_ITERATIONS
    base.pq.cp.niter = KMEANS_ITERATIONS
    if n < PQ_MIN_TRAIN * PQ_WELL_TRAINED:
        log.warning(
            "ivf-pq codebooks learnt from only %d vectors (%d recommended); recall may suffer",
            n,
            PQ_MIN_TRAIN * PQ_WELL_TRAINED,
        )
        base.pq.cp.min_points_per_centroid = 1  # warned once above, not once per sub-quantizer
    sample_size = min(n, max(PQ_MIN_TRAIN * 40, nlist * IVF_TRAIN_PER_LIST))
    if sample_size < n:
        rows = np.random.default_rng(0).choice(n, size=sample_size, replace=False)
        vectors = vectors[np.sort(rows)]
    refined = faiss.IndexRefineFlat(base)
    refined.k_factor = float(params.refine_k_factor)
    with one_thread():
        refined.train(np.ascontiguousarray(vectors, dtype=np.float32))
    return refined


def empty_copy(index: faiss.IndexIDMap2, kind: str, params: IndexParams) -> faiss.IndexIDMap2:
    """A new empty index like ``index`` (an ``ivf-pq`` copy keeps its trained codebooks)."""
    if kind == "ivf-pq":
        inner = faiss.clone_index(faiss.downcast_index(index.index))
        inner.reset()
        return faiss.IndexIDMap2(inner)
    return new_index(kind, index.d, params, np.zeros((0, index.d), dtype=np.float32))


def exact_vectors(index: faiss.IndexIDMap2) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int64 [N], vectors float32 [N, D])`` in internal order, without loss."""
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    if index.ntotal == 0:
        return ids, np.zeros((0, index.d), dtype=np.float32)
    return ids, index.index.reconstruct_n(0, index.ntotal)


def search_parameters(
    kind: str,
    params: IndexParams,
    ef_search: int | None = None,
    nprobe: int | None = None,
    refine_k_factor: int | None = None,
) -> faiss.SearchParameters | None:
    """Per-call search knobs (thread-safe: the index itself is not modified).

    For ``ivf-pq`` the nested IVF parameters are kept alive on the returned object.
    """
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(ef_search or params.ef_search))
    if kind == "ivf-pq":
        ivf = faiss.SearchParametersIVF(nprobe=int(nprobe or params.nprobe))
        refine = faiss.IndexRefineSearchParameters(
            k_factor=float(refine_k_factor or params.refine_k_factor), base_index_params=ivf
        )
        refine.keep_alive = ivf
        return refine
    return None
