"""Image quality from the power spectrum: signal-to-noise, dose and resolution, per frame.

Every atom finder fails past some dose, pixel size, resolution or contrast (Wei et al.); these
figures say where a frame stands, so that it can be compared with what a model was trained on
and with the cut-offs its evaluation found (:mod:`etem.tracker.trust`). They are computed in
torch on the frames' own device, a batch at a time.

Method
------
The frame's central crop (at most 512 px a side), less its mean, under a Hann window: its power spectrum ``P(f)`` normalized so that
white noise of variance ``s²`` per pixel has ``P = s²`` everywhere.

- **Noise** ``s²``: the median of ``P`` over ln 2 where the image holds no signal: beyond
  1.6 times the signal band's edge (below) or in the spectrum's corners, ``|f| > 0.55``
  cycles/px, beyond the Nyquist circle, whichever is lower (images of atomic columns a few
  pixels wide hold little signal there). Shot noise and detector noise are white; so it is
  seen there as everywhere.
- **SNR**: the image's variance above the noise, over the noise of a 1 Å² patch:
  ``(var - s²) / (s² · sampling²)`` (per pixel, ``(var - s²) / s²``, where the sampling is
  unknown). Per area rather than per pixel, so that a finer pixel at the same dose is not
  taken for a noisier image. The variance above the noise is summed over the band that can
  hold signal, spacings down to 0.5 Å (the Nyquist circle where the sampling is unknown or
  coarser than 0.25 Å/px): outside it there is only noise, and counting it would add the
  noise estimate's own error (a few per cent of ``s²``) once per bin, which at fine pixels
  is as large as the signal of a weak-phase image at a few hundred e/Å².
- **Dose** [e/Å²]: for a counting image (counts ∝ electrons, no offset) the mean over the
  noise variance is the counts per pixel per unit gain, ``mean² / s²``, over the pixel area.
  Meaningless for images with an offset or processed ones; reported, never relied on alone.
- **Resolution** [Å] (px when the sampling is unknown): ``1 / f`` at the highest frequency where
  the ring-averaged power stands ``3×`` above the noise (rings one padded bin wide, a short
  running mean over rings against the chance excursions of single rings).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["measure", "white_noise_variance", "QUALITY_COLUMNS"]

#: The per-frame figures, in the order :func:`measure` returns them.
QUALITY_COLUMNS = ("snr", "dose_est", "resolution_A")

_CORNER_F = 0.55
#: Finest spacing [Å] that can carry signal (below every microscope's information limit).
_SIGNAL_D_MIN_A = 0.5
#: The noise is measured beyond this multiple of the band's edge (or in the corners).
_NOISE_MARGIN = 1.6
_CROP = 512
_RING_FACTOR = 3.0


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Hann window of an ``h x w`` image, its sum of squares, and ``|f|`` [cycles/px] of
    its rfft bins: the same for every frame of a stream, so made once (read only)."""
    wy = torch.hann_window(h, periodic=False, device=device, dtype=dtype)
    wx = torch.hann_window(w, periodic=False, device=device, dtype=dtype)
    win = wy[:, None] * wx[None, :]
    fy = torch.fft.fftfreq(h, device=device, dtype=dtype)
    fx = torch.fft.rfftfreq(w, device=device, dtype=dtype)
    return win, (win ** 2).sum(), torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, H, W]`` -> (power [B, H, W//2+1], |f| [cycles/px], windowed image, window), the power
    normalized so that white noise of variance s² per pixel has power s² in every bin."""
    _, h, w = x.shape
    win, win2, f = _grid(h, w, x.device, x.dtype)
    y = (x - x.mean(dim=(1, 2), keepdim=True)) * win
    p = torch.fft.rfft2(y).abs() ** 2 / win2
    return p, f, y, win


@functools.lru_cache(maxsize=64)
def _bins_beyond(h: int, w: int, f_min: float, device: torch.device) -> torch.Tensor:
    """Flat indices of the rfft bins of an ``h x w`` image beyond ``f_min`` cycles/px."""
    return (_grid(h, w, device, torch.float32)[2].flatten() > f_min).nonzero().squeeze(1)


@functools.lru_cache(maxsize=16)
def _rings(h: int, w: int, device: torch.device) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ring number of each rfft bin (rings of width ``1 / min(h, w)`` cycles/px; the last one
    holds what lies beyond), the bins in each ring, and each bin's Parseval weight (a column of
    the rfft other than the first and the Nyquist one stands for two bins)."""
    n_rings = int(min(h, w) // 2)
    f = _grid(h, w, device, torch.float32)[2]
    ring = torch.clamp((f * min(h, w)).round().long(), max=n_rings + 1).flatten()
    counts = torch.bincount(ring, minlength=n_rings + 2).float()
    weight = torch.full((w // 2 + 1,), 2.0, device=device, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    return n_rings, ring, counts, weight


def white_noise_variance(images: torch.Tensor) -> torch.Tensor:
    """Per image ``[B, H, W]`` (the whole image, no crop): the variance of its white noise per
    pixel, from the power spectrum's corners (the power of white noise in one bin is
    exponentially distributed: median = ln 2 × mean)."""
    p, _, _, _ = _power_spectrum(images.float())
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    return p.reshape(b, -1)[:, _bins_beyond(h, w, _CORNER_F, images.device)].median(dim=1).values / math.log(2)


@torch.no_grad()
def measure(images: torch.Tensor | np.ndarray | Sequence[np.ndarray],
            sampling: float | Sequence[float | None] | None = None) -> np.ndarray:
    """SNR, dose [e/Å²] and resolution [Å] of each image of a batch: rows of :data:`QUALITY_COLUMNS`.

    Parameters
    ----------
    images
        ``[B, H, W]`` (a tensor on any device, or arrays), raw frames as recorded (before any
        normalization). A focal series: pass its first image.
    sampling
        Pixel size [Å/px], one for all or one per image; None gives dose per px² and
        resolution in px (and NaN dose where unknown is not wanted: see the columns).
    """
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.stack([np.asarray(i) for i in images]))
    if x.ndim == 2:
        x = x[None]
    x = x.to(torch.float32)
    # The central crop of at most _CROP pixels a side: the figures are properties of the imaging,
    # not of the field of view, and the cost stays bounded for large frames.
    h0, w0 = x.shape[-2:]
    ch, cw = min(h0, _CROP), min(w0, _CROP)
    x = x[:, (h0 - ch) // 2:(h0 - ch) // 2 + ch, (w0 - cw) // 2:(w0 - cw) // 2 + cw]
    b, h, w = x.shape
    samp = np.array([sampling] * b if sampling is None or np.isscalar(sampling) else list(sampling), dtype=object)
    samp = np.array([np.nan if s is None else float(s) for s in samp])
    mean = x.mean(dim=(1, 2))
    p, f, y, win = _power_spectrum(x)
    # the signal band, and the noise seen beyond it with a margin (the corners at least)
    f_band = np.where(np.isfinite(samp), np.minimum(0.5, samp / _SIGNAL_D_MIN_A), 0.5)
    f_noise = np.minimum(_CORNER_F, _NOISE_MARGIN * f_band)
    flat = p.reshape(b, -1)
    if len(set(f_noise.tolist())) == 1:  # one pixel size: the batch's noise in one go
        noise = flat[:, _bins_beyond(h, w, float(f_noise[0]), x.device)].median(dim=1).values
    else:
        noise = torch.stack([flat[i, _bins_beyond(h, w, float(fn), x.device)].median()
                             for i, fn in enumerate(f_noise)])
    noise = (noise / math.log(2)).clamp_min(torch.finfo(x.dtype).tiny)
    # ring averages: rings of width 1/min(h, w) cycles/px
    n_rings, ring, counts, weight = _rings(h, w, x.device)
    sums = torch.zeros(b, n_rings + 2, device=x.device, dtype=x.dtype)
    sums.index_add_(1, ring, flat)
    prof = sums[:, 1:n_rings + 1] / counts[1:n_rings + 1].clamp_min(1)
    prof = torch.nn.functional.avg_pool1d(prof[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    above = prof > _RING_FACTOR * noise[:, None]
    idx = torch.arange(1, n_rings + 1, device=x.device)
    last = torch.where(above, idx, torch.zeros_like(idx)).max(dim=1).values  # 0: nothing above
    # variance above the noise within the signal band (Parseval over the full spectrum)
    band = f[None] <= torch.as_tensor(f_band, device=x.device, dtype=f.dtype)[:, None, None]
    wb = band.double() * weight
    excess = ((p.double() - noise.double()[:, None, None]) * wb).sum(dim=(1, 2)) / (h * w)
    # what the host needs, in one copy
    excess_np, noise_np, mean_np, last_np = torch.stack(
        [excess, noise.double(), mean.double(), last.double()]).cpu().numpy()
    out = np.empty((b, 3))
    area = np.where(np.isfinite(samp), samp ** 2, 1.0)
    out[:, 0] = np.maximum(excess_np, 0.0) / noise_np / area
    per_px = mean_np ** 2 / noise_np
    out[:, 1] = np.where(mean_np > 0, per_px / area, np.nan)
    f_lim = last_np / min(h, w)
    with np.errstate(divide="ignore"):
        res_px = np.where(f_lim > 0, 1.0 / np.maximum(f_lim, 1e-12), math.inf)
    out[:, 2] = np.where(np.isfinite(samp), res_px * samp, res_px)
    return out
