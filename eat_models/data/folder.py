"""Any image folder laid out as ``root/class_name/*.jpg`` (a user's own photos, or a
dataset in that layout), decoded lazily with Pillow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import DatasetNotFoundError, ImageDataset
from .splits import SPLIT_KINDS, class_disjoint_split, stratified_fraction

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def scan_image_folder(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """List ``root/class_name/*.{jpg,png,…}`` as (paths, labels, sorted class names)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist; expected a layout root/class_name/*.jpg"
        )
    class_names = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        for file in sorted((root / name).rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(file)
                labels.append(label)
    if not paths:
        raise DatasetNotFoundError(
            f"no images found under {root}; expected a layout root/class_name/*.jpg "
            f"with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    return paths, np.asarray(labels, dtype=np.int64), class_names


def load_image_folder(
    root: str | os.PathLike,
    image_size: int = 224,
    channels: int = 3,
    split: str = "class-disjoint",
) -> tuple[ImageDataset, ImageDataset]:
    """An image folder as ``(train, test)``.

    ``class-disjoint`` (default, the CUB-200/CARS-196 protocol): the first half of the
    sorted classes train, the second half test. ``standard``: a stratified 80/20 split of
    every class.
    """
    if split not in SPLIT_KINDS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLIT_KINDS}")
    paths, labels, class_names = scan_image_folder(root)
    if split == "class-disjoint":
        train_rows, test_rows = class_disjoint_split(labels)
    else:
        test_rows, train_rows = (np.sort(p) for p in stratified_fraction(labels, 0.2, seed=0))
    name = Path(root).name or "images"

    def make(part: str, rows: np.ndarray) -> ImageDataset:
        return ImageDataset(
            name=f"{name}/{part}",
            images=[paths[i] for i in rows],
            labels=labels[rows],
            class_names=class_names,
            channels=channels,
            image_size=image_size,
            refs=[str(paths[i]) for i in rows],
        )

    return make("train", train_rows), make("test", test_rows)
