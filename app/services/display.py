"""Pictures for people: enlarged with crisp pixels, model inputs as images, thumbnails.

Every thumbnail the app shows is made by the index's one thumbnail maker,
:func:`index.images.make_thumbnail` (the gallery's are stored in its index, an uploaded
set's are made on the spot), then enlarged by a whole factor for display (:func:`enlarge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eat_models.files import atomic_write
from index import ImageSource
from index.images import make_thumbnail, thumbnail_size_for

from .sources import GalleryIndex

#: the side (pixels) gallery items and model inputs are enlarged to
DISPLAY_SIDE = 112
#: the side of the thumbnails of an uploaded set (the Cluster tab)
UPLOAD_THUMB_SIDE = 96


def enlarge(pixels: np.ndarray | Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """An image enlarged by a whole factor (nearest neighbour) to about ``side`` pixels."""
    if isinstance(pixels, Image.Image):
        image = pixels
    else:
        arr = np.asarray(pixels)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        image = Image.fromarray(arr)
    factor = max(1, side // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def tensor_to_image(tensor: torch.Tensor, side: int = DISPLAY_SIDE) -> Image.Image:
    """A model input ``[C, H, W]`` in [0, 1] as an enlarged PIL image."""
    arr = (tensor.detach().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return enlarge(arr, side)


def gallery_thumbnails(
    indexes: Mapping, source: ImageSource, source_rows: np.ndarray, meta: Mapping
) -> np.ndarray:
    """One thumbnail per gallery position: from an index the app built (it stores them),
    else decoded from the images (an outside index, e.g. Milvus, would cost a round trip per
    item)."""
    for index in indexes.values():
        if not isinstance(index, GalleryIndex) and index.has_thumbnails:
            return np.stack([index.thumbnail(p) for p in range(len(source_rows))])
    size, channels = thumbnail_size_for(meta), int(meta["channels"])
    return np.stack([make_thumbnail(source.load(int(r)), size, channels) for r in source_rows])


def upload_thumbnail(image: Image.Image, side: int = UPLOAD_THUMB_SIDE) -> Image.Image:
    """An uploaded image for display at about ``side`` pixels: whole, shrunk to fit when
    larger, enlarged by a whole factor (crisp pixels) when smaller."""
    channels = 1 if image.mode in ("L", "LA") else 3
    return enlarge(make_thumbnail(image, side, channels, crop=False), side)


def data_uri(image: Image.Image, format: str = "PNG") -> str:
    """``image`` inlined as a ``data:`` URI (PNG, or JPEG for photos: several times faster
    to encode), for HTML that shows a picture without a file or a second request."""
    import base64
    import io

    buffer = io.BytesIO()
    if format.upper() == "JPEG":
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.save(buffer, format="JPEG", quality=90)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG", compress_level=1)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write ``image`` as a PNG file at ``path``, whole or not at all (not fsynced)."""
    atomic_write(Path(path), lambda fh: image.save(fh, format="PNG"), durable=False)
