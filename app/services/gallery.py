"""The app's models and gallery: checkpoints, search indexes and maps, cached per user.

:func:`load_resources` loads the vanilla model and the EAT ensemble from a models
folder (``DIR/vanilla`` and ``DIR/eat``, checkpoints written by ``eat train``, and the
single-model ``DIR/baseline`` when it is there), builds or
loads one :mod:`index` search index per model over the gallery (the Fashion-MNIST test
set, or any image folder ``root/class_name/*.jpg``), and prepares what the attack lab
needs: each model's gallery vectors, k-means centroids (the clustering attack's targets)
and a 2-D map (:mod:`app.services.projection`).

Everything derived is cached in ``~/.cache/eat/app/<fingerprint>/`` (``$XDG_CACHE_HOME``
honoured), where the fingerprint hashes the gallery (source, size, file list) and every
model's fingerprint, so a new model or gallery never reuses stale files. The cache is
private: nothing in it is ever served as a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eat_models import CheckpointError, EmbeddingModel, load_model
from eat_models.data import balanced_rows
from eat_models.evaluate import kmeans_assign
from eat_models.files import atomic_save_npy, user_cache_dir, write_json
from index import (
    DatasetSource,
    FileSource,
    Hit,
    ImageSource,
    SearchIndexError,
    SearchResults,
    VectorIndex,
    build_index,
    fashion_mnist_source,
    folder_source,
    load_index,
    preprocess_image,
    source_from_records,
)
from index.images import make_thumbnail, thumbnail_size_for

from ..defaults import DEFAULT_GALLERY, DEFAULT_MAP_POINTS
from .ood import OODDetector, model_cues
from .projection import GalleryProjection

log = logging.getLogger(__name__)

#: every model the app can serve, in display order; ``baseline`` is optional
MODEL_KEYS = ("eat", "baseline", "vanilla")
REQUIRED_KEYS = ("eat", "vanilla")
MODEL_LABELS = {"eat": "EAT ensemble", "baseline": "single-model baseline", "vanilla": "vanilla"}
DISPLAY_SIDE = 112
CACHE_VERSION = 1


class ModelsNotFoundError(FileNotFoundError):
    """The models folder lacks a loadable ``vanilla/`` or ``eat/`` checkpoint."""


class GalleryIndexError(ValueError):
    """An index given to ``eat app --index`` cannot serve as the gallery (no model of the
    app built it, two indexes hold different items, its images cannot be found …)."""


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/eat/app`` or ``~/.cache/eat/app``."""
    return user_cache_dir("app")


def load_models(models_dir: str | os.PathLike) -> dict[str, EmbeddingModel]:
    """``{"eat": ensemble, "baseline": …, "vanilla": single model}`` from ``DIR/eat``,
    ``DIR/vanilla`` and, when it is there, ``DIR/baseline`` (the strongest single-model
    defense at EAT's training compute, shipped beside them)."""
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


# --------------------------------------------------------------------------- gallery source


def gallery_source(spec: str, size: int | None = None) -> tuple[ImageSource, dict]:
    """The gallery as an index source, and a description of it for the cache fingerprint.

    ``spec``: ``fashion-mnist:test`` / ``fashion-mnist:train`` or an image folder.
    ``size``: keep a class-balanced subset of this many images.
    """
    if spec.startswith("fashion-mnist"):
        source = fashion_mnist_source(spec.partition(":")[2] or "test")
        identity = {"source": spec}
        if size is not None and size < len(source):
            dataset = source.dataset
            source = DatasetSource(dataset.subset(balanced_rows(dataset.labels, size)))
    else:
        root = Path(spec).expanduser().resolve()
        source = folder_source(root)
        listing = hashlib.sha256()
        for path in source.paths:
            stat = path.stat()
            listing.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        identity = {"source": str(root), "files": listing.hexdigest()}
        if size is not None and size < len(source):
            rows = balanced_rows(np.asarray(source.labels), size)
            source = FileSource(
                [source.paths[i] for i in rows],
                [source.labels[i] for i in rows],
                source.class_names,
                name=source.name,
            )
    identity["size"] = len(source)
    return source, identity


class GalleryIndex:
    """An index built outside the app (``eat app --index``: a FAISS folder or a Milvus
    collection), seen through gallery positions 0 … N−1.

    The app numbers its gallery items by position; the index's own ids may have gaps (after
    ``eat index remove``). Items added to the index after the app loaded it are not part of
    the gallery and are left out of results until the app restarts.
    """

    def __init__(self, inner, item_ids: np.ndarray, location: str) -> None:
        self.inner = inner
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.location = location
        self._position = {int(i): p for p, i in enumerate(self.item_ids.tolist())}

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def preprocess(self) -> dict:
        return self.inner.preprocess

    @property
    def has_thumbnails(self) -> bool:
        return self.inner.has_thumbnails

    def vectors(self, ids=None) -> tuple[np.ndarray, np.ndarray]:
        positions = np.arange(len(self)) if ids is None else np.asarray(ids, dtype=np.int64)
        _, vecs = self.inner.vectors(self.item_ids[positions])
        return positions, vecs

    def record(self, position: int) -> dict:
        return self.inner.record(int(self.item_ids[position]))

    def thumbnail(self, position: int) -> np.ndarray | None:
        return self.inner.thumbnail(int(self.item_ids[position]))

    def search(self, queries, k: int = 10, **knobs) -> SearchResults:
        found = self.inner.search(queries, k, **knobs)
        lookup = np.vectorize(lambda i: self._position.get(int(i), -1), otypes=[np.int64])
        ids = lookup(found.ids) if found.ids.size else found.ids
        hits = [
            [Hit(self._position[h.id], h.score, h.record) for h in row if h.id in self._position]
            for row in found.hits
        ]
        return SearchResults(ids=ids, scores=np.where(ids >= 0, found.scores, -np.inf), hits=hits)


def open_gallery_indexes(
    locations: Sequence[str], models: Mapping[str, EmbeddingModel], collection: str | None = None
) -> tuple[dict[str, GalleryIndex], list[dict]]:
    """Open the indexes of ``eat app --index``, give each to the model whose fingerprint
    built it, and check that they hold the same items. Returns ``({model key: index},
    records in position order)``."""
    opened: dict[str, GalleryIndex] = {}
    records: list[dict] | None = None
    for location in locations:
        try:
            inner = load_index(location, collection=collection)
        except (SearchIndexError, OSError, ValueError) as exc:
            raise GalleryIndexError(f"cannot open the index {location}: {exc}") from exc
        fingerprint = getattr(inner, "fingerprint", None)
        keys = [k for k, m in models.items() if m.meta.get("fingerprint") == fingerprint]
        if not keys:
            ours = ", ".join(f"{k} {m.meta.get('fingerprint')}" for k, m in models.items())
            raise GalleryIndexError(
                f"the index {location} was built by the model with fingerprint {fingerprint}; "
                f"none of the app's models matches ({ours}). Build it with the model the app "
                f"serves, e.g. 'eat index build --model MODELS/eat --out {location}'"
            )
        key = keys[0]
        if key in opened:
            raise GalleryIndexError(
                f"{opened[key].location} and {location} are both indexes of the {key} model"
            )
        by_id = inner.records()
        if not by_id:
            raise GalleryIndexError(f"the index {location} is empty: add images first")
        item_ids = np.asarray(sorted(by_id), dtype=np.int64)
        these = [by_id[int(i)] for i in item_ids]
        if records is not None and [r.get("source") for r in these] != [
            r.get("source") for r in records
        ]:
            first = next(iter(opened.values())).location
            raise GalleryIndexError(
                f"the index {location} holds other items than {first}; give the app indexes "
                "built from the same images"
            )
        records = these
        opened[key] = GalleryIndex(inner, item_ids, str(location))
    return opened, records or []


def _gallery_thumbnails(
    indexes: Mapping, source: ImageSource, source_rows: np.ndarray, meta: Mapping
) -> np.ndarray:
    """One thumbnail per gallery position: from an index the app built (it stores them),
    else decoded from the images (an outside index, e.g. Milvus, would cost a round trip per
    item)."""
    for index in indexes.values():
        if not isinstance(index, GalleryIndex) and index.has_thumbnails:
            return np.stack([index.thumbnail(p) for p in range(len(source_rows))])
    size, channels = thumbnail_size_for(meta), int(meta["channels"])
    return np.stack([make_thumbnail(source.load(int(r)), size, channels) for r in source_rows])


# --------------------------------------------------------------------------- resources


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


def enlarge(pixels: np.ndarray | Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """An image enlarged by a whole factor (nearest neighbour) to about ``side`` pixels."""
    if isinstance(pixels, Image.Image):
        image = pixels
    else:
        arr = np.asarray(pixels)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        image = Image.fromarray(arr)
    factor = max(1, side // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def tensor_to_image(tensor: torch.Tensor, side: int = DISPLAY_SIDE) -> Image.Image:
    """A model input ``[C, H, W]`` in [0, 1] as an enlarged PIL image."""
    arr = (tensor.detach().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return enlarge(arr, side)


def _fingerprint(identity: dict, models: Mapping[str, EmbeddingModel], map_points: int) -> str:
    blob = {
        "version": CACHE_VERSION,
        "gallery": identity,
        "models": {k: m.meta["fingerprint"] for k, m in sorted(models.items())},
        "map_points": map_points,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


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


def _cached_array(path: Path, compute) -> np.ndarray:
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("recomputing unreadable cache file %s", path)
    value = np.asarray(compute())
    atomic_save_npy(path, value)
    return value


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
        try:
            source = source_from_records(records)
        except (SearchIndexError, OSError, ValueError) as exc:
            raise GalleryIndexError(str(exc)) from exc
        listing = hashlib.sha256(
            "\n".join(f"{r.get('source')}|{r.get('label')}" for r in records).encode()
        )
        identity = {
            "indexes": {k: ix.location for k, ix in sorted(outside.items())},
            "items": listing.hexdigest(),
            "size": len(records),
        }
    else:
        source, identity = gallery_source(gallery, gallery_size)
    cache_dir = Path(cache_root or default_cache_root()) / _fingerprint(
        identity, models, map_points
    )
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
    thumbnails = _gallery_thumbnails(indexes, source, source_rows, models["eat"].meta)

    map_rows = (
        balanced_rows(labels, map_points) if map_points < len(labels) else np.arange(len(labels))
    )
    n_classes = max(2, len(np.unique(labels)))
    t = time.perf_counter()
    views = {}
    for key, model in models.items():
        _, vectors = indexes[key].vectors()
        centroids = _cached_array(
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
            projection=GalleryProjection(vectors[map_rows], cache_dir / f"umap-{key}.npy"),
        )
    timings["clusters_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ood = {key: calibrate_ood(view, source, source_rows, cache_dir) for key, view in views.items()}
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


def gallery_inputs(view: ModelView, source: ImageSource, rows: np.ndarray) -> torch.Tensor:
    """The model inputs ``[N, C, H, W]`` of gallery source rows (fast path when there is one)."""
    fast = source.tensors(list(map(int, rows)), view.model.meta)
    if fast is not None:
        return fast
    return torch.stack([view.preprocess(source.load(int(r))) for r in rows])


def calibrate_ood(
    view: ModelView, source: ImageSource, source_rows: np.ndarray, cache_dir: Path
) -> OODDetector:
    """The view's out-of-domain detector, calibrated on the gallery (the members'
    embeddings and the penultimate-feature norms of the gallery are cached beside the
    index)."""
    inputs = gallery_inputs(view, source, source_rows)
    chunks = range(0, len(inputs), 1024)
    activations = _cached_array(
        cache_dir / f"activations-{view.key}.npy",
        lambda: np.concatenate([model_cues(view.model, inputs[i : i + 1024])[1] for i in chunks]),
    )
    members = None
    if len(view.model.members) > 1:
        members = _cached_array(
            cache_dir / f"members-{view.key}.npy",
            lambda: np.concatenate(
                [model_cues(view.model, inputs[i : i + 1024])[0] for i in chunks], axis=1
            ),
        )
    return OODDetector.calibrate(
        inputs.reshape(len(inputs), -1).numpy(), view.vectors, members, activations=activations
    )
