"""The one image pipeline: how any image becomes a model's input, for training, indexing,
search and the web app alike (so a model never sees other pixels at search time than it
was trained on).

decode (:func:`decode_image`, the only place that opens an image: PNG, JPEG, GIF, BMP,
WebP or TIFF only; JPEG draft reduction; EXIF orientation; 16-bit, 32-bit and float
greyscale scaled to 8 bits, not clipped; palette, CMYK and other modes to RGB/RGBA; shrunk
to at most :data:`WORKING_MAX_SIDE` a side) → alpha composited onto white → greyscale or
RGB → for small greyscale models (Fashion-MNIST-like) padded to a square with the border
colour and, when the background is light, inverted → resized to the input size →
``float32 [C, H, W]`` in [0, 1] (:func:`preprocess_image`, :func:`load_model_input`).

The web app's uploads call :func:`decode_image` too, adding only their per-request limits
(bytes, pixels, pixels in flight), so a file gives the same tensor through an upload,
through training on a folder and through ``eat index``.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

#: the only formats opened (Pillow's names); anything else, EPS (Ghostscript) included, is
#: refused as not an image we read, before any of its data is parsed
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
FORMATS_IN_WORDS = "PNG, JPEG, GIF, BMP, WebP or TIFF"
#: decoded images are shrunk to this side at once (JPEGs decode at reduced size): plenty
#: for 28-224 px models, and the same on every road into a model
WORKING_MAX_SIDE = 512


class ImageDecodeError(ValueError):
    """A file that is not a decodable image. ``name`` is the file, ``reason`` says what is
    wrong in plain words; the message is ``"NAME: cannot decode image (REASON)"``."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name, self.reason = str(name), reason
        super().__init__(f"{name}: cannot decode image ({reason})" if reason else str(name))


# Greyscale models this small were trained on dark-background images like Fashion-MNIST.
DARK_BACKGROUND_MAX_SIZE = 32
# A border brighter than this (mean, in [0, 1]) counts as a light background.
LIGHT_BACKGROUND_LEVEL = 0.5


def dark_background_model(meta: Mapping) -> bool:
    """True for greyscale models with small inputs (Fashion-MNIST-like, dark background)."""
    return int(meta["channels"]) == 1 and int(meta["input_size"]) <= DARK_BACKGROUND_MAX_SIZE


def too_many_pixels(size: str = "", limit: int | None = None) -> str:
    """The reason given for an image over the pixel limit."""
    what = f"{size} pixels" if size else "the image"
    top = f"the {limit / 1e6:.0f} megapixel limit" if limit else "the pixel limit"
    return f"{what} is more than {top} (refused before decoding); please send a smaller image"


def to_eight_bit(image: Image.Image) -> Image.Image:
    """High-bit-depth greyscale (16-bit ``I;16*``, 32-bit ``I``, float ``F``) scaled to 8-bit
    ``L`` over the range of its bit depth, not clipped (a clipped 16-bit image is all white).

    16-bit and 32-bit integer images are divided by 257 (65535 → 255) unless their values
    already fit in 8 bits; float images are taken as [0, 1] when they fit, else scaled by
    their maximum.
    """
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 255.0 / max(top, 1e-12)
    elif top <= 255:
        scale = 1.0
    elif top <= 65535:
        scale = 1.0 / 257.0
    else:
        scale = 255.0 / top
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L")


def decode_image(
    source: bytes | str | os.PathLike,
    name: str | None = None,
    *,
    max_pixels: int | None = None,
    reserve: Callable[[tuple[int, int]], AbstractContextManager] | None = None,
) -> Image.Image:
    """Decode an image (its bytes, or a file path) into an ``L``, ``LA``, ``RGB`` or ``RGBA``
    image of at most :data:`WORKING_MAX_SIDE` a side: EXIF orientation applied, first frame
    of an animation, high-bit-depth greyscale scaled to 8 bits.

    ``max_pixels``: refuse larger images before decoding (default: Pillow's own limit).
    ``reserve``: called with the size that will be decoded (after JPEG draft reduction)
    before any pixel is decoded; it returns a context manager held while decoding, or
    raises its own error to refuse (the web app's per-request budgets). Failures raise
    :class:`ImageDecodeError` with the name and the reason.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "image"
        if not len(source):
            raise ImageDecodeError(name, "the file is empty")
        stream = io.BytesIO(source)
    else:
        name = name or str(source)
        try:
            with open(source, "rb") as fh:
                stream = io.BytesIO(fh.read())
        except OSError as exc:
            raise ImageDecodeError(name, exc.strerror or type(exc).__name__) from None
        if not stream.getbuffer().nbytes:
            raise ImageDecodeError(name, "the file is empty")
    with warnings.catch_warnings():
        # Pillow warns between MAX_IMAGE_PIXELS and twice that, and refuses beyond; the size
        # check below refuses over max_pixels with a clearer message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=IMAGE_FORMATS)
        except Image.DecompressionBombError:
            raise ImageDecodeError(name, too_many_pixels(limit=max_pixels)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
            raise ImageDecodeError(
                name, f"not an image file this app can read ({FORMATS_IN_WORDS})"
            ) from None
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageDecodeError(name, f"the image has no pixels ({width}×{height})")
        if max_pixels is not None and width * height > max_pixels:
            raise ImageDecodeError(name, too_many_pixels(f"{width}×{height}", max_pixels))
        with ExitStack() as held:
            try:
                image.draft("RGB", (WORKING_MAX_SIDE, WORKING_MAX_SIDE))  # JPEG: low-res decode
            except (OSError, ValueError) as exc:
                raise ImageDecodeError(name, "the image file is corrupt or truncated") from exc
            if reserve is not None:
                held.enter_context(reserve(image.size))
            decoded = image.size[0] * image.size[1]
            try:
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # no copy of a huge image
                image = to_eight_bit(image)
                if image.mode not in ("L", "RGB", "RGBA", "LA"):
                    has_alpha = "A" in image.mode or (
                        image.mode == "P" and "transparency" in image.info
                    )
                    image = image.convert("RGBA" if has_alpha else "RGB")
                image.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.BILINEAR)
            except Image.DecompressionBombError:
                raise ImageDecodeError(name, too_many_pixels(limit=max_pixels)) from None
            except (OSError, ValueError, SyntaxError, EOFError, struct.error):
                raise ImageDecodeError(name, "the image file is corrupt or truncated") from None
    image.info["decoded_pixels"] = decoded
    return image


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file (:func:`decode_image`); failures raise :class:`ImageDecodeError`."""
    return decode_image(path)


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
