"""Write the app's example query images into ``assets/examples/``.

    .venv/bin/python scripts/make_examples.py [--out DIR] [--models DIR]

The examples come from the Fashion-MNIST **training** set, so none of them is in the app's
gallery (the test set): a search with one shows how the models generalise, not the query
finding itself at cosine 1.000. One image of each of eight classes (enlarged 4× with crisp
pixels, so they look right in a browser and shrink back to the exact 28×28 pixels) and one
"photo-like" JPEG: a training image turned into a dark, tinted object on a light, uneven
background, non-square and larger, the kind of picture a person uploads, which the app's
preprocessing brings back to the model's domain.

Which image: for each class, the first training image (in file order) whose top gallery
hit is of its class for every model in ``--models`` (default: the shipped ones), searched
over the whole test set as the app does. The rule is stated so that nobody mistakes the
examples for a random sample: they show each class working, not an accuracy. The app reads
them through :mod:`app.services.example_images`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from app.services.example_images import EXAMPLES_DIR

#: the classes shown (Fashion-MNIST label, file name), then the photo-like one
CLASSES = (
    (2, "pullover"),
    (1, "trouser"),
    (9, "ankle-boot"),
    (5, "sandal"),
    (7, "sneaker"),
    (3, "dress"),
    (8, "bag"),
    (0, "t-shirt"),
)
PHOTO_CLASS, PHOTO_NAME = 1, "photo-like-trouser"
ENLARGE = 4
#: training images tried per class before giving up
MAX_TRIES = 200


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


class TopHit:
    """The class of the top gallery hit (the Fashion-MNIST test set) for each model."""

    def __init__(self, models_dir: str | os.PathLike) -> None:
        import torch

        from app.services.models import load_models
        from eat_models.data import load_fashion_mnist_arrays
        from eat_models.images import preprocess_image

        self.preprocess, self.torch = preprocess_image, torch
        self.models = load_models(models_dir)
        images, self.labels = load_fashion_mnist_arrays()["test"]
        gallery = torch.from_numpy(images).float().div(255).unsqueeze(1)
        with torch.no_grad():
            self.vectors = {k: m(gallery).numpy() for k, m in self.models.items()}

    def classes(self, image: Image.Image) -> dict[str, int]:
        out = {}
        for key, model in self.models.items():
            x = self.preprocess(image, model.meta)[None]
            with self.torch.no_grad():
                q = model(x).numpy()[0]
            out[key] = int(self.labels[int(np.argmax(self.vectors[key] @ q))])
        return out


def write_examples(
    out_dir: str | os.PathLike = EXAMPLES_DIR, models_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Write the examples into ``out_dir`` (see the module docstring); returns their paths."""
    from eat_models.data import load_fashion_mnist_arrays

    models_dir = models_dir or Path(EXAMPLES_DIR).parent / "models"
    images, labels = load_fashion_mnist_arrays()["train"]
    judge = TopHit(models_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.*"):
        if old.suffix.lower() in (".png", ".jpg"):
            old.unlink()

    def first_working(label: int, make) -> Image.Image:
        for row in np.flatnonzero(labels == label)[:MAX_TRIES]:
            image = make(images[row])
            if set(judge.classes(image).values()) == {label}:
                return image
        raise SystemExit(f"no training image of class {label} in {MAX_TRIES} works for all")

    def enlarged(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(pixels).resize((28 * ENLARGE, 28 * ENLARGE), Image.NEAREST)

    written = []
    for i, (label, name) in enumerate(CLASSES):
        path = out / f"{i + 1:02d}-{name}.png"
        first_working(label, enlarged).save(path, optimize=True)
        written.append(path)
    path = out / f"{len(CLASSES) + 1:02d}-{PHOTO_NAME}.jpg"
    first_working(PHOTO_CLASS, photo_like).save(path, quality=88)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/make_examples.py",
        description="Write the app's example query images from the Fashion-MNIST training "
        "set (none of them is in the app's gallery).",
    )
    parser.add_argument(
        "--out", default=str(EXAMPLES_DIR), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="models that must all find each example's class (default: assets/models)",
    )
    args = parser.parse_args(argv)
    for path in write_examples(args.out, args.models):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
