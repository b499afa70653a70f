"""Pictures of found columns (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

CLASS_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")


def overlay_figure(image: np.ndarray, columns: pd.DataFrame, *, class_names: Sequence[str] | None = None,
                   title: str | None = None, marker_size: float = 14.0):
    """A figure of ``image`` (first of a focal series) with the columns marked, coloured by class."""
    from matplotlib.figure import Figure

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[0]
    lo, hi = np.percentile(img, [0.5, 99.5])
    h, w = img.shape
    fig = Figure(figsize=(7, 7 * h / w + 0.4), dpi=110)
    ax = fig.add_axes((0, 0, 1, 0.94 if title else 1))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if len(columns):
        cls = columns["cls"].to_numpy().astype(int) if "cls" in columns else np.zeros(len(columns), int)
        for k in np.unique(cls):
            sel = cls == k
            name = class_names[k] if class_names and k < len(class_names) else f"class {k}"
            ax.scatter(columns["x"].to_numpy()[sel], columns["y"].to_numpy()[sel], s=marker_size, facecolors="none",
                       edgecolors=CLASS_COLOURS[k % len(CLASS_COLOURS)], linewidths=1.0, label=f"{name} ({sel.sum()})")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.7)
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
