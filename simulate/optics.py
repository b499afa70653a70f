"""The microscope's optics, batched in torch: random per-sample aberrations and coherence,
imaging of exit waves (HRTEM) and of an object with a focused probe (HAADF-STEM).

Each training sample gets its own microscope, drawn from :class:`OpticsRanges` (Madsen et al.
2018, Table 1) into an :class:`OpticsParams` of ``[B]`` tensors. Everything runs on the
tensors' device (CPU or CUDA) with the waves' precision.

Conventions (those of abTEM, so that results agree with ``Waves.apply_ctf``)
---------------------------------------------------------------------------
- Spatial frequencies are ``fftfreq(n, d=sampling)`` [1/Å] along each array axis; scattering
  angles are ``alpha = wavelength * k`` [rad]; the azimuth ``phi`` is measured from the first
  array axis towards the second (``atan2(k1, k0)``). On an abTEM array, indexed ``(x, y)``,
  that is abTEM's angle; on an image indexed ``(row, col)`` it is measured from the row axis.
- The aberration phase is abTEM's polar expansion, truncated at the terms used here::

      chi = 2 pi / lambda * (  alpha^2 / 2 * (C10 + C12 cos(2 (phi - phi12)))
                             + alpha^4 / 4 * C30
                             + alpha^6 / 6 * C50 )

  with ``C10 = -defocus`` (positive defocus is underfocus, as in abTEM), ``C30 = Cs``,
  ``C50 = C5``, ``C12 = astigmatism`` and ``phi12 = astigmatism_angle``. The wave in Fourier
  space is multiplied by ``exp(-i chi)``.
- Partial temporal coherence is abTEM's quasi-coherent envelope on the wave,
  ``exp(-(pi / 2 * lambda * focal_spread * k^2)^2)`` (``focal_spread`` is the 1/e width of the
  defocus distribution [Å], not its standard deviation). Partial spatial coherence is not
  modelled.
- The optional objective aperture is abTEM's: a hard disc, or (the default) its soft edge,
  one angular pixel wide.
- Lengths are in Å (Cs and C5 too: 1 µm = 1e4 Å, 1 mm = 1e7 Å), angles in rad, apertures in mrad.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from scipy import constants

from etem.tracker.errors import ConfigError, choice_error

from .labels import render_gaussians

__all__ = [
    "OpticsRanges", "OpticsParams", "PRESETS", "optics_overrides", "wavelength_A", "ctf", "image_from_waves",
    "probe_intensity", "stem_image", "haadf_object",
]

Range = tuple[float, float]

_NON_NEGATIVE = ("astigmatism_A", "focal_spread_A", "blur_A", "mtf_c1")
_POSITIVE = ("dose_e_per_A2", "mtf_c2", "mtf_c3", "probe_semiangle_mrad")
_LOG_UNIFORM = ("dose_e_per_A2",)


@dataclass(frozen=True)
class OpticsRanges:
    """Ranges ``(low, high)`` from which each sample's microscope is drawn, uniformly unless noted.

    The defaults follow Madsen et al. (2018), Table 1 (the blur: see ``blur_A``). A range with
    ``low == high`` fixes a value.

    Parameters
    ----------
    defocus_A
        Defocus [Å] (``C10 = -defocus``; positive is underfocus).
    Cs_A
        Third-order spherical aberration C30 [Å]; ±20 µm.
    C5_A
        Fifth-order spherical aberration C50 [Å]; 0-5 mm.
    astigmatism_A
        Twofold astigmatism C12 [Å].
    astigmatism_angle_rad
        Its azimuth phi12 [rad]; twofold, so ``(0, pi)`` covers every direction.
    focal_spread_A
        1/e width of the focal spread (partial temporal coherence) [Å].
    blur_A
        Standard deviation of a Gaussian blur of the recorded image [Å]: drift and vibration
        during the exposure. Columns 1-2 Å apart are washed out by a blur of about 0.5 Å,
        hence the default 0-0.25 Å.
    dose_e_per_A2
        Electron dose [e/Å²], log-uniform.
    mtf_c1, mtf_c2, mtf_c3
        Detector MTF coefficients (see ``etem.simulate.augment.mtf``).
    probe_semiangle_mrad
        Convergence semiangle of the STEM probe [mrad] (HAADF mode only).
    """

    defocus_A: Range = (-200.0, 200.0)
    Cs_A: Range = (-20e4, 20e4)
    C5_A: Range = (0.0, 5e7)
    astigmatism_A: Range = (0.0, 100.0)
    astigmatism_angle_rad: Range = (0.0, math.pi)
    focal_spread_A: Range = (20.0, 40.0)
    blur_A: Range = (0.0, 0.25)
    dose_e_per_A2: Range = (10.0, 1e4)
    mtf_c1: Range = (0.0, 0.1)
    mtf_c2: Range = (0.4, 0.6)
    mtf_c3: Range = (2.0, 3.0)
    probe_semiangle_mrad: Range = (20.0, 30.0)

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a (low, high) pair of numbers; got {value!r}.") from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"{name} must be finite; got {value!r}.")
            if lo > hi:
                raise ConfigError(f"{name} must be (low, high) with low <= high; got {value!r}. Swap them.")
            if (name in _POSITIVE and lo <= 0) or (name in _NON_NEGATIVE and lo < 0):
                raise ConfigError(f"{name} must be {'positive' if name in _POSITIVE else '>= 0'}; got {value!r}.")
            object.__setattr__(self, name, (lo, hi))
        if self.mtf_c1[1] > 1:
            raise ConfigError(f"mtf_c1 is the MTF's high-frequency floor and must be <= 1; got {self.mtf_c1!r}.")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> OpticsRanges:
        """Ranges from a TOML-shaped mapping.

        ``{"preset": "au", "dose_e_per_A2": [100, 1000], "C5_A": 0}``: an optional ``preset``
        (a key of :data:`PRESETS`) whose ranges replace the defaults, then any field as a
        ``[low, high]`` pair or one number (a fixed value).
        """
        config = dict(config)
        base = cls.preset(str(config.pop("preset"))) if "preset" in config else cls()
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ConfigError(
                f"unknown optics range(s) {', '.join(map(repr, unknown))}; valid keys are 'preset', "
                f"{', '.join(map(repr, sorted(valid)))}."
            )
        values = {k: (v, v) if np.ndim(v) == 0 else tuple(v) for k, v in config.items()}
        return replace(base, **values)

    @classmethod
    def preset(cls, name: str) -> OpticsRanges:
        """The ranges of a named preset (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise choice_error("preset", name, PRESETS)
        return cls(**PRESETS[name])

    def sample(
        self,
        n: int,
        generator: torch.Generator | np.random.Generator,
        *,
        device: torch.device | str | None = None,
    ) -> OpticsParams:
        """Draw ``n`` microscopes.

        Parameters
        ----------
        n
            Batch size.
        generator
            The random stream: a ``torch.Generator`` (draws on its device) or a NumPy Generator.
        device
            Where the parameters go (default: the generator's device; CPU for NumPy).

        Returns
        -------
        OpticsParams
            float32 ``[n]`` tensors.
        """
        if not (isinstance(n, (int, np.integer)) and n >= 0):
            raise ValueError(f"n must be a non-negative integer; got {n!r}.")
        names = [f.name for f in fields(self)]
        if isinstance(generator, np.random.Generator):
            u = torch.from_numpy(generator.random((len(names), int(n))))
        elif isinstance(generator, torch.Generator):
            u = torch.rand((len(names), int(n)), generator=generator, device=generator.device, dtype=torch.float64)
        else:
            raise TypeError(
                f"generator must be a torch.Generator or numpy.random.Generator; got {type(generator).__name__}. "
                "Make one with torch.Generator(device).manual_seed(seed) or numpy.random.default_rng(seed)."
            )
        values = {}
        for i, name in enumerate(names):
            lo, hi = getattr(self, name)
            if name in _LOG_UNIFORM:
                v = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u[i])
            else:
                v = lo + (hi - lo) * u[i]
            values[name] = v.to(device=device if device is not None else u.device, dtype=torch.float32)
        return OpticsParams(**values)


def optics_overrides(items: list[str]) -> dict:
    """``--optics`` values (``KEY=LO,HI``, ``KEY=VALUE`` or a TOML file of such keys, top level
    or an ``[optics]`` table) as one mapping of :class:`~etem.simulate.optics.OpticsRanges`
    overrides; later items win. Unknown keys and bad ranges are refused here, before anything is
    drawn."""
    import tomllib
    from pathlib import Path

    no_preset = "--optics sets ranges; name the preset they start from with --preset"
    out: dict = {}
    for item in items:
        if "=" in item:
            key, _, value = item.partition("=")
            if key.strip() == "preset":
                raise ConfigError(no_preset)
            try:
                nums = [float(v) for v in value.split(",") if v.strip()]
            except ValueError:
                nums = []
            if len(nums) not in (1, 2):
                raise ConfigError(f"--optics {key.strip()}=... takes one number or LO,HI; got {value!r}")
            out[key.strip()] = nums[0] if len(nums) == 1 else list(nums)
            continue
        path = Path(item)
        if path.suffix != ".toml":
            raise ConfigError(f"--optics takes KEY=LO,HI (e.g. defocus_A=-90,-30) or a .toml file; got {item!r}")
        if not path.is_file():
            raise ConfigError(f"--optics {item}: no such file")
        try:
            table = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"--optics {item}: not a TOML file ({e})") from None
        table = table.get("optics", table)
        if not isinstance(table, dict):
            raise ConfigError(f"--optics {item}: [optics] must be a table of ranges")
        out.update(table)
    if "preset" in out:
        raise ConfigError(no_preset)
    OpticsRanges.from_dict(out)  # unknown keys and bad ranges: a clear error now
    return out


#: Named starting points that replace some default ranges (keys are :class:`OpticsRanges`
#: fields); tune them against the microscope's own images. ``graphene``: the defaults (Madsen
#: et al.'s graphene work) with the twofold astigmatism held to 0-20 Å (:data:`GRAPHENE_ASTIGMATISM_A`)
#: and the dose from 100 e/Å² (below it no draw shows the lattice's 2.13 Å spots 5 noise
#: deviations out of a 1 nm² patch: a third of the default range's draws taught nothing).
#: ``au``: metal nanoparticles, with the low-dose end raised and a wider focal spread. ``mos2``: a narrower defocus range around the focal series' own offsets.
#: ``haadf``: a corrected STEM probe with small residual aberrations (the focal spread and the
#: MTF are not used in HAADF mode; the dose counts at the brightest pixel).
#: The ``graphene`` preset's twofold astigmatism C12 [Å]. The honeycomb is drawn by the six
#: 2.13 Å {10-10} reflections; where astigmatism gives one of their three pairs the other sign
#: of transfer than the other two, the image is a honeycomb moved by half a lattice vector, its
#: spots on the bond centres, 0.71 Å from the atoms, that no locator can tell from the sheet.
#: At 300 kV over the default 0-100 Å that is 29 % of the draws (62 % at 80-100 Å, 2 % under
#: 10 Å); held to 0-20 Å, 4 % (docs/models.md, "Graphene: `graphene-hrtem`").
GRAPHENE_ASTIGMATISM_A: Range = (0.0, 20.0)

PRESETS: dict[str, dict[str, Range]] = {
    "graphene": {"astigmatism_A": GRAPHENE_ASTIGMATISM_A, "dose_e_per_A2": (100.0, 1e4)},
    "au": {"dose_e_per_A2": (100.0, 1e4), "focal_spread_A": (20.0, 50.0)},
    "mos2": {"defocus_A": (-100.0, 100.0), "dose_e_per_A2": (50.0, 1e4)},
    "haadf": {
        "defocus_A": (-30.0, 30.0), "Cs_A": (-5e4, 5e4), "C5_A": (0.0, 1e7),
        "astigmatism_A": (0.0, 10.0), "blur_A": (0.0, 0.3), "dose_e_per_A2": (100.0, 1e5),
    },
}


@dataclass(frozen=True)
class OpticsParams:
    """One microscope per sample: ``[B]`` tensors on one device, fields as in :class:`OpticsRanges`."""

    defocus_A: torch.Tensor
    Cs_A: torch.Tensor
    C5_A: torch.Tensor
    astigmatism_A: torch.Tensor
    astigmatism_angle_rad: torch.Tensor
    focal_spread_A: torch.Tensor
    blur_A: torch.Tensor
    dose_e_per_A2: torch.Tensor
    mtf_c1: torch.Tensor
    mtf_c2: torch.Tensor
    mtf_c3: torch.Tensor
    probe_semiangle_mrad: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {tuple(getattr(self, f.name).shape) for f in fields(self)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"every OpticsParams field must be a [B] tensor of one B; got shapes {sorted(shapes)}.")

    def __len__(self) -> int:
        return int(self.defocus_A.shape[0])

    @property
    def device(self) -> torch.device:
        return self.defocus_A.device

    def to(self, device: torch.device | str) -> OpticsParams:
        """The same parameters on ``device``."""
        return OpticsParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @classmethod
    def constant(cls, batch: int = 1, *, device: torch.device | str | None = None, **values: float) -> OpticsParams:
        """``batch`` identical microscopes; fields not given are neutral.

        Neutral means: no aberrations, full coherence, no blur, infinite dose (no noise), a flat
        MTF (``c1 = 1``) and a 25 mrad probe.
        """
        neutral = {f.name: 0.0 for f in fields(cls)}
        neutral.update(dose_e_per_A2=math.inf, mtf_c1=1.0, mtf_c2=0.5, mtf_c3=2.5, probe_semiangle_mrad=25.0)
        unknown = sorted(set(values) - set(neutral))
        if unknown:
            raise ConfigError(f"unknown optics parameter(s) {', '.join(unknown)}; valid: {', '.join(neutral)}.")
        neutral.update(values)
        return cls(**{k: torch.full((batch,), float(v), dtype=torch.float32, device=device) for k, v in neutral.items()})


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength [Å] at ``energy_eV`` [eV] (abTEM's formula)."""
    if not energy_eV > 0:
        raise ValueError(f"energy_eV must be positive [eV]; got {energy_eV!r}.")
    mc2_eV = constants.m_e * constants.c**2 / constants.e
    return float(constants.h * constants.c / math.sqrt(energy_eV * (2 * mc2_eV + energy_eV)) / constants.e * 1e10)


def _pair(value: float | Sequence[float], name: str = "sampling_A") -> tuple[float, float]:
    vals = (float(value),) * 2 if np.ndim(value) == 0 else tuple(float(v) for v in value)  # type: ignore[arg-type, union-attr]
    if len(vals) != 2 or not all(v > 0 and math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be a positive number or (axis 0, axis 1) pair [Å/px]; got {value!r}.")
    return vals[0], vals[1]


def _frequencies(shape: tuple[int, int], sampling: tuple[float, float], device, dtype) -> tuple[torch.Tensor, ...]:
    """``k0, k1`` (broadcast [H, 1], [1, W]) and ``k^2``, ``k^2 cos 2 phi``, ``k^2 sin 2 phi`` [H, W]."""
    k0 = torch.fft.fftfreq(shape[0], d=sampling[0], device=device, dtype=dtype)[:, None]
    k1 = torch.fft.fftfreq(shape[1], d=sampling[1], device=device, dtype=dtype)[None, :]
    return k0, k1, k0**2 + k1**2, k0**2 - k1**2, 2 * k0 * k1


def _aperture(k0, k1, k2, cutoff: torch.Tensor, *, lam: float, shape, sampling, soft: bool) -> torch.Tensor:
    """abTEM's objective aperture on the frequency grid; ``cutoff`` [rad] broadcasts against it."""
    alpha = lam * torch.sqrt(k2)
    if not soft:
        return (alpha <= cutoff).to(k2.dtype)
    d0 = lam / (shape[0] * sampling[0])  # angular sampling [rad] along each axis
    d1 = lam / (shape[1] * sampling[1])
    k = torch.sqrt(k2)
    denominator = torch.sqrt((k0 * d0) ** 2 + (k1 * d1) ** 2) / torch.where(k > 0, k, torch.ones_like(k))
    denominator = torch.where(k > 0, denominator, torch.ones_like(denominator))
    array = ((cutoff - alpha) / denominator + 0.5).clamp(0.0, 1.0)
    return torch.where(k > 0, array, torch.ones_like(array))


def ctf(
    shape: tuple[int, int],
    *,
    sampling_A: float | tuple[float, float],
    energy_eV: float,
    params: OpticsParams,
    focal_offsets_A: Sequence[float] = (0.0,),
    semiangle_cutoff_mrad: float | torch.Tensor = math.inf,
    soft_aperture: bool = True,
    temporal_coherence: bool = True,
    image_shift_A: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The coherent transfer function of every sample and focal offset, on the FFT grid.

    Parameters
    ----------
    shape
        Grid size (H, W) [px].
    sampling_A
        Pixel size [Å/px]: one number or (axis 0, axis 1).
    energy_eV
        Electron energy [eV].
    params
        One microscope per sample (``[B]``).
    focal_offsets_A
        Defocus added to each sample's defocus, one per image of a focal series [Å].
    semiangle_cutoff_mrad
        Objective (or probe-forming) aperture [mrad]: a number (``inf``: none) or a ``[B]`` tensor.
    soft_aperture
        abTEM's soft aperture edge (True) or a hard disc.
    temporal_coherence
        Multiply by the focal-spread envelope (``params.focal_spread_A``).
    image_shift_A
        ``[B, F, 2]`` displacement of each image along the array axes [Å], folded in as the
        phase ramp ``exp(-2 pi i k . shift)`` (exact for periodic waves), or None.
    dtype
        Real dtype of the computation (float32 or float64); the result is the matching complex.

    Returns
    -------
    torch.Tensor
        ``[B, F, H, W]`` complex, unshifted (zero frequency at ``[0, 0]``), on ``params.device``:
        ``aperture * envelope * exp(-i chi)``.
    """
    h, w = (int(v) for v in shape)
    s = _pair(sampling_A)
    lam = wavelength_A(energy_eV)
    dev = params.device
    k0, k1, k2, k2c, k2s = _frequencies((h, w), s, dev, dtype)

    def per_sample(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype)[:, None, None, None]  # [B, 1, 1, 1]

    offsets = torch.as_tensor(list(focal_offsets_A), dtype=dtype, device=dev)
    if offsets.ndim != 1 or offsets.numel() == 0:
        raise ValueError(f"focal_offsets_A must be a non-empty sequence of defocus offsets [Å]; got {focal_offsets_A!r}.")
    c10 = -(per_sample(params.defocus_A) + offsets[None, :, None, None])  # [B, F, 1, 1]
    phi12 = per_sample(params.astigmatism_angle_rad)
    c12 = per_sample(params.astigmatism_A)
    chi = (
        (c12 * torch.cos(2 * phi12)) * k2c + (c12 * torch.sin(2 * phi12)) * k2s
        + (lam**2 / 2 * per_sample(params.Cs_A)) * k2**2
        + (lam**4 / 3 * per_sample(params.C5_A)) * k2**3
    )
    chi = (math.pi * lam) * (chi + c10 * k2)  # [B, F, H, W]
    if image_shift_A is not None:
        shift = image_shift_A.to(device=dev, dtype=dtype)
        if shift.shape != (len(params), offsets.numel(), 2):
            raise ValueError(f"image_shift_A must be [B, F, 2] = [{len(params)}, {offsets.numel()}, 2] [Å]; "
                             f"got shape {tuple(shift.shape)}.")
        chi = chi + 2 * math.pi * (shift[..., 0, None, None] * k0 + shift[..., 1, None, None] * k1)
    amplitude = torch.ones((), dtype=dtype, device=dev)
    if temporal_coherence:
        spread = per_sample(params.focal_spread_A)
        amplitude = torch.exp(-((0.5 * math.pi * lam) * spread * k2) ** 2)  # [B, 1, H, W]
    cutoff = torch.as_tensor(semiangle_cutoff_mrad, dtype=dtype, device=dev) * 1e-3
    if cutoff.ndim == 1:
        cutoff = cutoff[:, None, None, None]
    if bool(torch.any(torch.isfinite(cutoff))):
        amplitude = amplitude * _aperture(k0, k1, k2, cutoff, lam=lam, shape=(h, w), sampling=s, soft=soft_aperture)
    return torch.polar(amplitude.expand_as(chi), -chi)


def _check_batch(x: torch.Tensor, params: OpticsParams, name: str, *, complex_: bool) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"{name} must be a [B, H, W] torch tensor; got {getattr(x, 'shape', type(x).__name__)}.")
    if x.is_complex() != complex_:
        kind = "complex (complex64 exit waves)" if complex_ else "real"
        raise ValueError(f"{name} must be {kind}; got {x.dtype}.")
    if len(params) != x.shape[0]:
        raise ValueError(f"params hold {len(params)} microscopes for a batch of {x.shape[0]}; draw one per sample.")
    if params.device != x.device:
        raise ValueError(f"params are on {params.device} and {name} on {x.device}; move one with .to(device).")


def image_from_waves(
    waves: torch.Tensor,
    *,
    sampling_A: float | tuple[float, float],
    energy_eV: float,
    params: OpticsParams,
    focal_offsets_A: Sequence[float] = (0.0,),
    semiangle_cutoff_mrad: float = math.inf,
    soft_aperture: bool = True,
    image_shift_A: torch.Tensor | None = None,
) -> torch.Tensor:
    """HRTEM images of exit waves: each sample's transfer function, then ``|psi|^2``.

    Parameters
    ----------
    waves
        ``[B, H, W]`` complex exit waves (complex64, or complex128 for double precision).
    sampling_A
        Pixel size of the waves [Å/px].
    energy_eV
        Electron energy [eV], that of the waves.
    params
        One microscope per sample, on the waves' device.
    focal_offsets_A
        One image per offset [Å], added to each sample's defocus (a focal series).
    semiangle_cutoff_mrad
        Objective aperture [mrad] (``inf``: none).
    soft_aperture
        abTEM's soft aperture edge (True) or a hard disc.
    image_shift_A
        ``[B, F, 2]`` displacement of each image's content along the array axes [Å] (periodic),
        e.g. the misalignment of a focal series; None for none.

    Returns
    -------
    torch.Tensor
        ``[B, F, H, W]`` intensities in the waves' real dtype (1 = vacuum for unit plane waves).
    """
    _check_batch(waves, params, "waves", complex_=True)
    real = torch.float64 if waves.dtype == torch.complex128 else torch.float32
    kernel = ctf(waves.shape[-2:], sampling_A=sampling_A, energy_eV=energy_eV, params=params,
                 focal_offsets_A=focal_offsets_A, semiangle_cutoff_mrad=semiangle_cutoff_mrad,
                 soft_aperture=soft_aperture, image_shift_A=image_shift_A, dtype=real)
    psi = torch.fft.ifft2(_shared(torch.fft.fft2, waves)[:, None] * kernel)
    return psi.real**2 + psi.imag**2


def _shared(transform, x: torch.Tensor) -> torch.Tensor:
    """``transform(x)`` over a batch; a batch that repeats one sample (an expanded tensor, stride
    0 along the batch, as training draws several microscopes for one wave) is transformed once."""
    if x.shape[0] > 1 and x.stride(0) == 0:
        return transform(x[:1]).expand(x.shape[0], *([-1] * (x.ndim - 1)))
    return transform(x)


def probe_intensity(
    shape: tuple[int, int],
    *,
    sampling_A: float | tuple[float, float],
    energy_eV: float,
    params: OpticsParams,
    focal_offsets_A: Sequence[float] = (0.0,),
    soft_aperture: bool = True,
    image_shift_A: torch.Tensor | None = None,
) -> torch.Tensor:
    """Intensity of each sample's STEM probe, ``|IFFT(aperture exp(-i chi))|^2``.

    The aperture is ``params.probe_semiangle_mrad``; the aberrations are those of ``params``.
    The focal spread is not applied (in STEM it is an incoherent sum over defocus, a small
    effect on a HAADF probe). ``image_shift_A`` (``[B, F, 2]`` [Å]) moves the probes off
    pixel ``[0, 0]``.

    Returns
    -------
    torch.Tensor
        ``[B, F, H, W]`` float32, centred on pixel ``[0, 0]`` (periodic), each summing to 1.
    """
    kernel = ctf(shape, sampling_A=sampling_A, energy_eV=energy_eV, params=params,
                 focal_offsets_A=focal_offsets_A, semiangle_cutoff_mrad=params.probe_semiangle_mrad,
                 soft_aperture=soft_aperture, temporal_coherence=False, image_shift_A=image_shift_A)
    probe = torch.fft.ifft2(kernel)
    intensity = probe.real**2 + probe.imag**2
    return intensity / intensity.sum((-2, -1), keepdim=True)


def stem_image(
    objects: torch.Tensor,
    *,
    sampling_A: float | tuple[float, float],
    energy_eV: float,
    params: OpticsParams,
    focal_offsets_A: Sequence[float] = (0.0,),
    soft_aperture: bool = True,
    image_shift_A: torch.Tensor | None = None,
) -> torch.Tensor:
    """Incoherent (HAADF) STEM images: each object convolved with its sample's probe intensity.

    Parameters
    ----------
    objects
        ``[B, H, W]`` real scattering strength: a projected potential, or Z^1.7-weighted
        Gaussian columns (:func:`haadf_object`). Convolution is periodic.
    sampling_A, energy_eV, params, focal_offsets_A, soft_aperture, image_shift_A
        As in :func:`probe_intensity` (a probe moved by ``image_shift_A`` moves the image).

    Returns
    -------
    torch.Tensor
        ``[B, F, H, W]`` float32 (the object's units; the probe sums to 1).
    """
    _check_batch(objects, params, "objects", complex_=False)
    h, w = objects.shape[-2:]
    probe = probe_intensity((h, w), sampling_A=sampling_A, energy_eV=energy_eV, params=params,
                            focal_offsets_A=focal_offsets_A, soft_aperture=soft_aperture,
                            image_shift_A=image_shift_A)
    spectrum = _shared(torch.fft.rfft2, objects.float())[:, None] * torch.fft.rfft2(probe)
    return torch.fft.irfft2(spectrum, s=(h, w))


def haadf_object(
    points: torch.Tensor,
    weights: torch.Tensor,
    *,
    shape: tuple[int, int],
    sampling_A: float,
    width_A: float = 0.3,
) -> torch.Tensor:
    """An incoherent object of Gaussian columns for :func:`stem_image`.

    Parameters
    ----------
    points
        ``[B, P, 2]`` (row, col) column positions [px]; non-finite rows are padding.
    weights
        ``[B, P]`` strength of each column, e.g. the sum of Z^1.7 over its atoms.
    shape
        Grid size (H, W) [px].
    sampling_A
        Pixel size [Å/px].
    width_A
        Standard deviation of a column [Å] (thermal smearing and the atom's own size).

    Returns
    -------
    torch.Tensor
        ``[B, H, W]`` float32.
    """
    if not width_A > 0:
        raise ValueError(f"width_A must be positive [Å]; got {width_A!r}.")
    return render_gaussians(points.float(), weights.float()[..., None], shape=shape,
                            sigma_px=width_A / float(sampling_A))[:, 0]
