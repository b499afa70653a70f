"""Preprocessing: raw frames in, a normalized float32 batch on the engine's device out.

Stage by stage: wire dtype -> float32 on the device -> resample to the model's sampling ->
normalize (Madsen et al. 2018, eqs. 2-3) -> stack into ``[B, C, H, W]``.

Coordinates follow PyTorch's ``align_corners=False`` convention: pixel ``i`` covers
``[i - 0.5, i + 0.5)`` and its centre is at ``i``. Resampling by ``scale`` maps an input
coordinate ``y_in`` to ``y_out = (y_in + 0.5) * scale - 0.5``; :func:`coords_to_input` inverts it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, SamplingUnknown, choice_error
from .resample import coords_to_input, resample  # noqa: F401 (coords_to_input: re-exported)

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
#: Direct convolutions of CPU tensors by scipy (:func:`_conv_axis`); False: torch's, as on a GPU.
SCIPY_ON_CPU = True

log = logging.getLogger("etem.preprocess")


@dataclass(frozen=True)
class PreprocessConfig:
    """How frames are turned into network input.

    Parameters
    ----------
    target_sampling
        Pixel size the engine expects [Å/px]; frames are resampled to it (except within
        ``as_is``). ``None`` keeps each frame's own sampling.
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
    as_is
        The range of frame-to-model pixel-size ratios (LO <= 1 <= HI) over which frames go in
        as they are, not resampled to ``target_sampling``; None (the default): always
        resampled. A network's card gives it where it was measured to do better so: resampling
        by a small factor, and enlarging, smooths the noise, which some networks read as
        columns (``au-hrtem`` on Au HRTEM at 300 e/Å² taken at 0.23 Å/px: F1 0.21 enlarged,
        0.72 as they are; ``haadf-stem`` at 0.35 Å/px: 0.20 and 0.97), while others need the
        scale (``mos2-unet`` at 0.13 Å/px: 0.95 resampled, 0.45 as they are).
    fill_nonfinite
        The largest fraction of a frame's pixels that may be NaN or infinite (a camera's dead
        or masked pixels) and be filled with the median of the frame's other pixels, the frame
        then tracked (the first fill said; all counted in the run's summary and
        ``status()["filled_nonfinite"]``). 0 (the default): a frame with any such pixel is
        rejected (``rejected/nan``), and the first rejection says how to fill instead.
    """

    target_sampling: float | None = None
    normalize: Normalize | None = None
    sigma_A: float = 12.0
    eps: float = 1e-3
    average_frames: int = 1
    average_register: bool = True
    fill_nonfinite: float = 0.0
    as_is: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.as_is is not None:
            lo, hi = (float(v) for v in self.as_is)
            if not 0 < lo <= 1 <= hi:
                raise ConfigError(f"as_is must be a range of ratios LO, HI with 0 < LO <= 1 <= HI; got {self.as_is!r}.")
            object.__setattr__(self, "as_is", (lo, hi))
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
        if not 0 <= self.fill_nonfinite < 1:
            raise ConfigError(f"fill_nonfinite must be a fraction of a frame's pixels, 0 to below 1; "
                              f"got {self.fill_nonfinite!r}.")


def nonfinite_words(n: int, size: int, limit: float) -> str:
    """What to say of a frame with ``n`` of ``size`` pixels NaN or infinite that was not filled:
    how many, and the ``[preprocess] fill_nonfinite`` that would fill them where they are few
    enough to be a camera's dead or masked pixels (under a quarter of the frame)."""
    frac = n / max(size, 1)
    words = f"{n} of {size} pixels ({100 * frac:.3g} %) NaN or infinite"
    if frac < 0.25:
        need = math.ceil(frac * 1000 + 1e-9) / 1000  # (to a tenth of a percent, above the fraction)
        words += (f" (more than [preprocess] fill_nonfinite = {limit:g} fills)" if limit else "") + \
            f"; [preprocess] fill_nonfinite = {need:g} would fill them with the frame's median"
    return words


def fill_nonfinite(image: np.ndarray, limit: float) -> tuple[np.ndarray | None, int]:
    """``image`` with its NaN and infinite pixels set to the median of the others, where they
    are at most ``limit`` of its pixels (else None: the frame cannot be read), and how many
    there were. A focal series' images are filled each with its own median."""
    bad = ~np.isfinite(image)
    n = int(bad.sum())
    if n == 0:
        return image, 0
    if n > limit * image.size:
        return None, n
    out = np.array(image, dtype=np.result_type(image.dtype, np.float32), copy=True)
    stack = out.reshape(-1, *out.shape[-2:])
    for im, b in zip(stack, bad.reshape(stack.shape)):
        if b.any():
            im[b] = np.median(im[~b]) if (~b).any() else 0.0
    return out, n


# --------------------------------------------------------------------------- filtering
def gaussian_kernel1d(sigma_px: float, order: int = 0, *, device=None) -> torch.Tensor:
    """Sampled 1-D Gaussian (order 0, sums to 1) or its second derivative (order 2, sums to 0).

    Truncated at ``TRUNCATE`` sigma, float32.
    """
    return shared_kernel1d(float(sigma_px), order, None if device is None else torch.device(device)).clone()


@functools.lru_cache(maxsize=64)
def shared_kernel1d(sigma_px: float, order: int, device: torch.device | None) -> torch.Tensor:
    """:func:`gaussian_kernel1d`, made once per width, order and device (the filters of a
    stream's frames are all the same few: making them anew is a dozen small device operations
    a frame). Read only."""
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


@functools.lru_cache(maxsize=64)
def _symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices that extend ``n`` samples by ``pad`` on each side, mirrored with the edge
    sample repeated (scipy.ndimage's ``mode="reflect"``), valid for any ``pad``."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Convolve ``[N, H, W]`` along ``dim`` (-2 or -1) with a symmetric 1-D kernel.

    On a CPU (float32, no gradient) scipy's ``correlate1d`` does it: torch's CPU convolution
    of one channel with a 1-D kernel is not what its kernels are tuned for (a 19-tap pass over
    a 1024² image: 40 ms, against 8-17 ms in scipy on the same core)."""
    if SCIPY_ON_CPU and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
        from scipy.ndimage import correlate1d

        k = kernel.detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(correlate1d(x.detach().numpy(), k, axis=x.ndim + dim, mode="reflect",
                                            output=np.float32))
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
    spectrum = _kernel_spectrum(kernel, period)
    if dim == -2:
        spectrum = spectrum[:, None]
    ext = torch.cat([x, x.flip(dim)], dim=dim).float()
    out = torch.fft.irfft(torch.fft.rfft(ext, dim=dim) * spectrum, n=period, dim=dim)
    return out.narrow(dim, 0, n).to(x.dtype)


#: (id(kernel), period, device) -> (kernel, its spectrum): the kernel is held, so its id stays its own
_SPECTRA: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _kernel_spectrum(kernel: torch.Tensor, period: int) -> torch.Tensor:
    """The rfft of a symmetric ``kernel`` wrapped onto ``period`` samples; kept for the kernel
    object (the filters' kernels are made once, :func:`shared_kernel1d`), so a stream computes it once."""
    key = (id(kernel), period, kernel.device)
    hit = _SPECTRA.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1]
    r = kernel.numel() // 2
    taps = torch.arange(-r, r + 1, device=kernel.device) % period
    kp = torch.zeros(period, dtype=torch.float32, device=kernel.device).index_add_(0, taps, kernel.float())
    spectrum = torch.fft.rfft(kp)
    if len(_SPECTRA) >= 64:
        _SPECTRA.clear()
    _SPECTRA[key] = (kernel, spectrum)
    return spectrum


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
        k = kernel if kernel.device == x.device else kernel.to(x.device)
        x = (_fft_axis if use_fft else _conv_axis)(x, k, dim)
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
    g = shared_kernel1d(float(sigma_px), 0, images.device)
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
    g = shared_kernel1d(float(sigma_c), 0, images.device)
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
    d = d * (d.abs() > rounding)  # (torch.where with a mask is 3x slower on CPUs)
    var = gaussian_filter(d * d, sigma_px, **kw).clamp_min(0)
    floor = eps * _var_mean(x)[0] + torch.finfo(torch.float32).tiny
    return d * torch.rsqrt(var + floor)


def _var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance and mean of every image of ``[..., H, W]`` (``keepdim``), in two passes: on
    CPUs ``torch.var`` over a batch of images takes 20 times as long as this (torch 2.13)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean).square().mean(dim=(-2, -1), keepdim=True), mean


def global_normalize(images: torch.Tensor, *, eps: float = 1e-3) -> torch.Tensor:
    """Zero mean and unit variance for every image and channel of ``[..., H, W]``."""
    x = images.float()
    var, mean = _var_mean(x)
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


def _to_device(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Images of one shape and wire dtype -> float32 ``[n, ...]`` on ``device``, in one copy.

    On a GPU the images are gathered into one pinned host buffer in their own dtype (the
    fewest bytes to send), sent at once without waiting, and turned into floats there; on a
    CPU they are written straight into the float32 batch (numpy converts while it copies).
    """
    a0 = np.asarray(images[0])
    if a0.dtype.kind not in "uif":
        raise ValueError(
            f"image dtype {a0.dtype} is not a real number type; send one of {', '.join(_WIRE_DTYPES)}."
        )
    shape = (len(images), *a0.shape)
    if device.type != "cuda":
        out = np.empty(shape, np.float32)
        for i, image in enumerate(images):
            out[i] = image
        return torch.from_numpy(out)
    wire = a0.dtype.newbyteorder("=")
    mask = None
    if wire in _UNSIGNED_VIEW:
        view, mask = _UNSIGNED_VIEW[wire]
    elif wire == np.uint64 or (wire.kind == "f" and wire != np.float32):
        wire = view = np.dtype(np.float32)
    else:
        view = wire
    host = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, view)).dtype, pin_memory=True)
    dst = host.numpy().view(wire)
    for i, image in enumerate(images):
        dst[i] = image
    t = host.to(device, non_blocking=True)
    if mask is not None:
        t = t.to(torch.int32 if mask == 0xFFFF else torch.int64) & mask
    return t.float()


def resample_scale(sampling: float | None, target: float | None, as_is: tuple[float, float] | None) -> float:
    """The factor a frame of ``sampling`` [Å/px] is resampled by for a network of ``target``
    [Å/px]: ``sampling / target``, or 1 (taken as it is) where that ratio lies in the ``as_is``
    range, or either pixel size is unknown."""
    if not target or not sampling:
        return 1.0
    scale = float(sampling) / float(target)
    return 1.0 if as_is is not None and as_is[0] <= scale <= as_is[1] else scale


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
        #: the last call's frames as sent (first image of a focal series), float32 ``[B, H, W]``
        #: on the device, before resampling: what the image-quality figures are measured on,
        #: without sending the frames again (None where the batch mixed shapes or pixel sizes)
        self.raw: torch.Tensor | None = None
        self._said_coarse = False  # (frames much coarser than the model: said once)

    def _scale(self, sampling: float | None) -> float:
        target = self.cfg.target_sampling
        if target is None:
            return 1.0
        if sampling is None:
            raise SamplingUnknown(
                f"the engine expects {target} Å/px but a frame's sampling is unknown; "
                "give the frames' pixel size (--sampling, sampling=; Å/px), or name the material in "
                "view (--material, material=) to measure it from the lattice."
            )
        scale = float(sampling) / target
        if resample_scale(sampling, target, self.cfg.as_is) == 1.0:
            if scale >= 1.25 and not self._said_coarse:
                self._said_coarse = True
                log.warning("frames of %.3g Å/px are %.1fx coarser than the model's %.3g Å/px: taken as they are "
                            "(the card's as_is_ratio), their columns %.1fx smaller than it was trained on. On "
                            "simulated Au HRTEM at 1.5x that keeps false columns out of the vacuum about a particle "
                            "(F1 0.77 as they are, 0.13 enlarged) but finds fewer where crystal fills the frame "
                            "(0.39 as they are, 0.75 enlarged; docs/models.md). For such frames [preprocess] "
                            "as_is = [1, 1] enlarges them; a model trained for them: etem train --sampling %.3g",
                            sampling, scale, target, scale, sampling)
            return 1.0
        return scale

    def _sigma_px(self, sampling: float | None, scale: float) -> float:
        if sampling is None:
            raise SamplingUnknown(
                "local normalization needs the pixel size to turn sigma_A into pixels, but a "
                "frame's sampling is unknown; give the sampling (Å/px) or use normalize='global'."
            )
        return self.cfg.sigma_A / (float(sampling) / scale)

    def _normalize(self, x: torch.Tensor, sampling: float | None, scale: float) -> torch.Tensor:
        """The configured normalization of ``[n, F, H, W]``: of the whole batch at once on a GPU
        (one launch per operation, whatever the batch), a frame at a time on a CPU, where a
        batch's temporaries outgrow the caches and the allocator's reuse (at 512² a batch of 4
        took 1.4x as long as its frames one by one)."""
        if self.cfg.normalize == "local":
            sigma = self._sigma_px(sampling, scale)
            norm = lambda t: local_normalize(t, sigma, eps=self.cfg.eps)  # noqa: E731
        else:
            norm = lambda t: global_normalize(t, eps=self.cfg.eps)  # noqa: E731
        if x.device.type != "cpu" or x.shape[0] == 1:
            return norm(x)
        return torch.cat([norm(x[i:i + 1]) for i in range(x.shape[0])])

    def __call__(
        self, images: Sequence[np.ndarray], sampling: Sequence[float | None] | None = None, *,
        finite: bool = False,
    ) -> tuple[torch.Tensor, list[float]]:
        """The batch and its scales; ``finite``: the pixels are known to be finite (the
        pipeline checked them on arrival), so they are not scanned again."""
        if len(images) == 0:
            raise ConfigError("no frames to preprocess.")
        if sampling is None:
            sampling = [None] * len(images)
        if len(sampling) != len(images):
            raise ConfigError(f"got {len(images)} frames but {len(sampling)} sampling values.")
        arrays = [np.asarray(image) for image in images]
        bad = []
        for i, a in enumerate(arrays):
            if a.ndim not in (2, 3):
                raise ConfigError(f"a frame must be [H, W] or [F, H, W]; got shape {a.shape}.")
            if not finite and a.dtype.kind == "f" and not np.isfinite(a).all():  # (whole numbers are)
                bad.append(i)
        if bad:
            raise ValueError(
                f"frame(s) at batch position {bad} contain NaN or infinite pixels; "
                "such frames cannot be located and are rejected."
            )
        # Frames of one shape, dtype and pixel size (a stream's, as a rule) go to the device,
        # are resampled and normalized together: a dozen device operations a batch, not a frame.
        groups: dict[tuple, list[int]] = {}
        for i, (a, s) in enumerate(zip(arrays, sampling)):
            groups.setdefault((a.shape, a.dtype.newbyteorder("=").str, s), []).append(i)
        items: list = [None] * len(arrays)
        scales = [1.0] * len(arrays)
        self.raw = None
        for (shape, _, s), idx in groups.items():
            x = _to_device([arrays[i] for i in idx], self.device)
            x = x.unsqueeze(1) if len(shape) == 2 else x  # [n, F, H, W]
            if len(groups) == 1:
                self.raw = x[:, 0]
            scale = self._scale(s)
            x = resample(x, scale)
            if self.cfg.normalize != "none":
                x = self._normalize(x, s, scale)
            if len(groups) == 1:
                return x, [scale] * len(arrays)
            for j, i in enumerate(idx):
                items[i], scales[i] = x[j], scale
        batch = stack_focal(items)
        return batch, scales
