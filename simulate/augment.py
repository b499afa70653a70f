"""The detector and the per-sample augmentation chain that turns simulated exit waves (or HAADF
objects) into training images and labels, batched in torch on any device.

Chain (:func:`training_batch`), per sample
------------------------------------------
1. Draw a microscope (:class:`~etem.simulate.optics.OpticsRanges`) and a geometry
   (:func:`sample_geometry`).
2. Image the source: HRTEM (:func:`~etem.simulate.optics.image_from_waves`, a focal series of
   ``F`` images; vacuum is 1) or HAADF-STEM (:func:`~etem.simulate.optics.stem_image`,
   normalized so that each sample's brightest pixel is 1, so that the dose is counted there).
3. Resample onto the detector grid (:func:`warp`): scale jitter, quarter turns, mirror and a
   random crop, the same for all images of a focal series, plus an optional random
   misalignment of images ``1 .. F-1`` against image 0 (Madsen et al. 2018, §4.3; applied in
   step 2 as a phase ramp, exact and free). The source is periodic (as a multislice exit wave
   is), so crops that leave it wrap around.
4. Detector (:func:`detector_response`): the MTF (HRTEM only; a HAADF detector integrates) and
   a Gaussian blur of ``blur_A`` (drift and vibration), one FFT pair on the detector grid.
5. Shot noise (:func:`poisson_noise`): counts with mean ``dose * pixel_area * intensity``,
   divided back by ``dose * pixel_area``. Optionally (``coarse_fraction``) steps 3-5 are done
   on a grid of larger pixels, enlarged onto the detector grid afterwards as the tracker
   enlarges frames taken coarser than its model.
6. Labels (:func:`~etem.simulate.labels.render_labels`) rendered on the detector grid at the
   column positions mapped by the same geometry (:func:`transform_points`), so they lie on
   image 0.

A "pixel" of the detector is ``out_sampling_A * zoom`` Å in the specimen: the scale jitter
says the nominal sampling is off by the factor ``zoom``. Blur, dose and label widths are
physical (Å in the specimen); the MTF is per detector pixel.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from etem.tracker.errors import ConfigError, choice_error
from etem.tracker.preprocess import resample

from .labels import positions_table, render_labels
from .optics import OpticsParams, OpticsRanges, _pair, image_from_waves, stem_image

__all__ = [
    "mtf", "detector_response", "poisson_noise", "AugmentConfig", "Geometry", "sample_geometry",
    "warp", "transform_points", "TrainingBatch", "training_batch",
]

Mode = Literal["hrtem", "haadf"]
_MODES = ("hrtem", "haadf")


def mtf(q: torch.Tensor, *, c1: torch.Tensor | float, c2: torch.Tensor | float, c3: torch.Tensor | float) -> torch.Tensor:
    """Detector modulation transfer function (Madsen et al. 2018, eq. 5).

    ``MTF(q) = (1 - c1) / (1 + (q / (2 c2))^c3) + c1``, with ``q`` the spatial frequency in
    units of the detector's Nyquist frequency (``q = 1`` at 0.5 cycles/pixel). It is 1 at
    ``q = 0``, ``(1 + c1) / 2`` at ``q = 2 c2`` and falls to ``c1`` at high frequency.
    """
    return (1 - c1) / (1 + (q / (2 * c2)) ** c3) + c1


def _per_sample(value: float | torch.Tensor, batch: int, ref: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or a [B] tensor with B = {batch}; got shape {tuple(t.shape)}.")
    return t[:, None, None, None]


def detector_response(
    images: torch.Tensor,
    *,
    pixel_size_A: float | torch.Tensor,
    params: OpticsParams,
    apply_mtf: bool = True,
) -> torch.Tensor:
    """Apply each sample's detector MTF and Gaussian blur ``params.blur_A``.

    Parameters
    ----------
    images
        ``[B, F, H, W]`` intensities on the detector grid.
    pixel_size_A
        Size of a detector pixel in the specimen [Å]: a number or ``[B]``.
    params
        The samples' microscopes (``mtf_c1..3``, ``blur_A``).
    apply_mtf
        False to apply the blur only.

    Returns
    -------
    torch.Tensor
        ``[B, F, H, W]``, real, same dtype (periodic filtering).
    """
    b, _, h, w = images.shape
    f0 = torch.fft.fftfreq(h, device=images.device, dtype=images.dtype)[:, None]
    f1 = torch.fft.rfftfreq(w, device=images.device, dtype=images.dtype)[None, :]
    f2 = f0**2 + f1**2  # [cycles/px]^2
    sigma_px = _per_sample(params.blur_A, b, images, "blur_A") / _per_sample(pixel_size_A, b, images, "pixel_size_A")
    transfer = torch.exp(-2 * math.pi**2 * sigma_px**2 * f2)
    if apply_mtf:
        c = [_per_sample(getattr(params, f"mtf_c{i}"), b, images, f"mtf_c{i}") for i in (1, 2, 3)]
        transfer = transfer * mtf(2 * torch.sqrt(f2), c1=c[0], c2=c[1], c3=c[2])
    return torch.fft.irfft2(torch.fft.rfft2(images) * transfer, s=(h, w))


def poisson_noise(
    images: torch.Tensor,
    *,
    dose_e_per_A2: torch.Tensor,
    pixel_size_A: float | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Shot noise: Poisson counts of mean ``dose * pixel_size^2 * intensity``, normalized back.

    Negative intensities (filter ringing) count as 0. A sample of infinite dose is left
    noiseless. The result keeps the intensity scale (mean = input); its variance is
    ``intensity / (dose * pixel_size^2)``.
    """
    b = images.shape[0]
    dose = _per_sample(dose_e_per_A2, b, images, "dose_e_per_A2")
    per_px = dose * _per_sample(pixel_size_A, b, images, "pixel_size_A") ** 2
    finite = torch.isfinite(per_px)
    scale = torch.where(finite, per_px, torch.zeros_like(per_px))
    counts = torch.poisson(images.clamp(min=0) * scale, generator=generator)
    return torch.where(finite, counts / torch.where(finite, per_px, torch.ones_like(per_px)), images)


@dataclass(frozen=True)
class AugmentConfig:
    """How training images are made from a source (fixed options; random ones are drawn per sample).

    Parameters
    ----------
    out_shape
        Detector image size (H, W) [px].
    out_sampling_A
        Nominal detector pixel size [Å/px]; None: that of the source (axis 0).
    zoom
        Range of the scale jitter: a detector pixel is ``out_sampling_A * zoom`` Å.
    quarter_turns
        Random rotations by multiples of 90 degrees.
    mirror
        Random mirror image (columns reversed before the turn).
    random_crop
        Centre the detector on a random whole source pixel (else on the source's centre).
    focal_offsets_A
        Defocus offsets of the F images of a focal series [Å], added to the drawn defocus.
    focal_misalign_A
        Images ``1 .. F-1`` are shifted against image 0 by up to this much along each axis
        (uniform) [Å]; the labels follow image 0.
    semiangle_cutoff_mrad
        Objective aperture [mrad] (``inf``: none); HRTEM only.
    soft_aperture
        abTEM's soft aperture edge (True) or a hard disc.
    n_classes
        Column classes K (label channels are K + 1 with the background).
    sigma_A
        Standard deviation of the label Gaussians [Å].
    noise
        Apply shot noise.
    detector_mtf
        Apply the MTF (HRTEM; never in HAADF mode).
    haadf_background
        HAADF mode: range of a flat signal added to every image before the shot noise, as a
        fraction of its brightest column (a support film, scattering in the gas, the detector's
        dark level), drawn per sample. Without it the vacuum of a HAADF image is exactly dark
        and noise-free, and a network trained on that takes any noise there for columns.
    coarse_fraction
        Probability that a call's samples are taken by a camera with pixels ``k`` times the
        nominal size (``k`` uniform in ``coarse_factor``) and then enlarged onto the nominal grid
        by bilinear interpolation, as the tracker's preprocessing enlarges frames taken coarser
        than its model: the MTF, blur and shot noise are those of the coarse pixels, and the noise
        is interpolated as in such a resampled movie. Labels stay on the nominal grid. One draw
        per call (all its samples alike); none at 0, so other recipes' random streams are unchanged.
    coarse_factor
        Range of ``k`` (low, high), both above 1.
    """

    out_shape: tuple[int, int] = (256, 256)
    out_sampling_A: float | None = None
    zoom: tuple[float, float] = (0.9, 1.1)
    quarter_turns: bool = True
    mirror: bool = True
    random_crop: bool = True
    focal_offsets_A: tuple[float, ...] = (0.0,)
    focal_misalign_A: float = 0.0
    semiangle_cutoff_mrad: float = math.inf
    soft_aperture: bool = True
    n_classes: int = 1
    sigma_A: float = 1.0
    noise: bool = True
    detector_mtf: bool = True
    haadf_background: tuple[float, float] = (0.0, 0.3)
    coarse_fraction: float = 0.0
    coarse_factor: tuple[float, float] = (1.5, 2.5)

    def __post_init__(self) -> None:
        shape = tuple(self.out_shape)
        if len(shape) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in shape):
            raise ConfigError(f"out_shape must be two positive integers (H, W) [px]; got {self.out_shape!r}.")
        object.__setattr__(self, "out_shape", (int(shape[0]), int(shape[1])))
        if self.out_sampling_A is not None and not (self.out_sampling_A > 0 and math.isfinite(self.out_sampling_A)):
            raise ConfigError(f"out_sampling_A must be positive [Å/px] or None; got {self.out_sampling_A!r}.")
        zoom = tuple(float(v) for v in self.zoom)
        if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1] or not math.isfinite(zoom[1]):
            raise ConfigError(f"zoom must be (low, high) with 0 < low <= high; got {self.zoom!r}.")
        object.__setattr__(self, "zoom", zoom)
        offsets = tuple(float(v) for v in np.atleast_1d(self.focal_offsets_A))
        if not offsets or not all(map(math.isfinite, offsets)):
            raise ConfigError(f"focal_offsets_A must be one or more finite defocus offsets [Å]; got {self.focal_offsets_A!r}.")
        object.__setattr__(self, "focal_offsets_A", offsets)
        if not self.focal_misalign_A >= 0:
            raise ConfigError(f"focal_misalign_A must be >= 0 [Å]; got {self.focal_misalign_A!r}.")
        if not self.semiangle_cutoff_mrad > 0:
            raise ConfigError(f"semiangle_cutoff_mrad must be positive (inf: no aperture); got {self.semiangle_cutoff_mrad!r}.")
        if not (isinstance(self.n_classes, (int, np.integer)) and self.n_classes >= 1):
            raise ConfigError(f"n_classes must be an integer >= 1 (without the background); got {self.n_classes!r}.")
        if not self.sigma_A > 0:
            raise ConfigError(f"sigma_A must be positive [Å]; got {self.sigma_A!r}.")
        bg = tuple(float(v) for v in self.haadf_background)
        if len(bg) != 2 or not 0 <= bg[0] <= bg[1] or not math.isfinite(bg[1]):
            raise ConfigError(f"haadf_background must be (low, high) with 0 <= low <= high; got {self.haadf_background!r}.")
        object.__setattr__(self, "haadf_background", bg)
        if not 0 <= self.coarse_fraction <= 1:
            raise ConfigError(f"coarse_fraction must be a probability (0 to 1); got {self.coarse_fraction!r}.")
        k = tuple(float(v) for v in self.coarse_factor)
        if len(k) != 2 or not 1 < k[0] <= k[1] or not math.isfinite(k[1]):
            raise ConfigError(f"coarse_factor must be (low, high) with 1 < low <= high; got {self.coarse_factor!r}.")
        object.__setattr__(self, "coarse_factor", k)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AugmentConfig:
        """A config from a TOML-shaped mapping; unknown keys are an error that lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ConfigError(
                f"unknown augmentation option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}."
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(**values)


# Quarter turn k then mirror m: index k + 4 m. Acting on (row, col) offsets of the detector grid.
_TURN = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
_MIRROR = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
_ORIENTATIONS = torch.stack(
    [torch.linalg.matrix_power(_TURN, k) @ (_MIRROR if m else torch.eye(2)) for m in (0, 1) for k in range(4)]
)


@dataclass(frozen=True)
class Geometry:
    """The geometric augmentation of each sample: detector grid -> source grid.

    A detector pixel ``p`` (row, col) shows the source point (in source pixels, modulo the
    source size)::

        u = c_src + A (p - c_out) + shift_px
        A = diag(1 / src_sampling) * (out_sampling * zoom) * R(quarter_turns, mirror)

    with ``c`` the grid centres ``((n - 1) / 2)``. Fields are ``[B]`` (``zoom``,
    ``quarter_turns``, ``mirror``), ``[B, 2]`` (``shift_px``, source pixels) and ``[B, F, 2]``
    (``misalign_A``: image ``f`` shows the specimen displaced by this much along the source
    axes [Å] before the warp; zero for image 0).
    """

    zoom: torch.Tensor
    quarter_turns: torch.Tensor
    mirror: torch.Tensor
    shift_px: torch.Tensor
    misalign_A: torch.Tensor

    def matrix(self, *, src_sampling_A: float | tuple[float, float], out_sampling_A: float) -> torch.Tensor:
        """``A`` ``[B, 2, 2]`` (float32): detector-pixel offsets to source-pixel offsets."""
        s0, s1 = _pair(src_sampling_A)
        dev = self.zoom.device
        r = _ORIENTATIONS.to(dev)[self.quarter_turns + 4 * self.mirror.long()]
        inv_src = torch.tensor([1 / s0, 1 / s1], device=dev)[None, :, None]
        return inv_src * (out_sampling_A * self.zoom.float())[:, None, None] * r


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}.")
    if generator.device.type != device.type:
        raise ValueError(
            f"the generator is on {generator.device} and the data on {device}; make one there with "
            f"torch.Generator(device={str(device)!r}).manual_seed(seed)."
        )


def sample_geometry(
    batch: int,
    *,
    src_shape: tuple[int, int],
    src_sampling_A: float | tuple[float, float],
    config: AugmentConfig,
    generator: torch.Generator,
) -> Geometry:
    """Draw each sample's zoom, quarter turns, mirror, crop and focal misalignment (on the generator's device)."""
    dev = generator.device
    n_focal = len(config.focal_offsets_A)
    u = torch.rand((3, batch), generator=generator, device=dev)
    zoom = config.zoom[0] + (config.zoom[1] - config.zoom[0]) * u[0]
    turns = torch.randint(0, 4, (batch,), generator=generator, device=dev)
    turns = turns if config.quarter_turns else torch.zeros_like(turns)
    mirror = (u[1] < 0.5) & config.mirror
    shift = torch.stack([torch.randint(0, int(n), (batch,), generator=generator, device=dev) for n in src_shape], -1)
    shift = shift.float() if config.random_crop else torch.zeros((batch, 2), device=dev)
    mis = (2 * torch.rand((batch, n_focal, 2), generator=generator, device=dev) - 1) * config.focal_misalign_A
    mis[:, 0] = 0.0
    return Geometry(zoom=zoom, quarter_turns=turns, mirror=mirror, shift_px=shift, misalign_A=mis)


def warp(
    images: torch.Tensor,
    geometry: Geometry,
    *,
    src_sampling_A: float | tuple[float, float],
    out_shape: tuple[int, int],
    out_sampling_A: float,
) -> torch.Tensor:
    """Resample ``[B, C, H, W]`` source images onto the detector grid (bilinear, periodic).

    All channels of a sample (the images of a focal series, or label maps) get the sample's
    geometry. When source and detector pixels agree (zoom 1, equal sampling, sizes of equal
    parity) the warp copies pixels exactly.

    Returns
    -------
    torch.Tensor
        ``[B, C, h, w]`` in the images' dtype.
    """
    _, _, h_src, w_src = images.shape
    h, w = out_shape
    dev, dt = images.device, images.dtype
    a = geometry.matrix(src_sampling_A=src_sampling_A, out_sampling_A=out_sampling_A).to(dt)
    rows = (torch.arange(h, device=dev, dtype=dt) - (h - 1) / 2)[None, :, None, None]
    cols = (torch.arange(w, device=dev, dtype=dt) - (w - 1) / 2)[None, None, :, None]
    centre = torch.tensor([(h_src - 1) / 2, (w_src - 1) / 2], device=dev, dtype=dt)
    offset = (centre + geometry.shift_px.to(dt))[:, None, None, :]
    u = a[:, None, None, :, 0] * rows + a[:, None, None, :, 1] * cols + offset  # [B, h, w, 2]
    u = torch.remainder(u, torch.tensor([h_src, w_src], device=dev, dtype=dt))
    # Pad one wrapped row and column so that bilinear neighbours of u in [n - 1, n) exist;
    # with align_corners=True, normalized -1 .. 1 spans padded pixels 0 .. n.
    src = F.pad(images, (0, 1, 0, 1), mode="circular")
    grid = torch.stack([u[..., 1] / w_src * 2 - 1, u[..., 0] / h_src * 2 - 1], -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)


def transform_points(
    points: torch.Tensor,
    classes: torch.Tensor,
    geometry: Geometry,
    *,
    src_shape: tuple[int, int],
    src_sampling_A: float | tuple[float, float],
    out_shape: tuple[int, int],
    out_sampling_A: float,
    margin_px: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map source column positions onto the detector grid, periodic images included.

    The positions are those of image 0 and of the labels.

    Parameters
    ----------
    points
        ``[B, P, 2]`` (row, col) positions in source pixels (any value; taken modulo the source).
    classes
        ``[B, P]`` classes, -1 for padding.
    geometry, src_shape, src_sampling_A, out_shape, out_sampling_A
        As in :func:`warp`.
    margin_px
        Keep points up to this far outside the detector grid [detector px] (so that the labels
        of columns just outside reach in).

    Returns
    -------
    points, classes
        ``[B, P', 2]`` detector positions [px] and ``[B, P']`` classes, padded with NaN and -1.
    """
    dev = points.device
    b = points.shape[0]
    h, w = out_shape
    a = geometry.matrix(src_sampling_A=src_sampling_A, out_sampling_A=out_sampling_A).to(dev)
    a_inv = torch.linalg.inv(a.double()).float()
    size = torch.tensor([float(v) for v in src_shape], device=dev)
    centre = (size - 1) / 2
    ok = (classes >= 0) & torch.isfinite(points).all(-1)
    v = torch.remainder(torch.where(ok[..., None], points.float(), torch.zeros_like(points, dtype=torch.float32))
                        - centre - geometry.shift_px.to(dev)[:, None, :], size)  # [B, P, 2] in [0, n)
    half = torch.tensor([(h - 1) / 2 + margin_px, (w - 1) / 2 + margin_px], device=dev)
    reach = (a.abs() @ half).amax(0)  # half extent of the detector in source px, per axis
    n_img = [int(math.ceil(float(reach[i] / size[i]))) for i in range(2)]  # v + n size reaches +-reach
    shifts = torch.stack(torch.meshgrid(
        torch.arange(-n_img[0], n_img[0] + 1, device=dev), torch.arange(-n_img[1], n_img[1] + 1, device=dev),
        indexing="ij"), -1).reshape(-1, 2).float() * size  # [M, 2]
    cand = v[:, None, :, :] + shifts[None, :, None, :]  # [B, M, P, 2]
    p = torch.einsum("bij,bmpj->bmpi", a_inv, cand) + torch.tensor([(h - 1) / 2, (w - 1) / 2], device=dev)
    p = p.reshape(b, -1, 2)
    cls = classes.to(dev).long()[:, None, :].expand(b, shifts.shape[0], -1).reshape(b, -1)
    keep = (ok[:, None, :].expand(b, shifts.shape[0], -1).reshape(b, -1)
            & (p[..., 0] >= -margin_px - 0.5) & (p[..., 0] <= h - 0.5 + margin_px)
            & (p[..., 1] >= -margin_px - 0.5) & (p[..., 1] <= w - 0.5 + margin_px))
    n_keep = int(keep.sum(1).max()) if b else 0
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :n_keep]
    kept = torch.gather(keep, 1, order)
    p = torch.gather(p, 1, order[..., None].expand(-1, -1, 2))
    cls = torch.gather(cls, 1, order)
    return torch.where(kept[..., None], p, torch.full_like(p, math.nan)), torch.where(kept, cls, torch.full_like(cls, -1))


@dataclass(frozen=True)
class TrainingBatch:
    """One batch of training data.

    Attributes
    ----------
    images
        ``[B, F, H, W]`` float32 noisy detector images (intensity scale: vacuum ~1 in HRTEM).
    labels
        ``[B, K + 1, H, W]`` float32 label maps (channel 0 background).
    points, classes
        Column positions on the detector grid [px] ``[B, P, 2]`` and classes ``[B, P]``
        (padding NaN / -1), including columns up to 4 label sigmas outside the image.
    params, geometry
        The microscope and the geometry drawn for each sample.
    """

    images: torch.Tensor
    labels: torch.Tensor
    points: torch.Tensor
    classes: torch.Tensor
    params: OpticsParams
    geometry: Geometry

    def positions_table(self) -> pd.DataFrame:
        """Columns inside the images: ``frame`` (sample index), ``y, x`` [px], ``cls``."""
        h, w = self.images.shape[-2:]
        table = positions_table(self.points, self.classes)
        inside = (table["y"] >= -0.5) & (table["y"] < h - 0.5) & (table["x"] >= -0.5) & (table["x"] < w - 0.5)
        return table[inside].reset_index(drop=True)


def _coarse_factor(config: AugmentConfig, generator: torch.Generator) -> float:
    """``k`` of a coarser camera for this call, or 1 (no draw when ``coarse_fraction`` is 0)."""
    if config.coarse_fraction <= 0:
        return 1.0
    u, v = torch.rand(2, generator=generator, device=generator.device).tolist()
    lo, hi = config.coarse_factor
    return lo + (hi - lo) * v if u < config.coarse_fraction else 1.0


def _coarse_detector(geometry: Geometry, k: float, out_shape: tuple[int, int], src_sampling, out_sampling: float):
    """The grid and geometry of a camera with ``k`` times larger pixels whose image, enlarged by
    :func:`~etem.tracker.preprocess.resample` (``y = (y_c + 0.5) k - 0.5``) and cropped to
    ``out_shape``, shows each nominal pixel where ``geometry`` puts it. A grid of ``n_c``
    pixels enlarges to at least ``n`` when ``n_c k >= n + 1``; its centre then lies
    ``(n_c k - n) / 2`` nominal pixels past the nominal grid's, which the crop shift undoes."""
    shape = tuple(int(math.floor(n / k)) + 2 for n in out_shape)
    a = geometry.matrix(src_sampling_A=src_sampling, out_sampling_A=out_sampling)  # nominal px -> source px
    past = torch.tensor([(nc * k - n) / 2 for nc, n in zip(shape, out_shape)], device=a.device)
    shift = geometry.shift_px + (a @ past).to(geometry.shift_px.dtype)
    return shape, dataclasses.replace(geometry, shift_px=shift)


def training_batch(
    source: torch.Tensor,
    points: torch.Tensor,
    classes: torch.Tensor,
    *,
    sampling_A: float | tuple[float, float],
    energy_eV: float,
    generator: torch.Generator,
    ranges: OpticsRanges | None = None,
    config: AugmentConfig | None = None,
    mode: Mode = "hrtem",
) -> TrainingBatch:
    """Training images and labels from a batch of exit waves (or HAADF objects).

    Parameters
    ----------
    source
        ``[B, H, W]``: complex exit waves (``"hrtem"``) or a real object (``"haadf"``, e.g.
        :func:`~etem.simulate.optics.haadf_object`), periodic.
    points, classes
        ``[B, P, 2]`` column positions in source pixels (row, col) and ``[B, P]`` classes
        (-1 padding), e.g. from :func:`~etem.simulate.labels.pad_columns`.
    sampling_A
        Source pixel size [Å/px].
    energy_eV
        Electron energy [eV].
    generator
        The random stream, on the source's device; every draw (microscope, geometry, noise)
        comes from it, so one seed gives one batch. It advances by the same amount whatever the
        dose: the shot noise, whose Poisson sampler takes a varying number of draws, comes from
        a stream of its own seeded from this one. So the samples after this batch do not depend
        on its dose or on rounding in its images (thread count, device), and a held-out set at
        several doses shows the same microscopes and crops at each.
    ranges
        Microscope ranges (default: ``OpticsRanges()``).
    config
        Fixed options (default: ``AugmentConfig()``).
    mode
        ``"hrtem"`` or ``"haadf"``.

    Returns
    -------
    TrainingBatch
    """
    if mode not in _MODES:
        raise choice_error("mode", mode, _MODES)
    ranges = OpticsRanges() if ranges is None else ranges
    config = AugmentConfig() if config is None else config
    if not isinstance(source, torch.Tensor) or source.ndim != 3:
        raise ValueError(f"source must be a [B, H, W] tensor; got {getattr(source, 'shape', type(source).__name__)}.")
    _check_generator(generator, source.device)
    if points.shape[:1] != source.shape[:1]:
        raise ValueError(f"points hold {points.shape[0]} samples, the source {source.shape[0]}.")
    b, h_src, w_src = source.shape
    src_sampling = _pair(sampling_A)
    out_sampling = src_sampling[0] if config.out_sampling_A is None else config.out_sampling_A
    params = ranges.sample(b, generator, device=source.device)
    geometry = sample_geometry(b, src_shape=(h_src, w_src), src_sampling_A=src_sampling, config=config,
                               generator=generator)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    if mode == "hrtem":
        intensity = image_from_waves(source, sampling_A=src_sampling, energy_eV=energy_eV, params=params,
                                     focal_offsets_A=config.focal_offsets_A,
                                     semiangle_cutoff_mrad=config.semiangle_cutoff_mrad,
                                     soft_aperture=config.soft_aperture, image_shift_A=geometry.misalign_A).float()
    else:
        intensity = stem_image(source, sampling_A=src_sampling, energy_eV=energy_eV, params=params,
                               focal_offsets_A=config.focal_offsets_A, soft_aperture=config.soft_aperture,
                               image_shift_A=geometry.misalign_A)
        peak = intensity.amax((1, 2, 3), keepdim=True)
        intensity = intensity / torch.where(peak > 0, peak, torch.ones_like(peak))
    k = _coarse_factor(config, generator)
    if k > 1:  # a coarser camera over the same field of view (see AugmentConfig.coarse_fraction)
        det_shape, det_geometry = _coarse_detector(geometry, k, config.out_shape, src_sampling, out_sampling)
    else:
        det_shape, det_geometry = config.out_shape, geometry
    images = warp(intensity, det_geometry, src_sampling_A=src_sampling, out_shape=det_shape,
                  out_sampling_A=out_sampling * k)
    pixel = out_sampling * k * geometry.zoom
    images = detector_response(images, pixel_size_A=pixel, params=params,
                               apply_mtf=config.detector_mtf and mode == "hrtem")
    if mode == "haadf" and config.haadf_background[1] > 0:
        lo, hi = config.haadf_background
        level = lo + (hi - lo) * torch.rand(b, generator=generator, device=generator.device).to(images.device)
        images = images + level.view(-1, *([1] * (images.ndim - 1)))
    if config.noise:
        noise_gen = torch.Generator(device=generator.device).manual_seed(noise_seed)
        images = poisson_noise(images, dose_e_per_A2=params.dose_e_per_A2, pixel_size_A=pixel, generator=noise_gen)
    if k > 1:
        images = resample(images, k)[..., : config.out_shape[0], : config.out_shape[1]]
    sigma_px = config.sigma_A / (out_sampling * geometry.zoom)
    pts, cls = transform_points(points.to(source.device), classes.to(source.device), geometry,
                                src_shape=(h_src, w_src), src_sampling_A=src_sampling, out_shape=config.out_shape,
                                out_sampling_A=out_sampling, margin_px=4 * float(sigma_px.max()) if b else 0.0)
    labels = render_labels(pts, cls, shape=config.out_shape, n_classes=config.n_classes, sigma_px=sigma_px)
    return TrainingBatch(images=images.float(), labels=labels, points=pts, classes=cls, params=params,
                         geometry=geometry)
