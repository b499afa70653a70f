"""The image at every site in every frame as evidence of its occupancy (the ``"hmm"`` occupancy of
:class:`etem.tracker.sites.SiteMap`).

The detector says only "column" or "no column". Where it misses a thin surface column, the image
at the site still holds some of it: on the simulated Au HRTEM movie the frame's mean within 0.5 Å
of a surface site tells an occupied site from an empty one in 66–72 % of the pairs of frames in
which the network found nothing there (docs/guides/statistics.md). So each frame, the site map
takes the image's mean within ``[sites] intensity_radius_A`` of every site (its drift-corrected
position put back into the frame), on the frame's own scale (its mean and spread, from a
sparse grid of its pixels: dose changes do not move it), and the occupancy model learns, as it
learns the detection rates, how those values are spread at occupied and at empty sites: a
normal distribution for each state, with each site's own mean shrunk towards the mean pooled
over all sites (a thick core column and a thin one differ), and a variance that is the scatter
about a site's own mean plus the uncertainty of that mean (:meth:`IntensityEvidence.intensity_model`).
Each state is learned where the detector and the model agree (the occupied state's values
from frames in which the site's column was found, the empty state's from frames in which it
was not), so that a faint column whose values look like the background keeps values of its
own. A value then weighs as its likelihood ratio to the power 0.3 (0.3 of an independent
observation), at most ``e^0.9`` either way in one frame, and only once both states have been
seen in enough site-frames.
"""
from __future__ import annotations

from collections import deque
import math

import numpy as np

_PRIOR_MEAN = 10.0   # a site's own means are shrunk to the pooled means with this weight (frames)
_MIN_WEIGHT = 20.0   # expected site-frames in each state before intensities count
_MAX_LOG_RATIO = 3.0  # a likelihood ratio is taken as at most e^3 either way (then weighed by _WEIGHT)
_WEIGHT = 0.3        # each value counts as 0.3 of an independent one: the normal model is rough (an
                     # HRTEM column's contrast changes with its neighbours); 0.5 and 1 made more
                     # false flips and a larger occupancy error on the Au HRTEM demo movies
                     # (docs/guides/statistics.md)
_MIN_VAR = 0.01      # (the values' unit is the frame's spread)
_SCALE_SAMPLES = 1 << 14  # pixels of the sparse grid the frame's mean and spread are taken from


def disc_means(image: np.ndarray, yx: np.ndarray, radius_px: float) -> np.ndarray:
    """The mean of ``image`` (``[H, W]``) over a disc of ``radius_px`` about the pixel nearest
    each point of ``yx`` (``[N, 2]`` px): the pixels whose offsets from it lie within the
    radius, every ``step``-th one along each axis where the disc is wider than 5 pixels (so at
    most about 21 pixels a point: a mean over the disc's area, for a fifth of the reads at
    0.1 Å/px). NaN where no such pixel is in the frame, or the point is not finite. Only the
    pixels needed are read and converted."""
    yx = np.asarray(yx, float).reshape(-1, 2)
    H, W = image.shape
    r = max(0, math.floor(radius_px))
    step = max(1, math.ceil(r / 2))
    d = np.arange(-(r // step) * step, r + 1, step)
    dy, dx = (g.reshape(-1) for g in np.meshgrid(d, d, indexing="ij"))
    disc = dy * dy + dx * dx <= max(radius_px, 0.0) ** 2
    dy, dx = dy[disc], dx[disc]
    out = np.full(len(yx), np.nan)
    ok = np.isfinite(yx).all(1)
    c = np.rint(yx[ok]).astype(np.int64)
    cy, cx = c[:, 0], c[:, 1]
    reach = int(d.max()) if d.size else 0
    whole = (cy >= reach) & (cy < H - reach) & (cx >= reach) & (cx < W - reach)
    flat = image.reshape(-1) if image.flags.c_contiguous else np.ascontiguousarray(image).reshape(-1)
    at = np.flatnonzero(ok)
    base = cy[whole] * W + cx[whole]
    out[at[whole]] = flat[base[:, None] + (dy * W + dx)[None]].mean(axis=1, dtype=np.float64)
    part = ~whole  # (near or off the edge: the pixels inside only)
    if part.any():
        py, px = cy[part, None] + dy, cx[part, None] + dx
        inside = (py >= 0) & (py < H) & (px >= 0) & (px < W)
        vals = flat[np.clip(py, 0, H - 1) * W + np.clip(px, 0, W - 1)].astype(np.float64)
        n = inside.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[at[part]] = np.where(n > 0, (vals * inside).sum(1) / n, np.nan)
    return out


def frame_scale(image: np.ndarray) -> tuple[float, float] | None:
    """The mean and standard deviation of a frame's pixels, from a sparse grid of at most
    ``_SCALE_SAMPLES`` of them (a tenth of the cost of their median and median deviation,
    and as steady from frame to frame); None for a flat or non-finite frame."""
    step = max(1, int(math.sqrt(image.size / _SCALE_SAMPLES)))
    v = np.asarray(image[::step, ::step], np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size < 16:
        return None
    mean = float(v.mean())
    spread = float(np.sqrt(np.mean((v - mean) ** 2)))
    return (mean, spread) if spread > 0 else None


class IntensityEvidence:
    """The intensity half of the ``"hmm"`` occupancy; :class:`etem.tracker.sites.SiteMap` makes
    ``_int_stats`` (``[cap, 6]``: per site the weight, weighted sum and sum of squares of the
    values of the occupied frames in which its column was found, and the same of the empty
    frames in which it was not; :meth:`_count_intensity`) and calls :meth:`_init_intensity`."""

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
        # log N(z; mu1, var1) - log N(z; mu0, var0) = a + b z + c z^2, per site
        a = 0.5 * np.log(var0 / var1) - 0.5 * mu1 * mu1 / var1 + 0.5 * mu0 * mu0 / var0
        b = mu1 / var1 - mu0 / var0
        c = 0.5 / var0 - 0.5 / var1
        z = np.full((len(values), ns), np.nan)
        for i, v in enumerate(values):
            if v is not None:
                z[i, : len(v)] = v[:ns]
        log_ratio = z * c
        log_ratio += b
        log_ratio *= z
        log_ratio += a
        np.clip(log_ratio, -_MAX_LOG_RATIO, _MAX_LOG_RATIO, out=log_ratio)
        log_ratio[np.isnan(log_ratio)] = 0.0  # (no value: no evidence)
        log_ratio *= w * _WEIGHT
        return np.exp(log_ratio, out=log_ratio)

    def _count_intensity(self, z: np.ndarray | None, gamma: np.ndarray, det: np.ndarray) -> None:
        """Add a decided frame's values to the expected sums: to the occupied state's where the
        site was detected, by its probability of being occupied then (``gamma``), and to the
        empty state's where it was not, by its probability of being empty. So each state is
        learned where the detector and the model agree, anchored to the detector: a faint
        column (an HRTEM column whose contrast is near the background's) keeps its own
        occupied values and is not taken for an empty site that looks alike."""
        if z is None:
            return
        n = min(len(z), len(gamma))
        ok = np.flatnonzero(np.isfinite(z[:n]))
        if not ok.size:
            return
        v, d = z[ok], det[ok]
        g = gamma[ok] * d
        h = (1 - gamma[ok]) * ~d
        st = self._int_stats
        st[ok, 0] += g
        st[ok, 1] += g * v
        st[ok, 2] += g * v * v
        st[ok, 3] += h
        st[ok, 4] += h * v
        st[ok, 5] += h * v * v
