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
    "SeS": _PURPLE, "Se2": _VERMILLION,
    "no sublattice": _WHITE,
    # too faint for any intensity group (often on a dark hole): a light colour, not the dark blue
    "faint": _YELLOW,
}


def _named_colour(name: str) -> str | None:
    """The fixed colour of a class name; of a display label ``"B0 (S)"``
    (:func:`etem.tracker.intensity.display_names`), its species' (S's), so that a species has one
    colour whether a model or the intensity groups named it."""
    if name.endswith(")") and " (" in name:
        species = name[name.rindex(" (") + 2:-1]
        if species in _NAMED:
            return _NAMED[species]
        name = name[:name.rindex(" (")]
    return _NAMED.get(name)


def class_colours(names: Sequence[str] | None) -> list[str]:
    """The colours of classes 0, 1, … named ``names``: one per name, fixed by the name (``B0`` is
    sky blue in every run, whatever other classes it has), from :data:`CLASS_COLOURS`. A display
    label with a species in brackets (``"B0 (S)"``, :func:`etem.tracker.intensity.display_names`)
    takes the species' colour: S green and S2 sky blue, as a MoS2 model's classes.

    A name not known here gets a colour from its hash; where two names of ``names`` would
    share one, the later takes the next colour free. The list goes on with the colours not
    used (for class numbers past the names), so that ``colours[k % len(colours)]`` is class
    ``k``'s. Without names: :data:`CLASS_COLOURS` in order.
    """
    names = [str(n) for n in (names or ())]
    out: list[str] = []
    for name in names:
        want = _named_colour(name) or CLASS_COLOURS[zlib.crc32(name.encode("utf-8")) % len(CLASS_COLOURS)]
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


def _luminance(colour: str) -> float:
    """WCAG's relative luminance of a colour (0 black … 1 white)."""
    from matplotlib.colors import to_rgb

    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def outline_colour(colour: str) -> str:
    """The outline drawn about a ring of ``colour``: black or white, whichever contrasts more with
    it (WCAG's contrast ratio). A ring and its outline are seen on any background: a white or
    light ring by its black outline on a bright column, the dark blue by its white one on a hole."""
    lum = _luminance(colour)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#FFFFFF"


def scale_bar_length(field_A: float) -> float:
    """A round length [Å] (1, 2 or 5 times a power of ten) of at most a fifth of ``field_A``."""
    target = field_A / 5.0
    p = 10.0 ** np.floor(np.log10(target))
    return float(max(m * p for m in (1.0, 2.0, 5.0) if m * p <= target))


def length_text(a: float) -> str:
    """A length [Å] as a scale bar is labelled: in nm from 1 nm."""
    return f"{a / 10:g} nm" if a >= 10 else f"{a:g} Å"


def overlay_figure(image: np.ndarray, columns: pd.DataFrame, *, class_names: Sequence[str] | None = None,
                   title: str | None = None, marker_size: float | None = None, sampling: float | None = None,
                   warning: str | None = None):
    """A figure of ``image`` (first of a focal series) with the columns marked, coloured by class.

    The figure shows the image at its own resolution (one figure pixel per image pixel; small
    images enlarged to at least 768 px wide, images wider than 4096 px shrunk), so that every
    column can be checked by zooming in. Each column is circled, the circle's diameter 0.6 of
    the median distance between neighbouring columns (at least 5 figure px): circles of
    neighbours do not touch, and each lies on its column's centre. ``marker_size`` [pt²] sets
    matplotlib's marker size instead. Each class has its colour (:func:`class_colours`, by its
    name), each ring an outline in black or white (:func:`outline_colour`), so that it shows on
    bright columns and dark holes alike; the legend is a band below the image, so that it hides
    no column.

    Above the image, a band (hiding no column either) with ``title`` (lines split at ``\n``),
    ``warning`` in red (a frame outside the locator's trust ranges), and, where ``sampling``
    [Å/px] is known, a scale bar drawn at the image's scale.
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
    font = float(np.clip(w * zoom / 80, 8.0, 14.0))  # [pt], of the legend and the band above
    font_px = font * dpi / 72
    import textwrap

    per_line = max(20, int(w * zoom / (0.56 * font_px)))  # characters that fit across the figure
    lines = [(t, "white") for part in (title or "").split("\n") for t in textwrap.wrap(part, per_line)]
    lines += [(t, "#FF4040") for part in (warning or "").split("\n") for t in textwrap.wrap(part, per_line)]
    bar_A = scale_bar_length(w * sampling) if sampling and sampling > 0 else None
    rows = len(lines) + (bar_A is not None)
    head = font_px * (1.5 * rows + 0.8) if rows else 0.0  # figure px above the image
    foot, ncol = 0.0, 1  # figure px below it for the legend, and its columns
    if len(columns):
        ks = np.unique(columns["cls"].to_numpy().astype(int)) if "cls" in columns else np.zeros(1, int)
        n_cls, longest = len(ks), max(len(class_label(class_names, k)) for k in ks)
        label_px = font_px * (0.62 * (longest + 8) + 2.5)  # "name (1234)" and its marker
        ncol = int(max(1, min(n_cls, (w * zoom) // label_px)))
        foot = font_px * (1.5 * -(-n_cls // ncol) + 0.8)
    fig_w, fig_h = w * zoom, h * zoom + head + foot
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes((0, foot / fig_h, 1, h * zoom / fig_h))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if len(columns):
        pt = 72.0 / dpi  # points per figure px
        from .intensity import nearest_spacing_px

        spacing = nearest_spacing_px([columns])
        diameter = max(5.0, 0.6 * spacing * zoom) if spacing else 8.0  # figure px
        size = marker_size if marker_size is not None else (diameter * pt) ** 2
        width_px = float(np.clip(diameter / 10, 1.0, 2.5))
        edge_px = max(1.0, 0.5 * width_px)  # the outline's width on each side of the ring
        cls = columns["cls"].to_numpy().astype(int) if "cls" in columns else np.zeros(len(columns), int)
        colours = class_colours(class_names)
        handles, labels = [], []
        for k in np.unique(cls):
            sel = cls == k
            name = class_label(class_names, k)
            colour = colours[k % len(colours)]
            y, x = columns["y"].to_numpy()[sel], columns["x"].to_numpy()[sel]
            under = ax.scatter(x, y, s=size, facecolors="none", edgecolors=outline_colour(colour),
                               linewidths=(width_px + 2 * edge_px) * pt, label=f"_outline of {name}")
            ring = ax.scatter(x, y, s=size, facecolors="none", edgecolors=colour, linewidths=width_px * pt,
                              label=f"{name} ({sel.sum()})")
            handles.append((under, ring))
            labels.append(ring.get_label())
        # the legend in a band below the image, never over a column
        from matplotlib.legend_handler import HandlerTuple

        lax = fig.add_axes((0, 0, 1, foot / fig_h))
        _band(lax)
        ring_px = np.sqrt(size) / pt  # (the legend's rings no larger than its letters)
        lax.legend(handles, labels, loc="center", ncol=ncol, fontsize=font, frameon=False, labelcolor="white",
                   handletextpad=0.3, columnspacing=1.2, borderaxespad=0.2,
                   handler_map={tuple: HandlerTuple(ndivide=1)},
                   markerscale=min(1.0, 0.8 * font * dpi / 72 / max(ring_px, 1e-6)))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if rows:
        # the band above: title lines, the warning, the scale bar (in figure px, y up)
        tax = fig.add_axes((0, 1 - head / fig_h, 1, head / fig_h))
        _band(tax)
        tax.set_xlim(0, fig_w)
        tax.set_ylim(0, head)
        pad = 0.6 * font_px
        for i, (text, colour) in enumerate(lines):
            tax.text(pad, head - font_px * (0.4 + 1.5 * i), text, color=colour, fontsize=font, va="top",
                     ha="left", fontweight="bold" if colour != "white" else "normal", gid="title" if
                     colour == "white" else "warning")
        if bar_A is not None:
            y = font_px * 0.4 + 0.5 * font_px
            length = bar_A / sampling * zoom  # figure px
            tax.plot([pad, pad + length], [y, y], color="white", linewidth=max(3.0, 0.35 * font_px) * 72 / dpi,
                     solid_capstyle="butt", gid="scale bar")
            tax.text(pad + length + 0.6 * font_px, y, length_text(bar_A), color="white", fontsize=font,
                     va="center", ha="left", gid="scale bar label")
    return fig


def _band(ax) -> None:
    """A dark band (the legend's, the title's) with no ticks or frame."""
    ax.set_facecolor("#16161c")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def overlay_png(image: np.ndarray, columns: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """Write :func:`overlay_figure` to a PNG file."""
    path = Path(path)
    fig = overlay_figure(image, columns, **kwargs)
    fig.savefig(path)
    return path
