"""Checkpoint I/O: a directory with ``config.json`` and safetensors weights.

Layout::

    DIR/config.json              format tag and version, per-member network configs,
                                 weight-file SHA-256s, metadata, training config
    DIR/model.safetensors        (single model)  or  DIR/member_0.safetensors … (ensemble)

Nothing is unpickled: weights are safetensors, the config is JSON. Loading checks the
format tag, the file hashes and the tensor shapes, and raises :class:`CheckpointError`
with a message that says what is wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .ensemble import AveragedEmbedding
from .files import atomic_write_bytes, read_versioned_json, sha256_file
from .networks import NetworkConfig, build_network

FORMAT_TAG = "eat-checkpoint"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, foreign or inconsistent."""


class EmbeddingModel(nn.Module):
    """The loaded model: ``[B, C, H, W]`` floats in [0, 1] → L2-normalised ``[B, D]``.

    Wraps one network or an :class:`AveragedEmbedding`; ``meta`` describes it (input
    size, channels, embedding dim, dataset, class names, members, fingerprint). Inputs of
    the wrong shape are refused with a message that names the expected shape.
    """

    def __init__(self, net: nn.Module, meta: dict) -> None:
        super().__init__()
        self.net = net
        self.meta = meta

    @property
    def expected_shape(self) -> tuple[int, int, int]:
        size = self.meta["input_size"]
        return (self.meta["channels"], size, size)

    @property
    def members(self) -> list[nn.Module]:
        """The member networks (one for a single model)."""
        return list(self.net.members) if isinstance(self.net, AveragedEmbedding) else [self.net]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise TypeError(
                f"expected a float tensor [B, C, H, W] in [0, 1], got {type(x).__name__}"
                + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else "")
            )
        if x.dim() != 4 or tuple(x.shape[1:]) != self.expected_shape:
            c, h, w = self.expected_shape
            raise ValueError(
                f"expected input of shape [B, {c}, {h}, {w}] (pixels in [0, 1]), "
                f"got {list(x.shape)}"
            )
        return self.net(x)


def fingerprint_of(config: dict) -> str:
    """A short stable hash of the networks' configs and weight hashes."""
    members = [{"network": m["network"], "sha256": m["sha256"]} for m in config["members"]]
    blob = json.dumps(members, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(
    out_dir: str | os.PathLike,
    networks: Sequence[nn.Module],
    network_configs: Sequence[NetworkConfig],
    meta: dict,
    train_config: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Save one network (``len == 1``) or an ensemble; returns the directory.

    ``meta`` must carry ``dataset`` and ``class_names``; input size, channels, embedding
    dim and members are filled in from the configs. Files are written atomically and
    ``config.json`` last, so a crash never leaves a config pointing at missing weights.
    """
    if len(networks) != len(network_configs) or not networks:
        raise ValueError("need one NetworkConfig per network, and at least one network")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for k, (net, cfg) in enumerate(zip(networks, network_configs, strict=True)):
        name = "model.safetensors" if len(networks) == 1 else f"member_{k}.safetensors"
        state = {key: t.detach().cpu().contiguous() for key, t in net.state_dict().items()}
        atomic_write_bytes(out / name, save(state))
        members.append(
            {"network": cfg.to_dict(), "weights": name, "sha256": sha256_file(out / name)}
        )
    first = network_configs[0]
    config = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "kind": "single" if len(networks) == 1 else "ensemble",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "members": members,
        "meta": {
            **meta,
            "input_size": first.input_size,
            "channels": first.in_channels,
            "embedding_dim": first.embedding_dim,
            "arch": first.arch,
        },
        "train": train_config or {},
        **(extra or {}),
    }
    config["fingerprint"] = fingerprint_of(config)
    atomic_write_bytes(out / CONFIG_NAME, json.dumps(config, indent=2).encode())
    return out


def read_config(path: str | os.PathLike) -> tuple[Path, dict]:
    """Validate and return ``(checkpoint_dir, config)`` for a directory or its config.json."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    cfg_path = directory / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such checkpoint (expected a directory with {CONFIG_NAME})"
        )
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: not an EAT checkpoint ({CONFIG_NAME} is missing)")
    config = read_versioned_json(
        cfg_path, FORMAT_TAG, FORMAT_VERSION, CheckpointError, "an EAT checkpoint config"
    )
    if not config.get("members"):
        raise CheckpointError(f"{cfg_path}: lists no member networks")
    return directory, config


def _load_member(directory: Path, member: dict) -> nn.Module:
    weights = directory / member["weights"]
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    if sha256_file(weights) != member.get("sha256"):
        raise CheckpointError(
            f"{weights}: contents do not match the hash in {CONFIG_NAME}; "
            "the file is truncated, corrupt or was replaced"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    net = build_network(NetworkConfig.from_dict(member["network"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights}: weights do not fit the stored network config ({exc})"
        ) from exc
    return net


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Load a single model or an ensemble checkpoint as one embedding module (eval mode).

    ``m(x)`` maps ``[B, C, H, W]`` floats in [0, 1] to L2-normalised ``[B, D]`` — for an
    ensemble, the averaged embedding. ``m.meta`` holds input size, channels, embedding
    dim, dataset, class names, kind, members and fingerprint.
    """
    directory, config = read_config(path)
    nets = [_load_member(directory, m) for m in config["members"]]
    net = nets[0] if len(nets) == 1 else AveragedEmbedding(nets)
    meta = dict(config["meta"])
    meta.update(
        kind=config["kind"],
        num_members=len(nets),
        members=[m["network"] for m in config["members"]],
        fingerprint=config["fingerprint"],
        path=str(directory),
        defense=config.get("train", {}).get("defense", "vanilla"),
        # the training run it came from (its --out folder's name, e.g. a benchmark row)
        run=Path(str(config.get("train", {}).get("out") or "")).name or None,
    )
    model = EmbeddingModel(net, meta).to(device)
    model.eval()
    return model
