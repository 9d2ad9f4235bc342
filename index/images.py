"""Images in: decoding, the preprocessing shared by build and search, thumbnails, sources.

:func:`preprocess_image` (the library's one image pipeline, :mod:`eat_models.images`)
turns any PIL image into the tensor a model expects. Training, indexing, searching and the
web app all go through it, so a query is treated like a gallery image and like the images
the model was trained on.

A *source* is what an index is built from: a Fashion-MNIST split, an image folder
``root/class_name/*.jpg``, a list of files, or a list of uploaded PIL images. Each item
has a reference (``fashion-mnist/test:12``, a file path, ``upload:3``) and, when known, a
label and class name. Files that fail to decode are reported one by one by the builder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from eat_models import images as pipeline
from eat_models.data import (
    ImageDataset,
    load_dataset,
    load_part,
    parse_source_spec,
    scan_image_folder,
    source_spec_help,
)
from eat_models.images import flatten_alpha
from eat_models.images import (
    preprocess_image as preprocess_image,
)  # re-exported: index.preprocess_image

from .errors import ImageDecodeError


def open_image(path: str | os.PathLike) -> Image.Image:
    """:func:`eat_models.images.open_image`, failing with the index's
    :class:`~index.errors.ImageDecodeError` (a :class:`SearchIndexError`)."""
    try:
        return pipeline.open_image(path)
    except pipeline.ImageDecodeError as exc:
        raise ImageDecodeError(str(exc)) from exc


THUMBNAIL_MAX_SIZE = 64


def thumbnail_size_for(meta: Mapping) -> int:
    """Default thumbnail side: the model's input size, at most 64 px."""
    return min(int(meta["input_size"]), THUMBNAIL_MAX_SIZE)


def make_thumbnail(
    image: Image.Image, size: int, channels: int, *, crop: bool = True
) -> np.ndarray:
    """A small ``uint8 [size, size, channels]`` copy of the image (centre-cropped square).

    ``crop=False``: the whole image instead, shrunk to fit inside ``size``×``size`` with its
    aspect ratio kept (``uint8 [H, W, channels]``; an image already that small keeps its size).
    The one thumbnail maker: index builds store these, the web app shows them.
    """
    image = flatten_alpha(image).convert("L" if channels == 1 else "RGB")
    if crop and image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.BILINEAR)
    elif not crop and max(image.size) > size:
        image.thumbnail((size, size), Image.BILINEAR)  # a copy: convert() made one
    arr = np.asarray(image, dtype=np.uint8)
    return arr[:, :, None].copy() if arr.ndim == 2 else arr.copy()


# --------------------------------------------------------------------------- sources


class ImageSource:
    """Images to index, each with a reference and, when known, a label and class name."""

    name = "images"
    class_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, row: int) -> Image.Image:
        """Decode item ``row``; raises :class:`ImageDecodeError` when it cannot."""
        raise NotImplementedError

    def ref(self, row: int) -> str:
        raise NotImplementedError

    def label(self, row: int) -> int | None:
        return None

    def record(self, row: int) -> dict:
        """The metadata stored with item ``row``: source reference, label, class name."""
        label = self.label(row)
        class_name = self.class_names[label] if label is not None and self.class_names else None
        return {"source": self.ref(row), "label": label, "class_name": class_name}

    def tensors(self, rows: Sequence[int], meta: Mapping) -> torch.Tensor | None:
        """A fast path: the model inputs of ``rows`` at once, or None to decode one by one."""
        return None


class DatasetSource(ImageSource):
    """An :class:`eat_models.data.ImageDataset` (e.g. a Fashion-MNIST split in memory)."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.class_names = list(dataset.class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def ref(self, row: int) -> str:
        return self.dataset.ref(row)

    def label(self, row: int) -> int | None:
        return int(self.dataset.labels[row])

    def load(self, row: int) -> Image.Image:
        if not self.dataset.in_memory:
            return open_image(self.dataset.images[row])
        arr = self.dataset.images[row].numpy()
        if arr.ndim == 3:  # [C, H, W]
            arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        return Image.fromarray(np.ascontiguousarray(arr))

    def tensors(self, rows: Sequence[int], meta: Mapping) -> torch.Tensor | None:
        """Stored pixels as they are, when they already have the model's input shape."""
        d = self.dataset
        same_shape = d.channels == int(meta["channels"]) and d.image_size == int(meta["input_size"])
        return d.batch(np.asarray(rows)) if d.in_memory and same_shape else None


class FileSource(ImageSource):
    """Image files, optionally labelled (an image folder gives labels from sub-folders)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "files",
    ) -> None:
        self.paths = [Path(p) for p in paths]
        if labels is not None and len(labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(labels)} labels")
        self.labels = None if labels is None else [int(v) for v in labels]
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def ref(self, row: int) -> str:
        return str(self.paths[row])

    def label(self, row: int) -> int | None:
        return None if self.labels is None else self.labels[row]

    def load(self, row: int) -> Image.Image:
        return open_image(self.paths[row])


class PILSource(ImageSource):
    """Images already decoded (e.g. uploads to the web app), with optional names."""

    def __init__(self, images: Sequence[Image.Image], names: Sequence[str] | None = None) -> None:
        if names is not None and len(names) != len(images):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        self.images = list(images)
        self.names = list(names) if names is not None else None
        self.name = "uploads"

    def __len__(self) -> int:
        return len(self.images)

    def ref(self, row: int) -> str:
        return self.names[row] if self.names is not None else f"upload:{row}"

    def load(self, row: int) -> Image.Image:
        image = self.images[row]
        if not isinstance(image, Image.Image):
            raise ImageDecodeError(f"{self.ref(row)}: not an image ({type(image).__name__})")
        return image


def dataset_source(
    name: str, part: str = "test", data_dir: str | os.PathLike | None = None
) -> DatasetSource:
    """A part (``train`` or ``test``) of a registered dataset (:mod:`eat_models.data`)."""
    return DatasetSource(load_part(name, part, data_dir))


def fashion_mnist_source(
    split: str = "test", data_dir: str | os.PathLike | None = None
) -> DatasetSource:
    """The Fashion-MNIST ``train`` (60k) or ``test`` (10k) split, from the local IDX files."""
    return dataset_source("fashion-mnist", split, data_dir)


def folder_source(root: str | os.PathLike) -> FileSource:
    """An image folder ``root/class_name/*.jpg``: labels and class names from sub-folders."""
    paths, labels, class_names = scan_image_folder(root)
    return FileSource(paths, labels, class_names, name=Path(root).name or "images")


def parse_source(spec: str, data_dir: str | os.PathLike | None = None) -> ImageSource:
    """A source from a CLI string: a registered dataset's part (``fashion-mnist:test``,
    ``cub200:train``; ``data_dir`` is where that dataset is), an image folder
    ``root/class/*.jpg``, or one image file."""
    parsed = parse_source_spec(spec)
    if parsed is not None and parsed.dataset == "folder":
        return folder_source(parsed.location)
    if parsed is not None:
        return dataset_source(parsed.dataset, parsed.part, data_dir)
    path = Path(spec)
    if path.is_file():
        return FileSource([path], name=path.name)
    raise FileNotFoundError(f"source {spec!r} is neither {source_spec_help()} nor an image file")


_FASHION_REF = re.compile(r"^fashion-mnist/(train|test):(\d+)$")


def source_from_records(
    records: Sequence[Mapping], data_dir: str | os.PathLike | None = None
) -> ImageSource:
    """The images behind an index's items, in the order of ``records`` (each item's stored
    ``source`` reference): Fashion-MNIST rows (``fashion-mnist/test:12``) or image files.

    Labels and class names come from the records. Raises :class:`ImageDecodeError` naming
    the first item whose reference is neither (e.g. ``upload:3``, or a file since moved).
    """
    refs = [str(r.get("source", "")) for r in records]
    labels = [r.get("label") for r in records]
    names: dict[int, str] = {}
    for r in records:
        if r.get("label") is not None and r.get("class_name"):
            names.setdefault(int(r["label"]), str(r["class_name"]))
    matches = [_FASHION_REF.match(ref) for ref in refs]
    if refs and all(matches):
        train, test = load_dataset("fashion-mnist", "standard", data_dir)  # one read of the files
        split = {"train": train, "test": test}
        parts = [(m.group(1), int(m.group(2))) for m in matches]
        for (part, row), ref in zip(parts, refs, strict=True):
            if row >= len(split[part]):
                raise ImageDecodeError(f"{ref}: Fashion-MNIST {part} has {len(split[part])} rows")
        if len({part for part, _ in parts}) == 1:
            dataset = split[parts[0][0]].subset([row for _, row in parts])
        else:  # items from both splits: one in-memory dataset, in record order
            images = torch.stack([split[part].images[row] for part, row in parts])
            dataset = ImageDataset(
                name="fashion-mnist/mixed",
                images=images,
                labels=np.asarray([split[p].labels[r] for p, r in parts], dtype=np.int64),
                class_names=list(train.class_names),
                channels=train.channels,
                image_size=train.image_size,
                refs=refs,
            )
        return DatasetSource(dataset)
    for i, ref in enumerate(refs):
        if not ref or not Path(ref).is_file():
            raise ImageDecodeError(
                f"item {i} of the index refers to {ref!r}, which is neither a Fashion-MNIST row "
                "nor an image file here: the app shows gallery images, so it needs them"
            )
    known = all(v is not None for v in labels)
    top = max([*names, *(int(v) for v in labels if v is not None)], default=-1)
    class_names = [names.get(c, str(c)) for c in range(top + 1)] or None
    return FileSource(
        refs,
        [int(v) for v in labels] if known else None,
        class_names if known else None,
        name="index items",
    )
