"""A Milvus backend for the search index: the same interface as :class:`~index.VectorIndex`.

For galleries that outgrow one machine. The location is a **Milvus Lite** file
(``gallery.db``: Milvus embedded in this process, for tests and small installs) or a
**Milvus server** URI (``http://host:19530``, standalone or cluster); the same client code
serves both. One index is one collection (``--collection``, default ``gallery``) plus a
small ``<collection>__meta`` collection holding the header FAISS keeps in ``index.json``:
the model fingerprint (a search with another model is refused, as with FAISS), the model
description, the preprocessing options, the thumbnail shape, the next free id and dates.

Each item is a row ``(id INT64 primary key, vector FLOAT_VECTOR[dim], record JSON, thumb
VARCHAR)``: the L2-normalised embedding, the item's metadata record, and its thumbnail as
base64 of the raw ``uint8`` pixels (empty without thumbnails). Similarity is the inner
product of normalised vectors (cosine), as in FAISS. The vector index is ``FLAT`` (exact)
below :data:`HNSW_FROM` items, ``HNSW`` up to :data:`IVF_FROM`, ``IVF_FLAT`` above, chosen
when the index is created from the expected size (``kind`` overrides it).

Needs the ``milvus`` extra (``pip install 'eat-retrieval[milvus]'``: pymilvus and
milvus-lite). Milvus Lite allows one process per ``.db`` file at a time.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import (
    EmptyIndexError,
    FingerprintMismatchError,
    IndexFormatError,
    SearchIndexError,
    UnknownIdError,
)
from .store import Hit, IndexBase, SearchResults, _now, normalised_vectors

FORMAT_TAG = "eat-search-index-milvus"
FORMAT_VERSION = 1
DEFAULT_COLLECTION = "gallery"
META_SUFFIX = "__meta"
#: item counts from which the vector index is HNSW, then IVF_FLAT (exact FLAT below)
HNSW_FROM = 50_000
IVF_FROM = 2_000_000
MILVUS_KINDS = ("FLAT", "HNSW", "IVF_FLAT")
#: rows per insert call (Milvus caps a request's size)
INSERT_BATCH = 2_000
#: the most ids one ``id in [...]`` filter names, and the id range one full read asks for
FILTER_BATCH = 1_000
RANGE_BATCH = 10_000
THUMB_MAX_CHARS = 65_535
URI_PREFIXES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_milvus_location(location: str | Path) -> bool:
    """Whether ``location`` names a Milvus Lite file (``*.db``) or a Milvus server URI."""
    text = str(location)
    return text.endswith(".db") or text.startswith(URI_PREFIXES)


def milvus_kind(count: int | None) -> str:
    """The vector index for a collection expected to hold ``count`` items."""
    if count is None or count < HNSW_FROM:
        return "FLAT"
    return "HNSW" if count < IVF_FROM else "IVF_FLAT"


def _client(location: str | Path):
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SearchIndexError(
            "the Milvus backend needs pymilvus and milvus-lite: pip install 'eat-retrieval[milvus]'"
        ) from exc
    text = str(location)
    if text.endswith(".db"):
        path = Path(text).expanduser().resolve()
        if not path.parent.is_dir():
            raise SearchIndexError(f"the folder of {path} does not exist")
        text = str(path)
    try:
        return MilvusClient(uri=text)
    except Exception as exc:  # pymilvus's own exception types, for every failure
        hint = (
            "; Milvus Lite opens a .db file in one process at a time: is another one using it?"
            if text.endswith(".db")
            else ""
        )
        raise SearchIndexError(f"cannot open Milvus at {location} ({exc}){hint}") from exc


def _index_params(client, kind: str, count: int | None):
    params = client.prepare_index_params()
    if kind == "HNSW":
        extra = {"M": 32, "efConstruction": 200}
    elif kind == "IVF_FLAT":
        extra = {"nlist": int(min(65_536, max(16, 4 * np.sqrt(max(count or 0, 1)))))}
    else:
        extra = {}
    params.add_index(field_name="vector", index_type=kind, metric_type="IP", params=extra)
    return params


class MilvusIndex(IndexBase):
    """L2-normalised embeddings with metadata in a Milvus collection.

    Create one with :meth:`create`, open one with :meth:`open`; then ``add``, ``remove``,
    ``search``, ``vectors``, ``record``, ``thumbnail`` and ``info`` behave as on
    :class:`~index.VectorIndex`, so :func:`index.add_images` fills either.
    """

    metric = "cosine"

    def __init__(self, client, location: str, collection: str, header: dict) -> None:
        self._client = client
        self.location = str(location)
        self.collection = collection
        self.dim = int(header["dim"])
        self.kind = header["kind"]
        self.fingerprint = header.get("fingerprint")
        self.model = dict(header.get("model") or {})
        self.preprocess = dict(header.get("preprocess") or {})
        shape = header.get("thumbnail_shape")
        self._thumbnail_shape = tuple(shape) if shape else None
        self._next_id = int(header.get("next_id", 0))
        self.created = header.get("created") or _now()
        self.updated = header.get("updated") or self.created
        self._lock = threading.Lock()  # one writer at a time in this process

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(
        cls,
        location: str | Path,
        dim: int,
        *,
        collection: str = DEFAULT_COLLECTION,
        kind: str = "auto",
        fingerprint: str | None = None,
        model: Mapping | None = None,
        preprocess: Mapping | None = None,
        expected_size: int | None = None,
        thumbnail_shape: Sequence[int] | None = None,
        overwrite: bool = False,
    ) -> MilvusIndex:
        """A new, empty index at ``location``; an existing collection of that name is
        refused unless ``overwrite``."""
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        kind = milvus_kind(expected_size) if kind == "auto" else kind.upper().replace("-", "_")
        if kind not in MILVUS_KINDS:
            raise ValueError(f"unknown Milvus index kind {kind!r}; choose one of {MILVUS_KINDS}")
        from pymilvus import DataType, MilvusClient

        client = _client(location)
        meta_name = collection + META_SUFFIX
        for name in (collection, meta_name):
            if client.has_collection(name):
                if not overwrite:
                    raise SearchIndexError(
                        f"{location} already holds a collection {name!r}; choose another "
                        "--collection, or overwrite it"
                    )
                client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
        schema.add_field("record", DataType.JSON)
        schema.add_field("thumb", DataType.VARCHAR, max_length=THUMB_MAX_CHARS)
        client.create_collection(
            collection, schema=schema, index_params=_index_params(client, kind, expected_size)
        )
        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.INT64, is_primary=True)
        meta.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
        meta.add_field("header", DataType.JSON)
        client.create_collection(
            meta_name, schema=meta, index_params=_index_params(client, "FLAT", None)
        )
        header = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "kind": kind,
            "dim": int(dim),
            "fingerprint": fingerprint,
            "model": dict(model or {}),
            "preprocess": dict(preprocess or {}),
            "thumbnail_shape": list(thumbnail_shape) if thumbnail_shape else None,
            "next_id": 0,
            "created": _now(),
        }
        index = cls(client, str(location), collection, header)
        index._write_header()
        return index

    @classmethod
    def open(
        cls,
        location: str | Path,
        *,
        collection: str = DEFAULT_COLLECTION,
        fingerprint: str | None = None,
    ) -> MilvusIndex:
        """The index at ``location``; ``fingerprint`` (the querying model's) must match."""
        if str(location).endswith(".db") and not Path(location).expanduser().exists():
            raise IndexFormatError(f"{location} does not exist (build it with 'eat index build')")
        client = _client(location)
        meta_name = collection + META_SUFFIX
        if not client.has_collection(collection) or not client.has_collection(meta_name):
            raise IndexFormatError(
                f"{location} holds no index collection {collection!r} (collections: "
                f"{', '.join(n for n in client.list_collections() if not n.endswith(META_SUFFIX))}"
                ")"
            )
        try:
            # a collection opened by another process (or before a restart) starts released
            for name in (collection, meta_name):
                client.load_collection(name)
            rows = client.get(meta_name, ids=[0], output_fields=["header"])
        except Exception as exc:  # pymilvus raises its own MilvusException for every failure
            raise IndexFormatError(
                f"{location}: cannot load collection {collection!r} ({exc})"
            ) from exc
        if not rows:
            raise IndexFormatError(f"{location}: collection {collection!r} has no header row")
        header = rows[0]["header"]
        if header.get("format") != FORMAT_TAG or int(header.get("version", 0)) > FORMAT_VERSION:
            raise IndexFormatError(
                f"{location}: collection {collection!r} is not an index this version can read "
                f"(format {header.get('format')!r}, version {header.get('version')!r})"
            )
        index = cls(client, str(location), collection, header)
        if fingerprint is not None and index.fingerprint not in (None, fingerprint):
            raise FingerprintMismatchError(
                f"the index was built with model fingerprint {index.fingerprint} "
                f"(model {index.model.get('path')}), but this model has fingerprint "
                f"{fingerprint}; use the index's model or rebuild"
            )
        return index

    def _header(self) -> dict:
        return {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "backend": "milvus",
            "location": self.location,
            "collection": self.collection,
            **self._common_header(),
        }

    def _write_header(self) -> None:
        header = {k: v for k, v in self._header().items() if k not in ("count", "location")}
        self._client.upsert(
            self.collection + META_SUFFIX, [{"id": 0, "vector": [1.0, 0.0], "header": header}]
        )

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def __repr__(self) -> str:
        return (
            f"MilvusIndex({self.location!r}, collection={self.collection!r}, kind={self.kind!r}, "
            f"dim={self.dim}, fingerprint={self.fingerprint!r})"
        )

    def _header_changed(self) -> None:
        self._write_header()

    def info(self) -> dict:
        return self._header()

    def save(self, location=None) -> str:
        """Milvus stores every write itself: flush it and the header; returns the location."""
        self._write_header()
        self._client.flush(self.collection)
        return self.location

    # ------------------------------------------------------------------ reads
    def _rows(self, ids: Sequence[int], fields: list[str]) -> dict[int, dict]:
        out = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), FILTER_BATCH):
            chunk = ids[start : start + FILTER_BATCH]
            for row in self._client.get(self.collection, ids=chunk, output_fields=fields):
                out[int(row["id"])] = row
        return out

    def _all(self, fields: list[str]) -> list[dict]:
        """Every row, read in id ranges (ids lie in 0 … next_id − 1): plain queries, which
        Milvus Lite and servers answer alike (its query iterator needs server timestamps)."""
        rows: list[dict] = []
        for start in range(0, max(self._next_id, 1), RANGE_BATCH):
            rows.extend(
                self._client.query(
                    self.collection,
                    filter=f"id >= {start} and id < {start + RANGE_BATCH}",
                    output_fields=fields,
                )
            )
        return rows

    def ids(self) -> np.ndarray:
        return np.sort(np.asarray([r["id"] for r in self._all(["id"])], dtype=np.int64))

    def record(self, item_id: int) -> dict:
        rows = self._rows([item_id], ["record"])
        if int(item_id) not in rows:
            raise UnknownIdError(f"the index holds no item with id {item_id}")
        return dict(rows[int(item_id)]["record"] or {"id": int(item_id)})

    def records(self) -> dict[int, dict]:
        """``{id: record}`` of every item, in id-range reads."""
        rows = self._all(["id", "record"])
        return {int(r["id"]): dict(r["record"] or {"id": int(r["id"])}) for r in rows}

    def thumbnail(self, item_id: int) -> np.ndarray | None:
        rows = self._rows([item_id], ["thumb"])
        if int(item_id) not in rows:
            raise UnknownIdError(f"the index holds no item with id {item_id}")
        return self._decode_thumb(rows[int(item_id)]["thumb"])

    def _decode_thumb(self, text: str) -> np.ndarray | None:
        if not text or self._thumbnail_shape is None:
            return None
        return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(self._thumbnail_shape)

    def vectors(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of all items (sorted by id) or of ``ids``, as stored."""
        if ids is None:
            rows = sorted(self._all(["id", "vector"]), key=lambda r: r["id"])
            held = np.asarray([r["id"] for r in rows], dtype=np.int64)
            vecs = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(-1, self.dim)
            return held, vecs
        want = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = self._rows(want.tolist(), ["vector"])
        missing = [int(i) for i in want if int(i) not in rows]
        if missing:
            raise UnknownIdError(f"the index holds no items with ids {missing[:5]}")
        vecs = np.asarray([rows[int(i)]["vector"] for i in want], dtype=np.float32)
        return want, vecs.reshape(-1, self.dim)

    # ------------------------------------------------------------------ writes
    def add(
        self,
        vectors,
        records: Sequence[Mapping] | None = None,
        thumbnails: Sequence[np.ndarray] | np.ndarray | None = None,
        ids: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Add ``vectors [N, D]`` (normalised on the way in); returns their ids (as
        :meth:`index.VectorIndex.add`)."""
        x = normalised_vectors(vectors, self.dim, "vectors", self.fingerprint)
        n = len(x)
        if records is not None and len(records) != n:
            raise ValueError(f"{n} vectors but {len(records)} records")
        recs = [dict(r) for r in records] if records is not None else [{} for _ in range(n)]
        try:
            json.dumps(recs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"records must be JSON-serialisable: {exc}") from exc
        thumbs = None
        if thumbnails is not None:
            if len(thumbnails) != n:
                raise ValueError(f"{n} vectors but {len(thumbnails)} thumbnails")
            thumbs = np.stack([np.asarray(t) for t in thumbnails]) if n else None
            if thumbs is not None and (thumbs.dtype != np.uint8 or thumbs.ndim != 4):
                raise ValueError("thumbnails must be uint8 arrays [h, w, c]")
            if thumbs is not None and self._thumbnail_shape not in (None, thumbs.shape[1:]):
                raise ValueError(
                    f"thumbnails of shape {thumbs.shape[1:]} differ from the index's "
                    f"{self._thumbnail_shape}"
                )
        if self.has_thumbnails and thumbs is None and n:
            raise ValueError("this index stores a thumbnail for every item; pass thumbnails")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            if ids is None:
                new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            else:
                new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
                if len(new_ids) != n:
                    raise ValueError(f"{n} vectors but {len(new_ids)} ids")
                if (new_ids < 0).any() or len(np.unique(new_ids)) != n:
                    raise ValueError("ids must be unique and non-negative")
                taken = self._rows(new_ids.tolist(), ["id"])
                if taken:
                    raise ValueError(f"ids already in the index: {sorted(taken)[:5]}")
            if thumbs is not None and self._thumbnail_shape is None:
                self._thumbnail_shape = tuple(thumbs.shape[1:])
            rows = []
            for i, item_id in enumerate(new_ids.tolist()):
                recs[i]["id"] = item_id
                thumb = base64.b64encode(thumbs[i].tobytes()).decode() if thumbs is not None else ""
                rows.append({"id": item_id, "vector": x[i], "record": recs[i], "thumb": thumb})
            for start in range(0, n, INSERT_BATCH):
                self._client.insert(self.collection, rows[start : start + INSERT_BATCH])
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
            self.updated = _now()
            self._write_header()
        return new_ids

    def remove(self, ids: Iterable[int], missing_ok: bool = False) -> int:
        """Remove items by id; returns how many were removed."""
        drop = np.unique(np.asarray(list(ids), dtype=np.int64)).tolist()
        if not drop:
            return 0
        with self._lock:
            present = set(self._rows(drop, ["id"]))
            missing = [i for i in drop if i not in present]
            if missing and not missing_ok:
                raise UnknownIdError(f"the index holds no items with ids {missing[:5]}")
            if not present:
                return 0
            self._client.delete(self.collection, ids=sorted(present))
            self.updated = _now()
            self._write_header()
            return len(present)

    # ------------------------------------------------------------------ search
    def _search(self, q: np.ndarray, k: int, ef_search, nprobe, refine_k_factor) -> SearchResults:
        count = len(self)
        if count == 0:
            raise EmptyIndexError("the index is empty: add images before searching")
        k_eff = int(min(k, count))
        params: dict = {}
        if self.kind == "HNSW":
            params["ef"] = max(int(ef_search or 64), k_eff)
        elif self.kind == "IVF_FLAT":
            params["nprobe"] = int(nprobe or 16)
        answers = self._client.search(
            self.collection,
            data=[row for row in q],
            limit=k_eff,
            output_fields=["record"],
            search_params={"metric_type": "IP", "params": params},
        )
        ids = np.full((len(q), k_eff), -1, dtype=np.int64)
        scores = np.full((len(q), k_eff), -np.inf, dtype=np.float32)
        hits = []
        for row, answer in enumerate(answers):
            found = []
            for col, item in enumerate(list(answer)[:k_eff]):
                item_id = int(item["id"])
                ids[row, col] = item_id
                scores[row, col] = float(item["distance"])
                record = (item.get("entity") or {}).get("record") or {"id": item_id}
                found.append(Hit(item_id, float(item["distance"]), dict(record)))
            hits.append(found)
        return SearchResults(ids=ids, scores=scores, hits=hits)

    def close(self) -> None:
        self._client.close()
