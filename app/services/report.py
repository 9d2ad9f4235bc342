"""The robustness reports: the benchmark's table and plots, and ``eat audit``'s cards.

``eat bench`` writes ``results/fashion-mnist/results.md`` and ``*.png`` plots; ``eat audit``
writes ``results/audit/NAME/audit.md`` and its plots. They are read here and handed over
as text and PIL images (never served as files).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "fashion-mnist"
NO_RESULTS = (
    "### No benchmark results yet\n\n"
    "Run `eat bench` to train every defense and attack it; its table and plots "
    "(`results/fashion-mnist/results.md`, `*.png`) then appear here."
)
MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_PLOTS = 24


@dataclass
class Report:
    """The report's Markdown and its plots as ``(image, caption)``."""

    markdown: str
    plots: list[tuple[Image.Image, str]] = field(default_factory=list)
    found: bool = False


def audit_names(audit_dir: str | os.PathLike) -> list[str]:
    """The audits (folders holding an ``audit.md``) under ``audit_dir``, sorted."""
    directory = Path(audit_dir)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if (p / "audit.md").is_file())


def load_audit(audit_dir: str | os.PathLike, name: str) -> Report:
    """The card of audit ``name`` (one of :func:`audit_names`, nothing outside them)."""
    names = audit_names(audit_dir)
    if name not in names:
        listed = ", ".join(names) or "none yet: run 'eat audit MODEL'"
        raise ValueError(f"unknown audit {name!r}; audits: {listed}")
    return load_report(Path(audit_dir) / name, table_name="audit.md")


def load_report(
    results_dir: str | os.PathLike | None = None, table_name: str = "results.md"
) -> Report:
    """The report in ``results_dir`` (its ``table_name`` and plots) or the "no results yet"
    message."""
    directory = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    table = directory / table_name
    plots = []
    for path in sorted(directory.glob("*.png"))[:MAX_PLOTS] if directory.is_dir() else []:
        try:
            with Image.open(path) as img:
                img.load()
                plots.append((img.convert("RGB"), path.stem.replace("_", " ")))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            log.warning("skipping unreadable plot %s (%s)", path, exc)
    if not table.is_file():
        if not plots:
            return Report(NO_RESULTS)
        return Report(
            "### Benchmark plots\n\n(`results.md` is missing; run `eat bench`.)", plots, True
        )
    text = table.read_bytes()[:MAX_REPORT_BYTES].decode("utf-8", errors="replace")
    # Plots are shown below the table, so image links to files are dropped from the text.
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("![")]
    return Report("\n".join(lines), plots, True)
