"""Index kinds: the automatic choice, default knobs, and ivf-pq's training requirement."""

from __future__ import annotations

import numpy as np
import pytest

from index.errors import SearchIndexError
from index.kinds import (
    AUTO_FLAT_MAX,
    IndexParams,
    default_nlist,
    default_pq_m,
    resolve_kind,
    search_parameters,
)
from index.store import VectorIndex


def test_auto_is_exact_up_to_a_million_then_ivf_pq():
    assert resolve_kind("auto", 10) == "flat"
    assert resolve_kind("auto", AUTO_FLAT_MAX) == "flat"
    assert resolve_kind("auto", AUTO_FLAT_MAX + 1) == "ivf-pq"
    assert resolve_kind("ivf-pq", 10) == "ivf-pq"  # the user's choice wins
    with pytest.raises(ValueError, match="unknown index kind"):
        resolve_kind("annoy", 10)


def test_auto_kind_is_decided_by_the_first_batch(vectors):
    index = VectorIndex(vectors.shape[1])
    assert index.kind == "auto"
    index.add(vectors)
    assert index.kind == "flat"
    assert VectorIndex(8, expected_size=2_000_000).kind == "ivf-pq"


@pytest.mark.parametrize("n,expected", [(1_000_000, 1024), (100_000, 256), (1000, 25), (10, 1)])
def test_default_nlist(n, expected):
    assert default_nlist(n) == expected


@pytest.mark.parametrize("dim,expected", [(128, 16), (64, 8), (30, 3), (3, 1)])
def test_default_pq_m_divides_the_dimension(dim, expected):
    assert default_pq_m(dim) == expected and dim % expected == 0


def test_ivf_pq_needs_enough_vectors_to_train(vectors):
    index = VectorIndex(vectors.shape[1], "ivf-pq")
    with pytest.raises(SearchIndexError, match="at least 256"):
        index.add(vectors[:100])
    assert len(index) == 0


def test_ivf_pq_records_the_knobs_it_chose(vectors):
    params = IndexParams()
    index = VectorIndex(vectors.shape[1], "ivf-pq", params=params)
    index.add(vectors)
    assert index.params.nlist == default_nlist(len(vectors))
    assert index.params.pq_m == default_pq_m(vectors.shape[1])
    assert params.nlist is None  # the caller's object is not modified


def test_search_knobs_override_per_call(make_vectors):
    vectors = make_vectors(2000, clusters=200)
    index = VectorIndex(vectors.shape[1], "ivf-pq", params=IndexParams(nlist=32, nprobe=1))
    index.add(vectors)
    queries = vectors[:100] + 0.05
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

    def recall(ids):
        return np.mean([len(set(a) & set(b)) for a, b in zip(ids, truth, strict=True)]) / 10

    narrow = recall(index.search(queries, 10).ids)
    wide = recall(index.search(queries, 10, nprobe=32, refine_k_factor=32).ids)
    assert wide >= 0.99 and wide > narrow
    assert search_parameters("flat", IndexParams()) is None
    assert search_parameters("hnsw", IndexParams(), ef_search=99).efSearch == 99
