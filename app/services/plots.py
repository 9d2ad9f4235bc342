"""Figures as PIL images: gallery maps with attack arrows, and scatters of clusterings.

Uses matplotlib's object API with the Agg canvas (no pyplot state), so figures can be
drawn from several request threads at once.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

CLASS_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
NOISE_COLOUR = "#9e9e9e"


def colour(i: int) -> str:
    """A distinct colour for class or cluster ``i`` (grey for noise, ``i < 0``)."""
    if i < 0:
        return NOISE_COLOUR
    if i < len(CLASS_COLOURS):
        return CLASS_COLOURS[i]
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["tab20"](i % 20)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def figure_to_image(fig: Figure) -> Image.Image:
    """Render a figure to an RGB PIL image."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[:, :, :3].copy())


@dataclass
class Arrow:
    """A move on a map: from ``start`` (clean, circle) to ``end`` (adversarial, cross)."""

    start: np.ndarray
    end: np.ndarray
    label: str = ""


@dataclass
class MapPanel:
    """One panel: a gallery map coloured by class, with optional arrows and a note."""

    title: str
    coords: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str]
    arrows: list[Arrow] = field(default_factory=list)
    note: str = ""


def gallery_maps(panels: Sequence[MapPanel], panel_size: float = 4.6) -> Image.Image:
    """Panels side by side; the legend of classes is drawn once, under the panels."""
    fig = Figure(figsize=(panel_size * len(panels), panel_size + 1.3), dpi=90)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        labels = np.asarray(panel.labels)
        colours = [colour(int(c)) for c in labels]
        ax.scatter(
            panel.coords[:, 0],
            panel.coords[:, 1],
            c=colours,
            s=3 if len(labels) > 2500 else 7,
            alpha=0.35 if len(labels) > 2500 else 0.5,
            linewidths=0,
            rasterized=True,
        )
        for arrow in panel.arrows:
            ax.annotate(
                "",
                xy=tuple(arrow.end),
                xytext=tuple(arrow.start),
                arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.8},
            )
            ax.scatter(*arrow.start, s=90, facecolors="white", edgecolors="black", lw=1.8, zorder=3)
            ax.scatter(*arrow.end, s=110, marker="X", c="#d62728", edgecolors="black", zorder=4)
        ax.set_title(panel.title, fontsize=11)
        if panel.note:
            ax.set_xlabel(textwrap.fill(panel.note, 70), fontsize=7.5, color="#444444")
        ax.set_xticks([])
        ax.set_yticks([])
    names = panels[0].class_names if panels else []
    present = sorted({int(c) for p in panels for c in np.unique(p.labels) if c >= 0})
    handles = [
        axes[0].scatter([], [], c=colour(c), s=25, label=names[c] if c < len(names) else str(c))
        for c in present
    ]
    handles.append(
        axes[0].scatter([], [], s=60, facecolors="white", edgecolors="black", label="clean")
    )
    handles.append(axes[0].scatter([], [], s=70, marker="X", c="#d62728", label="adversarial"))
    fig.legend(
        handles=handles, loc="lower center", ncol=min(7, len(handles)), fontsize=8, frameon=False
    )
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.22, wspace=0.05)
    return figure_to_image(fig)


@dataclass
class ClusterPanel:
    """One clustering drawn as a scatter coloured by cluster (``-1``: noise)."""

    title: str
    xy: np.ndarray
    assignments: np.ndarray
    marked: np.ndarray | None = None
    note: str = ""
    #: where the marked points were before (the clean images' positions on the same map),
    #: in the order of ``np.flatnonzero(marked)``: drawn as arrows to where they moved
    origins: np.ndarray | None = None


#: points beyond this many interquartile ranges from the median are drawn at the edge
OUTLIER_SPREADS = 4.0


def robust_limits(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis limits ``(low, high)`` that hold the bulk of ``points [N, 2]``: the whole extent
    when no point lies beyond :data:`OUTLIER_SPREADS` interquartile ranges of the median,
    else that band (so one far outlier does not squeeze every other point into a corner)."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    if len(points) >= 8:
        q1, median, q3 = np.percentile(points, [25, 50, 75], axis=0)
        spread = np.maximum(q3 - q1, 1e-6)
        low = np.maximum(low, median - OUTLIER_SPREADS * spread)
        high = np.minimum(high, median + OUTLIER_SPREADS * spread)
    margin = np.maximum((high - low) * 0.06, 1e-3)
    return low - margin, high + margin


def cluster_maps(panels: Sequence[ClusterPanel], panel_size: float = 4.6) -> Image.Image:
    """Scatters of clusterings side by side; ``marked`` points (attacked) are crosses, with
    an arrow from where each was before the attack when ``origins`` are given. Far outliers
    are drawn at the panel's edge (:func:`robust_limits`). Each panel's legend sits under
    it, never over its points."""
    fig = Figure(figsize=(panel_size * len(panels), panel_size + 1.4), dpi=90)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        marked = np.zeros(len(panel.xy), dtype=bool) if panel.marked is None else panel.marked
        drawn = panel.xy if panel.origins is None else np.vstack([panel.xy, panel.origins])
        low, high = robust_limits(drawn)
        xy = np.clip(panel.xy, low, high)
        outside = np.any((panel.xy < low) | (panel.xy > high), axis=1)
        if panel.origins is not None and len(panel.origins):
            start = np.clip(panel.origins, low, high)
            end = xy[marked]
            ax.quiver(
                start[:, 0],
                start[:, 1],
                end[:, 0] - start[:, 0],
                end[:, 1] - start[:, 1],
                angles="xy",
                scale_units="xy",
                scale=1,
                width=0.004,
                color="#555555",
                alpha=0.6,
                zorder=1,
            )
            ax.scatter(
                start[:, 0],
                start[:, 1],
                s=22,
                facecolors="none",
                edgecolors="#555555",
                linewidths=0.7,
                zorder=2,
            )
        for cluster in np.unique(panel.assignments):
            rows = panel.assignments == cluster
            name = "noise" if cluster < 0 else f"cluster {cluster + 1}"
            ax.scatter(
                xy[rows & ~marked, 0],
                xy[rows & ~marked, 1],
                s=28,
                c=colour(int(cluster)),
                label=name,
                edgecolors="white",
                linewidths=0.4,
                zorder=3,
            )
            if (rows & marked).any():
                ax.scatter(
                    xy[rows & marked, 0],
                    xy[rows & marked, 1],
                    s=60,
                    marker="X",
                    c=colour(int(cluster)),
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=4,
                )
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        if outside.any():
            far = int(outside.sum())
            ax.text(
                0.01,
                0.01,
                f"{far} far point{'s' if far > 1 else ''} drawn at the edge",
                transform=ax.transAxes,
                fontsize=7,
                color="#444444",
            )
        ax.set_title(panel.title, fontsize=11)
        if panel.note:
            ax.set_xlabel(textwrap.fill(panel.note, 70), fontsize=7.5, color="#444444")
        ax.set_xticks([])
        ax.set_yticks([])
        n_clusters = len(np.unique(panel.assignments))
        if n_clusters <= 12:
            ax.legend(
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.1 if panel.note else -0.02),
                ncol=min(6, n_clusters),
                frameon=False,
                handletextpad=0.2,
                columnspacing=0.8,
            )
    # room above the titles: the page lays its label and toolbar over the image top
    fig.subplots_adjust(left=0.02, right=0.98, top=0.84, bottom=0.24, wspace=0.05)
    return figure_to_image(fig)
