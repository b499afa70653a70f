"""The overlay PNG of `etem find --overlay`: every column can be checked by zooming in."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from etem.tracker.plots import CLASS_COLOURS, class_colours, overlay_figure, overlay_png


def _lattice(n_px: int, spacing: float, sigma: float = 2.0):
    """A square lattice of Gaussian columns on a faint background, and its columns table."""
    c = np.arange(spacing / 2, n_px - spacing / 2, spacing)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    cols = pd.DataFrame({"y": yy.ravel(), "x": xx.ravel(), "cls": 0})
    g = np.arange(n_px, dtype=np.float32)
    img = np.full((n_px, n_px), 0.1, np.float32)
    for v in c:
        img += np.exp(-0.5 * ((g[:, None] - v) / sigma) ** 2) * np.exp(-0.5 * ((g[None, :] - c[:, None, None]) / sigma) ** 2).sum(0)
    return img, cols


def _size(png) -> tuple[int, int]:
    with Image.open(png) as im:
        return im.size


def _ring_distances(png, cols: pd.DataFrame, scale: float, rows: int) -> np.ndarray:
    """Distances [image px] from each pixel of the PNG's image (its first ``rows`` rows, above the
    legend) in class 0's colour (orange, #E69F00) to the nearest column."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)[:rows]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    orange = (r - b > 80) & (g - b > 40)  # (the image is grey: r = g = b)
    yx = (np.argwhere(orange) + 0.5) / scale - 0.5
    d, _ = cKDTree(cols[["y", "x"]].to_numpy()).query(yx)
    return d


def test_a_large_image_is_drawn_at_its_own_resolution_with_circles_that_do_not_touch(tmp_path):
    img, cols = _lattice(1024, 16.0)
    png = overlay_png(img, cols, tmp_path / "big.png")
    w, h = _size(png)
    assert w == 1024 and 1024 < h < 1024 + 80  # before: 770 px wide, whatever the image (+ the legend below)
    d = _ring_distances(png, cols, 1.0, 1024)
    assert len(d) > 8 * len(cols)  # every column circled
    # each circle lies on its column, its radius 0.3 of the spacing: circles of neighbours apart
    assert 0.2 * 16 < np.median(d) < 0.4 * 16
    assert np.quantile(d, 0.95) < 0.45 * 16


def test_a_small_image_is_enlarged_and_its_circles_follow_the_spacing(tmp_path):
    for spacing in (10.0, 20.0):
        img, cols = _lattice(128, spacing)
        png = overlay_png(img, cols, tmp_path / f"small{spacing:g}.png")
        w, h = _size(png)
        assert w == 768 and 768 < h < 768 + 80
        d = _ring_distances(png, cols, 768 / 128, 768)
        assert 0.2 * spacing < np.median(d) < 0.4 * spacing


def test_an_overlay_of_one_column_or_none(tmp_path):
    img, cols = _lattice(64, 20.0)
    w, h = _size(overlay_png(img, cols.iloc[:1], tmp_path / "one.png"))
    assert w == 768 and 768 < h < 768 + 80
    assert _size(overlay_png(img, cols.iloc[:0], tmp_path / "none.png")) == (768, 768)


OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}


def test_a_class_has_the_same_colour_in_every_run():
    """MoS2 intensity groups: B0 was blue in one run and yellow in another (the colour went by the
    class number), the two A groups red and green; now a name has one colour, colour-blind safe."""
    one, other = class_colours(["A", "B0", "B1"]), class_colours(["A0", "A1", "A2", "B0", "B1", "no sublattice"])
    assert one[1:3] == other[3:5]  # B0, B1
    assert len(set(other[:6])) == 6  # every group of a run its own colour
    assert set(other[:5]) <= OKABE_ITO and set(CLASS_COLOURS) <= OKABE_ITO | {"#FFFFFF"}
    assert class_colours(["Mo", "S2", "S"])[:3] == class_colours(["Mo", "S2", "S", "Se"])[:3]
    assert class_colours(["x", "y", "z"])[:3] == class_colours(["x", "y", "z"])[:3]  # (a name not known: its hash)
    assert len(set(class_colours(["x", "y", "z", "w"])[:4])) == 4
    assert class_colours(None) == list(CLASS_COLOURS)  # (without names: the palette, by class number)


def test_the_legend_hides_no_column():
    """The legend covered ~260x180 px of the top right of the image, and a column of a 128² crop:
    now it lies in a band below the image; each class is drawn in its name's colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex

    img, cols = _lattice(128, 16.0)
    cols["cls"] = np.arange(len(cols)) % 3
    names = ["A", "B0", "B1"]
    fig = overlay_figure(img, cols, class_names=names)
    FigureCanvasAgg(fig).draw()
    image_ax = fig.axes[0]
    [legend] = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    box, image_box = legend.get_window_extent(), image_ax.get_window_extent()
    assert box.y1 <= image_box.y0 + 1  # below the image (display coordinates: y up)
    drawn = {c.get_label().split(" (")[0]: to_hex(c.get_edgecolor()[0]).upper() for c in image_ax.collections
             if not c.get_label().startswith("_")}  # (not the rings' outlines)
    assert drawn == dict(zip(names, class_colours(names)))


def _ring_pixels(png, cols: pd.DataFrame, scale: float, top: int, radius: float) -> np.ndarray:
    """The RGB pixels (0–1) of the PNG within ``radius`` image px of the first column, the image
    ``top`` figure px below the PNG's top."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).astype(float) / 255
    y, x = cols[["y", "x"]].to_numpy()[0]
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    near = np.hypot((yy - top + 0.5) / scale - 0.5 - y, (xx + 0.5) / scale - 0.5 - x) <= radius
    return rgb[near]


def test_every_ring_shows_on_a_bright_column_and_on_a_dark_hole(tmp_path):
    """On the real MoS2 image the white rings of the columns on no sublattice vanished on bright
    columns, and the dark blue of the faint ones on the dark hole: each ring now has an outline
    (black or white, whichever contrasts with its colour), so that every class leaves pixels
    of WCAG's contrast ratio of at least 4.5 (body text's) on a white image and on a black one
    (the dark blue on black: 4.0)."""
    names = ["A (Mo)", "B0 (S2)", "B1 (SeS)", "no sublattice", "faint", "B2"]
    for k, name in enumerate(names):
        cols = pd.DataFrame({"y": [32.0, 32.0, 96.0, 96.0], "x": [32.0, 96.0, 32.0, 96.0], "cls": k})
        for level in (0.0, 1.0):
            img = np.full((128, 128), level, np.float32)
            img[0, 0] = 1.0 - level  # (the stretch needs two levels)
            png = overlay_png(img, cols, tmp_path / f"{k}_{level}.png", class_names=names)
            px = _ring_pixels(png, cols, 768 / 128, 0, 20.0)
            lin = np.where(px <= 0.04045, px / 12.92, ((px + 0.055) / 1.055) ** 2.4)
            lum = lin @ np.array([0.2126, 0.7152, 0.0722])  # (WCAG's relative luminance)
            if level == 1.0:
                assert 1.05 / (lum.min() + 0.05) >= 4.5, (name, "not seen on a bright column")
            else:
                assert (lum.max() + 0.05) / 0.05 >= 4.5, (name, "not seen on a dark hole")
    from etem.tracker.plots import outline_colour

    assert outline_colour("#FFFFFF") == "#000000" and outline_colour("#0072B2") == "#FFFFFF"
    assert class_colours(["faint"])[0] != "#0072B2"  # (no longer the dark blue)


def test_the_overlay_says_what_it_shows_with_a_scale_bar_and_the_trust_warning():
    """The find overlay had no title, pixel size, scale bar or trust warning: a band above the
    image now holds the title's lines, the warning in red and a scale bar as long as it says."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex

    img, cols = _lattice(128, 16.0)
    fig = overlay_figure(img, cols, title="movie.h5 — frame 0 of 60\n0.2 Å/px (from the file)",
                         warning="outside the locator's trust ranges: contrast — columns may be false",
                         sampling=0.2)
    FigureCanvasAgg(fig).draw()
    image_ax = fig.axes[0]
    [band] = [a for a in fig.axes[1:] if any(t.get_gid() == "title" for t in a.texts)]
    texts = {t.get_gid(): [] for t in band.texts}
    for t in band.texts:
        texts[t.get_gid()].append(t)
    assert [t.get_text() for t in texts["title"]] == ["movie.h5 — frame 0 of 60", "0.2 Å/px (from the file)"]
    [warn] = texts["warning"]
    assert "trust ranges" in warn.get_text() and to_hex(warn.get_color()).upper() == "#FF4040"
    # above the image, hiding none of it
    assert band.get_window_extent().y0 >= image_ax.get_window_extent().y1 - 1
    # the scale bar: 128 px × 0.2 Å = 25.6 Å, a fifth of it rounded down: 5 Å, 25 image px long
    [label] = texts["scale bar label"]
    assert label.get_text() == "5 Å"
    [bar] = [line for line in band.lines if line.get_gid() == "scale bar"]
    x0, x1 = bar.get_xdata()
    zoom = image_ax.get_window_extent().width / 128
    assert (x1 - x0) == pytest.approx(25 * zoom, rel=1e-6)
    # without a pixel size, no scale bar; without any words, no band
    fig = overlay_figure(img, cols, title="x")
    assert not any(line.get_gid() == "scale bar" for a in fig.axes for line in a.lines)
    assert len(overlay_figure(img, cols).axes) == 2
