"""The dataset registry: one entry per dataset, naming its loader, where it is looked for by
default, and the splits it offers. Every part of the project that takes a dataset name —
``eat train --dataset``, ``eat eval``, ``eat index build SOURCE``, the app's ``--gallery`` —
resolves it here, so a new dataset is one :func:`register` call plus its loader module::

    from eat_models.data import DatasetEntry, register

    def load_mine(request):          # -> (train ImageDataset, test ImageDataset)
        ...

    register(DatasetEntry("mine", "My images (…)", load_mine, default_location="…"))

A *source spec* names a part of a dataset as a gallery or an index source: ``NAME:PART``
(``fashion-mnist:test``, ``cub200:train``; the part defaults to ``test``) or the path of an
image folder ``root/class_name/*.jpg`` (:func:`parse_source_spec`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dataset import DatasetNotFoundError, ImageDataset, torchvision_cache_dir
from .fashion_mnist import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist
from .folder import load_image_folder
from .paper import load_cars196, load_cub200, load_inshop_pair
from .splits import SPLIT_KINDS

PARTS = ("train", "test")


@dataclass(frozen=True)
class DataRequest:
    """What a loader is asked for: the split protocol, where to look (None: its default
    location), whether it may download, and the image size and channels of the model."""

    split: str = "standard"
    data_dir: Path | None = None
    download: bool = False
    image_size: int = 224
    channels: int = 3


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: ``loader(request) -> (train, test)``.

    ``splits``: the split protocols it offers (``standard``, ``class-disjoint``); ``None``
    when it has one fixed protocol of its own (the paper's datasets), which ``--split``
    does not change. ``needs_location``: it has no default location (an image folder).
    """

    name: str
    summary: str
    loader: Callable[[DataRequest], tuple[ImageDataset, ImageDataset]]
    default_location: str = ""
    splits: tuple[str, ...] | None = SPLIT_KINDS
    needs_location: bool = False

    def load(self, request: DataRequest) -> tuple[ImageDataset, ImageDataset]:
        if self.splits is not None and request.split not in self.splits:
            raise ValueError(
                f"dataset {self.name!r} has no split {request.split!r}; choose one of {self.splits}"
            )
        if self.needs_location and request.data_dir is None:
            raise DatasetNotFoundError(
                f"--dataset {self.name} needs --data-dir ROOT ({self.default_location})"
            )
        return self.loader(request)


_REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add a dataset to the registry (a name may be registered once)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"dataset {entry.name!r} is registered already")
    if ":" in entry.name or "/" in entry.name:
        raise ValueError(f"dataset name {entry.name!r} may not contain ':' or '/'")
    _REGISTRY[entry.name] = entry
    return entry


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in registration order."""
    return tuple(_REGISTRY)


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}"
        ) from None


def load_dataset(
    name: str,
    split: str = "standard",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int = 224,
    channels: int = 3,
) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` of a registered dataset (``data_dir``: its root; None: the
    entry's default location)."""
    request = DataRequest(
        split, None if data_dir is None else Path(data_dir), download, image_size, channels
    )
    return dataset_entry(name).load(request)


def load_part(
    name: str,
    part: str = "test",
    data_dir: str | os.PathLike | None = None,
    image_size: int = 224,
    channels: int = 3,
) -> ImageDataset:
    """One part (``train`` or ``test``) of a dataset in its standard split."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r} of {name}; choose one of {PARTS}")
    train, test = load_dataset(name, "standard", data_dir, False, image_size, channels)
    return train if part == "train" else test


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: a registered dataset's part, or an image folder (``folder``
    with ``location``)."""

    dataset: str
    part: str | None = None
    location: Path | None = None

    def __str__(self) -> str:
        if self.dataset == "folder":
            return str(self.location)
        return f"{self.dataset}:{self.part}"


def parse_source_spec(spec: str) -> SourceSpec | None:
    """``NAME[:PART]`` of a registered dataset, or an existing image folder; None when
    ``spec`` is neither (it may still be a single image file, which the caller handles)."""
    name, sep, part = spec.partition(":")
    if name in _REGISTRY and not _REGISTRY[name].needs_location:
        part = part if sep else "test"
        if part not in PARTS:
            raise ValueError(f"source {spec!r}: {name} has the parts {', '.join(PARTS)}")
        return SourceSpec(name, part)
    path = Path(spec).expanduser()
    if path.is_dir():
        return SourceSpec("folder", None, path.resolve())
    return None


def source_spec_help() -> str:
    """The spec forms, for error messages and --help."""
    named = [n for n, e in _REGISTRY.items() if not e.needs_location]
    return (
        f"'NAME:train' or 'NAME:test' with NAME one of {', '.join(named)}, or an image "
        "folder root/class_name/*.jpg"
    )


# --------------------------------------------------------------------------- the entries


def _fashion_mnist(request: DataRequest):
    return load_fashion_mnist(request.split, request.data_dir, request.download)


def _folder(request: DataRequest):
    return load_image_folder(request.data_dir, request.image_size, request.channels, request.split)


def _paper(load):
    def loader(request: DataRequest):
        return load(request.data_dir, request.image_size, request.download)

    return loader


def _cache(name: str) -> str:
    return f"{torchvision_cache_dir() / name}"


register(
    DatasetEntry(
        "fashion-mnist",
        "Fashion-MNIST (60k/10k, 28×28 grey; standard split keeps all 10 classes in both)",
        _fashion_mnist,
        f"$EAT_DATA_DIR, {DEBIAN_FASHION_MNIST_DIR}, then the torchvision cache",
    )
)
register(
    DatasetEntry(
        "folder",
        "an image folder root/class_name/*.jpg (class-disjoint: first half of the classes train)",
        _folder,
        "no default: --data-dir is the folder root",
        needs_location=True,
    )
)
register(
    DatasetEntry(
        "cub200",
        "CUB-200-2011 (classes 1-100 train, 101-200 test)",
        _paper(load_cub200),
        _cache("cub200"),
        splits=None,
    )
)
register(
    DatasetEntry(
        "cars196",
        "CARS-196 (classes 1-98 train, 99-196 test)",
        _paper(load_cars196),
        _cache("cars196"),
        splits=None,
    )
)
register(
    DatasetEntry(
        "inshop",
        "In-Shop Clothes Retrieval (its train list; test = query + gallery)",
        _paper(load_inshop_pair),
        _cache("inshop"),
        splits=None,
    )
)


def checkpoint_data(
    meta: dict, dataset: str | None = None, data_dir: str | os.PathLike | None = None
) -> tuple[str, str | os.PathLike | None]:
    """``(dataset, data_dir)`` a checkpoint is evaluated on: the dataset its training record
    names and the location training found it in, unless ``dataset``/``data_dir`` override
    them. A recorded location that no longer exists falls back to the default location."""
    recorded = meta.get("dataset") or "fashion-mnist"
    name = dataset or recorded
    if data_dir is None and name == recorded and meta.get("data_dir"):
        if Path(meta["data_dir"]).exists():
            data_dir = meta["data_dir"]
    return name, data_dir
