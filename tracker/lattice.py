"""The pixel size from the lattice: Fourier peaks of an image of a known material.

Files often carry no pixel size, or a wrong one. A crystalline image's power spectrum has peaks
at the reciprocal-lattice vectors of its projected structure; their radii in cycles per pixel,
``f = sampling / d``, give the sampling [Å/px] once the spacings ``d`` [Å] are known. The
material's projected cell fixes which spacings exist and how strong each is, so a peak can be
told apart from its lattice's other orders (the graphene 2.13 Å and 1.23 Å rings differ by √3).

Method
------
1. Power spectrum of the mean-subtracted image under a Hann window, zero-padded to twice its
   size; divided by its radial median so that peaks stand out against the falling background.
2. Local maxima above ``min_snr`` times that background, refined to sub-bin positions by a
   quadratic fit to the log power around each maximum.
3. Every pairing of one of the strongest peaks with one of the material's reflection families
   proposes a sampling; each proposal is scored by the detected peaks it explains (weighted by
   their strength) less the material's strong reflections it predicts in the detectable band
   but that were not found.
4. The best proposal is refined from all the peaks it explains (each gives ``d * f``), weighted
   by radius (a peak further out pins the scale more tightly); the uncertainty is the weighted
   standard error of those, with the sub-bin precision of a single peak as its floor.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import ConfigError

log = logging.getLogger("etem.lattice")

__all__ = ["resolve_sampling", "MATERIALS", "Material", "SamplingEstimate", "estimate_sampling", "material", "materials", "reflections"]


@dataclass(frozen=True)
class Material:
    """A material's projected cell along a zone axis: enough to predict its Fourier peaks.

    Parameters
    ----------
    name, zone
        Name and zone axis, for messages.
    cell_A
        The two in-plane cell vectors [Å] (rows), as ``[[ax, ay], [bx, by]]``.
    columns
        Fractional positions ``(u, v)`` of the atomic columns in the cell, with a weight per
        column (``Z ** 1.7`` summed over the column's atoms, as in annular dark-field contrast;
        only used to tell strong reflections from weak ones).
    """

    name: str
    zone: str
    cell_A: tuple[tuple[float, float], tuple[float, float]]
    columns: tuple[tuple[float, float, float], ...]
    note: str = ""


def _hex(a: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return ((a, 0.0), (-a / 2, a * np.sqrt(3) / 2))


def _w(*z: float) -> float:
    return float(sum(zi ** 1.7 for zi in z))


#: Materials the sampling can be estimated for, by name.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("graphene", "[001]", _hex(2.46), ((0, 0, _w(6)), (1 / 3, 2 / 3, _w(6)))),
        Material("mos2", "[001]", _hex(3.16), ((1 / 3, 2 / 3, _w(42)), (2 / 3, 1 / 3, _w(16, 16))),
                 note="2H monolayer"),
        # fcc [110]: a rectangular cell a/sqrt2 x a with a centred column.
        Material("au110", "[110]", ((4.08 / np.sqrt(2), 0.0), (0.0, 4.08)),
                 ((0, 0, _w(79)), (0.5, 0.5, _w(79)))),
        # fcc [111]: the three stacking positions project onto one triangular lattice of
        # spacing a/sqrt6 (its first ring is {220}, 1.44 Å).
        Material("au111", "[111]", _hex(4.08 / np.sqrt(6)), ((0, 0, _w(79)),)),
        Material("srtio3001", "[001]", ((3.905, 0.0), (0.0, 3.905)),
                 ((0, 0, _w(38)), (0.5, 0.5, _w(22, 8)), (0.5, 0, _w(8)), (0, 0.5, _w(8)))),
        # perovskite [110]: SrO, Ti and O columns on a rectangular a/sqrt2 x a cell.
        Material("srtio3110", "[110]", ((3.905 / np.sqrt(2), 0.0), (0.0, 3.905)),
                 ((0, 0, _w(38, 8)), (0, 0.5, _w(22)), (0.5, 0.5, _w(8)))),
    )
}
#: Names that stand for every zone axis listed for a material (the best-fitting one is taken).
_FAMILIES = {"au": ("au110", "au111"), "gold": ("au110", "au111"), "srtio3": ("srtio3001", "srtio3110"),
             "sto": ("srtio3001", "srtio3110"), "mos₂": ("mos2",)}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace("[", "").replace("]", "")


def materials(name: str | Material) -> tuple[Material, ...]:
    """The material(s) a name stands for: one zone axis (``au110``) or all listed (``au``)."""
    if isinstance(name, Material):
        return (name,)
    key = _key(name)
    if key in MATERIALS:
        return (MATERIALS[key],)
    if key in _FAMILIES:
        return tuple(MATERIALS[k] for k in _FAMILIES[key])
    raise ConfigError(f"unknown material {name!r}; known: {', '.join(sorted(set(MATERIALS) | set(_FAMILIES)))} "
                      "(a name without a zone axis tries each listed zone).")


def material(name: str | Material) -> Material:
    """Look one material and zone axis up by name (case-insensitive)."""
    found = materials(name)
    if len(found) > 1:
        raise ConfigError(f"{name!r} has several zone axes ({', '.join(m.name for m in found)}); name one.")
    return found[0]


def reflections(mat: str | Material, *, d_min_A: float = 0.9, rel_min: float = 0.02) -> np.ndarray:
    """The material's reflection families: rows ``(d [Å], relative strength, directions)``.

    Families are reciprocal-lattice vectors grouped by length; the strength is the squared
    structure factor of the projected cell relative to the strongest (``rel_min`` drops the
    extinct and the faint); ``directions`` is how many distinct peaks the family puts in a half
    plane of the spectrum (3 for a hexagonal ring, 2 for a square one).
    """
    m = material(mat)
    cell = np.asarray(m.cell_A, float)
    recip = np.linalg.inv(cell).T  # rows: reciprocal vectors [1/Å]
    cols = np.asarray(m.columns, float)
    n = int(np.ceil(1 / d_min_A * np.linalg.norm(cell, axis=1).max())) + 1
    h, k = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    h, k = h.ravel(), k.ravel()
    keep = (h != 0) | (k != 0)
    h, k = h[keep], k[keep]
    g = np.linalg.norm(np.outer(h, recip[0]) + np.outer(k, recip[1]), axis=1)
    phase = 2j * np.pi * (np.outer(h, cols[:, 0]) + np.outer(k, cols[:, 1]))
    strength = np.abs(np.exp(phase) @ cols[:, 2]) ** 2
    ok = g <= 1 / d_min_A
    g, strength = g[ok], strength[ok]
    # group by length
    order = np.argsort(g)
    g, strength = g[order], strength[order]
    groups: list[list[int]] = []
    for i in range(len(g)):
        if groups and g[i] - g[groups[-1][0]] < 1e-6:
            groups[-1].append(i)
        else:
            groups.append([i])
    top = strength.max()
    fam = np.array([(1 / g[ix[0]], strength[ix].max() / top,
                     max(1, int(np.sum(strength[ix] >= rel_min * top)) // 2)) for ix in groups])
    return fam[fam[:, 1] >= rel_min]


@dataclass
class SamplingEstimate:
    """A sampling estimated from the lattice, with its uncertainty and the evidence."""

    sampling: float          #: [Å/px]
    uncertainty: float       #: one standard error [Å/px]
    material: str
    zone: str
    n_peaks: int             #: Fourier peaks that agree with the material's reflections
    score: float             #: the winning proposal's score (higher is surer)
    #: relative spread of the per-peak values: the lattice looks distorted (scan distortion,
    #: drift, strain) or the peaks are poorly located when this exceeds a percent or two
    distortion: float
    peaks: np.ndarray = field(repr=False)  #: rows (f [1/px], d [Å], snr) of the matched peaks
    #: the pixel size the data (a file's calibration, a stream's frames, ``--sampling``) give, where
    #: :func:`resolve_sampling` compared the lattice with it; None where they give none
    data_sampling: float | None = None
    #: what :func:`resolve_sampling` said of that comparison (empty: they agree)
    calibration_note: str = ""
    #: every peak of the spectrum, rows (f [1/px], snr, angle): other materials are fitted to them
    spectrum: np.ndarray | None = field(default=None, repr=False)
    n_pad: int = field(default=0, repr=False)

    @property
    def disagreement(self) -> float | None:
        """The lattice's pixel size relative to the data's, less 1 (+0.06: 6 % more); None
        where the data give none."""
        return None if not self.data_sampling else self.sampling / self.data_sampling - 1

    @property
    def relative_uncertainty(self) -> float:
        return self.uncertainty / self.sampling

    def as_dict(self) -> dict[str, float | str | int]:
        """The figures, for a run file's attributes or a table's ``attrs``."""
        out = {"sampling": self.sampling, "uncertainty": self.uncertainty, "material": self.material,
               "zone": self.zone, "n_peaks": self.n_peaks, "distortion": self.distortion}
        if self.data_sampling:
            out.update(data_sampling=self.data_sampling, disagreement=self.disagreement,
                       calibration_note=self.calibration_note)
        return out

    def __str__(self) -> str:
        text = (f"{self.sampling:.4f} ± {self.uncertainty:.4f} Å/px from {self.n_peaks} lattice peaks "
                f"of {self.material} {self.zone}")
        if self.distortion > 0.02:
            text += f" (peaks disagree by {100 * self.distortion:.1f} %: distorted lattice or image?)"
        return text


def _spectrum(image: np.ndarray) -> tuple[np.ndarray, int]:
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ConfigError(f"the sampling is estimated from one 2-D image; got shape {img.shape}.")
    if not np.isfinite(img).all():
        raise ConfigError("the image holds NaN or infinite pixels; the sampling cannot be estimated from it.")
    h, w = img.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    n = 2 * int(2 ** np.ceil(np.log2(max(h, w))))
    f = np.fft.fft2((img - img.mean()) * win, s=(n, n))
    return np.fft.fftshift(np.abs(f) ** 2), n


def _radial_median(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    ri = np.round(r).astype(int)
    order = np.argsort(ri, axis=None)
    rs = ri.ravel()[order]
    vs = p.ravel()[order]
    edges = np.flatnonzero(np.diff(rs)) + 1
    med = np.array([np.median(c) for c in np.split(vs, edges)])
    radii = rs[np.r_[0, edges]]
    prof = np.zeros(ri.max() + 1)
    prof[radii] = med
    prof = ndimage.median_filter(prof, size=9, mode="nearest")
    return prof[ri]


def _peaks(image: np.ndarray, min_snr: float, max_peaks: int) -> np.ndarray:
    """Fourier peaks: rows (f [cycles/px], snr, angle [rad]), strongest first, one per ± pair."""
    p, n = _spectrum(image)
    # A 3x3 box sum: a lattice peak (spread over a few bins by the window and the padding) keeps
    # its height while the exponentially distributed noise of single bins is averaged down, so
    # that the hundreds of thousands of noise bins do not put maxima above the threshold.
    p = ndimage.uniform_filter(p, size=3, mode="wrap")
    c = n // 2
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - c, xx - c)
    ratio = p / np.maximum(_radial_median(p, r), np.finfo(float).tiny)
    r_min = max(6.0, 0.02 * n)  # the window's own low-frequency hump
    cand = (ratio == ndimage.maximum_filter(ratio, size=5)) & (ratio > min_snr) & (r > r_min) & (r < 0.98 * c)
    cand &= (yy > c) | ((yy == c) & (xx > c))  # the spectrum of a real image is symmetric
    iy, ix = np.nonzero(cand)
    strongest = np.argsort(ratio[iy, ix])[::-1][:max_peaks]
    iy, ix = iy[strongest], ix[strongest]
    logp = np.log(np.maximum(p, np.finfo(float).tiny))
    rows = []
    for y, x in zip(iy, ix):
        if not (1 <= y < n - 1 and 1 <= x < n - 1):
            continue
        # quadratic fit of the log power along each axis: sub-bin position
        dy = _vertex(logp[y - 1, x], logp[y, x], logp[y + 1, x])
        dx = _vertex(logp[y, x - 1], logp[y, x], logp[y, x + 1])
        fy, fx = (y + dy - c) / n, (x + dx - c) / n
        rows.append((np.hypot(fy, fx), ratio[y, x], np.arctan2(fy, fx)))
    return np.array(rows).reshape(-1, 3)


def _vertex(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def estimate_sampling(
    image: np.ndarray,
    material: str | Material,
    *,
    min_snr: float = 10.0,
    tolerance: float = 0.03,
    max_peaks: int = 40,
) -> SamplingEstimate:
    """Estimate the sampling [Å/px] of an image of a known material from its Fourier peaks.

    Parameters
    ----------
    image
        One 2-D image; any rotation of the lattice, bright or dark columns.
    material
        A material and zone axis from :data:`MATERIALS` (``graphene``, ``mos2``, ``au110``,
        ``au111``, ``srtio3001``, ``srtio3110``), a material name that tries each of its zone
        axes (``au``, ``srtio3``), or a :class:`Material`.
    min_snr
        A Fourier peak must stand this many times above the radially median background.
    tolerance
        Relative mismatch allowed between a peak and a predicted reflection.

    Raises
    ------
    ConfigError
        When the spectrum shows no lattice peaks, or none that fit the material.
    """
    mats = materials(material)
    peaks = _peaks(image, min_snr, max_peaks)
    if len(peaks) == 0:
        raise ConfigError(f"no lattice peaks in the image's power spectrum (none {min_snr}× above the "
                          "background); the sampling cannot be estimated: give it (--sampling, sampling=; Å/px).")
    n_pad = 2 * int(2 ** np.ceil(np.log2(max(np.shape(image)))))
    est = _best_fit(peaks, mats, n_pad=n_pad, min_snr=min_snr, tolerance=tolerance)
    est.spectrum, est.n_pad = peaks, n_pad
    return est


def _best_fit(peaks: np.ndarray, mats: tuple[Material, ...], *, n_pad: int, min_snr: float,
              tolerance: float) -> SamplingEstimate:
    """The best fit of ``mats`` to a spectrum's ``peaks`` (:func:`_peaks`), or the ConfigError
    that says why none fits."""
    fits = [_fit(peaks, m, n_pad=n_pad, min_snr=min_snr, tolerance=tolerance) for m in mats]
    fits = [f for f in fits if f is not None]
    if not fits:
        raise ConfigError(f"no lattice of {' or '.join(m.name + ' ' + m.zone for m in mats)} in the image's power "
                          f"spectrum ({len(peaks)} peaks, none in two directions that fit it); check the "
                          "material, or give the sampling (--sampling, sampling=; Å/px).")
    # the image's own strongest peaks must be the material's: any lattice explains a few of the
    # weaker peaks at some pixel size
    strong = peaks[:, 1] >= _STRONG * peaks[:, 1].max()
    fitting = [f for f in fits if _explained(peaks[strong, 0], f, tolerance).all()]
    if not fitting:
        best = max(fits, key=lambda e: e.score)
        missed = int((strong & ~_explained(peaks[:, 0], best, tolerance)).sum())
        exc = ConfigError(
            f"the lattice does not look like {' or '.join(m.name + ' ' + m.zone for m in mats)}: "
            + ("the strongest peak" if strong.sum() == 1 else f"{missed} of the {int(strong.sum())} strongest peaks")
            + f" of the image's power spectrum {'is' if strong.sum() == 1 else 'are'} none of its reflections at the "
            f"pixel size that fits best ({best.sampling:.4f} Å/px, from {best.n_peaks} weaker peaks); check the "
            "material, or give the sampling (--sampling, sampling=; Å/px).")
        exc.mismatch = True  # (resolve_sampling warns of it where the data give a sampling)
        raise exc
    return max(fitting, key=lambda e: e.score)


def _explained(f: np.ndarray, fit: SamplingEstimate, tolerance: float) -> np.ndarray:
    """Which peaks (radii ``f`` [1/px]) a fit explains: those it matched, and those within twice
    the matching ``tolerance`` of the radius of one of its families that has a direction left
    (no matched peak in it). A scan-distorted lattice's peaks
    spread by more than the tolerance about the mean: the real MoS2 image's three strongest by
    ±2.7 % (6.5 % between its principal directions), so that on a 512² crop of it one of them
    fell outside and mos2 was refused for it."""
    matched = np.isin(f, fit.peaks[:, 0])
    fam = reflections(fit.material)
    # only families with a direction left that no matched peak takes (a rectangular lattice's
    # two-peak family explains no third peak of a hexagonal ring)
    free = np.array([np.sum(np.isclose(fit.peaks[:, 1], d)) < n for d, _, n in fam])
    if not free.any():
        return matched
    rel = np.abs(f[:, None] * fam[free, 0][None, :] / fit.sampling - 1)
    return matched | (rel.min(axis=1) < 2 * tolerance)


#: Peaks at least this fraction as strong as the strongest (above the background) must all be
#: explained by a material's fit. On the real SrTiO3 [110] ADF crop (0.0933 Å/px) mos2, graphene
#: and au fitted 7 to 11 of its weaker peaks (0.1143, 0.0885, 0.0970 Å/px) and left its two
#: strongest (each over 10 times as strong as any they explained) unexplained; on the real MoS2
#: image srtio3 fitted at 0.3413 Å/px, leaving the three strongest. The right materials leave
#: no peak over 0.3 of the strongest unexplained.
_STRONG = 0.5


def _fit(peaks: np.ndarray, mat: Material, *, n_pad: int, min_snr: float,
         tolerance: float) -> SamplingEstimate | None:
    fam = reflections(mat)
    f, snr = peaks[:, 0], peaks[:, 1]
    weight = np.log(snr)
    # Reflections predicted where peaks can be seen (above the window's hump, and no further out
    # than the furthest peak the proposal explains: blur may hide the outer ones) but not found
    # count against the proposal.
    f_lo = max(6.0, 0.02 * n_pad) / n_pad
    best = None
    for fp in f[np.argsort(snr)[::-1][:8]]:
        for d in fam[:, 0]:
            s = d * fp
            pred_f = s / fam[:, 0]
            # each peak explained by the nearest predicted family
            j = np.argmin(np.abs(f[:, None] / pred_f[None, :] - 1), axis=1)
            hit = np.abs(f / pred_f[j] - 1) < tolerance
            # a family explains no more peaks than it has directions (the strongest ones):
            # a hexagonal ring of three peaks is no rectangular lattice's two-peak family
            for fam_i in np.unique(j[hit]):
                mine = np.flatnonzero(hit & (j == fam_i))
                hit[mine[np.argsort(snr[mine])[::-1][int(fam[fam_i, 2]):]]] = False
            if not hit.any():
                continue
            band = (pred_f > f_lo) & (pred_f < f[hit].max() * (1 + tolerance))
            found = np.zeros(len(fam), bool)
            found[j[hit]] = True
            missing = band & ~found
            score = weight[hit].sum() - np.log(min_snr) * 2 * fam[missing, 1].sum()
            if best is None or score > best[0]:
                best = (score, hit, j)
    if best is None:
        return None
    score, hit, j = best
    # A lattice shows peaks in at least two directions; one peak alone may be anything.
    ang = peaks[hit, 2] % np.pi
    spread = np.abs((ang[:, None] - ang[None, :] + np.pi / 2) % np.pi - np.pi / 2)
    if score <= 0 or spread.max(initial=0.0) < np.radians(15):
        return None
    d = fam[j[hit], 0]
    each = d * f[hit]  # one sampling per peak
    wts = f[hit] ** 2 * weight[hit]
    mean = float(np.average(each, weights=wts))
    n = int(hit.sum())
    # The weighted standard error of the per-peak values (Kish's effective count), with the
    # sub-bin precision of the outermost peak (about a tenth of a padded bin) as its floor.
    n_eff = wts.sum() ** 2 / (wts ** 2).sum()
    sd = float(np.sqrt(np.average((each - mean) ** 2, weights=wts)))
    floor = mean * 0.1 / (n_pad * f[hit].max())
    return SamplingEstimate(sampling=mean, uncertainty=max(sd / np.sqrt(max(n_eff - 1, 1)), floor),
                            material=mat.name, zone=mat.zone, n_peaks=n, score=float(score),
                            distortion=sd / mean, peaks=np.column_stack([f[hit], d, snr[hit]]))


def require_material(material: str | None) -> None:
    """The error for estimating the sampling from the lattice without naming the material."""
    if not material:
        raise ConfigError("estimating the sampling from the lattice needs the material in view "
                          f"(--material NAME, material=; known: {', '.join(sorted(set(MATERIALS) | set(_FAMILIES)))}).")


#: The data's pixel size (a file's calibration) and the named material's lattice are said to
#: disagree where they differ by more than this (or three of the estimate's standard errors).
#: The estimate's own error is below 1 %: within 0.8 % on 150 simulated Gaussian-column images of
#: the six materials (0.05–0.2 Å/px, 256² and 512², any rotation, 50–2,000 e/Å²) and 0.5 % on the
#: abTEM STEM and HRTEM frames of Au and MoS2 at 0.08 and 0.127 Å/px; a real lattice adds strain and
#: scan distortion (the real MoS2 image's peaks spread by 2 %, 6.5 % between its two principal
#: directions). Calibrations are off by more (the real MoS2 file: 5–6 %).
CALIBRATION_TOLERANCE = 0.03
#: Beyond this the material named is more likely wrong than the calibration (hexagonal graphene,
#: 2.46 Å, named for MoS2, 3.16 Å: 22 % off).
WRONG_MATERIAL = 0.10


def resolve_sampling(
    image: np.ndarray,
    *,
    given: float | None,
    material: str | None,
    auto: bool = False,
) -> tuple[float | None, SamplingEstimate | None]:
    """The sampling to use for an image, and the lattice estimate when one was made.

    ``auto`` estimates from the lattice whatever the data say; otherwise the lattice is used
    only where the data give no sampling. Where they give one, it is checked against the
    lattice either way: a warning in the log (once, here) where they differ by more than
    :data:`CALIBRATION_TOLERANCE` (a calibration off, or the wrong material named; beyond
    :data:`WRONG_MATERIAL` it names the materials that fit at the data's pixel size), and
    ``est.calibration_note`` holds what it said. Both need ``material``.
    """
    if auto:
        require_material(material)
    if not material:
        return given, None
    img = np.asarray(image)
    try:
        est = _estimate_series(img, material)
    except ConfigError as exc:
        if given is None or auto:
            raise
        (log.warning if getattr(exc, "mismatch", False) else log.info)(
            "sampling %.4f Å/px not checked against the lattice: %s", given, exc)
        return given, None
    if given:
        est.data_sampling = float(given)
        est.calibration_note = calibration_note(est, auto=auto)
        if est.calibration_note:
            log.warning("%s", est.calibration_note, extra={"etem_calibration": True})
    if auto or given is None:
        log.info("sampling from the lattice: %s", est)
        return est.sampling, est
    return given, est


def calibration_note(est: SamplingEstimate, *, auto: bool) -> str:
    """What to say where the data's pixel size (``est.data_sampling``) and the lattice's differ
    by more than :data:`CALIBRATION_TOLERANCE` (or three standard errors); empty where they agree."""
    given, rel = est.data_sampling, est.disagreement
    if not given or abs(rel) <= max(CALIBRATION_TOLERANCE, 3 * est.uncertainty / given):
        return ""
    text = (f"the data say {given:.4f} Å/px; the {est.material} lattice measures {est.sampling:.4f} ± "
            f"{est.uncertainty:.4f} ({100 * abs(rel):.1f} % {'more' if rel > 0 else 'less'}; diffusion "
            f"coefficients go as its square: {100 * abs((1 + rel) ** 2 - 1):.0f} %)")
    if abs(rel) > WRONG_MATERIAL:
        text += (f". More than a calibration is usually off: is the material {est.material}? "
                 + _what_fits(est) + ". ")
    else:
        text += ": the calibration or the lattice is off; "
    tail = "--sampling auto uses the lattice's" if auto else "the data's is used (--sampling auto uses the lattice's)"
    return text + (tail[0].upper() + tail[1:] if text.endswith(". ") else tail)


def _what_fits(est: SamplingEstimate) -> str:
    """The other known materials whose lattice fits the image's spectrum within
    :data:`WRONG_MATERIAL` of the data's pixel size (as far as a calibration may be off), in words."""
    found = []
    if est.spectrum is not None and len(est.spectrum):
        for name, m in MATERIALS.items():
            if name == est.material:
                continue
            try:
                fit = _best_fit(est.spectrum, (m,), n_pad=est.n_pad, min_snr=10.0, tolerance=0.03)
            except ConfigError:
                continue
            rel = fit.sampling / est.data_sampling - 1
            if abs(rel) <= WRONG_MATERIAL:
                found.append(f"{name} ({fit.sampling:.4f} Å/px, {100 * rel:+.1f} %)")
    if not found:
        return "No other known material fits at the data's pixel size"
    return "At the data's pixel size the lattice fits " + " or ".join(found)


def _estimate_series(image: np.ndarray, material: str) -> SamplingEstimate:
    """:func:`estimate_sampling` of one image, or of the image of a focal series whose
    spectrum shows the most of the lattice's peaks (far from focus an image may show a few,
    which can fit another reflection family: a MoS2 series' first image at 0.1 Å/px gave
    √3 times the pixel size)."""
    found, error = [], None
    for img in image.reshape(-1, *image.shape[-2:]):
        try:
            found.append(estimate_sampling(img, material))
        except ConfigError as exc:
            error = error or exc
    if not found:
        raise error
    return max(found, key=lambda e: (e.n_peaks, e.score))
