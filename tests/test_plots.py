"""The overlay PNG of `etem find --overlay`: every column can be checked by zooming in."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from scipy.spatial import cKDTree

from etem.tracker.plots import overlay_png


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


def _ring_distances(png, cols: pd.DataFrame, scale: float) -> np.ndarray:
    """Distances [image px] from each strongly red pixel of the PNG to the nearest column."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 120) & (rgb[..., 2] < 120)
    yx = (np.argwhere(red) + 0.5) / scale - 0.5
    d, _ = cKDTree(cols[["y", "x"]].to_numpy()).query(yx)
    return d


def test_a_large_image_is_drawn_at_its_own_resolution_with_circles_that_do_not_touch(tmp_path):
    img, cols = _lattice(1024, 16.0)
    png = overlay_png(img, cols, tmp_path / "big.png")
    assert _size(png) == (1024, 1024)  # before: 770 px wide, whatever the image
    d = _ring_distances(png, cols, 1.0)
    assert len(d) > 8 * len(cols)  # every column circled
    # each circle lies on its column, its radius 0.3 of the spacing: circles of neighbours apart
    assert 0.2 * 16 < np.median(d) < 0.4 * 16
    assert np.quantile(d, 0.95) < 0.45 * 16


def test_a_small_image_is_enlarged_and_its_circles_follow_the_spacing(tmp_path):
    for spacing in (10.0, 20.0):
        img, cols = _lattice(128, spacing)
        png = overlay_png(img, cols, tmp_path / f"small{spacing:g}.png")
        w, h = _size(png)
        assert w == 768 and h == 768
        d = _ring_distances(png, cols, 768 / 128)
        assert 0.2 * spacing < np.median(d) < 0.4 * spacing


def test_an_overlay_of_one_column_or_none(tmp_path):
    img, cols = _lattice(64, 20.0)
    assert _size(overlay_png(img, cols.iloc[:1], tmp_path / "one.png")) == (768, 768)
    assert _size(overlay_png(img, cols.iloc[:0], tmp_path / "none.png")) == (768, 768)
