"""Scoring against ground truth: columns per frame (Wei et al.'s ID-recall, ID-precision and
position RMS, plus F1 and class accuracy) and sites over a movie (occupancy and events, after
Madsen et al.).

Points are matched one-to-one by optimal assignment within a radius: the most pairs possible,
and among those the smallest summed distance. Undefined ratios (nothing predicted, nothing
true, nothing matched) are NaN, never a silent 0 or 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .matching import match_within

if TYPE_CHECKING:  # pragma: no cover
    from etem.simulate.toy import MovieTruth


# ------------------------------------------------------------------------------------ the truth

_TRUTH_KINDS = ("the truth must be a simulated movie (etem simulate movie: an .h5 file that keeps its truth) "
                "or a CSV or Parquet table with columns frame, y, x (and cls)")


def load_truth_movie(path: str | Path):
    """The simulated movie ``path`` (:func:`etem.simulate.toy.load_movie`), or a
    :class:`ConfigError` saying what a truth can be where it is another HDF5 file (a recording)."""
    from etem.simulate.toy import load_movie

    try:
        return load_movie(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: no truth in it ({exc}); {_TRUTH_KINDS}.") from None


def read_truth_table(path: str | Path) -> pd.DataFrame:
    """A truth table (CSV, or Parquet by suffix), or a :class:`ConfigError` saying what a truth
    can be where ``path`` is no table (a recorded image: it holds no truth)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, ImportError) as exc:
        first = ("a binary file, not text" if isinstance(exc, UnicodeDecodeError)
                 else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError(f"{path}: not a table of true columns ({first[:120]}); {_TRUTH_KINDS}. A recorded "
                          "image holds no truth: score found columns against a simulated movie.") from None


def _points(a: Any, name: str) -> np.ndarray:
    pts = np.asarray(a, dtype=float)
    if pts.size == 0:
        return np.zeros((0, 2))
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2:
        raise ValueError(f"{name} must be an [n, d] array of coordinates; got shape {pts.shape}.")
    return pts


def match_points(pred_yx: Any, true_yx: Any, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Match predicted to true points one-to-one.

    Among all one-to-one pairings whose pairs lie at most ``radius`` apart, take one with the
    most pairs and, among those, the smallest summed Euclidean distance. Pairs farther apart
    than ``radius`` never match.

    Parameters
    ----------
    pred_yx, true_yx
        ``[n, d]`` coordinates (usually (y, x) [px]); ``[n]`` is taken as 1-D points.
    radius
        Largest distance of a matched pair, in the units of the coordinates.

    Returns
    -------
    pred_idx, true_idx
        Row indices of the matched pairs, sorted by ``pred_idx``.
    """
    pred = _points(pred_yx, "pred_yx")
    true = _points(true_yx, "true_yx")
    empty = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))
    if not radius >= 0:
        raise ValueError(f"radius must be a non-negative number; got {radius!r}.")
    if len(pred) == 0 or len(true) == 0:
        return empty
    if pred.shape[1] != true.shape[1]:
        raise ValueError(f"pred_yx and true_yx must have the same number of coordinates; "
                         f"got {pred.shape[1]} and {true.shape[1]}.")
    return match_within(pred, true, radius)


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else float("nan")


def _check_columns(df: pd.DataFrame, name: str, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} needs columns {', '.join(cols)}; missing {', '.join(missing)}.")


def _figures(counts: np.ndarray, sampling: float | None, with_cls: bool, ordinal: bool = False) -> dict[str, Any]:
    """The figures of :func:`score_columns` from summed (tp, fp, fn, squared error, cls agree,
    and with ``ordinal`` the matched pairs whose classes differ by 1, 2 and 3 or more)."""
    tp, fp, fn = (int(v) for v in counts[:3])
    sq, cls_ok = float(counts[3]), int(counts[4])
    out: dict[str, Any] = {
        "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "rms_px": float(np.sqrt(sq / tp)) if tp else float("nan"),
    }
    if sampling is not None:
        out["rms_A"] = out["rms_px"] * sampling
    if with_cls:
        out["cls_accuracy"] = _ratio(cls_ok, tp)
    if with_cls and ordinal:
        for k, name in enumerate(MISCOUNT):
            out[name] = _ratio(float(counts[5 + k]), tp)
    return out


#: Fractions of matched columns whose class is off by 1, 2, 3 or more (ordinal classes such as
#: column heights: Madsen et al. 2018, Fig. 12).
MISCOUNT = ("miscount_1", "miscount_2", "miscount_3plus")


def bond_lengths(yx: Any, bond: float, *, tolerance: float = 0.25) -> np.ndarray:
    """Distances of all pairs of points within ``bond * (1 ± tolerance)`` of each other.

    On a pristine sheet the spread of these lengths, measured on found positions, is a
    finder's position accuracy free of any matching (Madsen et al. 2018 report 0.18 Å for
    graphene on experimental images). For graphene (1.42 Å) the default window,
    1.07-1.78 Å, stops well short of the second neighbours (2.46 Å).
    """
    pts = _points(yx, "yx")
    if not (bond > 0 and 0 < tolerance < 1):
        raise ValueError(f"bond must be positive and tolerance in (0, 1); got {bond!r}, {tolerance!r}.")
    if len(pts) < 2:
        return np.zeros(0)
    from scipy.spatial import cKDTree

    pairs = cKDTree(pts).query_pairs(bond * (1 + tolerance), output_type="ndarray")
    d = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
    return d[d >= bond * (1 - tolerance)]


def score_columns(
    pred: pd.DataFrame,
    true: pd.DataFrame,
    *,
    radius_px: float,
    sampling: float | None = None,
    per_frame: bool = False,
    ordinal: bool = False,
    frame_shape: tuple[int, int] | None = None,
    border_px: float = 0.0,
) -> dict[str, Any] | pd.DataFrame:
    """Score found columns against the true ones, frame by frame.

    In every frame the found columns are matched to the true ones with :func:`match_points`
    (pairs at most ``radius_px`` apart). A match is a true positive, an unmatched found column
    a false positive, an unmatched true column a false negative.

    Parameters
    ----------
    pred, true
        Columns tables with ``frame, y, x`` [px] and optionally ``cls``.
    radius_px
        Largest distance of a match [px].
    sampling
        Pixel size [Å/px]; adds ``rms_A``.
    per_frame
        Return one row per frame (every frame in either table) instead of the totals.
    ordinal
        The classes are ordered counts (column heights: class ``k`` holds ``k + 1`` atoms); adds
        the fractions of matched pairs whose classes differ by one, two, and three or more
        (``miscount_1``, ``miscount_2``, ``miscount_3plus``).
    frame_shape, border_px
        With the frames' (H, W): columns, true or found, less than ``border_px`` from the
        frame's edge are left out of the score (a column cut by the edge cannot be judged).
        Matching still sees them, so a found column matched to a true one in the band counts
        as neither a hit nor a false positive.

    Returns
    -------
    dict or DataFrame
        ``tp``, ``fp``, ``fn``;
        ``precision`` = tp / (tp + fp) (ID-precision; NaN when nothing was found);
        ``recall`` = tp / (tp + fn) (ID-recall; NaN when nothing is true);
        ``f1`` = 2 tp / (2 tp + fp + fn);
        ``rms_px`` = root mean square distance of the matched pairs [px] (NaN without matches),
        ``rms_A`` the same in Å when ``sampling`` is given;
        ``cls_accuracy`` = fraction of matched pairs whose ``cls`` agree, when both tables have
        ``cls``.
        With ``per_frame=True`` a DataFrame indexed by ``frame`` with these columns plus
        ``n_pred`` and ``n_true``.
    """
    _check_columns(pred, "pred", ("frame", "y", "x"))
    _check_columns(true, "true", ("frame", "y", "x"))
    if not radius_px > 0:
        raise ValueError(f"radius_px must be positive; got {radius_px!r}.")
    if not border_px >= 0:
        raise ValueError(f"border_px must be a distance >= 0; got {border_px!r}.")
    if border_px > 0 and frame_shape is None:
        raise ValueError("border_px needs the frames' shape (frame_shape=(H, W)).")

    def inside(yx: np.ndarray) -> np.ndarray:
        if not border_px:
            return np.ones(len(yx), bool)
        hi = np.asarray(frame_shape, float) - 1 - border_px
        return np.all((yx >= border_px) & (yx <= hi), axis=1)

    with_cls = "cls" in pred.columns and "cls" in true.columns
    p_groups = {int(k): g for k, g in pred.groupby("frame", sort=True)}
    t_groups = {int(k): g for k, g in true.groupby("frame", sort=True)}
    rows = []
    tot = np.zeros(8)  # tp, fp, fn, squared error, cls agree, cls off by 1, 2, >= 3
    for f in sorted(set(p_groups) | set(t_groups)):
        p = p_groups.get(f, pred.iloc[:0])
        t = t_groups.get(f, true.iloc[:0])
        pyx = p[["y", "x"]].to_numpy(dtype=float)
        tyx = t[["y", "x"]].to_numpy(dtype=float)
        ip, it = match_points(pyx, tyx, radius_px)
        # a pair counts where its true column is scored; an unmatched found column where it lies
        unmatched = np.ones(len(pyx), bool)
        unmatched[ip] = False
        fp = int(np.sum(unmatched & inside(pyx)))
        t_in = inside(tyx)
        ip, it = ip[t_in[it]], it[t_in[it]]
        tp = ip.size
        n_p, n_t = tp + fp, int(t_in.sum())
        sq = float(np.sum((pyx[ip] - tyx[it]) ** 2))
        off = (np.abs(p["cls"].to_numpy()[ip].astype(np.int64) - t["cls"].to_numpy()[it].astype(np.int64))
               if with_cls else np.zeros(0, np.int64))
        counts = np.array([tp, fp, n_t - tp, sq, np.sum(off == 0),
                           np.sum(off == 1), np.sum(off == 2), np.sum(off >= 3)], dtype=float)
        tot += counts
        if per_frame:
            row = {"frame": f, "n_pred": n_p, "n_true": n_t}
            row.update(_figures(counts, sampling, with_cls, ordinal))
            rows.append(row)
    if per_frame:
        cols = ["frame", "n_pred", "n_true", "tp", "fp", "fn", "precision", "recall", "f1", "rms_px"]
        cols += ["rms_A"] * (sampling is not None) + ["cls_accuracy"] * with_cls
        cols += list(MISCOUNT) * (with_cls and ordinal)
        return pd.DataFrame(rows, columns=cols).set_index("frame")
    return _figures(tot, sampling, with_cls, ordinal)


def _event_points(frame, site, sub, n_sub: int, tolerance: int) -> np.ndarray:
    """Events as 2-D points (key, frame) for :func:`match_points` within ``tolerance`` frames:
    events of another site or another ``sub`` (0 .. n_sub - 1: a flip's kind, a change's new
    class) lie farther apart than ``tolerance`` on the key axis, so they never match."""
    key = np.asarray(site, float) * n_sub + np.asarray(sub, float)
    return np.stack([key * (2 * tolerance + 2), np.asarray(frame, float)], axis=1)


def _event_scores(found_pts: np.ndarray, true_pts: np.ndarray, frame_tolerance: int, *, n_found: int) -> dict[str, Any]:
    """``n_true``, ``n_found``, ``recall``, ``precision`` of found events (``found_pts``, of the
    ``n_found`` found, those at matched sites) against the true ones (:func:`_event_points`)."""
    matched = match_points(found_pts, true_pts, frame_tolerance)[0].size if len(found_pts) and len(true_pts) else 0
    return {"n_true": int(len(true_pts)), "n_found": int(n_found),
            "recall": _ratio(matched, len(true_pts)), "precision": _ratio(matched, n_found)}


def _match_sites(found_sites: pd.DataFrame, truth: "MovieTruth", radius_px: float):
    """Found sites matched to the true sites by position (frame 0's pixels): the rows of each
    pair (found, true) and a map from found site id to true site (its row)."""
    ip, it = match_points(found_sites[["y", "x"]].to_numpy(dtype=float),
                          truth.sites[["y", "x"]].to_numpy(dtype=float), radius_px)
    return ip, it, dict(zip(found_sites["site"].to_numpy()[ip].tolist(), it.tolist()))


def score_sites(
    found_sites: pd.DataFrame,
    found_flips: pd.DataFrame | None,
    truth: "MovieTruth",
    *,
    radius_px: float,
    frame_tolerance: int = 0,
) -> dict[str, Any]:
    """Score the sites a tracker found over a movie (occupancy and events) against the truth.

    Found sites are matched to the true sites by position, both in frame 0's pixel coordinates,
    with :func:`match_points`. A true site that is never occupied cannot be seen, so it does not
    count as missed; a found site matched to it still counts as found (its occupancy error
    shows the mistake).

    Parameters
    ----------
    found_sites
        ``site, y, x, occupancy`` and optionally ``event_rate``: one row per found site,
        positions [px] in frame 0's coordinates, occupancy as the fraction of frames occupied,
        event rate as flips per frame step.
    found_flips
        ``frame, site, kind`` (``'on'``/``'off'``, as :meth:`MovieTruth.flips`): a flip at
        frame f changed the site between f-1 and f. None when not available.
    truth
        The movie's truth.
    radius_px
        Largest distance [px] between a found site and its true site.
    frame_tolerance
        A found flip matches a true flip of the same kind at the matched site when their frames
        differ by at most this many frames; matches are one-to-one.

    Returns
    -------
    dict
        ``n_true`` (true sites occupied in at least one frame), ``n_found`` (found sites),
        ``n_matched`` (of the ``n_true`` sites, those found);
        ``site_recall`` = n_matched / n_true (the fraction of true sites found);
        ``site_precision`` = fraction of found sites matched to a true site;
        ``occupancy_mae``, ``occupancy_max_error`` = mean and largest |found - true| occupancy
        over all matched sites, and ``occupancy_mae_surface`` over the matched surface sites;
        ``event_recall`` = matched true flips / all true flips (flips at unfound sites count as
        missed); ``event_precision`` = matched found flips / all found flips (flips at found
        sites without a true site count as false);
        ``event_rate_mae`` = mean |found - true| event rate over the matched sites (when
        ``found_sites`` has ``event_rate``);
        ``flip_count_error`` = (found flips - true flips) / true flips, the relative error of
        the movie's total hop activity (each hop is two flips).
        Undefined ratios are NaN.
    """
    _check_columns(found_sites, "found_sites", ("site", "y", "x", "occupancy"))
    if found_flips is None:
        found_flips = pd.DataFrame({"frame": [], "site": [], "kind": []})
    _check_columns(found_flips, "found_flips", ("frame", "site", "kind"))
    if not radius_px > 0:
        raise ValueError(f"radius_px must be positive; got {radius_px!r}.")
    if frame_tolerance < 0:
        raise ValueError(f"frame_tolerance must be a non-negative number of frames; got {frame_tolerance!r}.")

    occ_true = truth.site_occupancy()
    rate_true = truth.site_event_rate()
    sites = truth.sites
    ip, it, to_true = _match_sites(found_sites, truth, radius_px)
    true_site = it  # sites are numbered by their row (and occupancy column)
    n_seen = int(np.count_nonzero(occ_true > 0))
    seen_matched = int(np.count_nonzero(occ_true[true_site] > 0))

    err = np.abs(found_sites["occupancy"].to_numpy(dtype=float)[ip] - occ_true[true_site])
    is_surface = sites["kind"].to_numpy()[it] == "surface"
    out: dict[str, Any] = {
        "n_true": n_seen,
        "n_found": int(len(found_sites)),
        "n_matched": seen_matched,
        "site_recall": _ratio(seen_matched, n_seen),
        "site_precision": _ratio(ip.size, len(found_sites)),
        "occupancy_mae": float(err.mean()) if err.size else float("nan"),
        "occupancy_max_error": float(err.max()) if err.size else float("nan"),
        "occupancy_mae_surface": float(err[is_surface].mean()) if is_surface.any() else float("nan"),
    }

    true_flips = truth.flips()
    # Found flips at matched sites, relabelled with the true site, against the true flips.
    fsite = found_flips["site"].map(to_true)
    at_matched = fsite.notna().to_numpy()
    found_pts = _event_points(found_flips["frame"].to_numpy()[at_matched], fsite.to_numpy()[at_matched],
                              found_flips["kind"].to_numpy()[at_matched] == "on", 2, frame_tolerance)
    true_pts = _event_points(true_flips["frame"].to_numpy(), true_flips["site"].to_numpy(),
                             true_flips["kind"].to_numpy() == "on", 2, frame_tolerance)
    matched = match_points(found_pts, true_pts, frame_tolerance)[0].size
    out["event_recall"] = _ratio(matched, len(true_flips))
    out["event_precision"] = _ratio(matched, len(found_flips))
    if "event_rate" in found_sites.columns:
        rerr = np.abs(found_sites["event_rate"].to_numpy(dtype=float)[ip] - rate_true[true_site])
        out["event_rate_mae"] = float(rerr.mean()) if rerr.size else float("nan")
    out["flip_count_error"] = _ratio(len(found_flips) - len(true_flips), len(true_flips))
    return out


def class_mapping(found: pd.DataFrame, truth: pd.DataFrame, *, radius_px: float) -> dict[int, int]:
    """Each found class's true class: the one most of its columns matched (frame by frame,
    within ``radius_px``) have. For classes that are not the truth's own, as those
    :class:`etem.tracker.intensity.IntensityClasses` makes (its sublattices and groups)."""
    votes: dict[tuple[int, int], int] = {}
    t_by = dict(tuple(truth.groupby("frame")))
    for frame, f in found.groupby("frame"):
        t = t_by.get(frame)
        if t is None:
            continue
        i, j = match_points(f[["y", "x"]].to_numpy(float), t[["y", "x"]].to_numpy(float), radius_px)
        for a, b in zip(f["cls"].to_numpy()[i], t["cls"].to_numpy()[j]):
            votes[int(a), int(b)] = votes.get((int(a), int(b)), 0) + 1
    best: dict[int, tuple[int, int]] = {}
    for (a, b), n in votes.items():
        if n > best.get(a, (-1, 0))[1]:
            best[a] = (b, n)
    return {a: b for a, (b, _) in best.items()}


def as_true_classes(found: pd.DataFrame, changes: pd.DataFrame | None, truth: pd.DataFrame, *,
                    radius_px: float) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[int, int]]:
    """``found`` columns and class ``changes`` (``from_cls``, ``to_cls``) with each class taken
    as :func:`class_mapping` maps it (-1 for a class no column matched), and the mapping."""
    to_true = class_mapping(found, truth, radius_px=radius_px)

    def mapped(s: pd.Series) -> pd.Series:
        return s.map(to_true).fillna(-1).astype(int)

    found = found.assign(cls=mapped(found["cls"]))
    if changes is not None and len(changes):
        changes = changes.assign(**{c: mapped(changes[c]) for c in ("from_cls", "to_cls") if c in changes})
    return found, changes, to_true


def true_class_changes(truth: "MovieTruth") -> pd.DataFrame:
    """``frame, site, from_cls, to_cls``: each frame in which a true site holds a column of
    another class than at the last frame it held one (e.g. S2 to S as a sulfur vacancy forms)."""
    p = truth.positions.sort_values(["site", "frame"])
    site = p["site"].to_numpy()
    cls = p["cls"].to_numpy()
    same_site = np.r_[False, site[1:] == site[:-1]]
    prev = np.r_[-1, cls[:-1]]
    hit = same_site & (cls != prev)
    return pd.DataFrame({"frame": p["frame"].to_numpy()[hit].astype(np.int64), "site": site[hit].astype(np.int64),
                         "from_cls": prev[hit].astype(np.int64), "to_cls": cls[hit].astype(np.int64)})


def score_class_changes(
    found_sites: pd.DataFrame,
    found_changes: pd.DataFrame | None,
    truth: "MovieTruth",
    *,
    radius_px: float,
    frame_tolerance: int = 0,
) -> dict[str, Any]:
    """Score a tracker's class changes (:meth:`etem.tracker.sites.SiteMap.class_changes_table`)
    against the movie's (:func:`true_class_changes`).

    Sites are matched as in :func:`score_sites`; a found change matches a true change at the
    matched site, into the same class, within ``frame_tolerance`` frames (one to one). Returns
    ``n_true``, ``n_found``, ``recall``, ``precision`` (NaN where undefined)."""
    _check_columns(found_sites, "found_sites", ("site", "y", "x"))
    if found_changes is None or not len(found_changes):
        found_changes = pd.DataFrame({"frame": [], "site": [], "from_cls": [], "to_cls": []})
    _check_columns(found_changes, "found_changes", ("frame", "site", "to_cls"))
    true = true_class_changes(truth)
    to_true = _match_sites(found_sites, truth, radius_px)[2]
    fsite = found_changes["site"].map(to_true)
    ok = fsite.notna().to_numpy()
    n_cls = int(max(true["to_cls"].max() if len(true) else 0, found_changes["to_cls"].max() if len(found_changes) else 0)) + 1
    fp = _event_points(found_changes["frame"].to_numpy()[ok], fsite.to_numpy()[ok],
                       found_changes["to_cls"].to_numpy()[ok], n_cls, frame_tolerance)
    tp = _event_points(true["frame"].to_numpy(), true["site"].to_numpy(), true["to_cls"].to_numpy(), n_cls,
                       frame_tolerance)
    return _event_scores(fp, tp, frame_tolerance, n_found=len(found_changes))


def score_hops(
    found_sites: pd.DataFrame,
    found_hops: pd.DataFrame | None,
    truth: "MovieTruth",
    *,
    radius_px: float,
    frame_tolerance: int = 0,
) -> dict[str, Any]:
    """Score a tracker's site-to-site hops (:meth:`etem.tracker.sites.SiteMap.hops_table`, the
    rows with both sites known) against the movie's (``truth.hops``).

    Sites are matched as in :func:`score_sites`; a found hop matches a true hop from the matched
    site to the matched site within ``frame_tolerance`` frames (one to one); a found hop with an
    end at a site without a true one is false. Returns ``n_true``, ``n_found``, ``recall``,
    ``precision`` (NaN where undefined)."""
    _check_columns(found_sites, "found_sites", ("site", "y", "x"))
    if found_hops is None or not len(found_hops):
        found_hops = pd.DataFrame({"frame": [], "from_site": [], "to_site": []})
    _check_columns(found_hops, "found_hops", ("frame", "from_site", "to_site"))
    found_hops = found_hops[(found_hops["from_site"] >= 0) & (found_hops["to_site"] >= 0)]
    true = truth.hops
    to_true = _match_sites(found_sites, truth, radius_px)[2]
    a, b = found_hops["from_site"].map(to_true), found_hops["to_site"].map(to_true)
    ok = (a.notna() & b.notna()).to_numpy()
    n = len(truth.sites)  # (true sites are numbered by their row: a pair of them is one key)
    fp = _event_points(found_hops["frame"].to_numpy()[ok], a.to_numpy()[ok] * n + b.to_numpy()[ok],
                       np.zeros(int(ok.sum())), 1, frame_tolerance)
    tp = _event_points(true["frame"].to_numpy(), true["from_site"].to_numpy() * n + true["to_site"].to_numpy(),
                       np.zeros(len(true)), 1, frame_tolerance)
    return _event_scores(fp, tp, frame_tolerance, n_found=len(found_hops))
