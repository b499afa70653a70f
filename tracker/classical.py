"""A classical column finder behind the engine protocol: no network, no training.

The scale-normalized Laplacian of Gaussian at the column width is the classic detector of
Gaussian-like blobs: its response peaks on columns and ignores slow background changes. Its
response is turned into a pseudo-probability per image, so the same
:func:`~etem.tracker.locate.locate` (and its threshold ``t``) serves trained and classical
engines alike. A column passes when its response ``r`` reaches ``t * scale``, where

    scale = min(reference, max(k * noise / t, m * reference / t))

- ``reference``: a high quantile (0.99) of the heights of the response's positive local maxima
  above their Otsu split (noise maxima below, columns above): the strong columns' height. With
  this alone a column passes at ``t`` times the strong columns' response.
- ``noise``: the standard deviation of the response to the image's white noise (its variance
  from the power spectrum's corners, times the kernel's energy). A column standing ``k = 6``
  noise deviations out passes too, however faint next to the strongest: the thin surface
  columns of a particle whose core columns are ten atoms tall, the S2 sublattice next to Mo.
- ``m = 0.05``: a floor for images without white noise (noise-free simulations, filtered data),
  where ``k * noise`` would let every ripple through.

The column width comes from the frames' pixel size (0.45 Å by default) or, where that is
unknown, from the image itself (:func:`column_width_px`).

The map is ``r / scale`` below the threshold and logarithmic from there to the reference
(probability 1), so columns weaker than the reference keep peaked, not clipped, profiles for the
sub-pixel fit. ``DEFAULT_THRESHOLD = 0.35``.

Measured (2026-11-23, classical locator, columns scored within 1 Å): toy movies F1 1.000 at
300 e/Å² per frame; in-situ Au [110] movies from abTEM column waves, HRTEM at 3000 e/Å² F1 0.997
(0.73 without the noise criterion), HAADF-STEM at 300 e/Å² F1 0.980 (0.947); HRTEM at 300 e/Å²
0.75, where columns of 1-4 atoms are within the noise. On real images: SrTiO3 [110] ADF 221
columns, ABF (dark) 330 with the oxygen columns, MoS2 ADF 2762 (Mo and about half of S2).
An image with no columns at all still yields its strongest noise maxima.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch

from .errors import ConfigError, choice_error
from .locate import LocateConfig, locate, max_filter
from .preprocess import separable_filter, shared_kernel1d
from .quality import white_noise_variance

Contrast = Literal["bright", "dark"]
_CONTRAST = ("bright", "dark")

#: The baseline threshold of :func:`find_columns_classical` (see the module docstring).
DEFAULT_THRESHOLD = 0.35
#: A column also passes when its response stands this many noise standard deviations out …
NOISE_SIGMAS = 6.0
#: … and at least this fraction of the strong columns' (a floor for noise-free images).
MIN_RELATIVE = 0.05
#: The column width [px] where neither the pixel size nor the image tells it.
DEFAULT_SIGMA_PX = 2.0


_ENERGY: dict[tuple[float, str], float] = {}

#: Where the pixel size is unknown, the column width is measured on the image
#: (:func:`column_width_px`): the autocorrelation's half width at half height, r½, over this
#: gives the width (1.665 = √2 · √(2 ln 2): a Gaussian column of width σ correlates with itself
#: as a Gaussian of width σ√2), …
_HWHM_PER_SIGMA = 1.665
#: … times this: the widths so measured are 0.85–0.86 of the locator's 0.45 Å on the real SrTiO3
#: and MoS2 ADF images at their known pixel sizes, 0.75–0.92 on simulated Au and MoS2 movies
#: (HRTEM and STEM, 0.05–0.2 Å/px) and 0.91–0.97 on Gaussian toy columns (the first minimum,
#: which sets the baseline, lies on the neighbours' tails).
_WIDTH_SCALE = 1.2
#: Lag 1 must keep this many times 1/crop of the zero lag (white noise keeps about ±1/crop).
_MIN_CORRELATION = 4.0


def column_width_px(image: np.ndarray, *, crop: int = 512) -> float | None:
    """The Gaussian width [px] of the columns in ``image`` (``[H, W]``, or ``[F, H, W]``: the
    first image), measured from its autocorrelation; None where it cannot be measured.

    For frames whose pixel size is unknown, where the locator's width in Å
    (``EngineConfig.column_sigma_A``) cannot be turned into pixels. The central ``crop``² of the
    image is windowed and correlated with itself; the radial profile of the correlation falls
    from a column's own peak to a first minimum between the columns and their neighbours. Its
    half width at half height over that minimum gives the width (``_HWHM_PER_SIGMA``,
    ``_WIDTH_SCALE``). Shot noise, white, adds to the zero lag alone, which the measure leaves
    out: it holds at any dose. None where lag 1 keeps less than 4/crop of the zero lag (white
    noise, a blank frame) or the profile has no minimum within a sixth of the crop (no columns,
    or columns wider than about a twentieth of it). The result lies in [1, crop / 16] px.
    """
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2 or a.dtype.kind not in "uif":
        return None
    h, w = a.shape
    c = min(h, w, crop)
    if c < 16:
        return None
    a = a[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c].astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        if not finite.any():
            return None
        a = np.where(finite, a, a[finite].mean())
    win = np.hanning(c)
    a = (a - a.mean()) * np.outer(win, win)
    spec = np.fft.rfft2(a, s=(2 * c, 2 * c))  # padded: no wrap-around
    acf = np.fft.irfft2(spec.real**2 + spec.imag**2, s=(2 * c, 2 * c))
    if not acf[0, 0] > 0:
        return None
    rmax = c // 6
    lags = np.r_[0:rmax + 1, -rmax:0]
    sub = acf[np.ix_(lags % (2 * c), lags % (2 * c))]
    r = np.rint(np.hypot(*np.meshgrid(lags, lags, indexing="ij"))).astype(np.int64)
    keep = r <= rmax
    prof = np.bincount(r[keep], sub[keep]) / np.bincount(r[keep])
    prof = prof / prof[0]
    if prof[1] < _MIN_CORRELATION / c:
        return None
    smooth = prof.copy()  # the minimum is sought on it (faint images)
    smooth[2:-1] = 0.25 * prof[1:-2] + 0.5 * prof[2:-1] + 0.25 * prof[3:]
    low = next((j for j in range(2, rmax) if smooth[j] < smooth[j - 1] and smooth[j] <= smooth[j + 1]), None)
    if low is None:
        return None
    half = prof[low] + 0.5 * (prof[1] - prof[low])
    k = next(j for j in range(2, low + 1) if prof[j] < half)
    r_half = (k - 1) + (prof[k - 1] - half) / (prof[k - 1] - prof[k])
    return float(np.clip(_WIDTH_SCALE * r_half / _HWHM_PER_SIGMA, 1.0, c / 16))


def _log_kernel_energy(sigma_px: float, device: torch.device) -> float:
    """Sum of the squared LoG kernel: white noise of variance s² gives a response of variance
    s² times this."""
    key = (round(float(sigma_px), 6), str(device))
    if key not in _ENERGY:
        n = 2 * int(np.ceil(5 * sigma_px)) + 1
        delta = torch.zeros(1, n, n, device=device)
        delta[0, n // 2, n // 2] = 1.0
        _ENERGY[key] = float((log_response(delta, sigma_px) ** 2).sum())
    return _ENERGY[key]


def log_response(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Scale-normalized negative Laplacian of Gaussian ``-sigma^2 (G_yy + G_xx) * I``.

    Bright blobs of width ``sigma_px`` give positive peaks. ``images`` is ``[..., H, W]``;
    boundaries are symmetric.
    """
    g0 = shared_kernel1d(float(sigma_px), 0, images.device)
    g2 = shared_kernel1d(float(sigma_px), 2, images.device)
    x = images.float()
    resp = -(sigma_px**2) * (separable_filter(x, g2, g0) + separable_filter(x, g0, g2))
    # a flat region's response is the filters' rounding (a few float32 ulps of the image's
    # magnitude, of either sign by library and processor): zero, not a column
    rounding = 16 * torch.finfo(torch.float32).eps * x.abs().amax(dim=(-2, -1), keepdim=True)
    return resp * (resp.abs() > rounding)


def otsu_split(values: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of a 1-D tensor (exact, over its sorted values): the value that splits
    it into two groups of largest between-group variance; returned in the input's units."""
    v, _ = torch.sort(values.double())
    n = v.numel()
    c = torch.cumsum(v, 0)[:-1]
    i = torch.arange(1, n, device=v.device, dtype=v.dtype)
    mu0 = c / i
    mu1 = (v.sum() - c) / (n - i)
    between = (i / n) * (1 - i / n) * (mu0 - mu1) ** 2
    j = int(torch.argmax(between))
    return v[j + 1].to(values.dtype)


class ClassicalEngine:
    """Laplacian-of-Gaussian column detector with the :class:`~etem.tracker.engines.base.Engine` API.

    Parameters
    ----------
    column_sigma_px
        Gaussian width of a column in the image [px] (the detector's scale).
    contrast
        ``"bright"`` columns (HAADF-STEM, or HRTEM at a bright-atom defocus) or ``"dark"``.
    reference_quantile
        Quantile of the column maxima's heights that maps to probability 1 (see ``_reference``).
    device
        Where ``predict`` runs and returns (default CPU).

    ``predict`` uses the first channel of the batch (the first image of a focal series) and
    returns ``[B, 2, H, W]``: background and the one class ``"column"``.
    """

    name = "classical"
    n_inputs = 1
    class_names = ("column",)
    sampling = None
    #: The ``LocateConfig.threshold`` this engine's maps are calibrated for.
    suggested_threshold = DEFAULT_THRESHOLD
    #: The preprocessing normalization this engine expects (the LoG removes smooth background).
    normalization = "global"

    def __init__(
        self,
        column_sigma_px: float = DEFAULT_SIGMA_PX,
        contrast: Contrast = "bright",
        *,
        reference_quantile: float = 0.99,
        noise_sigmas: float | None = NOISE_SIGMAS,
        min_relative: float = MIN_RELATIVE,
        device: torch.device | str | None = None,
    ) -> None:
        if contrast not in _CONTRAST:
            raise choice_error("contrast", contrast, _CONTRAST)
        if not column_sigma_px > 0:
            raise ConfigError(f"column_sigma_px must be positive [px]; got {column_sigma_px!r}.")
        if not 0 < reference_quantile <= 1:
            raise ConfigError(f"reference_quantile must be in (0, 1]; got {reference_quantile!r}.")
        self.column_sigma_px = float(column_sigma_px)
        self.contrast = contrast
        self.reference_quantile = float(reference_quantile)
        self.noise_sigmas = None if noise_sigmas is None else float(noise_sigmas)
        self.min_relative = float(min_relative)
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return (f"ClassicalEngine(column_sigma_px={self.column_sigma_px}, "
                f"contrast={self.contrast!r}, device={str(self.device)!r})")

    def _reference(self, resp: torch.Tensor) -> torch.Tensor:
        """Per image: the ``reference_quantile`` of the column maxima's heights.

        The positive local maxima are split in two by Otsu's criterion on their heights
        (noise maxima below, columns above) and the quantile is taken over the upper group.
        Without the split, an image with few columns in a large field of noise (a small
        particle in a wide view) would be scaled to its noise maxima, which would then pass.
        """
        pooled = max_filter(resp, max(1, int(round(self.column_sigma_px))))  # (max_pool2d: 25x slower on CPUs)
        is_max = (resp == pooled) & (resp > 0)
        refs = []
        for r, m in zip(resp, is_max):  # per image: the number of maxima differs
            heights = r[m]
            if heights.numel() == 0:
                refs.append(torch.ones((), device=resp.device))
                continue
            upper = heights[heights >= otsu_split(heights)] if heights.numel() > 2 else heights
            refs.append(torch.quantile(upper, self.reference_quantile))
        return torch.stack(refs).clamp_min(torch.finfo(torch.float32).tiny)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` images -> ``[B, 2, H, W]`` (background, column) on ``device``."""
        if batch.ndim != 4:
            raise ConfigError(f"batch must be [B, C, H, W]; got shape {tuple(batch.shape)}.")
        x = batch[:, 0].to(self.device, dtype=torch.float32)
        if self.contrast == "dark":
            x = -x
        resp = log_response(x, self.column_sigma_px)
        ref = self._reference(resp)
        scale = self._scale(x, resp, ref)
        # Linear below the threshold (a column passes where resp >= t * scale), logarithmic from
        # there up to the strong columns' height (probability 1): no flat tops on columns weaker
        # than the reference, so the sub-pixel fit sees each peak's shape (the log of a Gaussian
        # peak is a parabola).
        t = self.suggested_threshold
        thr = (t * scale)[:, None, None]
        span = torch.log(ref[:, None, None] / thr).clamp_min(1e-6)
        r = resp.clamp(min=0.0)
        above = t + (1 - t) * torch.log(torch.maximum(r, thr) / thr) / span
        fg = torch.where(r < thr, r / scale[:, None, None], above).clamp_(0.0, 1.0)
        return torch.stack([1.0 - fg, fg], 1)

    def _scale(self, x: torch.Tensor, resp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Per image: the response whose ``threshold`` fraction a column must reach (see the
        module docstring): the strong columns' height, lowered to a multiple of the noise."""
        if self.noise_sigmas is None:
            return ref
        t = self.suggested_threshold
        noise = (white_noise_variance(x) * _log_kernel_energy(self.column_sigma_px, x.device)).sqrt()
        return torch.minimum(ref, torch.maximum(self.noise_sigmas * noise / t, self.min_relative / t * ref))


def find_columns_classical(
    image: np.ndarray,
    *,
    column_sigma_px: float | None = None,
    contrast: Contrast = "bright",
    threshold: float = DEFAULT_THRESHOLD,
    min_distance_px: int = 3,
) -> pd.DataFrame:
    """Columns of one image by the classical detector: ``y, x, cls, prob``.

    Parameters
    ----------
    image
        ``[H, W]`` (or ``[F, H, W]``: the first image is used), any real dtype.
    column_sigma_px
        Gaussian width of a column [px]; None: measured on the image (:func:`column_width_px`),
        2 px where it cannot be.
    contrast
        ``"bright"`` or ``"dark"`` columns.
    threshold
        Minimum pseudo-probability of a column (see the module docstring).
    min_distance_px
        Minimum distance between columns [px]; keep it below the column spacing.
    """
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2:
        raise ConfigError(f"image must be [H, W] or [F, H, W]; got shape {np.shape(image)}.")
    if a.dtype.kind not in "uif":
        raise ValueError(f"image dtype {a.dtype} is not a real number type.")
    if not np.isfinite(a).all():
        raise ValueError("image contains NaN or infinite pixels.")
    if column_sigma_px is None:
        column_sigma_px = column_width_px(a) or DEFAULT_SIGMA_PX
    engine = ClassicalEngine(column_sigma_px, contrast)
    probs = engine.predict(torch.from_numpy(a.astype(np.float32))[None, None])
    cfg = LocateConfig(threshold=threshold, min_distance_px=min_distance_px)
    return locate(probs, cfg)[0]
