"""Build an index: embed a source's images with a model, in batches, and store them.

The model is any module mapping ``[B, C, H, W]`` floats in [0, 1] to L2-normalised
``[B, D]`` with a ``meta`` dict (``input_size``, ``channels``, ``embedding_dim``,
``fingerprint`` …) — what :func:`eat_models.load_model` returns, single model or ensemble.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from eat_models.distributed import gather_objects
from eat_models.modes import eval_mode

from .errors import FingerprintMismatchError, ImageDecodeError, SearchIndexError
from .images import ImageSource, make_thumbnail, preprocess_image, thumbnail_size_for
from .kinds import IndexParams, resolve_kind
from .store import VectorIndex

log = logging.getLogger(__name__)

MODEL_FIELDS = (
    "path",
    "dataset",
    "class_names",
    "input_size",
    "channels",
    "embedding_dim",
    "arch",
    "kind",
    "num_members",
    "defense",
)


@dataclass
class DecodeFailure:
    """An item that could not be indexed, and why."""

    ref: str
    error: str


@dataclass
class EmbeddedImages:
    """A source's images as vectors, with their records, thumbnails and failures."""

    vectors: np.ndarray
    records: list[dict]
    thumbnails: np.ndarray | None
    failures: list[DecodeFailure] = field(default_factory=list)


@dataclass
class BuildReport:
    """What a build or add did: ids added, failures (one per file), wall time."""

    ids: np.ndarray
    failures: list[DecodeFailure]
    seconds: float

    @property
    def added(self) -> int:
        return len(self.ids)


def model_description(meta: Mapping) -> dict:
    """The parts of a model's ``meta`` an index keeps to describe its model."""
    description = {k: meta[k] for k in MODEL_FIELDS if k in meta}
    if description.get("path"):
        description["path"] = str(Path(description["path"]).resolve())
    return description


def check_model(index: VectorIndex, model: nn.Module) -> None:
    """Refuse a model whose fingerprint or embedding size differs from the index's."""
    meta = model.meta
    if index.fingerprint is not None and meta.get("fingerprint") != index.fingerprint:
        raise FingerprintMismatchError(
            f"the index was built with model fingerprint {index.fingerprint} "
            f"(model {index.model.get('path')}), but this model has fingerprint "
            f"{meta.get('fingerprint')} ({meta.get('path')}); use the index's model or rebuild"
        )
    if int(meta["embedding_dim"]) != index.dim:
        raise FingerprintMismatchError(
            f"the model embeds into {meta['embedding_dim']} dimensions, the index holds {index.dim}"
        )


@torch.no_grad()
def embed_source(
    model: nn.Module,
    source: ImageSource,
    *,
    batch_size: int = 256,
    thumbnail_size: int | None = None,
    invert: bool | None = None,
    progress: bool = False,
    ctx=None,
) -> EmbeddedImages:
    """Embed every decodable image of ``source``; failures are collected, not raised.

    ``thumbnail_size``: also keep a ``uint8`` thumbnail of this side length per item.
    ``invert``: see :func:`index.images.preprocess_image`. ``ctx``: a
    :class:`eat_models.distributed.Context` under torchrun: each rank embeds rows
    ``rank::world_size`` and every rank gets all of them back, in the source's order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    meta = model.meta
    channels = int(meta["channels"])
    vectors, records, thumbs, failures, done_rows = [], [], [], [], []
    mine = list(range(len(source)))
    if ctx is not None and ctx.distributed:
        mine = ctx.shard(mine)
        progress = progress and ctx.is_main
    with eval_mode(model):
        bar = tqdm(total=len(mine), desc=f"indexing {source.name}", disable=not progress)
        for start in range(0, len(mine), batch_size):
            rows = mine[start : start + batch_size]
            batch = source.tensors(rows, meta)
            if batch is not None and thumbnail_size:
                thumbs.extend(
                    make_thumbnail(source.load(row), thumbnail_size, channels) for row in rows
                )
            if batch is None:
                tensors, kept = [], []
                for row in rows:
                    try:
                        image = source.load(row)
                        tensors.append(preprocess_image(image, meta, invert))
                    except ImageDecodeError as exc:
                        failures.append(DecodeFailure(source.ref(row), str(exc)))
                        log.warning("skipped %s", exc)
                        continue
                    kept.append(row)
                    if thumbnail_size:
                        thumbs.append(make_thumbnail(image, thumbnail_size, channels))
                rows = kept
                batch = torch.stack(tensors) if tensors else None
            if batch is not None:
                vectors.append(model(batch.float()).cpu().numpy().astype(np.float32, copy=False))
                records.extend(source.record(row) for row in rows)
                done_rows.extend(rows)
            bar.update(min(batch_size, len(mine) - start))
        bar.close()
    dim = int(meta["embedding_dim"])
    embedded = EmbeddedImages(
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype=np.float32),
        records=records,
        thumbnails=np.stack(thumbs) if thumbs else None,
        failures=failures,
    )
    if ctx is None or not ctx.distributed:
        return embedded
    return _merge_shards(gather_objects((done_rows, embedded), ctx), dim)


def _merge_shards(parts, dim: int) -> EmbeddedImages:
    """The ranks' :class:`EmbeddedImages` as one, in source-row order."""
    rows = np.concatenate([np.asarray(r, dtype=np.int64) for r, _ in parts])
    order = np.argsort(rows, kind="stable")
    vectors = np.concatenate([e.vectors for _, e in parts])[order] if len(rows) else None
    records = [rec for _, e in parts for rec in e.records]
    thumbs = [e.thumbnails for _, e in parts if e.thumbnails is not None]
    return EmbeddedImages(
        vectors=vectors if vectors is not None else np.zeros((0, dim), dtype=np.float32),
        records=[records[i] for i in order],
        thumbnails=np.concatenate(thumbs)[order] if thumbs else None,
        failures=[f for _, e in parts for f in e.failures],
    )


def add_images(
    index: VectorIndex,
    model: nn.Module,
    source: ImageSource,
    *,
    batch_size: int = 256,
    progress: bool = False,
    ctx=None,
) -> BuildReport:
    """Embed ``source`` with ``model`` (checked against the index) and add it (``ctx``:
    embed sharded over torchrun's ranks, see :func:`embed_source`).

    Uses the preprocessing and thumbnail settings stored in the index. Images that fail
    to decode are listed in the report; the rest are added. Raises
    :class:`SearchIndexError` when no image at all could be decoded.
    """
    check_model(index, model)
    started = time.perf_counter()
    shape = index.thumbnail_shape
    embedded = embed_source(
        model,
        source,
        batch_size=batch_size,
        thumbnail_size=shape[0] if shape else None,
        invert=index.preprocess.get("invert"),
        progress=progress,
        ctx=ctx,
    )
    if len(source) and not len(embedded.vectors):
        first = "; ".join(f.error for f in embedded.failures[:3])
        raise SearchIndexError(f"none of the {len(source)} images could be decoded: {first}")
    ids = index.add(embedded.vectors, embedded.records, thumbnails=embedded.thumbnails)
    return BuildReport(ids, embedded.failures, time.perf_counter() - started)


def build_index(
    model: nn.Module,
    source: ImageSource,
    *,
    kind: str = "auto",
    params: IndexParams | None = None,
    thumbnails: bool = False,
    thumbnail_size: int | None = None,
    invert: bool | None = None,
    batch_size: int = 256,
    progress: bool = False,
    ctx=None,
) -> tuple[VectorIndex, BuildReport]:
    """A new index of ``source`` embedded by ``model``.

    ``kind``: ``auto`` (exact ``flat`` up to a million items, ``ivf-pq`` above), ``flat``,
    ``hnsw`` or ``ivf-pq``; ``params`` their knobs. ``thumbnails``: keep a small image per
    item (side ``thumbnail_size``, default the model's input size up to 64 px).
    ``invert``: the preprocessing option, stored so that searches repeat it.
    """
    meta = model.meta
    index = VectorIndex(
        int(meta["embedding_dim"]),
        resolve_kind(kind, len(source)),
        params=params,
        fingerprint=meta.get("fingerprint"),
        model=model_description(meta),
        preprocess={"invert": invert},
    )
    if thumbnails:
        size = thumbnail_size or thumbnail_size_for(meta)
        index.thumbnail_shape = (size, size, int(meta["channels"]))
    report = add_images(index, model, source, batch_size=batch_size, progress=progress, ctx=ctx)
    return index, report
