"""Resume points of a training run: everything needed to continue it as if never stopped.

After each epoch :func:`save_resume_point` writes ``OUT/resume/``:

    state.safetensors   every tensor: member and loss weights, optimiser moments, EMA
                        copies, the torch (and CUDA) RNG state, numpy's MT19937 key
    state.json          the rest: epoch and step counts, the history so far, optimiser
                        hyper-parameters, the LR schedule's position, the defense's own
                        state (e.g. HM's gradual adversary), Python's RNG state, the
                        config the run was started with

Nothing is unpickled on load (safetensors + JSON, as for checkpoints). The sampler needs
no state: its batches are a function of (seed, epoch). :func:`load_resume_point` refuses
a resume point whose config differs from the run's in anything but the fields that may
change between invocations (:data:`RESUMABLE_CHANGES`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from .defenses.eat import RETIRED_OPTIONS
from .files import atomic_write_bytes

FORMAT_TAG = "eat-resume"
FORMAT_VERSION = 1
#: options added after runs were recorded, each with the value that trains as before it
#: existed: a stored config without one continues a run that asks for that value
ADDED_OPTIONS = {
    "hm_source": "random",
    "norm": "batch",
    "sampler": "class-balanced",
    "pairs_per_batch": 128,
    "est_start": "random",
    "triplet_miner": "semihard",
}
#: config fields that may differ between the invocations of one run
RESUMABLE_CHANGES = frozenset({"resume", "stop_after", "threads", "workers", "out", "device"})


class ResumeError(ValueError):
    """A resume point that is missing, foreign, or from another run's config."""


def resume_dir(out: str | Path) -> Path:
    return Path(out) / "resume"


def _flatten(prefix: str, value, tensors: dict[str, torch.Tensor]):
    """Tensors into ``tensors`` under dotted keys; everything else returned JSON-ready."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {
            "__dict__": [[_key(k), _flatten(f"{prefix}.{k}", v, tensors)] for k, v in value.items()]
        }
    if isinstance(value, (list, tuple)):
        items = [_flatten(f"{prefix}.{i}", v, tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, np.ndarray):
        tensors[prefix] = torch.from_numpy(value.astype(np.int64, copy=False))
        return {"__ndarray__": prefix, "dtype": str(value.dtype)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {prefix} in a resume point")


def _key(key):
    return {"int": key} if isinstance(key, int) else key


def _unflatten(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
    if "__tuple__" in value:
        return tuple(_unflatten(v, tensors) for v in value["__tuple__"])
    if "__dict__" in value:
        out = {}
        for key, item in value["__dict__"]:
            out[key["int"] if isinstance(key, dict) else key] = _unflatten(item, tensors)
        return out
    return {k: _unflatten(v, tensors) for k, v in value.items()}


def rng_state() -> dict:
    """The torch, CUDA, numpy and Python RNG states."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_point(out: str | Path, state: dict) -> Path:
    """Write ``state`` (nested dicts/lists of tensors, arrays and JSON values) atomically:
    the tensors first, the JSON that points at them last."""
    directory = resume_dir(out)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    body = _flatten("s", state, tensors)
    atomic_write_bytes(directory / "state.safetensors", save(tensors))
    doc = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "state": body}
    atomic_write_bytes(directory / "state.json", json.dumps(doc).encode())
    return directory


def read_progress(out: str | Path) -> dict | None:
    """How far a run got, from its resume point's JSON alone (no tensors read): ``epoch``,
    ``steps``, ``train_wall_s``, ``history`` and the run's ``config``; None without one."""
    path = resume_dir(out) / "state.json"
    if not path.is_file():
        return None
    fields = dict(json.loads(path.read_text())["state"]["__dict__"])
    keys = ("epoch", "steps", "train_wall_s", "history", "config")
    return {key: _unflatten(fields[key], {}) for key in keys}


def load_resume_point(out: str | Path, config: dict) -> dict | None:
    """The state saved by :func:`save_resume_point` under ``out`` (None when there is none).

    Raises :class:`ResumeError` when the stored run's config differs from ``config`` in a
    field outside :data:`RESUMABLE_CHANGES`."""
    directory = resume_dir(out)
    if not (directory / "state.json").is_file():
        return None
    try:
        doc = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "state.safetensors"))
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{directory}: unreadable resume point ({exc})") from exc
    if doc.get("format") != FORMAT_TAG or doc.get("format_version") != FORMAT_VERSION:
        raise ResumeError(f"{directory}: not an EAT resume point of version {FORMAT_VERSION}")
    state = _unflatten(doc["state"], tensors)
    stored = dict(state.get("config", {}))
    for key, off in RETIRED_OPTIONS.items():  # recorded before EAT's term through F went
        if key in stored and key not in config and stored[key] == off:
            del stored[key]
    for key, before in ADDED_OPTIONS.items():  # recorded before the option existed
        if key not in stored and config.get(key) == before:
            stored[key] = before
    resumable = set(RESUMABLE_CHANGES)
    if stored.get("schedule") == "constant" == config.get("schedule"):
        # a constant rate does not depend on the run's length: the run may continue to more
        # epochs, or end at an epoch it has reached (the first E epochs of a longer run are
        # an E-epoch run)
        resumable.add("epochs")
        reached = int(state.get("epoch", 0))
        if reached > int(config.get("epochs", reached)):
            raise ResumeError(
                f"{directory}: the run is at epoch {reached}, past the {config['epochs']} "
                "epochs asked for; copy the resume point of an earlier epoch instead"
            )
    changed = sorted(
        k
        for k in set(stored) | set(config)
        if k not in resumable and stored.get(k) != config.get(k)
    )
    if changed:
        details = ", ".join(f"{k}: {stored.get(k)!r} → {config.get(k)!r}" for k in changed)
        raise ResumeError(
            f"{directory}: the run was started with another config ({details}); "
            "resume with the same flags, or train into a new --out"
        )
    return state
