"""Write the app's example query images into ``assets/examples/``.

    .venv/bin/python scripts/make_examples.py [--out DIR]

One Fashion-MNIST *test* image per chosen class (enlarged 4× with crisp pixels, so they look
right in a browser and shrink back to the exact 28×28 pixels) and one "photo-like" JPEG: a
test image turned into a dark, tinted object on a light, uneven background, non-square and
larger — the kind of picture a person uploads, which the app's preprocessing brings back to
the model's domain. The app reads them through :mod:`app.services.example_images`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from app.services.example_images import EXAMPLES_DIR

# (test-set row, file name): one clear item of eight classes, then the photo-like one.
TEST_ROWS = (
    (1, "pullover"),
    (2, "trouser"),
    (0, "ankle-boot"),
    (8, "sandal"),
    (9, "sneaker"),
    (13, "dress"),
    (18, "bag"),
    (19, "t-shirt"),
)
PHOTO_ROW, PHOTO_NAME = 25, "photo-like-coat"
ENLARGE = 4


def photo_like(pixels: np.ndarray, seed: int = 0) -> Image.Image:
    """A 28×28 Fashion-MNIST image as a 320×256 RGB "photo": dark tinted object on a light,
    uneven, slightly noisy background."""
    rng = np.random.default_rng(seed)
    obj = (
        Image.fromarray(pixels)
        .resize((224, 224), Image.BICUBIC)
        .filter(ImageFilter.GaussianBlur(1))
    )
    alpha = np.asarray(obj, dtype=np.float32) / 255.0
    h, w = 256, 320
    yy, xx = np.mgrid[0:h, 0:w]
    background = 0.93 - 0.08 * (xx / w) - 0.04 * (yy / h)
    canvas = np.repeat(background[:, :, None], 3, axis=2)
    tint = np.array([0.20, 0.28, 0.45])  # a dark blue garment
    top, left = 16, 48
    region = canvas[top : top + 224, left : left + 224]
    a = alpha[:, :, None] ** 0.7
    region[:] = region * (1 - a) + (tint * (0.6 + 0.4 * (1 - a))) * a
    canvas += rng.normal(scale=0.006, size=canvas.shape)
    return Image.fromarray((np.clip(canvas, 0, 1) * 255).round().astype(np.uint8), "RGB")


def write_examples(out_dir: str | os.PathLike = EXAMPLES_DIR) -> list[Path]:
    """Write the example PNGs into ``out_dir``; returns their paths."""
    from eat_models.data import load_fashion_mnist_arrays

    images, _ = load_fashion_mnist_arrays()["test"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (row, name) in enumerate(TEST_ROWS):
        path = out / f"{i + 1:02d}-{name}.png"
        image = Image.fromarray(images[row]).resize((28 * ENLARGE, 28 * ENLARGE), Image.NEAREST)
        image.save(path, optimize=True)
        written.append(path)
    path = out / f"{len(TEST_ROWS) + 1:02d}-{PHOTO_NAME}.jpg"
    photo_like(images[PHOTO_ROW]).save(path, quality=88)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/make_examples.py",
        description="Write the app's example query images from the Fashion-MNIST test set.",
    )
    parser.add_argument(
        "--out", default=str(EXAMPLES_DIR), help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for path in write_examples(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
