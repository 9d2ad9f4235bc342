"""Datasets, splits and samplers.

Two sources:

* **Fashion-MNIST** read straight from the IDX ``.gz`` files (the same files torchvision
  and Debian's ``dataset-fashion-mnist`` package ship), held in memory as ``uint8``.
* **Any image folder** laid out as ``root/class_name/*.jpg`` (CUB-200, CARS-196, In-Shop or
  a user's own photos), decoded lazily with Pillow.

Both yield float tensors ``[C, H, W]`` with pixels in ``[0, 1]``; any normalisation lives
inside the networks, so attacks can work in pixel space.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import user_cache_dir
from .images import load_model_input

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
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_KINDS = ("standard", "class-disjoint")


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset cannot be found; the message says how to get it."""


class IDXFormatError(ValueError):
    """Raised for a file that is not a valid IDX file."""


# --------------------------------------------------------------------------- IDX files


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    The format: two zero bytes, a dtype code, the number of dimensions, then one
    big-endian ``uint32`` per dimension, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise IDXFormatError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXFormatError(
            f"{path}: IDX data has {len(raw) - header} bytes, header promises {expected} "
            f"(shape {shape}); the file is truncated or corrupt"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``)."""
    dtype = np.dtype(array.dtype)
    codes = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in _IDX_DTYPES.items()}
    code = codes.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise IDXFormatError(f"dtype {dtype} cannot be stored in IDX")
    big = dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload += np.ascontiguousarray(array, dtype=big).tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)


# --------------------------------------------------------------------------- datasets


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """A labelled image set: ``dataset[i] -> (image [C, H, W] float in [0, 1], label)``.

    ``images`` is either a ``uint8`` tensor ``[N, H, W]``/``[N, C, H, W]`` held in memory or
    a list of file paths decoded on access (resized to ``image_size``).
    """

    name: str
    images: torch.Tensor | list[Path]
    labels: np.ndarray
    class_names: list[str]
    channels: int
    image_size: int
    refs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])

    def image(self, index: int) -> torch.Tensor:
        if self.in_memory:
            img = self.images[index]
            if img.dim() == 2:
                img = img.unsqueeze(0)
            return img.float().div_(255.0)
        return load_model_input(self.images[index], self.channels, self.image_size)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Stack the images at ``indices`` into ``[B, C, H, W]`` (fast path in memory)."""
        if self.in_memory:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
            imgs = self.images[idx]
            if imgs.dim() == 3:
                imgs = imgs.unsqueeze(1)
            return imgs.float().div_(255.0)
        return torch.stack([self.image(int(i)) for i in indices])

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ImageDataset:
        """A new dataset holding only ``indices`` (class names kept)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.in_memory:
            images = self.images[torch.as_tensor(indices)]
        else:
            images = [self.images[i] for i in indices]
        refs = [self.refs[i] for i in indices] if self.refs else []
        return ImageDataset(
            name=name or self.name,
            images=images,
            labels=self.labels[indices],
            class_names=list(self.class_names),
            channels=self.channels,
            image_size=self.image_size,
            refs=refs,
        )

    def ref(self, index: int) -> str:
        """A stable reference to the item's origin (``dataset:row`` or a file path)."""
        return self.refs[index] if self.refs else f"{self.name}:{index}"


def _fashion_mnist_candidates(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    cands: list[tuple[str, Path]] = []
    if root is not None:
        cands.append(("explicit path", Path(root)))
    if os.environ.get("EAT_DATA_DIR"):
        cands.append(("EAT_DATA_DIR", Path(os.environ["EAT_DATA_DIR"])))
    cands.append(("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST_DIR))
    cands.append(("torchvision cache", torchvision_cache_dir() / "FashionMNIST" / "raw"))
    return cands


def torchvision_cache_dir() -> Path:
    """Where this project lets torchvision download datasets to (``~/.cache/eat/datasets``)."""
    return user_cache_dir("datasets")


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
        test_rows, train_rows = (np.sort(p) for p in _stratified_fraction(labels, 0.2, seed=0))
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


DATASETS = ("fashion-mnist", "folder", "cub200", "cars196", "inshop")


def load_dataset(
    name: str,
    split: str = "standard",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int = 224,
    channels: int = 3,
) -> tuple[ImageDataset, ImageDataset]:
    """Dispatch to :func:`load_fashion_mnist`, :func:`load_image_folder` or the paper's
    datasets (:mod:`eat_models.paper_datasets`: ``data_dir`` is their root)."""
    if name in ("cub200", "cars196", "inshop"):
        from .paper_datasets import load_paper_dataset

        return load_paper_dataset(name, data_dir, image_size, download)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir, download)
    if name == "folder":
        if data_dir is None:
            raise DatasetNotFoundError("--dataset folder needs --data-dir ROOT (root/class/*.jpg)")
        return load_image_folder(data_dir, image_size, channels, split)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


# --------------------------------------------------------------------------- splits


def class_disjoint_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the first half of the sorted classes, and rows of the second half."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("a class-disjoint split needs at least two classes")
    train_classes = classes[: (len(classes) + 1) // 2]
    in_train = np.isin(labels, train_classes)
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def _stratified_fraction(
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


class ClassBalancedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``classes_per_batch`` (P) classes × ``samples_per_class`` (M) images.

    Classes with fewer than M items are sampled with replacement. ``num_batches`` defaults
    to one pass over the data (``len(labels) // (P*M)``). Deterministic for a given seed
    and epoch (call :meth:`set_epoch`).
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = np.asarray(labels)
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        if classes_per_batch > len(self.by_class):
            raise ValueError(
                f"classes_per_batch={classes_per_batch} but only {len(self.by_class)} classes"
            )
        self.p = classes_per_batch
        self.m = samples_per_class
        self.num_batches = num_batches or max(1, len(self.labels) // (self.p * self.m))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        classes = np.array(sorted(self.by_class))
        # Walk through per-class permutations so that one pass sees each image about once.
        queues = {c: rng.permutation(rows) for c, rows in self.by_class.items()}
        cursors = dict.fromkeys(queues, 0)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.p, replace=False):
                c = int(c)
                rows = queues[c]
                if len(rows) < self.m:
                    batch.extend(rng.choice(rows, size=self.m, replace=True).tolist())
                    continue
                if cursors[c] + self.m > len(rows):
                    queues[c] = rows = rng.permutation(rows)
                    cursors[c] = 0
                batch.extend(rows[cursors[c] : cursors[c] + self.m].tolist())
                cursors[c] += self.m
            yield batch
