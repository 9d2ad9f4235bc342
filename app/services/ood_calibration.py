"""Calibrating each model view's out-of-domain detector (:mod:`app.services.ood`) on the
gallery, with the costly parts (penultimate-feature norms, ensemble members' embeddings)
cached beside the gallery's index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from index import ImageSource

from .cache import cached_array
from .ood import OODDetector, image_cues, model_cues

if TYPE_CHECKING:
    from .gallery import ModelView

#: gallery inputs per forward pass while calibrating
CHUNK = 1024


def gallery_inputs(view: ModelView, source: ImageSource, rows: np.ndarray) -> torch.Tensor:
    """The model inputs ``[N, C, H, W]`` of gallery source rows (fast path when there is one)."""
    fast = source.tensors(list(map(int, rows)), view.model.meta)
    if fast is not None:
        return fast
    return torch.stack([view.preprocess(source.load(int(r))) for r in rows])


def calibrate_ood(
    view: ModelView,
    source: ImageSource,
    source_rows: np.ndarray,
    cache_dir: Path,
    labels: np.ndarray | None = None,
) -> OODDetector:
    """The view's out-of-domain detector, calibrated on the gallery (the members'
    embeddings, the penultimate features and the first layer's statistics of the gallery are
    cached beside the index;
    ``labels``: the gallery's classes, -1 where unknown)."""
    inputs = gallery_inputs(view, source, source_rows)
    passes: list = []

    def cue(name: str) -> np.ndarray:  # one pass over the gallery serves every cue
        if not passes:
            chunks = range(0, len(inputs), CHUNK)
            passes.extend(model_cues(view.model, inputs[i : i + CHUNK]) for i in chunks)
        axis = 1 if name == "members" else 0
        return np.concatenate([getattr(p, name) for p in passes], axis=axis)

    activations = cached_array(
        cache_dir / f"activations-{view.key}.npy", lambda: cue("activations")
    )
    features = cached_array(cache_dir / f"features-{view.key}.npy", lambda: cue("features"))
    lowlevel = None
    if model_cues(view.model, inputs[:1]).lowlevel is not None:  # a network with a ReLU
        lowlevel = cached_array(cache_dir / f"lowlevel-{view.key}.npy", lambda: cue("lowlevel"))
    members = None
    if len(view.model.members) > 1:
        members = cached_array(cache_dir / f"members-{view.key}.npy", lambda: cue("members"))
    return OODDetector.calibrate(
        inputs.reshape(len(inputs), -1).numpy(),
        view.vectors,
        members,
        activations=activations,
        features=features,
        labels=labels,
        lowlevel=lowlevel,
        image=image_cues(inputs.numpy()),
    )
