"""File helpers every package shares: atomic writes, a file's SHA-256, the user cache.

An atomic write goes to a temporary file in the target's directory and replaces the
target with ``os.replace``, so a reader sees the old file or the new one, never half of
one; the temporary file is removed when writing fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a directory's entries (a rename into it) durable, where the platform allows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, durable: bool = True
) -> Path:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file beside it, which then
    replaces ``path``. ``durable``: fsync the data before the rename (checkpoints, indexes;
    caches that can be recomputed skip it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), durable=durable)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_save_npy(path: str | os.PathLike, array, *, durable: bool = False) -> Path:
    """``np.save`` without pickles, atomically (a cache file: not fsynced by default)."""
    return atomic_write(
        path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False), durable=durable
    )


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/eat/…`` or ``~/.cache/eat/…`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "eat", *parts)


def write_json(path: str | os.PathLike, obj, *, durable: bool = True) -> Path:
    """``obj`` as indented JSON in ``path``, atomically (results, records, manifests)."""
    return atomic_write_text(path, json.dumps(obj, indent=2), durable=durable)


def read_versioned_json(
    path: str | os.PathLike, tag: str, version: int, error: type[Exception], what: str
) -> dict:
    """A JSON record with ``format`` == ``tag`` and ``format_version`` == ``version`` (a
    checkpoint config, an index manifest), or ``error`` saying what is wrong with it."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}); the file is corrupt or foreign") from exc
    if not isinstance(record, dict) or record.get("format") != tag:
        raise error(f"{path}: not {what} (format tag missing)")
    if record.get("format_version") != version:
        raise error(
            f"{path}: format version {record.get('format_version')} of {what} is not "
            f"supported (this version reads {version}); make it again with this version"
        )
    return record
