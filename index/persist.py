"""An index directory on disk: the atomic save and the validating load of
:class:`~index.store.VectorIndex`.

On disk an index is one directory::

    DIR/index.json              manifest: format tag and version, header, and the name,
                                size and SHA-256 of each data file below
    DIR/vectors-<gen>.faiss     faiss.write_index output
    DIR/items-<gen>.jsonl       one JSON record per item, in id order
    DIR/thumbnails-<gen>.npy    uint8 [N, h, w, c], rows in the order of items (optional)

A save writes a new generation of data files, fsyncs them, then atomically replaces
``index.json`` (temp file, fsync, ``os.replace``, fsync of the directory) and only then
deletes the old generation. A crash at any point leaves a manifest that names complete
files. A load retries when a concurrent save replaced the generation it was reading.
Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import faiss
import numpy as np

from eat_models.files import fsync_dir, read_versioned_json, sha256_file

from .errors import FingerprintMismatchError, IndexFormatError, SearchIndexError
from .kinds import KINDS, IndexParams

log = logging.getLogger(__name__)

FORMAT_TAG = "eat-search-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
_DATA_PREFIXES = ("vectors-", "items-", "thumbnails-", f".{MANIFEST_NAME}.")


def save_index(index, directory: str | os.PathLike) -> Path:
    """Write ``index`` (a :class:`~index.store.VectorIndex`) to ``directory`` atomically."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise SearchIndexError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).exists():
        raise SearchIndexError(
            f"{out} is a non-empty directory without {MANIFEST_NAME}; refusing to write an "
            "index into it (choose a new or empty directory)"
        )
    out.mkdir(parents=True, exist_ok=True)
    gen = uuid.uuid4().hex[:12]
    written: list[Path] = []
    committed = False
    with index._save_lock, index._lock.read():
        try:
            files = _write_data_files(index, out, gen, written)
            manifest = {
                "format": FORMAT_TAG,
                "format_version": FORMAT_VERSION,
                **index._header(),
                "files": files,
            }
            tmp = out / f".{MANIFEST_NAME}.{gen}.tmp"
            written.append(tmp)
            _write_file(tmp, json.dumps(manifest, indent=2).encode())
            os.replace(tmp, out / MANIFEST_NAME)
            committed = True
            fsync_dir(out)
        except BaseException:
            if not committed:  # the old manifest still rules: drop this generation
                for path in written:
                    path.unlink(missing_ok=True)
            raise
        _remove_stale_files(out, keep={f["name"] for f in files.values() if f})
    return out


def _write_data_files(index, out: Path, gen: str, written: list[Path]) -> dict:
    ids = (
        np.sort(faiss.vector_to_array(index._index.id_map).astype(np.int64))
        if index._index is not None
        else np.zeros(0, dtype=np.int64)
    )
    files: dict[str, dict | None] = {"vectors": None, "items": None, "thumbnails": None}
    if index._index is not None:
        path = out / f"vectors-{gen}.faiss"
        written.append(path)
        faiss.write_index(index._index, str(path))
        _fsync_file(path)
        files["vectors"] = _describe(path)
    path = out / f"items-{gen}.jsonl"
    written.append(path)
    lines = (
        json.dumps(index._records.get(i, {"id": i}), separators=(",", ":")) for i in ids.tolist()
    )
    _write_file(path, "".join(line + "\n" for line in lines).encode())
    files["items"] = _describe(path)
    if index._thumbnail_shape is not None and len(ids):
        path = out / f"thumbnails-{gen}.npy"
        written.append(path)
        stack = np.stack([index._thumbnails[i] for i in ids.tolist()])
        with open(path, "wb") as fh:
            np.save(fh, stack, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        files["thumbnails"] = _describe(path)
    return files


def load_index_dir(
    cls, directory: str | os.PathLike, *, fingerprint: str | None = None, verify: bool = True
):
    """Read an index directory, validating format, version, files and dimensions.

    ``fingerprint``: the fingerprint of the model that will query the index; a
    different one raises :class:`FingerprintMismatchError`. ``verify`` checks each
    data file's SHA-256 (a second or so per GB).
    """
    directory = Path(directory)
    attempts = 3
    for attempt in range(attempts):
        manifest = read_manifest(directory)
        try:
            return _from_manifest(cls, directory, manifest, fingerprint, verify)
        except FileNotFoundError as exc:
            # A concurrent save may have replaced the generation we were reading: retry.
            if attempt == attempts - 1 or read_manifest(directory) == manifest:
                raise IndexFormatError(str(exc)) from exc
    raise AssertionError("unreachable")


def _from_manifest(cls, directory: Path, manifest: dict, fingerprint: str | None, verify: bool):
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        raise FingerprintMismatchError(
            f"{directory}: the index was built with model fingerprint "
            f"{manifest.get('fingerprint')} (model {manifest.get('model', {}).get('path')}), "
            f"but the model given has fingerprint {fingerprint}. Search with the model the "
            "index was built with, or rebuild the index with this model."
        )
    index = cls(
        manifest["dim"],
        manifest["kind"],
        params=IndexParams.from_dict(manifest.get("params") or {}),
        fingerprint=manifest.get("fingerprint"),
        model=manifest.get("model"),
        preprocess=manifest.get("preprocess"),
    )
    index.created = manifest.get("created", index.created)
    index.updated = manifest.get("updated", index.updated)
    index._next_id = int(manifest.get("next_id", 0))
    files = manifest["files"]
    count = int(manifest["count"])
    if files.get("vectors"):
        path = _checked_file(directory, files["vectors"], verify)
        try:
            stored = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(f"{path}: not a readable FAISS index ({exc})") from exc
        if not isinstance(stored, faiss.IndexIDMap2):
            raise IndexFormatError(f"{path}: holds a {type(stored).__name__}, not an IndexIDMap2")
        if stored.d != index.dim or stored.ntotal != count:
            raise IndexFormatError(
                f"{path}: holds {stored.ntotal} vectors of dimension {stored.d}, but "
                f"{MANIFEST_NAME} promises {count} of dimension {index.dim}"
            )
        index._index = stored
    elif count:
        raise IndexFormatError(f"{directory}: {MANIFEST_NAME} lists {count} items but no vectors")
    ids = _read_items(index, _checked_file(directory, files["items"], verify), count)
    if files.get("thumbnails"):
        path = _checked_file(directory, files["thumbnails"], verify)
        _read_thumbnails(index, path, ids, manifest.get("thumbnail_shape"))
    if index._index is not None:
        held = np.sort(faiss.vector_to_array(index._index.id_map))
        if not np.array_equal(held, ids):
            raise IndexFormatError(f"{directory}: the item records and the vectors disagree on ids")
    return index


def _read_items(index, path: Path, count: int) -> np.ndarray:
    ids = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                item_id = int(rec["id"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise IndexFormatError(
                    f"{path}: line {line_no} is not an item record ({exc}); the file is "
                    "corrupt or truncated"
                ) from exc
            ids.append(item_id)
            if len(rec) > 1:
                index._records[item_id] = rec
    if len(ids) != count:
        raise IndexFormatError(f"{path}: {len(ids)} item records, expected {count}")
    return np.asarray(ids, dtype=np.int64)


def _read_thumbnails(index, path: Path, ids: np.ndarray, shape) -> None:
    try:
        stack = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"{path}: not a readable thumbnail array ({exc})") from exc
    if stack.dtype != np.uint8 or stack.shape != (len(ids), *(shape or ())):
        raise IndexFormatError(
            f"{path}: thumbnails {stack.dtype} {stack.shape} do not match "
            f"{len(ids)} items of shape {shape}"
        )
    index._thumbnail_shape = tuple(shape)
    index._thumbnails = dict(zip(ids.tolist(), stack, strict=True))


def read_manifest(directory: str | os.PathLike) -> dict:
    """Validate and return ``DIR/index.json`` (format tag, version and required keys)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no such index directory")
    if not path.is_file():
        raise IndexFormatError(f"{directory}: not a search index ({MANIFEST_NAME} is missing)")
    manifest = read_versioned_json(
        path, FORMAT_TAG, FORMAT_VERSION, IndexFormatError, "a search-index manifest"
    )
    missing = [k for k in ("kind", "dim", "count", "files") if k not in manifest]
    if missing or manifest["kind"] not in KINDS or not isinstance(manifest["files"], dict):
        raise IndexFormatError(f"{path}: manifest is incomplete or invalid (missing {missing})")
    if not manifest["files"].get("items"):
        raise IndexFormatError(f"{path}: manifest names no items file")
    return manifest


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _describe(path: Path) -> dict:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _checked_file(directory: Path, entry: dict, verify: bool) -> Path:
    path = directory / entry["name"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file named in {MANIFEST_NAME} is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise IndexFormatError(
            f"{path}: {size} bytes, but {MANIFEST_NAME} records {entry['bytes']}; the file is "
            "truncated or was modified"
        )
    if verify and sha256_file(path) != entry["sha256"]:
        raise IndexFormatError(
            f"{path}: contents do not match the SHA-256 in {MANIFEST_NAME}; the file is corrupt"
        )
    return path


def _remove_stale_files(directory: Path, keep: set[str]) -> None:
    for path in directory.iterdir():
        if path.name.startswith(_DATA_PREFIXES) and path.name not in keep:
            try:
                path.unlink()
            except OSError as exc:  # another process may be cleaning up too
                log.debug("could not remove stale %s: %s", path, exc)
