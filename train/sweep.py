"""Where a locator stops working: image-quality sweeps and the trust ranges they give.

After Wei et al.: a locator is run on simulated images with known columns while one image
property at a time is pushed past the point where it fails — dose (noise), pixel size,
resolution (column blur) — and each image is scored by ID-recall, ID-precision and position
RMS. An image *passes* when recall ≥ 90 %, precision ≥ 95 % and RMS ≤ 0.3 Å (their cut-offs).
Each image's quality is also measured the way the tracker measures every frame
(:func:`etem.tracker.quality.measure`: SNR, resolution) with the locator's mean column
probability, so the cut-offs can be stated in figures that are known for a real frame too:
:func:`trust_ranges` turns a sweep into :class:`etem.tracker.trust.TrustRanges`.

Images come from :func:`etem.simulate.toy.make_movie` (Gaussian columns with shot noise): an
image model, not a physical simulation, so the ranges it gives are those of that model.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from etem.tracker.trust import TrustRanges

__all__ = ["Condition", "CUTOFFS", "default_conditions", "run_sweep", "trust_ranges"]

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
        passed = (score["recall"] >= CUTOFFS["recall_min"] and score["precision"] >= CUTOFFS["precision_min"]
                  and score["rms_A"] <= CUTOFFS["rms_max_A"])
        rows.append({
            "axis": c.axis, "dose": c.dose, "sampling": c.sampling, "column_sigma_A": c.column_sigma_A,
            "contrast": c.contrast, "snr": float(np.median(q[:, 0])), "dose_est": float(np.median(q[:, 1])),
            "resolution_A": float(np.median(q[:, 2])),
            "confidence": float(cols["prob"].mean()) if len(cols) else float("nan"),
            "recall": score["recall"], "precision": score["precision"], "rms_A": score["rms_A"],
            "passed": bool(passed),
        })
    return pd.DataFrame(rows)


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
