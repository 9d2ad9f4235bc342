"""Search index: the ensemble's averaged embeddings of a gallery in FAISS, with metadata.

Knows nothing about training: it takes an embedding module (``eat_models.load_model``)
and images. Typical use::

    from eat_models import load_model
    from index import build_index, fashion_mnist_source, load_index, search_images

    model = load_model("runs/eat")
    idx, report = build_index(model, fashion_mnist_source("test"), thumbnails=True)
    idx.save("runs/gallery-index")
    idx = load_index("runs/gallery-index", model)   # refuses another model's index
    results = search_images(idx, model, pil_image, k=10)
"""

from .build import BuildReport, DecodeFailure, add_images, build_index, embed_source
from .errors import (
    DimensionMismatchError,
    EmptyIndexError,
    FingerprintMismatchError,
    ImageDecodeError,
    IndexFormatError,
    SearchIndexError,
    UnknownIdError,
)
from .images import (
    DatasetSource,
    FileSource,
    ImageSource,
    PILSource,
    fashion_mnist_source,
    folder_source,
    open_image,
    parse_source,
    preprocess_image,
)
from .kinds import KINDS, IndexParams
from .search import embed_images, load_index, search_images
from .store import Hit, SearchResults, VectorIndex

__all__ = [
    "KINDS",
    "BuildReport",
    "DatasetSource",
    "DecodeFailure",
    "DimensionMismatchError",
    "EmptyIndexError",
    "FileSource",
    "FingerprintMismatchError",
    "Hit",
    "ImageDecodeError",
    "ImageSource",
    "IndexFormatError",
    "IndexParams",
    "PILSource",
    "SearchIndexError",
    "SearchResults",
    "UnknownIdError",
    "VectorIndex",
    "add_images",
    "build_index",
    "embed_images",
    "embed_source",
    "fashion_mnist_source",
    "folder_source",
    "load_index",
    "open_image",
    "parse_source",
    "preprocess_image",
    "search_images",
]
