"""The one image pipeline: how any image becomes a model's input, for training, indexing,
search and the web app alike (so a model never sees other pixels at search time than it
was trained on).

decode (:func:`open_image`: fully, EXIF orientation applied) → alpha composited onto
white → greyscale or RGB → for small greyscale models (Fashion-MNIST-like) padded to a
square with the border colour and, when the background is light, inverted → resized to
the input size → ``float32 [C, H, W]`` in [0, 1] (:func:`preprocess_image`,
:func:`load_model_input`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """A file that is not a decodable image (the message names it)."""


# Greyscale models this small were trained on dark-background images like Fashion-MNIST.
DARK_BACKGROUND_MAX_SIZE = 32
# A border brighter than this (mean, in [0, 1]) counts as a light background.
LIGHT_BACKGROUND_LEVEL = 0.5


def dark_background_model(meta: Mapping) -> bool:
    """True for greyscale models with small inputs (Fashion-MNIST-like, dark background)."""
    return int(meta["channels"]) == 1 and int(meta["input_size"]) <= DARK_BACKGROUND_MAX_SIZE


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file completely and turn it upright (its EXIF orientation);
    failures raise :class:`ImageDecodeError`."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img.copy())
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc


def flatten_alpha(image: Image.Image) -> Image.Image:
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
    ``input_size`` squared.

    For greyscale models of at most 32 px (Fashion-MNIST-like: light objects on a black
    background) the image is first padded to a square with its border colour, and a photo
    with a light background is inverted and its background brought to black, so it looks
    like the training data. ``invert=None`` decides that from the mean border brightness;
    ``True`` forces the inversion, ``False`` turns it off (for any model).
    """
    size, channels = int(meta["input_size"]), int(meta["channels"])
    dark_model = dark_background_model(meta)
    image = flatten_alpha(image).convert("L" if channels == 1 else "RGB")
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


def load_model_input(
    path: str | os.PathLike, channels: int, input_size: int, invert: bool | None = None
) -> torch.Tensor:
    """The model input of an image file (what training on an image folder reads)."""
    meta = {"channels": channels, "input_size": input_size}
    return preprocess_image(open_image(path), meta, invert)
