"""Where a locator stops working: image-quality sweeps and the trust ranges they give.

After Wei et al.: a locator is run on simulated images with known columns while one image
property at a time is pushed past the point where it fails — dose (noise), pixel size,
resolution (column blur) — and each image is scored by ID-recall, ID-precision and position
RMS. An image *passes* when recall ≥ 90 %, precision ≥ 95 % and RMS ≤ 0.3 Å (their cut-offs).
Each image's quality is also measured the way the tracker measures every frame
(:func:`etem.tracker.quality.measure`: SNR, resolution) with the locator's mean column
probability, so the cut-offs can be stated in figures that are known for a real frame too:
:func:`trust_ranges` turns a sweep into :class:`etem.tracker.trust.TrustRanges`.

:func:`run_sweep` takes its images from :func:`etem.simulate.toy.make_movie` (Gaussian columns
with shot noise): an image model, not a physical simulation, so the ranges it gives are those of
that model. :func:`wave_sweep` takes held-out exit-wave images instead (structures through
abTEM and the optics of :mod:`etem.simulate`) under one fixed microscope, with the contrast as a
fourth axis; :func:`cutoffs`, :func:`radar_plot` and :func:`wave_trust_ranges` read it
(``etem evaluate MODEL WAVES --sweep``).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from etem.tracker.trust import TrustRanges

__all__ = ["Condition", "CUTOFFS", "default_conditions", "run_sweep", "trust_ranges", "WAVE_AXES", "BASE_OPTICS",
           "wave_sweep", "cutoffs", "format_cutoffs", "radar_plot", "wave_trust_ranges", "strictest"]

#: Wei et al.'s pass criteria.
CUTOFFS = {"recall_min": 0.90, "precision_min": 0.95, "rms_max_A": 0.30}


@dataclass(frozen=True)
class Condition:
    """One imaging condition of a sweep (``axis`` names the property being pushed)."""

    axis: str
    dose: float = 300.0            #: electrons per Å² per frame
    sampling: float = 0.2          #: [Å/px]
    column_sigma_A: float = 0.45   #: column image width [Å]: the resolution
    contrast: str = "bright"


def default_conditions(contrast: str = "bright", base_dose: float | None = None) -> list[Condition]:
    """Dose from 2 to 10⁴ e/Å², pixel size 0.05–0.9 Å/px, column width 0.3–1.4 Å; one at a time.

    The other properties stay at the base condition: 0.2 Å/px, 0.45 Å columns and a dose where
    the classical locator passes (300 e/Å² for bright columns, 3000 for dark ones, whose
    bright background carries more noise).
    """
    dose = base_dose if base_dose is not None else (300.0 if contrast == "bright" else 3000.0)
    base = Condition("base", dose=dose, contrast=contrast)
    out = [replace(base, axis="dose", dose=float(d)) for d in np.geomspace(2, 3e4, 13)]
    out += [replace(base, axis="sampling", sampling=float(s)) for s in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    out += [replace(base, axis="resolution", column_sigma_A=float(s)) for s in (0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4)]
    return out


def run_sweep(
    conditions: Iterable[Condition],
    *,
    find_kwargs: dict[str, Any] | None = None,
    n_frames: int = 2,
    field_A: float = 51.2,
    radius_A: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Score a locator under each condition: one row per condition.

    Parameters
    ----------
    find_kwargs
        Passed to :func:`etem.tracker.find` (``classical=True``, ``model=...``); the true
        sampling is always given.
    field_A
        Side of the simulated field [Å] (the pixel count follows from the sampling).
    radius_A
        Largest distance of a match [Å].
    """
    from etem.simulate.toy import make_movie
    from etem.tracker import find
    from etem.tracker.evaluate import score_columns
    from etem.tracker.quality import measure

    kwargs = dict(find_kwargs or {"classical": True})
    rows = []
    for c in conditions:
        n = int(round(field_A / c.sampling))
        movie = make_movie(n_frames=n_frames, shape=(n, n), sampling=c.sampling, dose_per_frame=c.dose,
                           column_sigma_A=c.column_sigma_A, contrast=c.contrast, particle_radius_A=0.3 * field_A,
                           seed=seed)
        cols = find(movie.frames, sampling=c.sampling, dark=c.contrast == "dark", **kwargs)
        score = score_columns(cols, movie.truth.positions, radius_px=radius_A / c.sampling, sampling=c.sampling)
        q = measure(movie.frames, c.sampling)
        passed = _passes(score)
        rows.append({
            "axis": c.axis, "dose": c.dose, "sampling": c.sampling, "column_sigma_A": c.column_sigma_A,
            "contrast": c.contrast, "snr": float(np.median(q[:, 0])), "dose_est": float(np.median(q[:, 1])),
            "resolution_A": float(np.median(q[:, 2])),
            "confidence": float(cols["prob"].mean()) if len(cols) else float("nan"),
            "recall": score["recall"], "precision": score["precision"], "rms_A": score["rms_A"],
            "passed": bool(passed),
        })
    return pd.DataFrame(rows)


def _passes(score: dict[str, Any]) -> bool:
    """Whether a pooled score meets Wei's cut-offs (:data:`CUTOFFS`)."""
    return bool(score["recall"] >= CUTOFFS["recall_min"] and score["precision"] >= CUTOFFS["precision_min"]
                and score["rms_A"] <= CUTOFFS["rms_max_A"])


def _lowest_safe(values: np.ndarray, passed: np.ndarray) -> float | None:
    """The least value v such that every condition at or above v passed (None if none did)."""
    order = np.argsort(values)
    v, p = values[order], passed[order]
    ok = np.flatnonzero(np.cumprod(p[::-1])[::-1])  # suffixes that pass entirely
    return float(v[ok[0]]) if len(ok) else None


def trust_ranges(table: pd.DataFrame, *, source: str = "", with_confidence: bool = True) -> TrustRanges:
    """Trust ranges from a sweep: for each axis, the range over which every condition passed.

    The SNR floor comes from the dose axis, the resolution ceiling from the resolution axis,
    the pixel-size range from the sampling axis (from the finest passing value up to the
    coarsest below which all pass); the confidence floor is the least mean probability of any
    passing condition (``with_confidence=False`` leaves it out: for a locator whose scores are
    not probabilities, such as the classical one, a floor found on simulated images says
    nothing about real ones). A margin is not added: the ranges are what was measured.
    """
    def axis(name: str) -> pd.DataFrame:
        return table[table["axis"] == name]

    d = axis("dose")
    snr_min = _lowest_safe(d["snr"].to_numpy(), d["passed"].to_numpy()) if len(d) else None
    r = axis("resolution")
    res_max = None
    if len(r):
        neg = _lowest_safe(-r["resolution_A"].to_numpy(), r["passed"].to_numpy())
        res_max = None if neg is None else -neg
    s = axis("sampling")
    samp = None
    if len(s) and s["passed"].any():
        hi = _lowest_safe(-s["sampling"].to_numpy(), s["passed"].to_numpy())
        lo = float(s.loc[s["passed"], "sampling"].min())
        samp = (lo, -hi) if hi is not None else None
    passing = table[table["passed"]]
    conf = float(passing["confidence"].min()) if len(passing) and with_confidence else None
    return TrustRanges(sampling_A=samp, snr_min=snr_min, resolution_max_A=res_max, confidence_min=conf,
                       cutoffs=dict(CUTOFFS),
                       source=source or f"etem.train.sweep on toy-model images, {_dt.date.today().isoformat()}")


# ---------------------------------------------------------------------------------------------
# The same sweeps on exit-wave images (Wei et al.'s four axes), for trained models
# ---------------------------------------------------------------------------------------------

#: The sweep's axes, each from the easy end to the hard end: dose [e/Å² per image], pixel size
#: [Å/px] (only its coarse side is swept from the base; the finer values are checked too),
#: extra image blur [Å] (the resolution), and contrast (the fraction of the image's modulation
#: kept when the rest becomes a flat background, at the same dose).
WAVE_AXES: dict[str, tuple[float, ...]] = {
    "dose": (3e4, 1e4, 5e3, 3e3, 2e3, 1e3, 500.0, 300.0, 200.0, 100.0, 50.0, 20.0, 10.0),
    "sampling": (0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6),
    "resolution": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2),
    "contrast": (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05),
}

#: Which way each axis gets harder: +1 towards larger values, -1 towards smaller.
_HARDER = {"dose": -1, "sampling": +1, "resolution": +1, "contrast": -1}


#: The fixed microscope of a sweep's base condition, per optics preset: the imaging conditions
#: of the in-situ movies (etem.simulate.insitu, insitu_mos2), not the training ranges, so that
#: one property at a time is pushed away from a condition the locator is meant for.
BASE_OPTICS: dict[str, dict[str, float]] = {
    "au": {"defocus_A": -60.0, "Cs_A": -15e4, "C5_A": 0.0, "astigmatism_A": 0.0, "focal_spread_A": 30.0,
           "blur_A": 0.2, "mtf_c1": 0.05, "mtf_c2": 0.5, "mtf_c3": 2.5},
    "mos2": {"defocus_A": -90.0, "Cs_A": -15e4, "C5_A": 0.0, "astigmatism_A": 0.0, "focal_spread_A": 20.0,
             "blur_A": 0.2, "mtf_c1": 0.05, "mtf_c2": 0.5, "mtf_c3": 2.5},
    "haadf": {"defocus_A": 0.0, "Cs_A": 0.0, "C5_A": 0.0, "astigmatism_A": 0.0, "blur_A": 0.2,
              "probe_semiangle_mrad": 25.0},
}


def _pinned(optics: dict[str, float]) -> dict[str, list[float]]:
    return {k: [float(v), float(v)] for k, v in optics.items()}


def _shot_noise(images: np.ndarray, dose: float, sampling: float, rng: np.random.Generator) -> np.ndarray:
    per_px = dose * sampling ** 2
    return (rng.poisson(np.clip(images, 0, None) * per_px) / per_px).astype(np.float32)


def _blurred(images: np.ndarray, blur_A: float, sampling: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    if blur_A <= 0:
        return images
    sigma = [0] * (images.ndim - 2) + [blur_A / sampling] * 2
    return gaussian_filter(images, sigma=sigma, mode="reflect").astype(np.float32)


def _with_contrast(images: np.ndarray, kept: float) -> np.ndarray:
    mean = images.mean(axis=(-2, -1), keepdims=True)
    return (mean + kept * (images - mean)).astype(np.float32)


def wave_sweep(
    methods: Iterable[str],
    wave_set: str,
    *,
    base_dose: float | None = None,
    base_optics: dict[str, float] | None = None,
    axes: dict[str, Iterable[float]] | None = None,
    n: int = 6,
    size: int = 192,
    radius_A: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    sampling_A: float | None = None,
    preset: str | None = None,
    imaging: str | None = None,
) -> pd.DataFrame:
    """Score each method along Wei et al.'s four axes on held-out exit-wave images.

    The images are the held-out images of :func:`etem.train.assess.heldout_images` (structures
    the model never saw) under one fixed microscope (``base_optics``, by default
    :data:`BASE_OPTICS` for the first model's optics preset) and, off their own axis, at
    ``base_dose`` (default: 10⁴ e/Å², the top of Madsen's range) and the model's pixel size. Each axis of
    ``axes`` (default :data:`WAVE_AXES`) is swept with the others at the base: the noiseless
    images are blurred or lose contrast, then get the shot noise of their dose; pixel sizes are
    imaged anew over the same field. One row per method and condition, with the figures the
    tracker measures on every frame (SNR, resolution, mean column probability) beside
    ID-recall, ID-precision and RMS pooled over the ``n`` images, and ``passed`` (Wei's
    cut-offs, :data:`CUTOFFS`). A model among the methods gives the sampling, optics preset,
    imaging and inputs (its card); ``sampling_A``, ``preset`` and ``imaging`` set them where
    there is none (``"classical"`` / ``"classical-dark"`` alone) or override the card.
    """
    from etem.tracker import find
    from etem.tracker.evaluate import score_columns
    from etem.tracker.quality import measure

    from .assess import CLASSICAL, _first_card, _method_kwargs, heldout_images, method_labels

    methods = list(methods)
    labels = method_labels(methods)
    card = _first_card(methods) or {}
    training = card.get("training", {}).get("config", {})
    if sampling_A is None and "sampling_A" not in card:
        raise ValueError("give sampling_A (Å/px): no model card to take the sweep's conditions from")
    s0 = float(sampling_A if sampling_A is not None else card["sampling_A"])
    preset = preset if preset is not None else training.get("preset")
    imaging = imaging or training.get("imaging", "hrtem")
    focal = tuple(card.get("inputs", [0.0]))
    optics = dict(base_optics if base_optics is not None else BASE_OPTICS.get(preset or "", BASE_OPTICS["au"]))
    dose0 = float(base_dose if base_dose is not None else 1e4)
    axes = {k: tuple(float(v) for v in vals) for k, vals in (axes or WAVE_AXES).items()}
    unknown = set(axes) - set(WAVE_AXES)
    if unknown:
        raise ValueError(f"unknown sweep axes {sorted(unknown)}; known: {list(WAVE_AXES)}")
    base = {"dose": dose0, "sampling": s0, "resolution": 0.0, "contrast": 1.0}
    for k in axes:  # every axis holds its base condition
        if not any(abs(v - base[k]) < 1e-9 for v in axes[k]):
            axes[k] = tuple(sorted((*axes[k], base[k]), reverse=_HARDER[k] < 0))

    def render(sampling: float) -> tuple[np.ndarray, pd.DataFrame]:
        side = max(32, int(round(size * s0 / sampling)))  # the same field at every pixel size
        return heldout_images(wave_set, dose=dose0, n=n, size=side, sampling_A=sampling, preset=preset,
                              optics=_pinned(optics), imaging=imaging, focal_offsets_A=focal, seed=seed,
                              classes=card.get("classes_by", "species"), noise=False)

    clean0, truth0 = render(s0)
    rows = []
    for axis, values in axes.items():
        for k, value in enumerate(values):
            rng = np.random.default_rng([seed, k, list(WAVE_AXES).index(axis)])
            sampling, clean, truth, dose = s0, clean0, truth0, dose0
            if axis == "dose":
                dose = value
            elif axis == "sampling":
                sampling = value
                clean, truth = (clean0, truth0) if value == s0 else render(value)
            elif axis == "resolution":
                clean = _blurred(clean0, value, s0)
            else:
                clean = _with_contrast(clean0, value)
            images = _shot_noise(clean, dose, sampling, rng)
            first = images[:, 0] if images.ndim == 4 else images
            q = measure(first, sampling)
            for method in methods:
                im = first if method in CLASSICAL else images
                found = find(im, sampling=sampling, device=device, focal=1 if im.ndim == 3 else im.shape[1],
                             **_method_kwargs(method))
                score = score_columns(found, truth.drop(columns="cls", errors="ignore"),
                                      radius_px=radius_A / sampling, sampling=sampling)
                rows.append({
                    "method": labels[method], "axis": axis, "value": value, "dose": dose, "sampling": sampling,
                    "snr": float(np.median(q[:, 0])), "resolution_A": float(np.median(q[:, 2])),
                    "confidence": float(found["prob"].mean()) if len(found) and method not in CLASSICAL
                    else float("nan"),
                    "recall": score["recall"], "precision": score["precision"], "rms_A": score["rms_A"],
                    "f1": score["f1"], "passed": _passes(score),
                })
    out = pd.DataFrame(rows)
    out.attrs.update({"wave_set": Path(wave_set).name, "labels": labels, "sampling_A": s0, "preset": preset,
                      "base": base, "imaging": imaging, "base_dose": dose0, "base_optics": optics, "n": n, "size": size,
                      "radius_A": radius_A})
    return out


def _run_from_base(g: pd.DataFrame, base: float, harder: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The conditions of one axis from the base towards the hard end (base first), and those
    from the base towards the easy end (base first)."""
    v = g["value"].to_numpy()
    hard = g[(v - base) * harder >= -1e-9].sort_values("value", ascending=harder > 0)
    easy = g[(v - base) * harder <= 1e-9].sort_values("value", ascending=harder < 0)
    return hard, easy


def _passing_prefix(rows: pd.DataFrame) -> pd.DataFrame:
    p = rows["passed"].to_numpy()
    return rows.iloc[:int(np.argmin(p)) if not p.all() else len(p)]


def cutoffs(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and axis, Wei et al.'s cut-off: going from the base condition towards the
    axis's hard end, the last value at which the method still meets :data:`CUTOFFS` (NaN where
    it fails at the base already). ``reach`` is the fraction of the values from the base to the
    hard end so passed (the radar plot's radius); ``easy_end`` the last value passed going the
    other way (the finest pixel size, for instance)."""
    base = table.attrs.get("base", {})
    rows = []
    for (method, axis), g in table.groupby(["method", "axis"], sort=False):
        hard, easy = _run_from_base(g, float(base.get(axis, g["value"].iloc[0])), _HARDER[axis])
        ok, ok_easy = _passing_prefix(hard), _passing_prefix(easy)
        rows.append({"method": method, "axis": axis,
                     "cutoff": float(ok["value"].iloc[-1]) if len(ok) else float("nan"),
                     "easy_end": float(ok_easy["value"].iloc[-1]) if len(ok_easy) else float("nan"),
                     "reach": len(ok) / len(hard) if len(hard) else float("nan"),
                     "fails_at_base": len(ok) == 0})
    return pd.DataFrame(rows)


def wave_trust_ranges(table: pd.DataFrame, method: str, *, source: str = "") -> TrustRanges:
    """A method's trust ranges from a :func:`wave_sweep`, in the figures the tracker measures
    on every frame, from the conditions between the base and each axis's hard end. SNR floor:
    the least SNR (dose and contrast axes) above which every condition passed; resolution
    ceiling: the coarsest measured resolution (blur axis) below which every condition passed;
    pixel sizes: from the finest to the coarsest passed going out from the base; confidence
    floor: the least mean column probability of the passed conditions. Where the method fails at the
    base condition there is no range in which it was shown to work: ``passed_nowhere``."""
    base = table.attrs.get("base", {})
    t = table[table["method"] == method]
    runs = {}
    for axis, g in t.groupby("axis", sort=False):
        hard, easy = _run_from_base(g, float(base.get(axis, g["value"].iloc[0])), _HARDER[axis])
        runs[axis] = (hard, _passing_prefix(hard), _passing_prefix(easy))
    if not runs or any(len(ok) == 0 for _, ok, _ in runs.values()):
        return TrustRanges(passed_nowhere=True, cutoffs=dict(CUTOFFS), source=source or (
            f"etem.train.sweep on exit-wave images of {table.attrs.get('wave_set', '?')}: fails at the base "
            f"condition, {_dt.date.today().isoformat()}"))
    # the measured figures are noisy near the noise floor (not monotonic in the dose): each floor
    # lies above every failed condition's figure, so no failure measured inside the range
    towards = pd.concat([runs[a][0] for a in ("dose", "contrast") if a in runs])
    snr_min = _lowest_safe(towards["snr"].to_numpy(), towards["passed"].to_numpy()) if len(towards) else None
    res_max = None
    if "resolution" in runs:
        r = runs["resolution"][0]
        finite = np.isfinite(r["resolution_A"].to_numpy())
        neg = _lowest_safe(-r["resolution_A"].to_numpy()[finite], r["passed"].to_numpy()[finite])
        res_max = None if neg is None else -neg
    samp = None
    if "sampling" in runs:
        _, ok, ok_easy = runs["sampling"]
        samp = (float(ok_easy["value"].iloc[-1]), float(ok["value"].iloc[-1]))
    conf = pd.concat([r for _, ok, ok_easy in runs.values() for r in (ok, ok_easy)])["confidence"].dropna()
    return TrustRanges(
        sampling_A=samp,
        snr_min=snr_min,
        resolution_max_A=res_max,
        confidence_min=float(conf.min()) if len(conf) else None,
        cutoffs=dict(CUTOFFS),
        source=source or (f"etem.train.sweep on exit-wave images of {table.attrs.get('wave_set', '?')}, "
                          f"{_dt.date.today().isoformat()}"))


_AXIS_WORDS = {"dose": ("dose", "e/Å²", "≥"), "sampling": ("pixel size", "Å/px", "in"),
               "resolution": ("blur", "Å", "≤"), "contrast": ("contrast", "", "≥")}


def strictest(ranges: Iterable[TrustRanges], *, source: str = "") -> TrustRanges:
    """One set of ranges inside all of ``ranges``: the highest floors, the lowest ceilings, the
    overlap of the pixel sizes (for a locator measured on several kinds of image that cannot
    tell which kind a frame is). Trusted nowhere if any of them is."""
    rs = list(ranges)

    def pick(values, fn):
        values = [v for v in values if v is not None]
        return fn(values) if values else None

    samp = [r.sampling_A for r in rs if r.sampling_A is not None]
    lo, hi = (max(a for a, _ in samp), min(b for _, b in samp)) if samp else (None, None)
    return TrustRanges(
        sampling_A=None if lo is None else (lo, hi),
        snr_min=pick([r.snr_min for r in rs], max),
        resolution_max_A=pick([r.resolution_max_A for r in rs], min),
        confidence_min=pick([r.confidence_min for r in rs], max),
        cutoffs=dict(CUTOFFS),
        source=source or "; ".join(r.source for r in rs),
        passed_nowhere=any(r.passed_nowhere for r in rs) or (lo is not None and lo > hi))


def format_cutoffs(cuts: pd.DataFrame) -> str:
    """The cut-offs as a Markdown table: one row per method, one column per axis."""
    axes = list(dict.fromkeys(cuts["axis"]))
    head = "| method | " + " | ".join(f"{_AXIS_WORDS[a][0]} {_AXIS_WORDS[a][2]}" for a in axes) + " |"
    lines = [head, "|---|" + "---|" * len(axes)]
    for method, g in cuts.groupby("method", sort=False):
        cells = []
        for a in axes:
            r = g[g["axis"] == a].iloc[0]
            value = f"{r['easy_end']:g}–{r['cutoff']:g}" if a == "sampling" else f"{r['cutoff']:g}"
            cells.append("fails at base" if r["fails_at_base"] else f"{value} {_AXIS_WORDS[a][1]}".strip())
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def radar_plot(cuts: pd.DataFrame, path: str, title: str = "") -> str:
    """Wei et al.'s radar plot: per method, how far along each axis it keeps the cut-offs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = list(dict.fromkeys(cuts["axis"]))
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False)
    fig = plt.figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot(projection="polar")
    for method, g in cuts.groupby("method", sort=False):
        reach = [float(g.loc[g["axis"] == a, "reach"].iloc[0]) for a in axes]
        ax.plot(np.r_[angles, angles[:1]], np.r_[reach, reach[:1]], marker="o", label=method)
        ax.fill(np.r_[angles, angles[:1]], np.r_[reach, reach[:1]], alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{_AXIS_WORDS[a][0]}\n(hard end: {WAVE_AXES[a][-1]:g} {_AXIS_WORDS[a][1]})".replace(" )", ")")
                        for a in axes], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["", "", "", ""])
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.12), fontsize=8)
    ax.set_title(title or "fraction of each axis inside Wei's cut-offs", fontsize=9, pad=24)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)
