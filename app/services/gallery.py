"""The app's gallery and its per-model views, loaded once and cached per user.

:func:`load_resources` loads the vanilla model and the EAT ensemble from a models folder
(:mod:`app.services.models`), builds or loads one :mod:`index` search index per model over
the gallery (:mod:`app.services.sources`: the Fashion-MNIST test set, any image folder
``root/class_name/*.jpg``, or the indexes of ``eat app --index``), and prepares what the
attack lab needs: each model's gallery vectors, k-means centroids (the clustering attack's
targets), a 2-D map (:mod:`app.services.projection`) and an out-of-domain detector
(:mod:`app.services.ood_calibration`).

Everything derived is cached in a private folder keyed by the gallery and the models
(:mod:`app.services.cache`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eat_models import EmbeddingModel
from eat_models.data import balanced_rows
from eat_models.evaluate import kmeans_assign
from eat_models.files import atomic_save_npy, write_json
from index import (
    ImageSource,
    SearchIndexError,
    VectorIndex,
    build_index,
    load_index,
    preprocess_image,
)

from ..defaults import DEFAULT_GALLERY, DEFAULT_MAP_POINTS
from .cache import cache_key, cached_array, default_cache_root
from .display import DISPLAY_SIDE, enlarge, gallery_thumbnails
from .models import MODEL_KEYS, load_models, model_label
from .ood import OODDetector
from .ood_calibration import calibrate_ood
from .projection import GalleryProjection
from .sources import (
    GalleryIndex,
    GalleryIndexError,
    gallery_source,
    open_gallery_indexes,
    outside_source,
)

log = logging.getLogger(__name__)


@dataclass
class ModelView:
    """One model's side of the gallery: its index, vectors (row = item id), centroids, map."""

    key: str
    label: str
    model: EmbeddingModel
    index: VectorIndex
    vectors: np.ndarray
    centroids: np.ndarray
    centroid_classes: np.ndarray
    map_rows: np.ndarray
    projection: GalleryProjection

    @property
    def invert(self) -> bool | None:
        return self.index.preprocess.get("invert")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model input ``[C, H, W]`` for an image, as the index build did it."""
        return preprocess_image(image, self.model.meta, self.invert)

    def inputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model inputs ``[N, C, H, W]`` of several images."""
        return torch.stack([self.preprocess(image) for image in images])

    @torch.no_grad()
    def embed(self, inputs: torch.Tensor) -> np.ndarray:
        """Embeddings ``float32 [B, D]`` of model inputs ``[B, C, H, W]``."""
        return self.model(inputs.float()).numpy().astype(np.float32, copy=False)


@dataclass
class Resources:
    """Everything the services share: the gallery, its labels and one view per model."""

    views: dict[str, ModelView]
    labels: np.ndarray
    class_names: list[str]
    refs: list[str]
    thumbnails: np.ndarray
    source: ImageSource
    source_rows: np.ndarray
    cache_dir: Path
    gallery_name: str
    timings: dict[str, float] = field(default_factory=dict)
    #: per model key, the out-of-domain detector calibrated on this gallery
    ood: dict[str, OODDetector] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def meta(self) -> Mapping:
        return self.views["eat"].model.meta

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def check_id(self, item_id: int) -> int:
        item_id = int(item_id)
        if not 0 <= item_id < len(self):
            raise ValueError(f"gallery item {item_id} does not exist (0 … {len(self) - 1})")
        return item_id

    def thumbnail(self, item_id: int, side: int = DISPLAY_SIDE) -> Image.Image:
        """The gallery item's thumbnail, enlarged with crisp pixels for display."""
        return enlarge(self.thumbnails[self.check_id(item_id)], side)

    def model_input(self, item_id: int, key: str) -> torch.Tensor:
        """Gallery item ``item_id`` as model ``key``'s input ``[C, H, W]`` (exact pixels)."""
        row = int(self.source_rows[self.check_id(item_id)])
        view = self.views[key]
        fast = self.source.tensors([row], view.model.meta)
        if fast is not None:
            return fast[0]
        return view.preprocess(self.source.load(row))

    def sample_ids(self, per_class: int = 2) -> list[int]:
        """A few item ids of every class, for the "pick from the gallery" thumbnails."""
        by_class = [np.flatnonzero(self.labels == c)[:per_class] for c in np.unique(self.labels)]
        return [int(rows[r]) for r in range(per_class) for rows in by_class if r < len(rows)]

    @property
    def keys(self) -> tuple[str, ...]:
        """The loaded models' keys, in display order (``MODEL_KEYS``)."""
        return tuple(k for k in MODEL_KEYS if k in self.views)

    @property
    def projections(self) -> list[GalleryProjection]:
        return [self.views[k].projection for k in self.keys]


def _index_for(model: EmbeddingModel, source: ImageSource, directory: Path) -> VectorIndex:
    if (directory / "index.json").is_file():
        try:
            return load_index(directory, model)
        except (SearchIndexError, OSError, ValueError) as exc:
            log.warning("rebuilding the gallery index in %s (%s)", directory, exc)
            for child in directory.iterdir():
                if child.is_file():
                    child.unlink()
    index, report = build_index(model, source, thumbnails=True)
    for failure in report.failures:
        log.warning("gallery image skipped: %s (%s)", failure.ref, failure.error)
    index.save(directory)
    return index


MAPS_FOLDER = "maps"


def stored_maps_dir(models_dir: str | os.PathLike, key: str) -> Path:
    """Where the gallery maps computed ahead for one gallery (``key``: its cache key, a
    hash of the gallery, the models and the map size) are stored: ``MODELS/maps/KEY/``."""
    return Path(models_dir) / MAPS_FOLDER / key


def write_maps(resources: Resources, models_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Compute each model's gallery UMAP map now (those without one) and store it beside
    the models, so that a later ``eat app`` with the same models, gallery and map size
    shows it at start. Returns the folder written (``umap-MODEL.npy`` and
    ``gallery.json``, the gallery's identity)."""
    out = stored_maps_dir(models_dir, resources.cache_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    for key in resources.keys:
        projection = resources.views[key].projection
        if projection.method not in ("umap", "umap-stored", "umap-cached"):
            seconds = projection.fit(seed)
            log.info("%s: UMAP map of %d points in %.1f s", key, len(projection.vectors), seconds)
        atomic_save_npy(out / f"umap-{key}.npy", projection.coords)
    shutil.copyfile(resources.cache_dir / "gallery.json", out / "gallery.json")
    return out


def load_resources(
    models_dir: str | os.PathLike,
    gallery: str = DEFAULT_GALLERY,
    gallery_size: int | None = None,
    cache_root: str | os.PathLike | None = None,
    map_points: int = DEFAULT_MAP_POINTS,
    indexes: Sequence[str] = (),
    collection: str | None = None,
) -> Resources:
    """Load the models, then build or load everything derived from them and the gallery.

    ``indexes``: serve the gallery of existing indexes (FAISS folders, Milvus Lite files or
    server URIs; ``collection`` names the Milvus collection) instead of ``gallery``: each
    index serves the model that built it, the other models get indexes of the same items.
    """
    started = time.perf_counter()
    models = load_models(models_dir)
    timings = {"models_s": time.perf_counter() - started}
    outside: dict[str, GalleryIndex] = {}
    if indexes:
        if gallery_size is not None:
            raise GalleryIndexError("a gallery size does not apply to an existing index")
        outside, records = open_gallery_indexes(indexes, models, collection)
        source, identity = outside_source(outside, records)
    else:
        source, identity = gallery_source(gallery, gallery_size)
    cache_dir = Path(cache_root or default_cache_root()) / cache_key(identity, models, map_points)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(cache_dir / "gallery.json", identity)

    t = time.perf_counter()
    indexes = {
        key: outside.get(key) or _index_for(m, source, cache_dir / f"index-{key}")
        for key, m in models.items()
    }
    timings["indexes_s"] = time.perf_counter() - t
    ids, _ = indexes["eat"].vectors()
    for key in models:
        other_ids, _ = indexes[key].vectors()
        if not np.array_equal(other_ids, ids):
            raise SearchIndexError("the models' gallery indexes hold different items")
    if not np.array_equal(ids, np.arange(len(ids))):
        raise SearchIndexError("the gallery index ids are not 0 … N-1; delete the app cache")
    if outside:  # the source was made from these records, in position order
        source_rows = np.arange(len(source), dtype=np.int64)
    else:
        records = [indexes["eat"].record(int(i)) for i in ids]
        row_of = {source.ref(row): row for row in range(len(source))}
        source_rows = np.asarray([row_of[r["source"]] for r in records], dtype=np.int64)
    refs = [r["source"] for r in records]
    labels = np.asarray(
        [-1 if r.get("label") is None else r["label"] for r in records], dtype=np.int64
    )
    class_names = list(source.class_names or models["eat"].meta.get("class_names") or [])
    thumbnails = gallery_thumbnails(indexes, source, source_rows, models["eat"].meta)

    map_rows = (
        balanced_rows(labels, map_points) if map_points < len(labels) else np.arange(len(labels))
    )
    n_classes = max(2, len(np.unique(labels)))
    t = time.perf_counter()
    views = {}
    for key, model in models.items():
        _, vectors = indexes[key].vectors()
        centroids = cached_array(
            cache_dir / f"centroids-{key}.npy",
            lambda v=vectors: kmeans_assign(v, n_classes, seed=0, n_init=3)[1],
        )
        nearest = np.argmax(vectors @ centroids.T, axis=1)
        centroid_classes = np.asarray(
            [
                np.bincount(labels[(nearest == c) & (labels >= 0)]).argmax()
                if ((nearest == c) & (labels >= 0)).any()
                else -1
                for c in range(len(centroids))
            ]
        )
        views[key] = ModelView(
            key=key,
            label=model_label(key, model),
            model=model,
            index=indexes[key],
            vectors=vectors,
            centroids=centroids.astype(np.float32),
            centroid_classes=centroid_classes,
            map_rows=map_rows,
            projection=GalleryProjection(
                vectors[map_rows],
                cache_dir / f"umap-{key}.npy",
                stored_file=stored_maps_dir(models_dir, cache_dir.name) / f"umap-{key}.npy",
            ),
        )
    timings["clusters_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ood = {
        key: calibrate_ood(view, source, source_rows, cache_dir, labels)
        for key, view in views.items()
    }
    timings["ood_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    log.info(
        "gallery of %d images ready in %.1f s (cache %s)",
        len(labels),
        timings["total_s"],
        cache_dir,
    )
    return Resources(
        views=views,
        labels=labels,
        class_names=class_names,
        refs=refs,
        thumbnails=thumbnails,
        source=source,
        source_rows=source_rows,
        cache_dir=cache_dir,
        gallery_name=", ".join(ix.location for ix in outside.values()) or source.name,
        timings=timings,
        ood=ood,
    )
