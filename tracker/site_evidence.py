"""The image at every site in every frame as evidence of its occupancy (the ``"hmm"`` occupancy of
:class:`etem.tracker.sites.SiteMap`).

The detector says only "column" or "no column". Where it misses a thin surface column, the image
at the site still holds some of it: on the simulated Au HRTEM movie the frame's mean within 0.5 Å
of a surface site tells an occupied site from an empty one in 66–72 % of the pairs of frames in
which the network found nothing there (docs/guides/statistics.md). So each frame, the site map
takes the image's mean within ``[sites] intensity_radius_A`` of every site (its drift-corrected
position put back into the frame), on the frame's own scale (its median and spread, from a
sparse grid of its pixels: dose changes do not move it), and the occupancy model learns, as it
learns the detection rates, how those values are spread at occupied and at empty sites: a
normal distribution for each state, with each site's own mean shrunk towards the mean pooled
over all sites (a thick core column and a thin one differ), and a variance that is the scatter
about a site's own mean plus the uncertainty of that mean (:meth:`IntensityEvidence.intensity_model`).
A value then weighs as the square root of its likelihood ratio (half an independent
observation), at most ``e^1.5`` either way in one frame, and only once both states have been
seen in enough site-frames.
"""
from __future__ import annotations

from collections import deque
import math

import numpy as np

_PRIOR_MEAN = 10.0   # a site's own means are shrunk to the pooled means with this weight (frames)
_MIN_WEIGHT = 20.0   # expected site-frames in each state before intensities count
_MAX_LOG_RATIO = 3.0  # a likelihood ratio is taken as at most e^3 either way (then weighed by _WEIGHT)
_WEIGHT = 0.5        # each value counts as half an independent one: the normal model is rough (an
                     # HRTEM column's contrast changes with its neighbours), and more weight made
                     # more false flips on the Au HRTEM demo movies (docs/guides/statistics.md)
_MIN_VAR = 0.01      # (the values' unit is the frame's spread)
_SCALE_SAMPLES = 1 << 14  # pixels of the sparse grid the frame's median and spread are taken from


def disc_means(image: np.ndarray, yx: np.ndarray, radius_px: float) -> np.ndarray:
    """The mean of ``image`` (``[H, W]``) over the pixels whose centres lie within
    ``radius_px`` of each point of ``yx`` (``[N, 2]`` px); NaN where no such pixel is in the
    frame. Only the pixels needed are read and converted."""
    yx = np.asarray(yx, float).reshape(-1, 2)
    H, W = image.shape
    r = max(0, math.ceil(radius_px))
    d = np.arange(-r, r + 1)
    dy, dx = (g.reshape(-1) for g in np.meshgrid(d, d, indexing="ij"))
    c = np.rint(yx)
    off = c - yx
    near = (off[:, :1] + dy) ** 2 + (off[:, 1:] + dx) ** 2 <= radius_px ** 2
    with np.errstate(invalid="ignore"):
        cy, cx = np.nan_to_num(c[:, :1], nan=-1e9).astype(np.int64), np.nan_to_num(c[:, 1:], nan=-1e9).astype(np.int64)
    py, px = cy + dy, cx + dx
    inside = near & (py >= 0) & (py < H) & (px >= 0) & (px < W)
    flat = image.reshape(-1) if image.flags.c_contiguous else np.ascontiguousarray(image).reshape(-1)
    vals = flat[np.clip(py, 0, H - 1) * W + np.clip(px, 0, W - 1)].astype(np.float64)
    n = inside.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (vals * inside).sum(1) / n, np.nan)


def frame_scale(image: np.ndarray) -> tuple[float, float] | None:
    """The median and spread (1.4826 median absolute deviations) of a frame's pixels, from a
    sparse grid of at most ``_SCALE_SAMPLES`` of them; None for a flat or non-finite frame."""
    step = max(1, int(math.sqrt(image.size / _SCALE_SAMPLES)))
    v = np.asarray(image[::step, ::step], np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size < 16:
        return None
    med = float(np.median(v))
    spread = 1.4826 * float(np.median(np.abs(v - med)))
    if not spread > 0:
        spread = float(v.std())
    return (med, spread) if spread > 0 else None


class IntensityEvidence:
    """The intensity half of the ``"hmm"`` occupancy; :class:`etem.tracker.sites.SiteMap` makes
    ``_int_stats`` (``[cap, 6]``: per site the expected occupied frames, sum and sum of squares
    of the values in them, and the same for empty frames) and calls :meth:`_init_intensity`."""

    def _init_intensity(self, radius_px: float) -> None:
        self.intensity_radius_px = radius_px
        # each pending frame's values at the sites there were then (None: not taken)
        self._pending_z: deque[np.ndarray | None] = deque()

    def _site_values(self, image: np.ndarray | None, offset) -> np.ndarray | None:
        """Every site's value in this frame (``[n_sites]``, NaN off the frame), on the frame's
        scale; None where there is no image, or no use for one."""
        if image is None or self.intensity_radius_px <= 0 or self.cfg.occupancy != "hmm" or not self.n_sites:
            return None
        image = np.asarray(image)
        if image.ndim == 3:  # a focal series: its first image, as the columns' intensities
            image = image[0]
        scale = frame_scale(image)
        if scale is None:
            return None
        yx = self._pos[: self.n_sites] + np.asarray(offset if offset is not None else (0.0, 0.0), float)
        return (disc_means(image, yx, self.intensity_radius_px) - scale[0]) / scale[1]

    def intensity_model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The intensity model as it stands: for each site, the mean and variance of its value
        when occupied and when empty (``mu1, mu0, var1, var0``, ``[n_sites]`` each); None until
        both states have been seen in enough site-frames.

        A hierarchical normal model per state: each site's mean is shrunk towards the mean
        pooled over the sites, and a value's variance is the scatter about a site's own mean
        plus the uncertainty of that mean: the spread of the sites' means, shrinking as the
        site is seen in that state. A site never seen empty (a core column) is judged against
        the empty values of all sites, and an edge site seen empty for a while by its own."""
        ns = self.n_sites
        out = []
        for w, s, q in (self._int_stats[:ns, 0:3].T, self._int_stats[:ns, 3:6].T):
            W = float(w.sum())
            if W < _MIN_WEIGHT:
                return None
            m = float(s.sum()) / W
            with np.errstate(invalid="ignore", divide="ignore"):
                own = np.where(w > 0, s / w, m)
                within = float(np.where(w > 0, q - s * own, 0.0).sum()) / W  # (about each site's mean)
            between = float((w * (own - m) ** 2).sum()) / W  # (the sites' means about the pooled one)
            shrink = _PRIOR_MEAN / (w + _PRIOR_MEAN)
            out += [own + shrink * (m - own), max(within, _MIN_VAR) + between * shrink]
        mu1, var1, mu0, var0 = out
        return mu1, mu0, var1, var0

    def _intensity_ratios(self, values: list[np.ndarray | None], ns: int, w: float) -> np.ndarray | None:
        """For each frame's values (``values``, each of the sites there were then), each site's
        likelihood ratio occupied : empty, tempered by ``w`` (``[len(values), ns]``; 1 where a
        frame or a site has no value); None where the model is not ready or no frame has values."""
        if all(v is None for v in values):
            return None
        model = self.intensity_model()
        if model is None:
            return None
        mu1, mu0, var1, var0 = model
        z = np.full((len(values), ns), np.nan)
        for i, v in enumerate(values):
            if v is not None:
                z[i, : len(v)] = v[:ns]
        log_ratio = 0.5 * np.log(var0 / var1) - 0.5 * (z - mu1) ** 2 / var1 + 0.5 * (z - mu0) ** 2 / var0
        log_ratio = np.clip(np.nan_to_num(log_ratio, nan=0.0), -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        return np.exp(w * _WEIGHT * log_ratio)

    def _count_intensity(self, z: np.ndarray | None, gamma: np.ndarray) -> None:
        """Add a decided frame's values to the expected sums, by each site's probability of
        being occupied then (``gamma``)."""
        if z is None:
            return
        n = min(len(z), len(gamma))
        ok = np.flatnonzero(np.isfinite(z[:n]))
        if not ok.size:
            return
        v, g = z[ok], gamma[ok]
        st = self._int_stats
        st[ok, 0] += g
        st[ok, 1] += g * v
        st[ok, 2] += g * v * v
        h = 1 - g
        st[ok, 3] += h
        st[ok, 4] += h * v
        st[ok, 5] += h * v * v
