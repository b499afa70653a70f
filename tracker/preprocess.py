"""Preprocessing: raw frames in, a normalized float32 batch on the engine's device out.

Stage by stage: wire dtype -> float32 on the device -> resample to the model's sampling ->
normalize (Madsen et al. 2018, eqs. 2-3) -> stack into ``[B, C, H, W]``.

Coordinates follow PyTorch's ``align_corners=False`` convention: pixel ``i`` covers
``[i - 0.5, i + 0.5)`` and its centre is at ``i``. Resampling by ``scale`` maps an input
coordinate ``y_in`` to ``y_out = (y_in + 0.5) * scale - 0.5``; :func:`coords_to_input` inverts it.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from typing import Literal, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, choice_error

Normalize = Literal["local", "global", "none"]
_NORMALIZE = ("local", "global", "none")

#: Kernels are truncated at this many standard deviations (as scipy.ndimage's default).
TRUNCATE = 4.0
#: Above this kernel radius [px], :func:`gaussian_filter` convolves by FFT instead of directly.
FFT_RADIUS_PX = 12
#: From this width [px] on, :func:`gaussian_filter` (``method="auto"``) blurs a block-averaged
#: copy of the image (blocks of ``2**k`` px, leaving at least this width on the coarse grid)
#: and interpolates back: a Gaussian this wide has nothing a coarse grid misses.
COARSE_SIGMA_PX = 7.5


@dataclass(frozen=True)
class PreprocessConfig:
    """How frames are turned into network input.

    Parameters
    ----------
    target_sampling
        Pixel size the engine expects [Å/px]; frames are resampled to it. ``None`` keeps each
        frame's own sampling.
    normalize
        ``"local"`` (Madsen et al. 2018, eqs. 2-3: subtract the Gaussian-weighted local mean,
        divide by the local standard deviation), ``"global"`` (per image and channel: zero mean,
        unit variance) or ``"none"``. None (the default): the engine's own — a network's card
        says how it was trained (local), the classical locator takes global, because local
        normalization lifts the noise of empty areas (vacuum around a particle) to unit variance.
    sigma_A
        Width of the Gaussian of the local normalization [Å].
    eps
        Regularizer of the variance, relative to the image's global variance, so that the
        result does not depend on the units of the image and flat areas stay finite.
    average_frames
        The detector sees each frame as the mean of itself and the ``average_frames - 1``
        frames before it, registered onto it (:mod:`etem.tracker.average`): ``n`` times the
        dose, at the price of time resolution. 1 (the default): each frame alone. Streams and
        files (``etem track``, ``replay``, ``demo``); ``etem find`` takes frames one by one.
    average_register
        Undo the drift between the averaged frames (measured by cross-correlation).
    """

    target_sampling: float | None = None
    normalize: Normalize | None = None
    sigma_A: float = 12.0
    eps: float = 1e-3
    average_frames: int = 1
    average_register: bool = True

    def __post_init__(self) -> None:
        if self.normalize is not None and self.normalize not in _NORMALIZE:
            raise choice_error("normalize", self.normalize, _NORMALIZE)
        if self.target_sampling is not None and not self.target_sampling > 0:
            raise ConfigError(
                f"target_sampling must be a positive pixel size in Å/px or None; got {self.target_sampling!r}."
            )
        if not self.sigma_A > 0:
            raise ConfigError(f"sigma_A must be positive [Å]; got {self.sigma_A!r}.")
        if not self.eps >= 0:
            raise ConfigError(f"eps must be >= 0; got {self.eps!r}.")
        if not (isinstance(self.average_frames, int) and not isinstance(self.average_frames, bool)
                and self.average_frames >= 1):
            raise ConfigError(f"average_frames must be an integer >= 1 (frames); got {self.average_frames!r}.")


# --------------------------------------------------------------------------- resampling

def resample(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Resample ``[B, C, H, W]`` images by ``scale`` (output pixels per input pixel).

    ``scale = sampling / target_sampling``: below 1 shrinks (antialiased bilinear, i.e. a
    triangle filter as wide as the output pixel), above 1 enlarges (bilinear). The output is
    ``floor(H * scale) x floor(W * scale)`` and coordinates map exactly as
    ``y_out = (y_in + 0.5) * scale - 0.5`` (see :func:`coords_to_input`).
    """
    if not scale > 0:
        raise ConfigError(f"scale must be positive; got {scale!r}.")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
        raise ConfigError(f"resampling a {h}x{w} image by {scale:g} leaves no pixels.")
    return F.interpolate(
        images, scale_factor=scale, mode="bilinear", align_corners=False,
        antialias=scale < 1.0, recompute_scale_factor=False,
    )


_C = TypeVar("_C")


def coords_to_input(yx: _C, scale: float) -> _C:
    """Map coordinates found on an image resampled by ``scale`` back to input pixels.

    ``yx`` is an array or tensor (any shape; every value is a row or column coordinate) or a
    DataFrame whose ``y`` and ``x`` columns are mapped (a copy is returned).
    ``y_in = (y_out + 0.5) / scale - 0.5``.
    """
    if scale == 1.0:
        return yx
    if hasattr(yx, "columns"):  # a columns table
        out = yx.copy()
        out["y"] = (out["y"] + 0.5) / scale - 0.5
        out["x"] = (out["x"] + 0.5) / scale - 0.5
        return out
    return (yx + 0.5) / scale - 0.5


# --------------------------------------------------------------------------- filtering

def gaussian_kernel1d(sigma_px: float, order: int = 0, *, device=None) -> torch.Tensor:
    """Sampled 1-D Gaussian (order 0, sums to 1) or its second derivative (order 2, sums to 0).

    Truncated at ``TRUNCATE`` sigma, float32.
    """
    radius = max(1, int(TRUNCATE * sigma_px + 0.5))  # as scipy.ndimage
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma_px) ** 2)
    g /= g.sum()
    if order == 2:
        g2 = g * (t**2 - sigma_px**2) / sigma_px**4
        g = g2 - g * g2.sum()  # exactly zero-sum: constant offsets give no response
    elif order != 0:
        raise ValueError(f"order must be 0 or 2; got {order!r}.")
    return g.to(device=device, dtype=torch.float32)


def _symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices that extend ``n`` samples by ``pad`` on each side, mirrored with the edge
    sample repeated (scipy.ndimage's ``mode="reflect"``), valid for any ``pad``."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Convolve ``[N, H, W]`` along ``dim`` (-2 or -1) with a symmetric 1-D kernel."""
    r = kernel.numel() // 2
    n = x.shape[dim]
    xp = x.index_select(dim, _symmetric_index(n, r, x.device)).unsqueeze(1)
    k = kernel.to(x.dtype).view(1, 1, -1, 1) if dim == -2 else kernel.to(x.dtype).view(1, 1, 1, -1)
    return F.conv2d(xp, k).squeeze(1)


def _fft_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """The same as :func:`_conv_axis` by FFT: the mirrored doubling of the signal is periodic,
    so a circular convolution of it is a convolution with symmetric boundaries."""
    n = x.shape[dim]
    period = 2 * n
    r = kernel.numel() // 2
    taps = torch.arange(-r, r + 1, device=x.device) % period
    kp = torch.zeros(period, dtype=torch.float32, device=x.device).index_add_(0, taps, kernel.float())
    spectrum = torch.fft.rfft(kp)
    if dim == -2:
        spectrum = spectrum[:, None]
    ext = torch.cat([x, x.flip(dim)], dim=dim).float()
    out = torch.fft.irfft(torch.fft.rfft(ext, dim=dim) * spectrum, n=period, dim=dim)
    return out.narrow(dim, 0, n).to(x.dtype)


def separable_filter(
    images: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor,
    *, method: Literal["auto", "conv", "fft"] = "auto",
) -> torch.Tensor:
    """Filter ``[..., H, W]`` images with ``ky`` along rows and ``kx`` along columns.

    Boundaries are symmetric (scipy.ndimage ``mode="reflect"``). ``"auto"`` uses FFT for
    kernels longer than ``2 * FFT_RADIUS_PX + 1`` taps.
    """
    if method not in ("auto", "conv", "fft"):
        raise choice_error("method", method, ("auto", "conv", "fft"))
    shape = images.shape
    x = images.reshape(-1, *shape[-2:])
    for kernel, dim in ((ky, -2), (kx, -1)):
        use_fft = method == "fft" or (method == "auto" and kernel.numel() > 2 * FFT_RADIUS_PX + 1)
        x = (_fft_axis if use_fft else _conv_axis)(x, kernel.to(x.device), dim)
    return x.reshape(shape)


def gaussian_filter(images: torch.Tensor, sigma_px: float, *,
                    method: Literal["auto", "conv", "fft"] = "auto") -> torch.Tensor:
    """Gaussian blur of ``[..., H, W]`` images, each channel on its own [sigma in px].

    ``"conv"`` and ``"fft"`` filter at full resolution (as scipy.ndimage, symmetric
    boundaries). ``"auto"`` does too up to ``2 * COARSE_SIGMA_PX``; wider Gaussians (the local
    normalization's: 60 px at 0.2 Å/px) are applied to the means of ``f x f`` blocks (``f`` a
    power of two leaving ``sigma_px / f >= COARSE_SIGMA_PX``, the width reduced by the blocks'
    own variance ``(f**2 - 1) / 12``) and interpolated back bilinearly: the local normalization
    of a 512² frame at 60 px takes 7.6 instead of 19.9 ms on one core (1024²: 25 instead of
    224), within 3e-4 of the image's range of the full-resolution filter.
    """
    if method == "auto" and sigma_px >= 2 * COARSE_SIGMA_PX:
        return _coarse_gaussian(images, sigma_px)
    g = gaussian_kernel1d(sigma_px, device=images.device)
    return separable_filter(images, g, g, method=method)


def _extend_end(x: torch.Tensor, dim: int, n_more: int) -> torch.Tensor:
    """``x`` extended past its end along ``dim`` by ``n_more`` samples, mirrored with the edge
    sample repeated (scipy's ``"reflect"``)."""
    n = x.shape[dim]
    if n_more <= n:
        return torch.cat([x, x.narrow(dim, n - n_more, n_more).flip(dim)], dim=dim)
    return x.index_select(dim, _symmetric_index(n, n_more, x.device)[n_more:])


def _coarse_gaussian(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """:func:`gaussian_filter` of a wide Gaussian on a grid ``f`` times coarser.

    The blocks start at the image's first row and column, so mirroring the coarse grid there
    is mirroring the image; where a side is not a whole number of blocks, the image is first
    extended past its end (mirrored) by the kernel's radius, which puts the coarse grid's own
    end out of the kernel's reach. The blurred block means are interpolated back bilinearly,
    each at the centre of its block (beyond the first and last centres the mirror symmetry
    makes the blur flat, which is what the interpolation's clamping gives).
    """
    f = 2 ** int(math.log2(sigma_px / COARSE_SIGMA_PX))
    shape = images.shape
    h, w = shape[-2:]
    radius = int(TRUNCATE * sigma_px + 0.5)
    x = images.reshape(-1, h, w).float()
    for dim, n in ((-2, h), (-1, w)):
        if n % f:
            x = _extend_end(x, dim, radius + (-(n + radius)) % f)
    coarse = F.avg_pool2d(x.unsqueeze(1), f)
    sigma_c = math.sqrt(sigma_px**2 - (f * f - 1) / 12) / f
    g = gaussian_kernel1d(sigma_c, device=images.device)
    coarse = separable_filter(coarse, g, g)[..., : h // f + 1, : w // f + 1]
    out = F.interpolate(coarse, scale_factor=f, mode="bilinear", align_corners=False)
    return out[..., :h, :w].reshape(shape).to(images.dtype)


# --------------------------------------------------------------------------- normalization

def local_normalize(images: torch.Tensor, sigma_px: float, *, eps: float = 1e-3, **kw) -> torch.Tensor:
    """Madsen et al. 2018, eqs. 2-3: ``(I - G*I) / sqrt(G*(I - G*I)^2 + eps * var(I))``.

    ``G`` is a Gaussian of width ``sigma_px`` [px] with symmetric boundaries; every image and
    channel of ``[..., H, W]`` is normalized on its own. ``eps`` is relative to the image's
    global variance. Keyword ``method`` is passed to :func:`separable_filter`.
    """
    if not sigma_px > 0:
        raise ConfigError(f"sigma_px must be positive; got {sigma_px!r}.")
    x = images.float()
    d = x - gaussian_filter(x, sigma_px, **kw)
    # what is left of a flat region is the filter's rounding (a few float32 ulps of the image's
    # magnitude, more or less by processor): it is zero, not a signal to scale up to unit size
    rounding = 16 * torch.finfo(torch.float32).eps * x.abs().amax(dim=(-2, -1), keepdim=True)
    d = torch.where(d.abs() <= rounding, torch.zeros_like(d), d)
    var = gaussian_filter(d * d, sigma_px, **kw).clamp_min(0)
    floor = eps * x.var(dim=(-2, -1), keepdim=True, correction=0) + torch.finfo(torch.float32).tiny
    return d * torch.rsqrt(var + floor)


def global_normalize(images: torch.Tensor, *, eps: float = 1e-3) -> torch.Tensor:
    """Zero mean and unit variance for every image and channel of ``[..., H, W]``."""
    x = images.float()
    var, mean = torch.var_mean(x, dim=(-2, -1), keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var * (1 + eps) + torch.finfo(torch.float32).tiny)


# --------------------------------------------------------------------------- batching

def stack_focal(frames_list: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """Stack single images ``[H, W]`` or focal series ``[F, H, W]`` into ``[B, F, H, W]``.

    All items must have the same number of focal images and the same shape.
    """
    if len(frames_list) == 0:
        raise ConfigError("cannot stack an empty list of frames.")
    items = [torch.as_tensor(f) for f in frames_list]
    items = [t.unsqueeze(0) if t.ndim == 2 else t for t in items]
    shapes = {tuple(t.shape) for t in items}
    if any(t.ndim != 3 for t in items) or len(shapes) != 1:
        raise ConfigError(
            "frames in one batch must all be [H, W] or [F, H, W] with the same F, H and W "
            f"(after resampling); got shapes {sorted(shapes)}. Batch frames of one stream "
            "and sampling together."
        )
    return torch.stack(items)


_WIRE_DTYPES = ("uint8", "uint16", "int16", "uint32", "float32")
# Unsigned types torch handles poorly travel as their signed twin and are fixed on the device.
_UNSIGNED_VIEW = {np.dtype("uint16"): (np.int16, 0xFFFF), np.dtype("uint32"): (np.int32, 0xFFFFFFFF)}


def _to_device(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """One image of a wire dtype -> float32 tensor on ``device`` (pinned, non-blocking on CUDA)."""
    a = np.asarray(image)
    if a.dtype.kind not in "uif":
        raise ValueError(
            f"image dtype {a.dtype} is not a real number type; send one of {', '.join(_WIRE_DTYPES)}."
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    mask = None
    if a.dtype in _UNSIGNED_VIEW:
        view, mask = _UNSIGNED_VIEW[a.dtype]
        a = a.view(view)
    elif a.dtype == np.uint64 or (a.dtype.kind == "f" and a.dtype != np.float32):
        a = a.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    if mask is not None:
        t = t.to(torch.int32 if mask == 0xFFFF else torch.int64) & mask
    return t.float()


class Preprocessor:
    """Turns a list of raw frames into the engine's input batch.

    Parameters
    ----------
    cfg
        The stage's configuration.
    device
        Where the batch goes (the engine's device).

    Calling it with frames (``[H, W]`` or ``[F, H, W]`` arrays of a wire dtype) and their
    sampling [Å/px] returns ``(batch [B, C, H, W] float32 on device, scales)``; ``scales[i]``
    maps columns found on item ``i`` back to its input pixels (:func:`coords_to_input`).
    """

    def __init__(self, cfg: PreprocessConfig | None = None, device: torch.device | str | None = None):
        cfg = cfg or PreprocessConfig()
        if cfg.normalize is None:  # no engine to ask: Madsen's local normalization
            cfg = dataclasses.replace(cfg, normalize="local")
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def _scale(self, sampling: float | None) -> float:
        target = self.cfg.target_sampling
        if target is None:
            return 1.0
        if sampling is None:
            raise ConfigError(
                f"the engine expects {target} Å/px but a frame's sampling is unknown; "
                "give the frames' pixel size (sampling, Å/px)."
            )
        return float(sampling) / target

    def _sigma_px(self, sampling: float | None, scale: float) -> float:
        if sampling is None:
            raise ConfigError(
                "local normalization needs the pixel size to turn sigma_A into pixels, but a "
                "frame's sampling is unknown; give the sampling (Å/px) or use normalize='global'."
            )
        return self.cfg.sigma_A / (float(sampling) / scale)

    def __call__(
        self, images: Sequence[np.ndarray], sampling: Sequence[float | None] | None = None,
    ) -> tuple[torch.Tensor, list[float]]:
        if len(images) == 0:
            raise ConfigError("no frames to preprocess.")
        if sampling is None:
            sampling = [None] * len(images)
        if len(sampling) != len(images):
            raise ConfigError(f"got {len(images)} frames but {len(sampling)} sampling values.")
        items, scales = [], []
        for image, s in zip(images, sampling):
            if np.ndim(image) not in (2, 3):
                raise ConfigError(f"a frame must be [H, W] or [F, H, W]; got shape {np.shape(image)}.")
            x = _to_device(image, self.device)
            x = x.unsqueeze(0) if x.ndim == 2 else x
            scale = self._scale(s)
            x = resample(x.unsqueeze(0), scale).squeeze(0)
            if self.cfg.normalize == "local":
                x = local_normalize(x, self._sigma_px(s, scale), eps=self.cfg.eps)
            elif self.cfg.normalize == "global":
                x = global_normalize(x, eps=self.cfg.eps)
            items.append(x)
            scales.append(scale)
        batch = stack_focal(items)
        bad = (~torch.isfinite(batch)).flatten(1).any(1).tolist()
        if any(bad):
            which = [i for i, b in enumerate(bad) if b]
            raise ValueError(
                f"frame(s) at batch position {which} contain NaN or infinite pixels; "
                "such frames cannot be located and are rejected."
            )
        return batch, scales
