"""Embedding networks: pixels in [0, 1] in, L2-normalised embeddings out.

Normalisation of the input happens inside each network, so attacks and defenses can work
in pixel space and clamp to [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

ARCHITECTURES = ("small-cnn", "rc2f2", "resnet18")
#: small-cnn's normalisation layers: BatchNorm after each conv, or none (as RobRank's rc2f2)
NORMS = ("batch", "none")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network; stored in each checkpoint's JSON."""

    arch: str = "small-cnn"
    in_channels: int = 1
    input_size: int = 28
    embedding_dim: int = 128
    width: int = 32
    mean: tuple[float, ...] = FASHION_MNIST_MEAN
    std: tuple[float, ...] = FASHION_MNIST_STD
    imagenet_weights: str | None = field(default=None)
    #: small-cnn only (see :data:`NORMS`); checkpoints from before it existed are "batch"
    norm: str = "batch"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a module, so it is part of the attacked model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """A small conv net for 28×28 inputs, sized to be fast on two CPU cores.

    conv5×5/2(w) → conv3×3/2(2w) → conv3×3(4w), each with BatchNorm (``norm="batch"``;
    ``"none"``: biased convs without it, as RobRank's rc2f2) and ReLU, then the concatenated
    global average and max pools → linear embedding head. Stride-2 stems keep the cost near
    3 M multiply-adds an image at width 32 (~20k images/s forward here).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.norm not in NORMS:
            raise ValueError(f"unknown norm {config.norm!r}; choose one of {NORMS}")
        w, c, batch_norm = config.width, config.in_channels, config.norm == "batch"

        def norm(channels: int) -> nn.Module:
            # Identity keeps the layer indices, so both variants share state-dict keys
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

        self.normalize = Normalize(config.mean, config.std)
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 5, stride=2, padding=2, bias=not batch_norm),
            norm(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=not batch_norm),
            norm(2 * w),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=not batch_norm),
            norm(4 * w),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(8 * w, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(self.normalize(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.head(pooled), dim=1)


class RC2F2(nn.Module):
    """RobRank's network for 28×28 data (Zhou & Patel): two conv layers and two FC layers.

    conv5×5(c→32) → ReLU → maxpool2 → conv5×5(32→64) → ReLU → maxpool2 → FC(64·7·7→1024)
    → ReLU → FC(1024→D), L2-normalised. About 14 M multiply-adds an image, ~5× SmallCNN's
    at width 32. ``width`` scales the channels (32 reproduces RobRank's).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        w, c, side = config.width, config.in_channels, config.input_size // 4
        self.normalize = Normalize(config.mean, config.std)
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(2 * w * side * side, 1024), nn.ReLU(inplace=True))
        self.head = nn.Linear(1024, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(self.normalize(x)).flatten(1)
        return F.normalize(self.head(self.fc(h)), dim=1)


class ResNetEmbedding(nn.Module):
    """torchvision ResNet-18 with its classifier replaced by an embedding head.

    ``weights=None`` by default (offline); ``imagenet_weights`` is either ``"imagenet"``
    (torchvision's download, needs internet once) or a path to a local ``.pth`` state dict.
    Greyscale inputs are repeated to three channels.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        from torchvision.models import ResNet18_Weights, resnet18

        weights = ResNet18_Weights.IMAGENET1K_V1 if config.imagenet_weights == "imagenet" else None
        backbone = resnet18(weights=weights)
        if config.imagenet_weights not in (None, "imagenet"):
            path = Path(config.imagenet_weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            log.info(
                "loaded %s (missing %d, unexpected %d keys)", path, len(missing), len(unexpected)
            )
        backbone.fc = nn.Identity()
        self.in_channels = config.in_channels
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = backbone
        self.head = nn.Linear(512, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return F.normalize(self.head(self.backbone(self.normalize(x))), dim=1)


def build_network(config: NetworkConfig) -> nn.Module:
    """Instantiate the embedding network a :class:`NetworkConfig` describes."""
    if config.norm != "batch" and config.arch != "small-cnn":
        raise ValueError(
            f"norm {config.norm!r} applies to small-cnn only ({config.arch} has its own layers)"
        )
    if config.arch == "small-cnn":
        return SmallCNN(config)
    if config.arch == "rc2f2":
        return RC2F2(config)
    if config.arch == "resnet18":
        return ResNetEmbedding(config)
    raise ValueError(f"unknown architecture {config.arch!r}; choose one of {ARCHITECTURES}")


def default_network_config(arch: str, channels: int, image_size: int, **overrides) -> NetworkConfig:
    """A sensible config for a dataset's channels and image size."""
    if arch == "resnet18":
        base = NetworkConfig(
            arch=arch,
            in_channels=channels,
            input_size=image_size,
            embedding_dim=128,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    else:
        mean = FASHION_MNIST_MEAN * channels if channels == 1 else (0.5,) * channels
        std = FASHION_MNIST_STD * channels if channels == 1 else (0.25,) * channels
        base = NetworkConfig(
            arch=arch, in_channels=channels, input_size=image_size, mean=mean, std=std
        )
    for key, value in overrides.items():
        if value is not None:
            setattr(base, key, value)
    return base
