"""Search an index by image: the build's preprocessing and model, then a top-k lookup."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from eat_models.modes import eval_mode

from .build import check_model
from .images import open_image, preprocess_image
from .store import SearchResults, VectorIndex

ImageLike = Image.Image | str | os.PathLike
FROM_INDEX = "index"  # search_images(invert=...): repeat the build's setting


def load_index(
    location: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    verify: bool = True,
    collection: str | None = None,
):
    """Open an index: a FAISS index directory, or a Milvus Lite file (``*.db``) / Milvus
    server URI (``http://host:19530``, see :mod:`index.milvus`; ``collection`` names the
    collection there). With ``model``, refuse it unless the fingerprints match."""
    from .milvus import DEFAULT_COLLECTION, MilvusIndex, is_milvus_location

    fingerprint = model.meta.get("fingerprint") if model is not None else None
    if is_milvus_location(location):
        return MilvusIndex.open(
            location, collection=collection or DEFAULT_COLLECTION, fingerprint=fingerprint
        )
    return VectorIndex.load(location, fingerprint=fingerprint, verify=verify)


@torch.no_grad()
def embed_images(
    model: nn.Module, images: Sequence[ImageLike], invert: bool | None = None
) -> np.ndarray:
    """``float32 [N, D]`` embeddings of PIL images or image files.

    A file that cannot be decoded raises :class:`~index.errors.ImageDecodeError` naming it.
    """
    tensors = [
        preprocess_image(
            img if isinstance(img, Image.Image) else open_image(img), model.meta, invert
        )
        for img in images
    ]
    if not tensors:
        return np.zeros((0, int(model.meta["embedding_dim"])), dtype=np.float32)
    with eval_mode(model):
        return model(torch.stack(tensors)).cpu().numpy().astype(np.float32, copy=False)


def search_images(
    index: VectorIndex,
    model: nn.Module,
    images: ImageLike | Sequence[ImageLike],
    k: int = 10,
    *,
    invert: bool | None | str = FROM_INDEX,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> SearchResults:
    """Top-``k`` items for each query image (one PIL image, a path, or a list of them).

    The model must be the one the index was built with (checked by fingerprint); the
    images are preprocessed as the build did. ``invert`` defaults to the setting stored
    in the index; ``None`` (automatic), ``True`` or ``False`` override it.
    """
    check_model(index, model)
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    if invert == FROM_INDEX:
        invert = index.preprocess.get("invert")
    queries = embed_images(model, images, invert)
    return index.search(queries, k, ef_search=ef_search, nprobe=nprobe)
