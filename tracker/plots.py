"""Pictures of found columns (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .frames import class_label

CLASS_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")


#: The overlay's pixels per image pixel: at least 1 (every pixel of the image shown), more for
#: small images, so that the figure is at least this wide …
_MIN_WIDTH_PX = 768
#: … and at most this (a larger image is shown shrunk).
_MAX_WIDTH_PX = 4096


def overlay_figure(image: np.ndarray, columns: pd.DataFrame, *, class_names: Sequence[str] | None = None,
                   title: str | None = None, marker_size: float | None = None):
    """A figure of ``image`` (first of a focal series) with the columns marked, coloured by class.

    The figure shows the image at its own resolution (one figure pixel per image pixel; small
    images enlarged to at least 768 px wide, images wider than 4096 px shrunk), so that every
    column can be checked by zooming in. Each column is circled, the circle's diameter 0.6 of
    the median distance between neighbouring columns (at least 5 figure px): circles of
    neighbours do not touch, and each lies on its column's centre. ``marker_size`` [pt²] sets
    matplotlib's marker size instead.
    """
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[0]
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    h, w = img.shape
    zoom = min(max(1.0, _MIN_WIDTH_PX / w), _MAX_WIDTH_PX / w)  # figure px per image px
    dpi = 100.0
    head = 40.0 if title else 0.0  # figure px above the image for the title
    fig = Figure(figsize=(w * zoom / dpi, (h * zoom + head) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, h * zoom / (h * zoom + head)))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if len(columns):
        pt = 72.0 / dpi  # points per figure px
        from .intensity import nearest_spacing_px

        spacing = nearest_spacing_px([columns])
        diameter = max(5.0, 0.6 * spacing * zoom) if spacing else 8.0  # figure px
        size = marker_size if marker_size is not None else (diameter * pt) ** 2
        width = float(np.clip(diameter / 10, 1.0, 2.5)) * pt
        cls = columns["cls"].to_numpy().astype(int) if "cls" in columns else np.zeros(len(columns), int)
        for k in np.unique(cls):
            sel = cls == k
            name = class_label(class_names, k)
            ax.scatter(columns["x"].to_numpy()[sel], columns["y"].to_numpy()[sel], s=size, facecolors="none",
                       edgecolors=CLASS_COLOURS[k % len(CLASS_COLOURS)], linewidths=width, label=f"{name} ({sel.sum()})")
        ax.legend(loc="upper right", fontsize=max(8.0, min(14.0, w * zoom / 80)), framealpha=0.7)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def overlay_png(image: np.ndarray, columns: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """Write :func:`overlay_figure` to a PNG file."""
    path = Path(path)
    fig = overlay_figure(image, columns, **kwargs)
    fig.savefig(path)
    return path
