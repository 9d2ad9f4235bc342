"""The downloads of a clustered set: ``clusters.csv`` (file → cluster) and ``clusters.zip``
(the original files, one folder per cluster)."""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from .uploads import UploadBatch


def safe_name(index: int, name: str) -> str:
    """A file name for the zip: numbered, no folders, only word characters, dots and dashes."""
    base = PurePosixPath(name.replace("\\", "/")).name or "image"
    base = re.sub(r"[^\w.\-]+", "_", base)[:80]
    return f"{index:03d}_{base}"


def csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, a tab or a
    carriage return gets a leading apostrophe (OWASP's advice on CSV injection)."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def write_downloads(
    batch: UploadBatch, assignments: np.ndarray, out_dir: Path
) -> tuple[Path, Path]:
    """``clusters.csv`` (file, cluster[, folder label]) and ``clusters.zip`` (the original
    files under ``cluster_NN/``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = batch.labels
    csv_path = out_dir / "clusters.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "cluster"] + (["folder_label"] if labels else []))
        for i, item in enumerate(batch.images):
            cluster = "noise" if assignments[i] < 0 else int(assignments[i]) + 1
            row = [item.name, cluster] + ([labels[i]] if labels else [])
            writer.writerow([csv_cell(v) for v in row])
    zip_path = out_dir / "clusters.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, item in enumerate(batch.images):
            folder = "noise" if assignments[i] < 0 else f"cluster_{int(assignments[i]) + 1:02d}"
            zf.writestr(f"{folder}/{safe_name(i, item.name)}", item.data)
    return csv_path, zip_path
