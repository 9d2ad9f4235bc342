"""Splits of a labelled set: train/test protocols, members' parts, stratified slices."""

from __future__ import annotations

import numpy as np

from .dataset import ImageDataset

SPLIT_KINDS = ("standard", "class-disjoint")


def class_disjoint_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the first half of the sorted classes, and rows of the second half."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("a class-disjoint split needs at least two classes")
    train_classes = classes[: (len(classes) + 1) // 2]
    in_train = np.isin(labels, train_classes)
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def stratified_fraction(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    picked, rest = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(len(rows) * fraction))) if len(rows) > 1 else 0
        picked.append(rows[:n])
        rest.append(rows[n:])
    return np.concatenate(picked), np.concatenate(rest)


def stratified_slice(dataset: ImageDataset, size: int | None, seed: int) -> ImageDataset:
    """A class-stratified subset of about ``size`` items (the whole set if ``size`` is None)."""
    if size is None or size >= len(dataset):
        return dataset
    parts = max(1, len(dataset) // size)
    rows = (
        stratified_split(dataset.labels, parts, seed=seed)[0]
        if parts > 1
        else np.arange(len(dataset))
    )
    return dataset.subset(rows[:size])


def balanced_rows(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """About ``size`` sorted row indices with every class in equal share (round robin over
    the classes; a class with too few rows gives all it has)."""
    rng = np.random.default_rng(seed)
    queues = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    rows: list[int] = []
    while len(rows) < size and any(queues):
        for queue in queues:
            if queue and len(rows) < size:
                rows.append(queue.pop())
    return np.sort(np.asarray(rows, dtype=np.int64))


def stratified_split(labels: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Split row indices into ``k`` disjoint parts, each holding every class in equal share.

    Every class needs at least ``k`` items. Parts are sorted index arrays.
    """
    labels = np.asarray(labels)
    if k < 1:
        raise ValueError("k must be at least 1")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) < k:
            raise ValueError(f"class {c} has {len(rows)} items, fewer than k={k} parts")
        for j, chunk in enumerate(np.array_split(rows, k)):
            parts[j].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def class_disjoint_parts(labels: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Split row indices into ``k`` parts with disjoint class sets (classes shuffled)."""
    labels = np.asarray(labels)
    classes = np.random.default_rng(seed).permutation(np.unique(labels))
    if len(classes) < k:
        raise ValueError(f"{len(classes)} classes cannot be split into k={k} disjoint parts")
    return [np.flatnonzero(np.isin(labels, group)) for group in np.array_split(classes, k)]


# --------------------------------------------------------------------------- sampling
