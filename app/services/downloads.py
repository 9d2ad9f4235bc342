"""The downloads of a clustered set: ``clusters.csv`` (file → cluster) and ``clusters.zip``
(the original files, one folder per cluster)."""

from __future__ import annotations

import csv
import re
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from .uploads import UploadBatch

MAX_NAME = 80  # characters of a name in the zip, its extension kept
MAX_SUFFIX = 10
#: what a spreadsheet reads as the start of a formula
FORMULA_STARTS = ("=", "+", "-", "@")


def safe_name(index: int, name: str) -> str:
    """A file name for the zip: numbered, no folders, only word characters, dots and dashes."""
    base = PurePosixPath(name.replace("\\", "/")).name or "image"
    base = re.sub(r"[^\w.\-]+", "_", base)
    suffix = PurePosixPath(base).suffix[:MAX_SUFFIX]
    stem = base[: len(base) - len(PurePosixPath(base).suffix)] if suffix else base
    return f"{index:03d}_{stem[: MAX_NAME - len(suffix)]}{suffix}"


def csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, a tab or a
    carriage return gets a leading apostrophe (OWASP's advice on CSV injection). Leading
    spaces and compatibility forms (full-width ``＝``, small ``﹦``) are looked through, as
    spreadsheets do."""
    if not isinstance(value, str):
        return value
    looks = unicodedata.normalize("NFKC", value).lstrip()
    if value.startswith(("\t", "\r")) or looks.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_downloads(
    batch: UploadBatch, assignments: np.ndarray, out_dir: Path, attack=None
) -> tuple[Path, Path]:
    """``clusters.csv`` and ``clusters.zip`` (the original files under ``cluster_NN/``) in
    ``out_dir``.

    The CSV has a row per file: ``file, cluster[, folder_label]`` and, when the set was
    attacked (``attack``: a :class:`~app.services.set_attack.SetAttackResult`), for each
    attacked model whether the file was perturbed and its cluster in that model's clean
    and attacked clusterings (``MODEL_attacked``, ``MODEL_clean_cluster``,
    ``MODEL_attacked_cluster``; cluster numbers count from 1, ``noise`` for none)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = batch.labels
    outcomes = list(attack.outcomes.values()) if attack is not None else []

    def cluster_name(value) -> str | int:
        return "noise" if value < 0 else int(value) + 1

    csv_path = out_dir / "clusters.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["file", "cluster"] + (["folder_label"] if labels else [])
        for o in outcomes:
            header += [f"{o.key}_attacked", f"{o.key}_clean_cluster", f"{o.key}_attacked_cluster"]
        writer.writerow([csv_cell(v) for v in header])
        attacked_sets = [set(o.attacked_rows.tolist()) for o in outcomes]
        for i, item in enumerate(batch.images):
            row = [item.name, cluster_name(assignments[i])] + ([labels[i]] if labels else [])
            for o, attacked in zip(outcomes, attacked_sets, strict=True):
                row += [
                    "yes" if i in attacked else "no",
                    cluster_name(o.clean_assignments[i]),
                    cluster_name(o.attacked_assignments[i]),
                ]
            writer.writerow([csv_cell(v) for v in row])
    zip_path = out_dir / "clusters.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, item in enumerate(batch.images):
            folder = "noise" if assignments[i] < 0 else f"cluster_{int(assignments[i]) + 1:02d}"
            zf.writestr(f"{folder}/{safe_name(i, item.name)}", item.data)
    return csv_path, zip_path
