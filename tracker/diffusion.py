"""Diffusion statistics from a tracked run: rates, residence times, MSD, counts.

Computed from a run's tables (:class:`etem.tracker.runfile.Run` or the same DataFrames), so they
can be made again from any run file, also one written elsewhere:

- :func:`site_kinetics`: per site, occupancy and event rate with the leave and arrival rates
  (``k_off``, ``k_on`` [1/frame]) as maximum-likelihood estimates for exponential residence
  times with censoring: completed occupied runs over all frames spent occupied (the run still
  open at the end counts its frames but not as completed), with Poisson standard errors.
- :func:`residence_histogram`: residence-time distributions, occupied and empty, completed and
  censored runs apart.
- :func:`event_rates`: flips and hops per frame (and per second when the frame rate is known),
  each with its Poisson standard error.
- :func:`hop_jumps`: each hop between two sites as a jump: its vector and length (Å where the
  sampling is known), from the sites' positions.
- :func:`track_msd`: per track, the mean squared displacement against lag (on drift-corrected
  positions; the same as trackpy's ``imsd``) and the diffusion coefficient from a weighted
  linear fit ``MSD = 4 D t + c`` (2-D; ``c`` takes the localization error), with a jackknife
  standard error over blocks of the track, for the tracks whose MSD rises above what their
  localisation noise alone gives (:func:`noise_test`); the others get a bound on D instead.
- :func:`class_counts`: columns per class per frame.
- :func:`site_intensity`: per site, the intensities of the columns seen there.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .frames import class_label
from .sites import occupied_sites

__all__ = ["site_kinetics", "residence_histogram", "event_rates", "hop_jumps", "track_msd", "noise_test", "class_counts",
           "site_intensity", "summary", "frame_rate"]


def frame_rate(frames: pd.DataFrame) -> float | None:
    """Frames per second from the frames table's acquisition times ``t`` [s], if it has them."""
    if "t" not in frames or frames["t"].isna().all() or len(frames) < 2:
        return None
    t = frames.sort_values("frame")[["frame", "t"]].dropna()
    if len(t) < 2:
        return None
    dt = np.diff(t["t"].to_numpy()) / np.diff(t["frame"].to_numpy())
    dt = dt[np.isfinite(dt) & (dt > 0)]
    # (to 10 significant digits: times i / fps come back as 9.999999999999991 /s for 10)
    return float(f"{1.0 / np.median(dt):.10g}") if dt.size else None


def site_kinetics(sites: pd.DataFrame, residence: pd.DataFrame) -> pd.DataFrame:
    """Per site: ``site, y, x, occupancy, event_rate, k_off, k_off_err, k_on, k_on_err`` [1/frame]
    and the mean residence times ``tau_occupied``, ``tau_empty`` [frames] (1/k; inf without a
    completed run). A rate is the maximum-likelihood one of exponential residence times: the
    changes seen (the runs whose end was seen) over all frames spent in the state, runs cut at
    either end included (the chance of a change does not depend on how long a run has lasted).
    Errors are Poisson's, sqrt(n) / t; where no change was seen, that of one, 1 / t (k = 0 then
    says only that k is below about 3 / t)."""
    out = sites[["site", "y", "x", "occupancy", "event_rate"]].copy()
    for occupied, key in ((True, "off"), (False, "on")):
        r = residence[residence["occupied"] == occupied]
        frames_in = r.groupby("site")["frames"].sum()
        done = r[~r["censored"]].groupby("site").size()
        n = done.reindex(out["site"]).fillna(0).to_numpy()
        t = frames_in.reindex(out["site"]).fillna(0).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(t > 0, n / t, np.nan)
            out[f"k_{key}"] = k
            # (no change seen: not an exact 0, the error of one change; 3 / t bounds it at 95 %)
            out[f"k_{key}_err"] = np.where(t > 0, np.sqrt(np.maximum(n, 1)) / t, np.nan)
            out["tau_occupied" if occupied else "tau_empty"] = np.where(n > 0, t / np.maximum(n, 1), np.inf)
    return out


def residence_histogram(residence: pd.DataFrame) -> pd.DataFrame:
    """``state`` (occupied/empty), ``frames`` (run length), ``completed``, ``censored`` counts:
    completed runs were seen to begin and to end; the censored ones were cut by the run's start
    or end, or by the site's leaving or coming into view (``censored``, ``left_censored``; in
    tables without ``left_censored``, the runs that began at the first frame)."""
    if residence.empty:
        return pd.DataFrame(columns=["state", "frames", "completed", "censored"])
    left = (residence["left_censored"].astype(bool) if "left_censored" in residence
            else residence["start"] == residence["start"].min())
    r = residence.assign(state=np.where(residence["occupied"], "occupied", "empty"),
                         cut=residence["censored"].astype(bool) | left)
    g = r.groupby(["state", "frames", "cut"]).size().unstack("cut", fill_value=0)
    g = g.rename(columns={False: "completed", True: "censored"})
    for c in ("completed", "censored"):
        if c not in g:
            g[c] = 0
    return g[["completed", "censored"]].rename_axis(columns=None).reset_index().astype({"frames": np.int64})


def event_rates(flips: pd.DataFrame, hops: pd.DataFrame, n_frames: int, fps: float | None = None) -> dict[str, float]:
    """Flips and site-to-site hops per frame step (and per second), with Poisson errors."""
    steps = max(n_frames - 1, 1)
    n_hops = int(((hops["from_site"] >= 0) & (hops["to_site"] >= 0)).sum()) if len(hops) else 0
    out: dict[str, float] = {}
    for name, n in (("flips", len(flips)), ("hops", n_hops)):
        out[f"{name}_per_frame"] = n / steps
        out[f"{name}_per_frame_err"] = np.sqrt(n) / steps
        if fps:
            out[f"{name}_per_s"] = n / steps * fps
            out[f"{name}_per_s_err"] = np.sqrt(n) / steps * fps
    return out


def hop_jumps(hops: pd.DataFrame, sites: pd.DataFrame, sampling: float | None) -> pd.DataFrame:
    """The hops between two known sites as jumps: ``frame, from_site, to_site, dy, dx, length``
    and ``angle_deg`` (of the jump, from +x towards +y, in (-180, 180]), in Å where ``sampling``
    is known, else in pixels (of the run's reference frame, where the sites are)."""
    cols = ["frame", "from_site", "to_site", "dy", "dx", "length", "angle_deg"]
    if hops is None or not len(hops) or not len(sites):
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith(("frame", "site")) else "float64")
                             for c in cols})
    h = hops[(hops["from_site"] >= 0) & (hops["to_site"] >= 0)]
    pos = sites.set_index("site")[["y", "x"]]
    a = pos.reindex(h["from_site"]).to_numpy()
    b = pos.reindex(h["to_site"]).to_numpy()
    d = (b - a) * (sampling or 1.0)
    out = h[["frame", "from_site", "to_site"]].reset_index(drop=True).astype("int64")
    out["dy"], out["dx"] = d[:, 0], d[:, 1]
    out["length"] = np.hypot(d[:, 0], d[:, 1])
    out["angle_deg"] = np.degrees(np.arctan2(d[:, 0], d[:, 1]))
    return out[cols]


def _msd(frames: np.ndarray, yx: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """MSD at lags 1..max_lag over all pairs of frames that far apart (gaps allowed), and the
    number of pairs at each lag."""
    n = int(frames.max() - frames.min()) + 1
    pos = np.full((n, 2), np.nan)
    pos[frames - frames.min()] = yx
    msd = np.full(max_lag, np.nan)
    count = np.zeros(max_lag, np.int64)
    for lag in range(1, min(max_lag, n - 1) + 1):
        d2 = np.sum((pos[lag:] - pos[:-lag]) ** 2, axis=1)
        ok = np.isfinite(d2)
        count[lag - 1] = ok.sum()
        if ok.any():
            msd[lag - 1] = d2[ok].mean()
    return msd, count


def _fit_d(msd: np.ndarray, count: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``MSD = 4 D lag + c`` (weights: pairs / lag, the longer lags
    being averages of fewer, overlapping displacements); returns (D, c) per unit lag."""
    lag = np.arange(1, len(msd) + 1, dtype=float)
    ok = np.isfinite(msd) & (count > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    w = np.sqrt(count[ok] / lag[ok])
    A = np.stack([4 * lag[ok], np.ones(ok.sum())], 1)
    coef, *_ = np.linalg.lstsq(A * w[:, None], msd[ok] * w, rcond=None)
    return float(coef[0]), float(coef[1])


def _localisation_var(yx: np.ndarray, site: np.ndarray | None, sites: pd.DataFrame | None,
                      mpp: float) -> tuple[float, int]:
    """The localisation variance per axis [Å² or px²] of a track's positions ``yx`` from their
    scatter about their sites (the sites' mean positions), and how many positions it rests on;
    (NaN, 0) where fewer than 3 positions have a site."""
    if site is None or sites is None or not len(sites):
        return float("nan"), 0
    on = site >= 0
    if on.sum() < 3:
        return float("nan"), 0
    home = sites.reindex(site[on]).to_numpy(float) * mpp
    dev = yx[on] - home
    ok = np.isfinite(dev).all(axis=1)
    if ok.sum() < 3:
        return float("nan"), 0
    return float(np.mean(dev[ok] ** 2)), int(ok.sum())


def noise_test(msd: np.ndarray, count: np.ndarray, var: float, n_var: int, *,
               z: float = 2.0) -> tuple[bool, float, float]:
    """Is a track's MSD above what localisation noise alone gives?

    Noise of variance ``var`` per axis on positions that do not move gives an MSD of
    ``4 var`` at every lag (2-D), flat. A track moves above it where, at its longest lag
    ``L``, the MSD lies more than ``z`` standard errors above ``4 var`` *and* above the MSD at
    lag 1 (it grows with time: a column whose positions scatter more than ``var`` says but do
    not wander is not taken for a moving one). The standard errors are those of the noise
    alone: ``4 var sqrt(1.5 / n)`` for an MSD of ``n`` pairs (pairs that share a frame are
    correlated: the 1.5), and ``4 var / sqrt(n_var)`` for ``var`` itself.

    Returns ``(above, D_upper, floor)``: the verdict; the largest diffusion coefficient [per
    lag, in the units of ``msd`` / 4] whose rise over the lags the test would not have seen,
    a bound on D where it says "not above" (z standard errors over the rise seen); and the
    noise floor ``4 var``.
    """
    lags = np.flatnonzero(np.isfinite(msd) & (count > 0))
    floor = 4 * var
    if len(lags) < 2 or not np.isfinite(floor):
        return False, float("nan"), floor
    first, last = lags[0], lags[-1]
    rise = msd[last] - msd[first]
    if floor <= 0:  # (no noise at all: any rise is motion)
        return bool(rise > 0), 0.0, floor
    se_level = floor * np.sqrt(1.5 / count[last] + 1.0 / max(n_var, 1))
    se_rise = floor * np.sqrt(1.5 / count[last] + 1.5 / count[first])
    above = bool(msd[last] - floor > z * se_level and rise > z * se_rise)
    upper = (max(rise, 0.0) + z * se_rise) / (4 * (last - first))
    return above, float(upper), float(floor)


def track_msd(columns: pd.DataFrame, sampling: float | None, *, fps: float | None = None, max_lag: int = 10,
              min_length: int = 8, blocks: int = 5, sites: pd.DataFrame | None = None,
              z: float = 2.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-track MSD, and the diffusion coefficient of the tracks that move above localisation noise.

    Parameters
    ----------
    columns
        The run's columns table (``frame, particle, y_ref, x_ref``; drift-corrected [px]; with
        ``site``, the site of each column).
    sampling
        Pixel size [Å/px]; None gives px².
    fps
        Frames per second; None gives lags and D per frame.
    max_lag, min_length
        Longest lag fitted [frames]; shortest track used [frames].
    blocks
        The standard error of D is a jackknife over this many consecutive blocks of the track
        (MSDs at different lags are strongly correlated, so a fit's own residuals understate it).
    sites
        The sites table (``site, y, x`` [px]): each track's localisation noise is the scatter of
        its positions about their sites. Without it (or without a ``site`` column), the noise
        is the fit's intercept, ``c = 4 sigma²``.
    z
        Standard errors above the noise for a track to count as moving (:func:`noise_test`).

    Returns
    -------
    (msd, tracks)
        ``msd``: lag [frames], lag_s, particle, msd [Å²] (the MSD of trackpy's ``imsd``);
        ``tracks``: particle, n_frames; ``sigma_A`` (``sigma_px`` without a pixel size), the
        localisation noise per axis, and ``sigma_from`` (``site``: the scatter about the sites;
        ``intercept``: the fit's ``c``); ``msd_noise`` [Å²], what that noise alone gives
        (``4 sigma²``); ``mobile``: the MSD is above it (:func:`noise_test`); ``D`` [Å²/frame
        or Å²/s] with ``D_err`` (jackknife) for the mobile tracks, NaN for the others, which
        have ``D_upper`` instead (the largest D the noise could hide); ``D_fit``, the fit's
        slope for every track (about 0 for a column that stays put, as often below 0 as above:
        no diffusion coefficient), and ``offset`` [Å²], the fit's ``c``.

    A column that stays on its site is not a diffusing one however many tracks are pooled:
    on the MoS2 ADF demo, where no column moves (its atoms hop by swapping classes), the
    tracks' median ``D_fit`` lies 9 standard errors above 0 (the positions wander by a few
    hundredths of an Å as the columns change class), yet no track's MSD rises above its
    noise. On the Au HRTEM demo, 11 of the 14 tracks that follow an atom from one site to
    the next are mobile and 1 of the 98 tracks that stay on one site (with no false column
    among their detections) is (2026-12-07).
    """
    length = "sigma_A" if sampling else "sigma_px"
    cols = ["particle", "n_frames", length, "sigma_from", "msd_noise", "mobile", "D", "D_err", "D_upper",
            "D_fit", "offset"]
    empty = (pd.DataFrame(columns=["lag", "lag_s", "particle", "msd"]), pd.DataFrame(columns=cols))
    need = {"frame", "particle", "y_ref", "x_ref"}
    if columns.empty or not need <= set(columns.columns):
        return empty
    t = columns[columns["particle"] >= 0]
    mpp = sampling or 1.0
    rate = fps or 1.0
    home = None
    if sites is not None and len(sites) and "site" in t and {"y", "x"} <= set(sites.columns):
        home = (sites.set_index("site") if "site" in sites else sites)[["y", "x"]]
    msd_rows, rows = [], []
    for p, g in t.groupby("particle"):
        if len(g) < min_length:
            continue
        f = g["frame"].to_numpy(np.int64)
        yx = g[["y_ref", "x_ref"]].to_numpy(float) * mpp
        msd, count = _msd(f, yx, max_lag)
        d, c = _fit_d(msd, count)
        if not np.isfinite(d):
            continue
        edges = np.linspace(f.min(), f.max() + 1, blocks + 1)
        jack = []
        for k in range(blocks):
            keep = (f < edges[k]) | (f >= edges[k + 1])
            if keep.sum() >= 3:
                dk, _ = _fit_d(*_msd(f[keep], yx[keep], max_lag))
                if np.isfinite(dk):
                    jack.append(dk)
        err = float(np.sqrt((len(jack) - 1) / len(jack) * np.sum((np.array(jack) - np.mean(jack)) ** 2))) \
            if len(jack) >= 2 else float("nan")
        var, n_var = _localisation_var(yx, g["site"].to_numpy(np.int64) if home is not None else None, home, mpp)
        source = "site"
        if not np.isfinite(var):  # (no sites: the intercept, 4 sigma², of the fit over the MSD's lags)
            var, n_var, source = max(c, 0.0) / 4, int(count[0]), "intercept"
        above, upper, floor = noise_test(msd, count, var, n_var, z=z)
        rows.append({"particle": int(p), "n_frames": int(len(g)), length: float(np.sqrt(var)), "sigma_from": source,
                     "msd_noise": floor, "mobile": above, "D": d * rate if above else np.nan,
                     "D_err": err * rate if above else np.nan, "D_upper": np.nan if above else upper * rate,
                     "D_fit": d * rate, "offset": c})
        ok = count > 0
        lags = np.arange(1, max_lag + 1)[ok]
        msd_rows.append(pd.DataFrame({"lag": lags, "lag_s": lags / rate, "particle": int(p), "msd": msd[ok]}))
    if not rows:
        return empty
    return pd.concat(msd_rows, ignore_index=True), pd.DataFrame(rows, columns=cols)


def class_counts(columns: pd.DataFrame, class_names: Sequence[str] = ()) -> pd.DataFrame:
    """Columns per class per frame: ``frame`` and one column per class, ``n_`` and the class's
    name (``n_Mo``, ``n_S2``; ``n_A``, ``n_B0`` for classes by intensity; ``n_class3`` for a
    class with no name)."""
    if columns.empty:
        return pd.DataFrame(columns=["frame"])
    c = columns.groupby(["frame", "cls"]).size().unstack("cls", fill_value=0)
    names = [re.sub(r"\W", "_", str(n)) for n in class_names]
    heads = [f"n_{names[k]}" if 0 <= k < len(names) and names.count(names[k]) == 1 else f"n_class{k}"
             for k in (int(k) for k in c.columns)]
    c.columns = heads
    return c.reset_index()


def site_intensity(columns: pd.DataFrame) -> pd.DataFrame:
    """Per site, the intensities of the columns seen there, less the image's floor about them
    where the run measured it (``intensity - background``: :func:`etem.tracker.intensity.net_intensity`):
    ``site, n, intensity_mean, intensity_sd, intensity_min, intensity_max`` (NaN-free
    detections only; no rows where the run has no intensities). A site whose column changes
    (a Se atom arriving, an S atom leaving) shows a wide range."""
    from .intensity import net_intensity

    cols = ["site", "n", "intensity_mean", "intensity_sd", "intensity_min", "intensity_max"]
    if "intensity" not in columns or "site" not in columns or columns.empty:
        return pd.DataFrame(columns=cols)
    c = columns.assign(net=net_intensity(columns))
    c = c[(c["site"] >= 0) & np.isfinite(c["net"])]
    g = c.groupby("site")["net"]
    out = pd.DataFrame({"n": g.size(), "intensity_mean": g.mean(), "intensity_sd": g.std(ddof=1),
                        "intensity_min": g.min(), "intensity_max": g.max()}).reset_index()
    return out[cols]


def median_d(d: np.ndarray) -> dict[str, Any]:
    """The median of the tracks' diffusion coefficients as a figure to report: ``median_D``,
    its standard error ``median_D_err``, ``median_D_resolved`` (the median more than 2 standard
    errors above 0) and ``median_D_upper``, a bound (median + 2 standard errors) it lies below.

    A lattice's columns stay put: their D scatter about 0, below it as often as above (the
    MSD's noise), and their median can come out below 0, which no diffusion coefficient is.
    Such a median is reported clipped to 0, not resolved, with its bound. The error is that of
    a median, ``1.2533 sigma / sqrt(n)``, with sigma from the median absolute deviation.
    """
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if not len(d):
        return {"median_D": None, "median_D_err": None, "median_D_upper": None, "median_D_resolved": False}
    med = float(np.median(d))
    sigma = 1.4826 * float(np.median(np.abs(d - med)))
    err = float(1.2533 * sigma / np.sqrt(len(d))) if len(d) > 1 else None  # (one track: no error to judge by)
    resolved = bool(err is not None and med > 2 * err)
    return {"median_D": med if resolved else max(med, 0.0), "median_D_err": err,
            "median_D_upper": None if err is None else max(med, 0.0) + 2 * err, "median_D_resolved": resolved}


def summary(frames: pd.DataFrame, sites: pd.DataFrame, stats: dict[str, pd.DataFrame],
            sampling: float | None, class_names: Sequence[str] = ()) -> dict[str, Any]:
    """The run's headline figures (for the report and ``summary.json``); ``class_names`` name
    the classes of the class changes counted by kind."""
    fps = frame_rate(frames)
    n = int(len(frames))
    flips = stats.get("flips", pd.DataFrame(columns=["frame", "site", "kind"]))
    hops = stats.get("hops")
    if hops is None or not {"from_site", "to_site"} <= set(hops.columns):
        hops = pd.DataFrame(columns=["frame", "from_site", "to_site"])
    seen = occupied_sites(sites)
    active = seen[(seen["occupancy"] > 0) & (seen["occupancy"] < 1)] if len(seen) else seen
    out: dict[str, Any] = {
        "frames": n, "fps": fps, "sampling_A_per_px": sampling, "sites": int(len(seen)),
        "sites_never_occupied": int(len(sites) - len(seen)),
        "active_sites": int(len(active)),
        "mean_occupancy_active": float(active["occupancy"].mean()) if len(active) else None,
        "mean_columns_per_frame": float(frames["n_columns"].mean()) if n else None,
    }
    out.update(event_rates(flips, hops, n, fps))
    changes = stats.get("class_changes")
    if changes is not None and len(changes) and {"from_cls", "to_cls"} <= set(changes.columns):
        steps, k = max(n - 1, 1), len(changes)
        out["class_changes"] = int(k)
        out["class_changes_per_frame"], out["class_changes_per_frame_err"] = k / steps, np.sqrt(k) / steps
        if fps:
            out["class_changes_per_s"], out["class_changes_per_s_err"] = k / steps * fps, np.sqrt(k) / steps * fps

        kinds = changes.groupby(["from_cls", "to_cls"]).size().sort_values(ascending=False, kind="stable")
        out["class_changes_by_kind"] = {f"{class_label(class_names, a)} -> {class_label(class_names, b)}": int(v)
                                        for (a, b), v in kinds.items()}
    jumps = hop_jumps(hops, sites, sampling)
    if len(jumps):
        out["hop_length_median"] = float(jumps["length"].median())
        out["hop_length_units"] = "Å" if sampling else "px"
    if "in_range" in frames:
        judged = frames["in_range"] >= 0
        out["frames_judged"] = int(judged.sum())
        out["frames_in_range"] = int((frames["in_range"] == 1).sum())
    return out
