"""Images in: decoding, the preprocessing shared by build and search, thumbnails, sources.

:func:`preprocess_image` turns any PIL image into the tensor a model expects (its
channels and input size, pixels in [0, 1]). Indexing and searching both go through it,
and the web app reuses it, so a query is always treated like a gallery image.

A *source* is what an index is built from: a Fashion-MNIST split, an image folder
``root/class_name/*.jpg``, a list of files, or a list of uploaded PIL images. Each item
has a reference (``fashion-mnist/test:12``, a file path, ``upload:3``) and, when known, a
label and class name. Files that fail to decode are reported one by one by the builder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from eat_models.data import ImageDataset, load_fashion_mnist, scan_image_folder

from .errors import ImageDecodeError

# Greyscale models this small were trained on dark-background images like Fashion-MNIST.
DARK_BACKGROUND_MAX_SIZE = 32
# A border brighter than this (mean, in [0, 1]) counts as a light background.
LIGHT_BACKGROUND_LEVEL = 0.5
THUMBNAIL_MAX_SIZE = 64


def dark_background_model(meta: Mapping) -> bool:
    """True for greyscale models with small inputs (Fashion-MNIST-like, dark background)."""
    return int(meta["channels"]) == 1 and int(meta["input_size"]) <= DARK_BACKGROUND_MAX_SIZE


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file completely; failures raise :class:`ImageDecodeError`."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white, as a viewer would show them."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


def _border(arr: np.ndarray) -> np.ndarray:
    """The outermost pixels of a greyscale ``[H, W]`` array, flattened."""
    return np.concatenate([arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel()])


def preprocess_image(image: Image.Image, meta: Mapping, invert: bool | None = None) -> torch.Tensor:
    """A PIL image as the model's input: ``float32 [C, H, W]`` in [0, 1].

    ``meta`` is the model's ``meta`` (``channels`` and ``input_size`` are used). The image
    is converted to greyscale or RGB (transparency composited onto white) and resized to
    ``input_size`` squared, as the training data loader does.

    For greyscale models of at most 32 px (Fashion-MNIST-like: light objects on a black
    background) the image is first padded to a square with its border colour, and a photo
    with a light background is inverted and its background brought to black, so it looks
    like the training data. ``invert=None`` decides that from the mean border brightness;
    ``True`` forces the inversion, ``False`` turns it off (for any model).
    """
    size, channels = int(meta["input_size"]), int(meta["channels"])
    dark_model = dark_background_model(meta)
    image = _flatten_alpha(image).convert("L" if channels == 1 else "RGB")
    if dark_model and image.width != image.height:
        side = max(image.size)  # dark_model implies greyscale: one border value
        image = ImageOps.pad(image, (side, side), color=int(np.median(_border(np.asarray(image)))))
    image = image.resize((size, size), Image.BILINEAR)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    do_invert = (
        invert
        if invert is not None
        else (dark_model and float(_border(arr).mean()) > LIGHT_BACKGROUND_LEVEL)
    )
    if do_invert:
        arr = 1.0 - arr
        if dark_model:
            background = float(np.median(_border(arr)))
            arr = np.clip((arr - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def thumbnail_size_for(meta: Mapping) -> int:
    """Default thumbnail side: the model's input size, at most 64 px."""
    return min(int(meta["input_size"]), THUMBNAIL_MAX_SIZE)


def make_thumbnail(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """A small ``uint8 [size, size, channels]`` copy of the image (centre-cropped square)."""
    image = _flatten_alpha(image).convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.BILINEAR)
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


FASHION_MNIST_SPLITS = ("train", "test")


def fashion_mnist_source(
    split: str = "test", data_dir: str | os.PathLike | None = None
) -> DatasetSource:
    """The Fashion-MNIST ``train`` (60k) or ``test`` (10k) split, from the local IDX files."""
    if split not in FASHION_MNIST_SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose train or test")
    train, test = load_fashion_mnist("standard", data_dir)
    return DatasetSource(train if split == "train" else test)


def folder_source(root: str | os.PathLike) -> FileSource:
    """An image folder ``root/class_name/*.jpg``: labels and class names from sub-folders."""
    paths, labels, class_names = scan_image_folder(root)
    return FileSource(paths, labels, class_names, name=Path(root).name or "images")


def parse_source(spec: str, data_dir: str | os.PathLike | None = None) -> ImageSource:
    """A source from a CLI string: ``fashion-mnist:test``, ``fashion-mnist:train``, a folder
    ``root/class/*.jpg``, or one image file."""
    if spec.startswith("fashion-mnist"):
        _, _, split = spec.partition(":")
        return fashion_mnist_source(split or "test", data_dir)
    path = Path(spec)
    if path.is_dir():
        return folder_source(path)
    if path.is_file():
        return FileSource([path], name=path.name)
    raise FileNotFoundError(
        f"source {spec!r} is neither 'fashion-mnist:train', 'fashion-mnist:test', an image "
        "folder (root/class_name/*.jpg) nor an image file"
    )
