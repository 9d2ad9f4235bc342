"""The robustness report: the benchmark's table and plots, read from its results folder.

``eat bench`` writes ``results/fashion-mnist/results.md`` and ``*.png`` plots. They are
read here and handed over as text and PIL images (never served as files).
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


def load_report(results_dir: str | os.PathLike | None = None) -> Report:
    """The benchmark report in ``results_dir`` or the "no results yet" message."""
    directory = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    table = directory / "results.md"
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
