"""Writing IDX files, for tests that need Fashion-MNIST-layout data of their own (the
library only reads them: :func:`eat_models.data.read_idx`)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from eat_models.data import IDXFormatError
from eat_models.data.idx import IDX_DTYPES


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``)."""
    dtype = np.dtype(array.dtype)
    codes = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in IDX_DTYPES.items()}
    code = codes.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise IDXFormatError(f"dtype {dtype} cannot be stored in IDX")
    big = dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload += np.ascontiguousarray(array, dtype=big).tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)
