"""The app's private cache: where it lives, the key of one gallery's folder, cached arrays.

Everything derived from the models and the gallery is cached in
``~/.cache/eat/app/<key>/`` (``$XDG_CACHE_HOME`` honoured), where the key hashes the gallery
(source, size, file list) and every model's fingerprint, so a new model or gallery never
reuses stale files. Nothing in the cache is ever served as a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from eat_models import EmbeddingModel
from eat_models.files import atomic_save_npy, user_cache_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/eat/app`` or ``~/.cache/eat/app``."""
    return user_cache_dir("app")


def cache_key(identity: dict, models: Mapping[str, EmbeddingModel], map_points: int) -> str:
    """The name of one gallery's cache folder: a hash of the gallery, models and map size."""
    blob = {
        "version": CACHE_VERSION,
        "gallery": identity,
        "models": {k: m.meta["fingerprint"] for k, m in sorted(models.items())},
        "map_points": map_points,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def cached_array(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at ``path``, or ``compute()`` stored there (also when unreadable)."""
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("recomputing unreadable cache file %s", path)
    value = np.asarray(compute())
    atomic_save_npy(path, value)
    return value
