"""Fashion-MNIST read straight from the IDX ``.gz`` files (the same files torchvision and
Debian's ``dataset-fashion-mnist`` package ship), held in memory as ``uint8``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetNotFoundError, ImageDataset, torchvision_cache_dir
from .idx import IDXFormatError, read_idx
from .splits import SPLIT_KINDS, class_disjoint_split

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _fashion_mnist_candidates(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    cands: list[tuple[str, Path]] = []
    if root is not None:
        cands.append(("explicit path", Path(root)))
    if os.environ.get("EAT_DATA_DIR"):
        cands.append(("EAT_DATA_DIR", Path(os.environ["EAT_DATA_DIR"])))
    cands.append(("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST_DIR))
    cands.append(("torchvision cache", torchvision_cache_dir() / "FashionMNIST" / "raw"))
    return cands


def _has_fashion_mnist(directory: Path) -> bool:
    return all((directory / f).is_file() for pair in FASHION_MNIST_FILES.values() for f in pair)


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Locate the Fashion-MNIST IDX files.

    Looks in order at: ``root``, ``$EAT_DATA_DIR``, ``/usr/share/datasets/fashion-mnist``
    and the torchvision cache; downloads into the cache only when ``download`` is true.
    Each directory may hold the files directly or in a ``FashionMNIST/raw`` subfolder.
    """
    tried = []
    for label, base in _fashion_mnist_candidates(root):
        for directory in (base, base / "FashionMNIST" / "raw"):
            if _has_fashion_mnist(directory):
                log.info("Fashion-MNIST found in %s (%s)", directory, label)
                return directory
        tried.append(f"  - {base} ({label})")
    if download:
        from torchvision.datasets import FashionMNIST

        target = torchvision_cache_dir()
        log.info("downloading Fashion-MNIST into %s", target)
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        return target / "FashionMNIST" / "raw"
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Looked in:\n" + "\n".join(tried) + "\nGet it with one of:\n"
        "  * sudo apt-get install -y dataset-fashion-mnist   (Debian/Ubuntu)\n"
        "  * put the four IDX .gz files in a folder and pass --data-dir DIR or set EAT_DATA_DIR\n"
        "  * allow a download into the torchvision cache with --download"
    )


def load_fashion_mnist_arrays(
    root: str | os.PathLike | None = None, download: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 [60000,28,28], labels), "test": (...)}`` from IDX files."""
    directory = find_fashion_mnist(root, download)
    out = {}
    for part, (img_file, lbl_file) in FASHION_MNIST_FILES.items():
        images = read_idx(directory / img_file)
        labels = read_idx(directory / lbl_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXFormatError(
                f"{directory}: {img_file} has shape {images.shape} but {lbl_file} has "
                f"shape {labels.shape}"
            )
        out[part] = (images, labels.astype(np.int64))
    return out


def load_fashion_mnist(
    split: str = "standard",
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[ImageDataset, ImageDataset]:
    """Fashion-MNIST as ``(train, test)``.

    ``standard``: the 60k/10k split with all 10 classes in both (as RobRank evaluates).
    ``class-disjoint``: all 70k images, classes 0–4 for training and 5–9 for testing.
    """
    if split not in SPLIT_KINDS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLIT_KINDS}")
    arrays = load_fashion_mnist_arrays(root, download)
    names = list(FASHION_MNIST_CLASSES)

    def make(part: str, images: np.ndarray, labels: np.ndarray, refs: list[str]) -> ImageDataset:
        return ImageDataset(
            name=f"fashion-mnist/{part}",
            images=torch.from_numpy(np.ascontiguousarray(images)),
            labels=labels,
            class_names=names,
            channels=1,
            image_size=28,
            refs=refs,
        )

    if split == "standard":
        parts = []
        for part in ("train", "test"):
            images, labels = arrays[part]
            parts.append(
                make(
                    part, images, labels, [f"fashion-mnist/{part}:{i}" for i in range(len(labels))]
                )
            )
        return parts[0], parts[1]
    all_x = np.concatenate([arrays["train"][0], arrays["test"][0]])
    all_y = np.concatenate([arrays["train"][1], arrays["test"][1]])
    n_train = len(arrays["train"][1])

    def origin(row: int) -> str:
        return (
            f"fashion-mnist/train:{row}" if row < n_train else f"fashion-mnist/test:{row - n_train}"
        )

    train_rows, test_rows = class_disjoint_split(all_y)
    train = make(
        "train-disjoint", all_x[train_rows], all_y[train_rows], [origin(r) for r in train_rows]
    )
    test = make("test-disjoint", all_x[test_rows], all_y[test_rows], [origin(r) for r in test_rows])
    return train, test
