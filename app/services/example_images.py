"""The example query images shipped in ``assets/examples/`` (written by
``scripts/make_examples.py``), for the Search tab and the load check."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .uploads import UploadError, load_image

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"


@dataclass
class Example:
    name: str
    image: Image.Image


def example_paths(directory: str | os.PathLike = EXAMPLES_DIR) -> list[Path]:
    """The shipped example images, sorted by name (empty when the folder is missing)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def load_examples(directory: str | os.PathLike = EXAMPLES_DIR) -> list[Example]:
    """The shipped example queries (files that fail to decode are left out)."""
    examples = []
    for path in example_paths(directory):
        try:
            item = load_image(path)
        except UploadError:
            continue
        examples.append(Example(path.stem, item.image))
    return examples
