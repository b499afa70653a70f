"""Pictures of found columns (matplotlib, Agg backend: no display needed), and the colours of
the columns' classes that every picture of them uses (overlay, movie, dashboard)."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .frames import class_label

#: Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2008), its black taken as
#: white (the columns are drawn on dark images): orange, sky blue, bluish green, reddish purple,
#: yellow, blue, vermillion, white. The order spreads the colours: the first few are told apart
#: best, also by readers with a red-green colour vision deficiency.
CLASS_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#F0E442", "#0072B2", "#D55E00", "#FFFFFF")

_O, _SKY, _GREEN, _PURPLE, _YELLOW, _BLUE, _VERMILLION, _WHITE = CLASS_COLOURS
#: A class's colour by its name, the same in every run: the models' classes, the intensity
#: groups (``A``, ``B0`` …; ``I0`` … where all columns are one kind), the undecided. Names that
#: appear together have colours far apart (the groups of one sublattice above all).
_NAMED = {
    "column": _O, "Mo": _O, "S2": _SKY, "S": _GREEN, "Se": _PURPLE, "Au": _YELLOW, "C": _SKY,
    "A": _O, "A0": _O, "A1": _PURPLE, "A2": _VERMILLION, "A3": _YELLOW,
    "B": _SKY, "B0": _SKY, "B1": _GREEN, "B2": _BLUE, "B3": _YELLOW,
    "I": _O, "I0": _O, "I1": _SKY, "I2": _GREEN, "I3": _PURPLE, "I4": _YELLOW, "I5": _BLUE,
    "no sublattice": _WHITE,
}


def class_colours(names: Sequence[str] | None) -> list[str]:
    """The colours of classes 0, 1, … named ``names``: one per name, fixed by the name (``B0`` is
    sky blue in every run, whatever other classes it has), from :data:`CLASS_COLOURS`.

    A name not known here gets a colour from its hash; where two names of ``names`` would
    share one, the later takes the next colour free. The list goes on with the colours not
    used (for class numbers past the names), so that ``colours[k % len(colours)]`` is class
    ``k``'s. Without names: :data:`CLASS_COLOURS` in order.
    """
    names = [str(n) for n in (names or ())]
    out: list[str] = []
    for name in names:
        want = _NAMED.get(name) or CLASS_COLOURS[zlib.crc32(name.encode("utf-8")) % len(CLASS_COLOURS)]
        if want in out and len(out) < len(CLASS_COLOURS):
            start = CLASS_COLOURS.index(want)
            want = next(c for i in range(len(CLASS_COLOURS))
                        if (c := CLASS_COLOURS[(start + i) % len(CLASS_COLOURS)]) not in out)
        out.append(want)
    return out + [c for c in CLASS_COLOURS if c not in out]


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
    matplotlib's marker size instead. Each class has its colour (:func:`class_colours`, by its
    name); the legend is a band below the image, so that it hides no column.
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
    foot, font, ncol = 0.0, 0.0, 1  # figure px below it for the legend, its font [pt] and columns
    if len(columns):
        ks = np.unique(columns["cls"].to_numpy().astype(int)) if "cls" in columns else np.zeros(1, int)
        n_cls, longest = len(ks), max(len(class_label(class_names, k)) for k in ks)
        font = float(np.clip(w * zoom / 80, 8.0, 14.0))
        font_px = font * dpi / 72
        label_px = font_px * (0.62 * (longest + 8) + 2.5)  # "name (1234)" and its marker
        ncol = int(max(1, min(n_cls, (w * zoom) // label_px)))
        foot = font_px * (1.5 * -(-n_cls // ncol) + 0.8)
    fig_h = h * zoom + head + foot
    fig = Figure(figsize=(w * zoom / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes((0, foot / fig_h, 1, h * zoom / fig_h))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if len(columns):
        pt = 72.0 / dpi  # points per figure px
        from .intensity import nearest_spacing_px

        spacing = nearest_spacing_px([columns])
        diameter = max(5.0, 0.6 * spacing * zoom) if spacing else 8.0  # figure px
        size = marker_size if marker_size is not None else (diameter * pt) ** 2
        width = float(np.clip(diameter / 10, 1.0, 2.5)) * pt
        cls = columns["cls"].to_numpy().astype(int) if "cls" in columns else np.zeros(len(columns), int)
        colours = class_colours(class_names)
        for k in np.unique(cls):
            sel = cls == k
            name = class_label(class_names, k)
            ax.scatter(columns["x"].to_numpy()[sel], columns["y"].to_numpy()[sel], s=size, facecolors="none",
                       edgecolors=colours[k % len(colours)], linewidths=width, label=f"{name} ({sel.sum()})")
        # the legend in a band below the image, never over a column
        handles, labels = ax.get_legend_handles_labels()
        lax = fig.add_axes((0, 0, 1, foot / fig_h))
        lax.set_facecolor("#16161c")
        lax.set_xticks([])
        lax.set_yticks([])
        for spine in lax.spines.values():
            spine.set_visible(False)
        ring_px = np.sqrt(size) / pt  # (the legend's rings no larger than its letters)
        lax.legend(handles, labels, loc="center", ncol=ncol, fontsize=font, frameon=False, labelcolor="white",
                   handletextpad=0.3, columnspacing=1.2, borderaxespad=0.2,
                   markerscale=min(1.0, 0.8 * font * dpi / 72 / max(ring_px, 1e-6)))
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
