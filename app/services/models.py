"""The models the app serves: which ones, in what order, under what names, and loading them.

:data:`MODEL_KEYS` is the one home of the served model order: the EAT ensemble, the
single-model baseline (optional), the vanilla model. Every list, table and search result
follows it; the attack panels run the other way round (:data:`ATTACK_ORDER`, from the plain
model to the ensemble).
"""

from __future__ import annotations

import os
from pathlib import Path

from eat_models import CheckpointError, EmbeddingModel, load_model

#: every model the app can serve, in display order; ``baseline`` and ``hm`` are optional
MODEL_KEYS = ("eat", "baseline", "hm", "vanilla")
REQUIRED_KEYS = ("eat", "vanilla")
#: the attack panels (lab and set attack) run from the plain model to the ensemble
ATTACK_ORDER = tuple(reversed(MODEL_KEYS))
MODEL_LABELS = {
    "eat": "EAT ensemble",
    "baseline": "single-model baseline",
    "hm": "HM (RobRank's defense)",
    "vanilla": "vanilla",
}


class ModelsNotFoundError(FileNotFoundError):
    """The models folder lacks a loadable ``vanilla/`` or ``eat/`` checkpoint."""


def load_models(models_dir: str | os.PathLike) -> dict[str, EmbeddingModel]:
    """``{"eat": ensemble, "baseline": …, "vanilla": single model}`` from ``DIR/eat``,
    ``DIR/vanilla`` and, when they are there, ``DIR/baseline`` (the strongest single-model
    defense, shipped beside them) and ``DIR/hm`` (RobRank's HM, the field's reference)."""
    models_dir = Path(models_dir)
    models = {}
    for key in MODEL_KEYS:
        path = models_dir / key
        if key not in REQUIRED_KEYS and not (path / "config.json").is_file():
            continue
        try:
            models[key] = load_model(path)
        except CheckpointError as exc:
            raise ModelsNotFoundError(
                f"cannot load the {MODEL_LABELS[key]} model from {path}: {exc}\n"
                f"The app needs {models_dir}/vanilla and {models_dir}/eat, checkpoint folders "
                "written by 'eat train' (e.g. 'eat train --out DIR/vanilla' and "
                "'eat train --defense eat --out DIR/eat'); pass another folder with --models."
            ) from exc
    a = models["eat"].meta
    for key, model in models.items():
        b = model.meta
        if (a["channels"], a["input_size"]) != (b["channels"], b["input_size"]):
            raise ModelsNotFoundError(
                f"the models take different inputs (eat {a['channels']}×{a['input_size']}² vs "
                f"{key} {b['channels']}×{b['input_size']}²); the app compares models of one "
                "input format"
            )
    return models


def model_label(key: str, model: EmbeddingModel) -> str:
    """The name a person sees: the baseline says which defense it is."""
    if key == "baseline" and model.meta.get("defense"):
        return f"baseline ({model.meta['defense']})"
    return MODEL_LABELS[key]
