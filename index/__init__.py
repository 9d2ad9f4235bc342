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

# Names resolve on first use (PEP 562): ``import index.cli`` (the ``eat`` command's flags)
# must not load faiss, so that ``eat train`` runs on a core install.
_WHERE = {
    "BuildReport": "build",
    "DatasetSource": "images",
    "DecodeFailure": "build",
    "DimensionMismatchError": "errors",
    "EmptyIndexError": "errors",
    "FileSource": "images",
    "FingerprintMismatchError": "errors",
    "Hit": "store",
    "ImageDecodeError": "errors",
    "ImageSource": "images",
    "IndexFormatError": "errors",
    "IndexParams": "params",
    "KINDS": "params",
    "PILSource": "images",
    "SearchIndexError": "errors",
    "SearchResults": "store",
    "UnknownIdError": "errors",
    "VectorIndex": "store",
    "add_images": "build",
    "build_index": "build",
    "embed_images": "search",
    "embed_source": "build",
    "dataset_source": "images",
    "fashion_mnist_source": "images",
    "folder_source": "images",
    "load_index": "search",
    "open_image": "images",
    "parse_source": "images",
    "preprocess_image": "images",
    "search_images": "search",
    "source_from_records": "images",
}


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "dataset_source",
    "fashion_mnist_source",
    "folder_source",
    "load_index",
    "open_image",
    "parse_source",
    "preprocess_image",
    "search_images",
    "source_from_records",
]
