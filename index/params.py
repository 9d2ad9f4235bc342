"""The index kinds and their knobs, without faiss (``eat index --help`` and the core
install read them; :mod:`index.kinds` builds the faiss objects)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

KINDS = ("flat", "hnsw", "ivf-pq")
KIND_CHOICES = ("auto", *KINDS)
METRIC = "inner_product"
# "auto" keeps exact search up to this many vectors and picks ivf-pq above: at 1M on the
# 2-core machine it builds >10x faster than hnsw and, re-ranked exactly, keeps recall@10
# near 0.99 at ~100x the speed of flat (results/index/bench.md).
AUTO_FLAT_MAX = 1_000_000


def _knob(help_text: str, **kwargs):
    return field(metadata={"help": help_text}, **kwargs)


@dataclass
class IndexParams:
    """Build and search knobs of the approximate kinds (``flat`` has none)."""

    hnsw_m: int = _knob(
        "hnsw: graph neighbours per node (memory and recall grow with it)", default=16
    )
    ef_construction: int = _knob(
        "hnsw: candidate list size while building (graph quality vs build time)", default=64
    )
    ef_search: int = _knob(
        "hnsw: candidate list size while searching (recall vs speed)", default=64
    )
    nlist: int | None = _knob(
        "ivf-pq: number of inverted lists (default: about sqrt(N), a power of two)", default=None
    )
    nprobe: int = _knob("ivf-pq: inverted lists visited per query (recall vs speed)", default=32)
    pq_m: int | None = _knob(
        "ivf-pq: sub-quantizers, i.e. bytes per code (default: dim/8, must divide dim)",
        default=None,
    )
    refine_k_factor: int = _knob(
        "ivf-pq: candidates re-ranked exactly, as a multiple of k", default=16
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def resolve_kind(kind: str, expected_size: int) -> str:
    """The concrete kind for ``kind`` (``auto`` chooses by ``expected_size``)."""
    if kind == "auto":
        return "flat" if expected_size <= AUTO_FLAT_MAX else "ivf-pq"
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KIND_CHOICES}")
    return kind


def default_nlist(n: int) -> int:
    """About sqrt(n) lists, rounded to a power of two, with >= 39 training points per list."""
    target = max(1, int(np.sqrt(max(n, 1))))
    nlist = 1 << int(round(np.log2(target)))
    return max(1, min(nlist, n // 39))


def default_pq_m(dim: int) -> int:
    """Eight dimensions per one-byte sub-quantizer, rounded down to a divisor of ``dim``.

    Codes only shortlist candidates for the exact re-ranking, so coarse ones do; finer
    codes cost training time (one k-means per sub-quantizer).
    """
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m
