"""Where the gallery comes from: a dataset split or image folder, or indexes built outside
the app (``eat app --index``).

:func:`gallery_source` turns ``--gallery`` into an index source and describes it for the
cache fingerprint. :func:`open_gallery_indexes` opens the indexes of ``--index``, gives each
to the model that built it, and :class:`GalleryIndex` shows each through the app's gallery
positions 0 … N−1; :func:`outside_source` is their items as a source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from eat_models import EmbeddingModel
from eat_models.data import (
    DatasetNotFoundError,
    balanced_rows,
    parse_source_spec,
    source_spec_help,
)
from index import (
    DatasetSource,
    FileSource,
    Hit,
    ImageSource,
    SearchIndexError,
    SearchResults,
    dataset_source,
    folder_source,
    load_index,
    source_from_records,
)


class GalleryIndexError(ValueError):
    """An index given to ``eat app --index`` cannot serve as the gallery (no model of the
    app built it, two indexes hold different items, its images cannot be found …)."""


def gallery_source(spec: str, size: int | None = None) -> tuple[ImageSource, dict]:
    """The gallery as an index source, and a description of it for the cache fingerprint.

    ``spec``: a source spec of the dataset registry (:func:`eat_models.data.parse_source_spec`):
    ``fashion-mnist:test``, ``cub200:test`` (in its default location) or an image folder.
    ``size``: keep a class-balanced subset of this many images.
    """
    parsed = parse_source_spec(spec)
    if parsed is None:
        raise DatasetNotFoundError(f"gallery {spec!r} is neither {source_spec_help()}")
    if parsed.dataset != "folder":
        source = dataset_source(parsed.dataset, parsed.part)
        identity = {"source": str(parsed)}
        if size is not None and size < len(source):
            dataset = source.dataset
            source = DatasetSource(dataset.subset(balanced_rows(dataset.labels, size)))
    else:
        root = parsed.location
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


def outside_source(
    opened: Mapping[str, GalleryIndex], records: Sequence[dict]
) -> tuple[ImageSource, dict]:
    """The items of the opened indexes (``records`` in position order) as an index source,
    and a description of them for the cache fingerprint."""
    try:
        source = source_from_records(records)
    except (SearchIndexError, OSError, ValueError) as exc:
        raise GalleryIndexError(str(exc)) from exc
    listing = hashlib.sha256(
        "\n".join(f"{r.get('source')}|{r.get('label')}" for r in records).encode()
    )
    identity = {
        "indexes": {k: ix.location for k, ix in sorted(opened.items())},
        "items": listing.hexdigest(),
        "size": len(records),
    }
    return source, identity
