"""The seed paper's datasets in their standard on-disk layouts, with their standard splits.

* **CUB-200-2011** (``--dataset cub200``): ``ROOT/CUB_200_2011/`` (or ``ROOT`` itself)
  holding ``images.txt`` (``id relative/path.jpg``), ``image_class_labels.txt``
  (``id class``, 1…200), ``classes.txt`` (``class name``) and ``images/``. The DML
  protocol: classes 1–100 train, 101–200 test.
* **CARS-196** (``--dataset cars196``): ``ROOT/cars_annos.mat`` (``annotations`` with
  ``relative_im_path`` and ``class``, 1…196; ``class_names``) and the images it names
  (``car_ims/…``). Classes 1–98 train, 99–196 test.
* **In-Shop Clothes Retrieval** (``--dataset inshop``): ``ROOT/Eval/list_eval_partition.txt``
  (a count line, a header line, then ``image_name item_id evaluation_status`` with status
  ``train``, ``query`` or ``gallery``) and the images under ``ROOT``. Items are the classes.
  :func:`load_inshop` returns the three lists; as a ``(train, test)`` pair the test set
  is the query and gallery images together (the project's evaluation searches the test
  set against itself), and :func:`load_inshop` gives the standard query → gallery split
  for evaluating the published way.

Images are decoded from the files on access (``image_size``, RGB), as for an image
folder. Nothing is downloaded unless the caller allows it; only CUB has a stable public
archive (:data:`CUB_URL`), the others say where to get them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import DatasetNotFoundError, ImageDataset, torchvision_cache_dir

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"


def _dataset(name: str, root: Path, paths, labels, class_names, image_size: int) -> ImageDataset:
    return ImageDataset(
        name=name,
        images=[root / p for p in paths],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=list(class_names),
        channels=3,
        image_size=image_size,
        refs=[str(root / p) for p in paths],
    )


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            first, _, rest = line.strip().partition(" ")
            rows.append((first, rest.strip()))
    return rows


def _split_by_class(name, root, paths, labels, class_names, first_test: int, image_size):
    """Classes below ``first_test`` (0-based) train, the others test."""
    labels = np.asarray(labels)
    train = labels < first_test
    return (
        _dataset(
            f"{name}/train",
            root,
            [p for p, t in zip(paths, train, strict=True) if t],
            labels[train],
            class_names,
            image_size,
        ),
        _dataset(
            f"{name}/test",
            root,
            [p for p, t in zip(paths, train, strict=True) if not t],
            labels[~train],
            class_names,
            image_size,
        ),
    )


def find_cub200(root: str | os.PathLike | None, download: bool = False) -> Path:
    """The folder holding CUB's ``images.txt`` (``ROOT`` or ``ROOT/CUB_200_2011``)."""
    base = Path(root) if root is not None else torchvision_cache_dir() / "cub200"
    for candidate in (base, base / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    if download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CUB_URL, str(base), md5=CUB_MD5)
        return find_cub200(base, download=False)
    raise DatasetNotFoundError(
        f"CUB-200-2011 not found in {base} (expected images.txt, image_class_labels.txt, "
        f"classes.txt and images/). Get CUB_200_2011.tgz from {CUB_URL} and unpack it there, "
        "or pass --download to let this program fetch it (1.1 GB)."
    )


def load_cub200(
    root: str | os.PathLike | None = None, image_size: int = 224, download: bool = False
) -> tuple[ImageDataset, ImageDataset]:
    """CUB-200-2011 as ``(train, test)``: classes 1–100 and 101–200."""
    folder = find_cub200(root, download)
    images = dict(_read_pairs(folder / "images.txt"))
    classes = dict(_read_pairs(folder / "image_class_labels.txt"))
    class_names = [
        n for _, n in sorted(_read_pairs(folder / "classes.txt"), key=lambda t: int(t[0]))
    ]
    ids = sorted(images, key=int)
    missing = [i for i in ids if i not in classes]
    if missing:
        raise DatasetNotFoundError(f"{folder}/image_class_labels.txt lacks images {missing[:5]}")
    paths = [Path("images") / images[i] for i in ids]
    labels = [int(classes[i]) - 1 for i in ids]
    return _split_by_class("cub200", folder, paths, labels, class_names, 100, image_size)


def load_cars196(
    root: str | os.PathLike | None = None, image_size: int = 224, download: bool = False
) -> tuple[ImageDataset, ImageDataset]:
    """CARS-196 as ``(train, test)``: classes 1–98 and 99–196."""
    base = Path(root) if root is not None else torchvision_cache_dir() / "cars196"
    annos = base / "cars_annos.mat"
    if not annos.is_file():
        raise DatasetNotFoundError(
            f"CARS-196 not found in {base} (expected cars_annos.mat and the car_ims/ folder "
            "it names). Its original host is gone, so it is not downloaded: get car_ims.tgz "
            "and cars_annos.mat from a mirror of the Stanford Cars dataset and unpack them "
            f"into {base}."
        )
    from scipy.io import loadmat

    mat = loadmat(annos, squeeze_me=True, struct_as_record=False)
    annotations = np.atleast_1d(mat["annotations"])
    class_names = [str(n) for n in np.atleast_1d(mat["class_names"])]
    paths = [Path(str(a.relative_im_path)) for a in annotations]
    labels = [int(a.__dict__["class"]) - 1 for a in annotations]
    return _split_by_class("cars196", base, paths, labels, class_names, 98, image_size)


def load_inshop(
    root: str | os.PathLike | None = None, image_size: int = 224, download: bool = False
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """In-Shop as ``(train, query, gallery)`` from ``Eval/list_eval_partition.txt``; labels
    are item ids (shared by a query and its gallery matches)."""
    base = Path(root) if root is not None else torchvision_cache_dir() / "inshop"
    listing = base / "Eval" / "list_eval_partition.txt"
    if not listing.is_file():
        raise DatasetNotFoundError(
            f"In-Shop not found in {base} (expected Eval/list_eval_partition.txt and img/). "
            "It is distributed by the DeepFashion authors on request (no direct download); "
            f"unpack 'In-shop Clothes Retrieval Benchmark' into {base}."
        )
    lines = [line.split() for line in listing.read_text().splitlines() if line.strip()]
    rows = [parts for parts in lines[2:] if len(parts) == 3]  # a count line, a header line
    if int(lines[0][0]) != len(rows):
        raise DatasetNotFoundError(
            f"{listing} announces {lines[0][0]} images but lists {len(rows)}"
        )
    items = sorted({item for _, item, _ in rows})
    label_of = {item: i for i, item in enumerate(items)}
    parts = {}
    for status in ("train", "query", "gallery"):
        chosen = [(path, item) for path, item, s in rows if s == status]
        parts[status] = _dataset(
            f"inshop/{status}",
            base,
            [Path(p) for p, _ in chosen],
            [label_of[item] for _, item in chosen],
            items,
            image_size,
        )
    return parts["train"], parts["query"], parts["gallery"]


def load_inshop_pair(
    root: str | os.PathLike | None = None, image_size: int = 224, download: bool = False
) -> tuple[ImageDataset, ImageDataset]:
    """In-Shop as ``(train, test)``: the test set is the query and gallery images together
    (the project's evaluation searches the test set against itself)."""
    train, query, gallery = load_inshop(root, image_size, download)
    test = ImageDataset(
        name="inshop/test",
        images=[*query.images, *gallery.images],
        labels=np.concatenate([query.labels, gallery.labels]),
        class_names=query.class_names,
        channels=3,
        image_size=image_size,
        refs=[*query.refs, *gallery.refs],
    )
    return train, test
