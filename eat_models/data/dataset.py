"""The labelled image set every loader returns, and the error for a missing dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..files import user_cache_dir
from ..images import load_model_input


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset cannot be found; the message says how to get it."""


def torchvision_cache_dir() -> Path:
    """Where this project lets torchvision download datasets to (``~/.cache/eat/datasets``)."""
    return user_cache_dir("datasets")


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """A labelled image set: ``dataset[i] -> (image [C, H, W] float in [0, 1], label)``.

    ``images`` is either a ``uint8`` tensor ``[N, H, W]``/``[N, C, H, W]`` held in memory or
    a list of file paths decoded on access (resized to ``image_size``).
    """

    name: str
    images: torch.Tensor | list[Path]
    labels: np.ndarray
    class_names: list[str]
    channels: int
    image_size: int
    refs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])

    def image(self, index: int) -> torch.Tensor:
        if self.in_memory:
            img = self.images[index]
            if img.dim() == 2:
                img = img.unsqueeze(0)
            return img.float().div_(255.0)
        return load_model_input(self.images[index], self.channels, self.image_size)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Stack the images at ``indices`` into ``[B, C, H, W]`` (fast path in memory)."""
        if self.in_memory:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
            imgs = self.images[idx]
            if imgs.dim() == 3:
                imgs = imgs.unsqueeze(1)
            return imgs.float().div_(255.0)
        return torch.stack([self.image(int(i)) for i in indices])

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ImageDataset:
        """A new dataset holding only ``indices`` (class names kept)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.in_memory:
            images = self.images[torch.as_tensor(indices)]
        else:
            images = [self.images[i] for i in indices]
        refs = [self.refs[i] for i in indices] if self.refs else []
        return ImageDataset(
            name=name or self.name,
            images=images,
            labels=self.labels[indices],
            class_names=list(self.class_names),
            channels=self.channels,
            image_size=self.image_size,
            refs=refs,
        )

    def ref(self, index: int) -> str:
        """A stable reference to the item's origin (``dataset:row`` or a file path)."""
        return self.refs[index] if self.refs else f"{self.name}:{index}"
