"""Measuring each column's intensity: the mean of the frame within a small disk about its
position (its ``intensity``), and the floor of the image about it (its ``background``,
:func:`local_background`); ``intensity - background`` (:func:`net_intensity`) is what the
column adds. :mod:`etem.tracker.intensity` groups and classes columns by it."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .locate import max_filter


def nearest_spacing_px(tables: list[pd.DataFrame]) -> float | None:
    """The median over ``tables`` (one frame each) of their median distance from a column to its
    nearest neighbour [px]; None where no table has two columns."""
    from scipy.spatial import cKDTree

    per = []
    for t in tables:
        yx = t[["y", "x"]].to_numpy(np.float64) if len(t) >= 2 else np.empty((0, 2))
        yx = yx[np.isfinite(yx).all(1)]
        if len(yx) >= 2:
            d, _ = cKDTree(yx).query(yx, k=2)
            per.append(float(np.median(d[:, 1])))
    per = [v for v in per if v > 0]
    return float(np.median(per)) if per else None


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, 1, H, W]``: the mean over a ``k × k`` square about each pixel (k odd; separable; at
    the edges, over the part inside the image). By running sums, so that a wide square costs
    what a narrow one does (in float64: the sums of a frame's counts lose no digits)."""
    r = k // 2
    if r == 0:
        return x
    out = x.double()
    for _ in range(2):  # along x, then (transposed) along y
        n = out.shape[-1]
        # the running sum after r + 1 zeros, its total repeated r times: the window's sum at
        # pixel i is c[i + 2r + 1] - c[i]
        c = torch.nn.functional.pad(out.cumsum(-1), (0, r, 0, 0), mode="replicate")
        c = torch.nn.functional.pad(c, (r + 1, 0))
        i = torch.arange(n, device=x.device, dtype=out.dtype)
        count = torch.clamp(i + r + 1, max=n) - torch.clamp(i - r, min=0)
        out = ((c[..., 2 * r + 1:] - c[..., :n]) / count).transpose(-1, -2)
    return out.to(x.dtype).contiguous()


def local_background(images: torch.Tensor, reach_px: float, smooth_px: float,
                     dark: bool = False) -> tuple[torch.Tensor, int]:
    """``[B, H, W]`` → ``([B, H, W], 1)``: the floor of each image about each pixel, the level of
    the gaps between bright columns (the ceiling, ``dark``: between dark ones); :func:`_at`
    reads it at image pixels (the ``1``: its pixels are the image's).

    The image is averaged over a square of about ``smooth_px`` pixels (or a quarter of the
    reach where that is more; the shot noise would otherwise pull the floor down), opened over
    a square reaching ``reach_px`` each way (the minimum over the square, then the maximum of
    those minima: a sloping floor is kept where it is, not pulled down by the slope times the
    reach), averaged over a square reaching twice as far (a smooth surface, not a patchwork of
    plateaus, and less of the minima's noise; four times as far no longer follows the real
    MoS2 image's background: :class:`IntensityClasses`). With ``reach_px`` the
    nearest-neighbour distance of the columns, every pixel's square holds a gap between
    columns: the centre of a honeycomb's hexagon, of a square lattice's square, of a
    close-packed one's triangle lies within one such distance of any point.

    Every step is a window about each pixel, so that a column's floor depends on the specimen
    about it, not on where the frame begins (farther than about three reaches from the edge it
    is the same in any crop). It was made on blocks of the smoothing's size, on a grid tied to
    the frame's corner: on a real MoS2 ADF movie drifting by whole pixels (identical pixels) a
    column's floor then moved by about 1,300 counts (up to 3,900; 1 to 5 % of its net
    intensity) from one crop to the next, and its intensity class with it (8 to 17 false
    class changes in 12 frames). The running sums cost about 5 ms a 512² frame on one CPU
    core (the grid of blocks: 0.6 ms)."""
    f = max(1, int(round(max(smooth_px, reach_px / 4))))
    x = images.float()[:, None]
    if dark:
        x = -x
    x = _box_mean(x, f | 1)
    r = max(1, int(round(reach_px)))
    opened = max_filter(-max_filter(-x, r), r)
    out = _box_mean(opened, 4 * r + 1)[:, 0]  # (twice the reach: less of the minima's noise)
    return (-out if dark else out), 1


def _at(coarse: torch.Tensor, f: int, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear values of the coarse maps ``[B, h, w]`` (blocks of ``f`` px) at image pixels
    ``y, x`` of images ``b``."""
    _, h, w = coarse.shape
    fy = ((y.float() + 0.5) / f - 0.5).clamp(0, h - 1)
    fx = ((x.float() + 0.5) / f - 0.5).clamp(0, w - 1)
    y0, x0 = fy.floor().long(), fx.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy, wx = fy - y0, fx - x0
    c = coarse.reshape(coarse.shape[0], -1)
    v = lambda yy, xx: c[b, yy * w + xx]  # noqa: E731
    return (1 - wy) * ((1 - wx) * v(y0, x0) + wx * v(y0, x1)) + wy * ((1 - wx) * v(y1, x0) + wx * v(y1, x1))


def net_intensity(table: pd.DataFrame) -> np.ndarray:
    """What each column adds to the floor about it, ``intensity - background``, where the table
    has a finite ``background`` (else ``intensity``); ``background - intensity`` where most
    columns lie below their floor (dark columns: annular bright field), so that a stronger
    column gives a larger figure either way (SrTiO3 in ABF: O, then Ti-O, then Sr)."""
    inten = table["intensity"].to_numpy(np.float64)
    if "background" not in table.columns:
        return inten
    bg = table["background"].to_numpy(np.float64)
    ok = np.isfinite(bg) & np.isfinite(inten)
    net = inten - bg
    if ok.any() and np.median(net[ok]) < 0:
        net = -net
    return np.where(np.isfinite(bg), net, inten)


def column_intensity(tables: list[pd.DataFrame], images: torch.Tensor, *, radius_px: float,
                     background: bool = False, dark: bool = False) -> None:
    """Add ``intensity`` to each table: the mean of ``images[i]`` over a disk of ``radius_px``
    about each column of ``tables[i]`` (``y, x`` in pixels of that image; ``images``:
    ``[B, H, W]``, any device): the pixels whose centres lie within ``radius_px - 0.5`` in
    full, those up to ``radius_px + 0.5`` by how far inside that band they lie (about the part
    of each pixel inside the disk), the nearest pixel always. Pixels counted in or out as a
    whole made a column's mean jump as its position moved by a tenth of a pixel: on a real
    MoS2 ADF movie drifting by whole pixels the S columns' net intensities spread by 1.3 % from
    frame to frame, against 0.5 % so. Pixels outside the frame do not count; a column with no
    pixel in reach (off the frame) gets NaN. The tables are changed in place.

    With ``background``, also ``background``: :func:`local_background` at the column's nearest
    pixel, its reach the columns' nearest-neighbour distance (:func:`nearest_spacing_px`; 4
    times ``radius_px`` where no frame has two columns), ``dark`` for dark columns.

    One gather from the frames padded by the window's reach: 0.6 ms for 1,000 columns of a
    512² frame on 2 CPU cores (a gather with the indices clamped, in float64, took 1.6)."""
    counts = [len(t) for t in tables]
    if not sum(counts):
        for t in tables:
            t["intensity"] = np.empty(0, np.float64)
            if background:
                t["background"] = np.empty(0, np.float64)
        return
    B, H, W = images.shape
    dev = images.device
    r = max(0, math.ceil(radius_px + 0.5))  # (covers the disk and its rim: centres within radius_px + 1 of the nearest)
    with torch.no_grad():
        flat = torch.nn.functional.pad(images.float(), (r, r, r, r)).reshape(B, -1)
        wp = W + 2 * r
        yx = torch.as_tensor(np.concatenate([t[["y", "x"]].to_numpy(np.float32) for t in tables]), device=dev)
        b = torch.repeat_interleave(torch.arange(B, device=dev), torch.as_tensor(counts, device=dev))
        c = yx.round()
        d = torch.arange(-r, r + 1, device=dev)
        dy, dx = (g.reshape(-1) for g in torch.meshgrid(d, d, indexing="ij"))
        off = c - yx  # the nearest pixel's centre from the column
        dist = ((off[:, :1] + dy) ** 2 + (off[:, 1:] + dx) ** 2).sqrt()
        # a pixel's weight: 1 inside the disk, falling to 0 across the half pixel either side of
        # its rim (about the part of the pixel inside it), so that the mean follows the column's
        # position smoothly; the nearest pixel always counts in full
        near = (radius_px + 0.5 - dist).clamp(0, 1)
        near[:, (dy == 0) & (dx == 0)] = 1.0
        cy, cx = c[:, 0].long(), c[:, 1].long()
        py, px = cy[:, None] + dy, cx[:, None] + dx
        inside = near * ((py >= 0) & (py < H) & (px >= 0) & (px < W))
        base = (cy + r).clamp(0, H + 2 * r - 1) * wp + (cx + r).clamp(0, wp - 1)
        idx = (base[:, None] + (dy * wp + dx)).clamp(0, flat.shape[1] - 1)
        vals = flat[0][idx] if B == 1 else flat[b[:, None], idx]
        n = inside.sum(1)
        mean = (vals * inside).sum(1) / n.clamp(min=1e-12)
        out = torch.where(n > 0, mean, torch.full_like(mean, float("nan"))).double().cpu().numpy()
        if background:
            reach = nearest_spacing_px(tables) or 4 * max(radius_px, 1.0)
            coarse, f = local_background(images, reach, radius_px, dark)
            on = (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
            at = _at(coarse, f, b, cy, cx)
            bg = torch.where(on, at, torch.full_like(at, float("nan"))).double().cpu().numpy()
    start = 0
    for t, k in zip(tables, counts):
        t["intensity"] = out[start:start + k]
        if background:
            t["background"] = bg[start:start + k]
        start += k


def intensity_of_frames(tables: list[pd.DataFrame], frames, images: torch.Tensor | None, *,
                        radius_A: float, radius_px: float, dark: bool = False) -> None:
    """:func:`column_intensity` (with ``background``) for the tables of ``frames`` (each table
    in its frame's input pixels), on ``images`` (``[B, H, W]``: the frames' first images as
    recorded, where the preprocessor kept them on the device) or, where that is None, on each
    frame's own array. The disk's radius is ``radius_A`` where a frame's pixel size is known,
    else ``radius_px``; ``dark``: the columns are dark."""
    radii = [radius_A / f.sampling if f.sampling else radius_px for f in frames]
    if images is not None and images.shape[0] == len(frames) and len(set(radii)) == 1:
        column_intensity(tables, images, radius_px=radii[0], background=True, dark=dark)
        return
    for t, f, r in zip(tables, frames, radii):
        first = np.asarray(f.image).reshape(-1, *f.image.shape[-2:])[0]
        column_intensity([t], torch.from_numpy(np.ascontiguousarray(first, dtype=np.float32))[None], radius_px=r,
                         background=True, dark=dark)


# --------------------------------------------------------------------------- sublattices, groups
