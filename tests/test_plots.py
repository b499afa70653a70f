"""The overlay PNG of `etem find --overlay`: every column can be checked by zooming in."""
from __future__ import annotations

import numpy as np
import pandas as pd
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
    drawn = {c.get_label().split(" (")[0]: to_hex(c.get_edgecolor()[0]).upper() for c in image_ax.collections}
    assert drawn == dict(zip(names, class_colours(names)))
