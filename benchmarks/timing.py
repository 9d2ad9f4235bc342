"""One definition of the latency statistics every benchmark reports.

Percentiles are numpy's default (linear interpolation between the two nearest ranks), the
median is the 50th percentile, and everything is in milliseconds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=np.float64) * 1000.0, q))


def latency_summary(seconds: Sequence[float], digits: int = 1) -> dict:
    """``count``, ``p50_ms``, ``p95_ms``, ``max_ms`` and ``mean_ms`` of durations in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile_ms(seconds, 50), digits),
        "p95_ms": round(percentile_ms(seconds, 95), digits),
        "max_ms": round(max(ms), digits),
        "mean_ms": round(statistics.fmean(ms), digits),
    }
