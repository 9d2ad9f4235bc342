"""Cluster maps: one far outlier does not squeeze the rest, attacked points show their moves."""

from __future__ import annotations

import numpy as np

from app.services.plots import ClusterPanel, cluster_maps, robust_limits


def test_one_far_outlier_does_not_squeeze_the_other_points():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(60, 2))
    low, high = robust_limits(xy)  # no outlier: the whole extent and a margin
    assert np.all(low < xy.min(axis=0)) and np.all(high > xy.max(axis=0))
    far = np.vstack([xy, [[400.0, -300.0]]])
    low, high = robust_limits(far)
    # the 60 points keep most of the panel; the outlier lies outside the limits
    assert np.all(low <= xy.min(axis=0)) and np.all(high >= xy.max(axis=0))
    assert np.all(high - low < 20)
    assert far[-1, 0] > high[0] and far[-1, 1] < low[1]


def test_attacked_points_are_drawn_with_where_they_came_from():
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(40, 2))
    assignments = np.arange(40) % 3
    marked = np.zeros(40, dtype=bool)
    marked[[3, 7, 11]] = True
    origins = xy[marked] + 2.0
    image = cluster_maps(
        [
            ClusterPanel("clean", xy, assignments),
            ClusterPanel("attacked", xy, assignments, marked=marked, origins=origins, note="n"),
        ]
    )
    assert image.size[0] > image.size[1]  # two panels side by side
    # the arrows are drawn: the attacked panel differs from one without origins
    plain = cluster_maps(
        [
            ClusterPanel("clean", xy, assignments),
            ClusterPanel("attacked", xy, assignments, marked=marked, note="n"),
        ]
    )
    assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).sum() > 0
