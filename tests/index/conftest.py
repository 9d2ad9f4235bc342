"""Helpers for the index tests: clustered unit vectors and tiny image folders made here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def clustered_unit_vectors(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """``float32 [n, dim]`` unit vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture
def make_vectors():
    """The :func:`clustered_unit_vectors` generator."""
    return clustered_unit_vectors


@pytest.fixture
def vectors() -> np.ndarray:
    return clustered_unit_vectors(600)


@pytest.fixture
def image_folder(tmp_path, fmnist_small):
    """``root/<class>/*.png``: 6 Fashion-MNIST test images in each of 3 classes, plus a
    corrupt .jpg and a truncated .png in the first class."""
    _, test = fmnist_small
    root = tmp_path / "gallery"
    for label in (0, 1, 7):
        folder = root / test.class_names[label].replace("/", "-")
        folder.mkdir(parents=True)
        for row in np.flatnonzero(test.labels == label)[:6]:
            Image.fromarray(test.images[row].numpy()).save(folder / f"{row}.png")
    first = sorted(root.iterdir())[0]
    (first / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = next(first.glob("*.png")).read_bytes()
    (first / "truncated.png").write_bytes(good[: len(good) // 2])
    return root
