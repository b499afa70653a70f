"""How bright each column is: the mean of the frame, as recorded, within a small disk about the
column's position (its ``intensity`` in a columns table).

In annular dark-field STEM a column's intensity grows with the atomic numbers of its atoms
(roughly as Z^1.7 each) and with their number, so it tells a Se atom in an S2 column of MoS2,
an S vacancy, or how many atoms a column holds; followed through a movie it shows an atom
arriving or leaving. In HRTEM it is the phase contrast at the column, which depends on defocus
and thickness as much as on the atoms. The figure is in the frame's own units (counts where the
camera sends counts), with no background taken off. Beside it, ``background``: the image's floor
about the column (:func:`local_background`, the level of the gaps between the columns, where a
camera's offset, an amorphous support or a contamination layer show). ``intensity -
background`` (:func:`net_intensity`; its negative for dark columns) is what the column itself
adds: on the real Se-implanted MoS2 image S2 columns give 0.40 of a Mo column's (Z^1.7 gives
0.39), against 0.98 of the raw means, and the drift of the Mo columns' raw means across the
field (1.9 × 10⁴ counts) falls to 4 × 10³.
:func:`group_columns` sorts the columns of one kind by it, and a run's intensity classes
(:class:`IntensityClasses`) and per-site statistics are of it; compare columns within a frame,
or frames taken at one dose.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .intensity_measure import (  # noqa: F401 (re-exported)
    column_intensity, intensity_of_frames, local_background, nearest_spacing_px, net_intensity)


def psi3(yx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, float] | None:
    """Each point's ``psi_3`` (the mean of ``exp(3 i angle)`` over its neighbours within 1.3
    times the median nearest-neighbour distance), whether it has two neighbours or more, the
    points' k-d tree and that distance; None for fewer than 4 points or no neighbours."""
    from scipy.spatial import cKDTree

    if len(yx) < 4:
        return None
    tree = cKDTree(yx)
    d, _ = tree.query(yx, k=2)
    nn = float(np.median(d[:, 1]))
    pairs = tree.query_pairs(1.3 * nn, output_type="ndarray")
    if not len(pairs):
        return None
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    v = yx[j] - yx[i]
    z = np.exp(3j * np.arctan2(v[:, 0], v[:, 1]))
    n = np.bincount(i, minlength=len(yx))
    psi = (np.bincount(i, z.real, len(yx)) + 1j * np.bincount(i, z.imag, len(yx))) / np.maximum(n, 1)
    ok = n >= 2
    return (psi, ok, tree, nn) if ok.any() else None


def honeycomb_sublattices(table: pd.DataFrame, *, min_order: float = 0.5, reach_nn: float = 4.0) -> np.ndarray:
    """The sublattice (0 or 1; -1: undecided) of each column of a honeycomb lattice seen along
    its axis (graphene, hBN, MoS2 and the other 2H dichalcogenides along [001]), from its own
    neighbours: the three of a column of one sublattice point at ``a, a + 120°, a + 240°``, of
    the other at ``a + 60°, …``, so that ``psi_3`` (the mean of ``exp(3 i angle)`` over its
    neighbours within 1.3 times the median nearest-neighbour distance) has opposite signs on
    the two. A column with fewer than two neighbours, or whose ``psi_3`` points less than
    ``min_order`` along the lattice's direction (at an edge, a defect), is undecided.

    With ``intensity`` in the table, sublattice 0 is the brighter (the metal of a
    dichalcogenide in an annular dark-field image), judged about each column: the lattice's
    direction and which of its two signs is brighter are taken from the columns within
    ``reach_nn`` nearest-neighbour distances, so that grains of other orientations and mirror
    twins (whose metal sits where the other grain's chalcogen would) are sorted right. Without
    it, one direction for the whole frame, and the labels of the two are arbitrary.
    ``y, x`` are in pixels of one frame."""
    yx = table[["y", "x"]].to_numpy(np.float64)
    out = np.full(len(yx), -1, np.int64)
    found = psi3(yx)
    if found is None:
        return out
    psi, ok, tree, nn = found
    inten = table["intensity"].to_numpy(np.float64) if "intensity" in table.columns else None
    if inten is None or not np.isfinite(inten).any():
        # one direction of psi_3 (up to sign: half the angle of the mean psi_3 squared)
        axis = np.exp(0.5j * np.angle((psi[ok] ** 2).sum()))
        s = (psi * np.conj(axis)).real
        out[ok & (s >= min_order)] = 0
        out[ok & (s <= -min_order)] = 1
        return out
    # about each column: the local direction, each neighbour's side of it, the brighter side
    near = tree.query_pairs(reach_nn * nn, output_type="ndarray")
    a = np.concatenate([near[:, 0], near[:, 1], np.arange(len(yx))])
    b = np.concatenate([near[:, 1], near[:, 0], np.arange(len(yx))])
    keep = ok[b] & np.isfinite(inten[b])
    a, b = a[keep], b[keep]
    sq = psi[b] ** 2
    local = np.bincount(a, sq.real, len(yx)) + 1j * np.bincount(a, sq.imag, len(yx))
    axis = np.exp(0.5j * np.angle(local))
    side = (psi[b] * np.conj(axis[a])).real
    own = (psi * np.conj(axis)).real
    # mean intensity of each side about each column (means: medians of 10^5 groups cost too much)
    plus, minus = side >= min_order, side <= -min_order
    n_p, n_m = np.bincount(a[plus], minlength=len(yx)), np.bincount(a[minus], minlength=len(yx))
    i_p = np.bincount(a[plus], inten[b[plus]], len(yx)) / np.maximum(n_p, 1)
    i_m = np.bincount(a[minus], inten[b[minus]], len(yx)) / np.maximum(n_m, 1)
    decided = ok & (np.abs(own) >= min_order) & (n_p > 0) & (n_m > 0)
    bright_plus = i_p >= i_m
    out[decided] = np.where((own[decided] > 0) == bright_plus[decided], 0, 1)
    return out


def _mixture(x: np.ndarray, k: int, iters: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A one-dimensional Gaussian mixture of ``k`` components by expectation-maximization, from
    the quantiles: ``(weights, means, sds, log-likelihood)``, means ascending."""
    mu = np.quantile(x, (np.arange(k) + 0.5) / k)
    sd = np.full(k, x.std() / k + 1e-12)
    w = np.full(k, 1.0 / k)
    floor = 1e-3 * x.std() + 1e-12
    ll = -np.inf
    for _ in range(iters):
        logp = np.log(w) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2 - 0.5 * np.log(2 * np.pi)
        top = logp.max(1, keepdims=True)
        new_ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(1))).sum())
        r = np.exp(logp - top)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-12
        w, mu = nk / len(x), (r * x[:, None]).sum(0) / nk
        sd = np.maximum(np.sqrt((r * (x[:, None] - mu) ** 2).sum(0) / nk), floor)
        if new_ll - ll < 1e-8 * abs(new_ll):
            break
        ll = new_ll
    order = np.argsort(mu)
    return w[order], mu[order], sd[order], new_ll


def _ordered_labels(x: np.ndarray, w: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Each value's group in a one-dimensional mixture whose means are ascending, such that a
    brighter column never falls in a fainter group: between two neighbouring groups the bound is
    where the brighter one becomes the more probable going up (of two Gaussians of different
    widths, the wider is the more probable on both far sides; its far side beyond the other
    goes to the other). The most probable group of all would give both far tails to the widest
    group: on one frame of the MoS2 ADF demo, S2 columns brighter than every S2 column went to
    the single-S group, whose wider spread made it the likelier there. NaN values take the
    first group."""
    k = len(mu)
    x = np.nan_to_num(np.asarray(x, np.float64), nan=-np.inf)
    if k < 2:
        return np.zeros(len(x), np.int64)
    w = np.maximum(np.asarray(w, np.float64), 1e-300)
    bounds = np.empty(k - 1)
    for i in range(k - 1):
        # log p(i+1) - log p(i) = a x^2 + b x + c: the bound is its rising zero
        (m0, m1), (s0, s1) = mu[i:i + 2], sd[i:i + 2]
        a = 0.5 / s0 ** 2 - 0.5 / s1 ** 2
        b = m1 / s1 ** 2 - m0 / s0 ** 2
        c = (np.log(w[i + 1] / w[i]) - np.log(s1 / s0)) - 0.5 * (m1 / s1) ** 2 + 0.5 * (m0 / s0) ** 2
        if a == 0 or abs(a) * (m1 - m0) < 1e-9 * abs(b):  # (as wide as each other: one zero)
            bounds[i] = -c / b if b else 0.5 * (m0 + m1)
            continue
        disc = b * b - 4 * a * c
        if disc < 0:  # one of the two more probable everywhere: the bound where they come closest
            bounds[i] = -b / (2 * a)
            continue
        r = np.sort([(-b - np.sqrt(disc)) / (2 * a), (-b + np.sqrt(disc)) / (2 * a)])
        bounds[i] = r[1] if a > 0 else r[0]  # (the brighter wider: its upper zero; narrower: its lower)
    bounds = np.maximum.accumulate(bounds)
    return np.searchsorted(bounds, x, side="right").astype(np.int64)


def intensity_groups(intensity: np.ndarray, *, max_groups: int = 3, min_groups: int = 1,
                     min_size: int = 3, resolved_only: bool = True,
                     separation: float = 1.0) -> tuple[np.ndarray, dict]:
    """Columns of one kind sorted into groups by ``intensity``: a Gaussian mixture of
    ``min_groups`` to ``max_groups`` components, the number chosen by the Bayesian information
    criterion (a mixture with a group of fewer than ``min_size`` columns, or, ``resolved_only``,
    with two neighbouring groups less than ``separation`` apart, is not taken unless no other
    is left: one long-tailed or skewed group is not two kinds of column). The separation of
    two groups is Ashman's D, ``sqrt(2) |m1 - m2| / sqrt(s1² + s2²)``: at 1 their means lie
    one (root-mean-square) standard deviation apart; two equal groups show two peaks from
    D = 2. With the narrower group's standard deviation as the bound, the Mo columns of the
    real Se-implanted MoS2 image, whose intensity rises 8 % down the field (scan drift), were
    two groups (1.165e5 ± 9e3 and 1.267e5 ± 1.3e4: D = 0.9). Returns each column's group
    (0: the faintest; -1 where its intensity is NaN) and ``{"means", "sds", "counts"}``."""
    x = np.asarray(intensity, np.float64)
    ok = np.isfinite(x)
    groups = np.full(len(x), -1, np.int64)
    if ok.sum() < 2:
        groups[ok] = 0
        return groups, {"means": [float(np.nanmean(x))] if ok.any() else [], "sds": [0.0] * int(ok.any()),
                        "counts": [int(ok.sum())] if ok.any() else []}
    v = x[ok]
    scale = v.std() or 1.0
    z = (v - v.mean()) / scale
    best = None
    for k in range(max(1, min_groups), max(1, min(max_groups, len(z) // 2)) + 1):
        w, mu, sd, ll = _mixture(z, k)
        bic = (3 * k - 1) * np.log(len(z)) - 2 * ll
        label = _ordered_labels(z, w, mu, sd)
        small = k > 1 and np.bincount(label, minlength=k).min() < min_size
        # two groups whose means lie closer than about their SD are one group of a skewed or
        # long-tailed shape, not two kinds of column (where the number is not fixed)
        unresolved = (resolved_only and k > max(1, min_groups)  # (the means come ascending)
                      and bool((np.sqrt(2) * np.diff(mu) < separation * np.hypot(sd[1:], sd[:-1])).any()))
        key = (small, unresolved, bic)
        if best is None or key < best[0]:
            best = (key, mu, sd, label)
    _, mu, sd, label = best
    # groups no column fell in (a component under another's wing) are dropped
    used = np.unique(label)
    mu, sd, label = mu[used], sd[used], np.searchsorted(used, label)
    groups[ok] = label
    return groups, {"means": (mu * scale + v.mean()).tolist(), "sds": (sd * scale).tolist(),
                    "counts": np.bincount(label, minlength=len(mu)).tolist()}


#: A column below this fraction of the faintest intensity group's mean is too faint to be in it
#: (:func:`group_columns`): half is a column of one atom where the group's hold two (S against
#: S2), a quarter less than any column holds.
FAINT = 0.25


def group_columns(table: pd.DataFrame, *, groups: int | None = None, max_groups: int = 3) -> tuple[pd.DataFrame, list[dict]]:
    """``table`` (a columns table with ``intensity``, one or more frames) with ``sublattice``
    (:func:`honeycomb_sublattices` where at least half of a frame's columns fall on one of the
    two, else 0 for all) and ``group`` (:func:`intensity_groups` of :func:`net_intensity`
    within each sublattice of each frame: ``groups`` groups, or up to ``max_groups`` as the
    information criterion chooses).
    A column whose net intensity is below :data:`FAINT` times the faintest group's mean is
    ``faint`` (group -1; the groups are fitted without it): less than any group's column
    holds, such as a false column in a hole of the real Se-implanted MoS2 image (probability
    0.56, 12 % of the S2 columns' median), which was in the S2 group.
    Also returns, per frame and sublattice, ``{"frame", "sublattice", "columns", "means",
    "sds", "counts", "faint"}`` (and ``"file"`` where the table has one); undecided columns
    (sublattice -1) get group -1."""
    if "intensity" not in table.columns:
        raise ConfigError("the table has no 'intensity': it is measured where [locate] intensity_radius_A is set "
                          "(0.5 Å unless a config turns it off).")
    out = table.copy()
    out["sublattice"] = np.full(len(out), -1, np.int64)
    out["group"] = np.full(len(out), -1, np.int64)
    out["faint"] = np.zeros(len(out), bool)
    keys = [k for k in ("file", "frame") if k in out.columns]
    parts = out.groupby(keys, sort=False).indices.values() if keys else [np.arange(len(out))]
    summary = []
    for idx in parts:
        t = out.iloc[idx]
        sub, _ = _sublattices(t)
        grp = np.full(len(t), -1, np.int64)
        net = net_intensity(t)
        dim = np.zeros(len(t), bool)
        for s in np.unique(sub[sub >= 0]):
            here = sub == s
            g, info = intensity_groups(net[here], max_groups=groups or max_groups,
                                       min_groups=groups or 1)
            # far below every group: a column too faint to be one of them (an empty site, a
            # false column in a hole), grouped with none, and the groups fitted without it
            low = info["means"][0] * FAINT if info["means"] and info["means"][0] > 0 else -np.inf
            faint = here & (net < low)
            if faint.any() and (here & ~faint).sum() >= 2:
                g = np.full(int(here.sum()), -1, np.int64)
                g[~faint[here]], info = intensity_groups(net[here & ~faint], max_groups=groups or max_groups,
                                                         min_groups=groups or 1)
            grp[here] = g
            dim |= faint
            summary.append({**({"file": t["file"].iloc[0]} if "file" in t else {}),
                            "frame": int(t["frame"].iloc[0]) if "frame" in t else 0, "sublattice": int(s),
                            "columns": int(here.sum()), **info, "faint": int(faint.sum())})
        out.iloc[idx, out.columns.get_loc("sublattice")] = sub
        out.iloc[idx, out.columns.get_loc("group")] = grp
        out.iloc[idx, out.columns.get_loc("faint")] = dim
    return out, summary


def _sublattices(table: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """:func:`honeycomb_sublattices`, and whether the columns form a honeycomb (at least half of
    them on one of its sublattices); where they do not, all are one kind (0)."""
    sub = honeycomb_sublattices(table)
    if len(sub) and (sub >= 0).mean() >= 0.5:
        return sub, True
    return np.zeros(len(table), np.int64), False


def _group_names(sublattice: int, n_groups: int, honeycomb: bool) -> list[str]:
    """``A``, ``B``; ``I`` where the columns form no honeycomb; a sublattice of several groups
    numbers them, faintest first: ``B0``, ``B1``."""
    letter = "AB"[sublattice] if honeycomb else "I"
    return [letter] if n_groups == 1 else [f"{letter}{g}" for g in range(n_groups)]


def group_classes(table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """One class per sublattice and group of a :func:`group_columns` table (one frame), numbered
    and named as :class:`IntensityClasses` numbers and names them (``A``, ``B0``, ``B1``; ``I0``
    … where all columns are one kind), a ``"no sublattice"`` for the undecided and a last
    ``"faint"`` for the columns too faint for any group."""
    sub, grp = table["sublattice"].to_numpy(), table["group"].to_numpy()
    honeycomb = bool((sub == 1).any())
    pairs = sorted({(int(s), int(g)) for s, g in zip(sub, grp) if s >= 0 and g >= 0})
    names, index = [], {}
    for s in sorted({s for s, _ in pairs}):
        gs = [g for t, g in pairs if t == s]
        for g, name in zip(gs, _group_names(s, len(gs), honeycomb)):  # (a frame's groups: 0 … k-1)
            index[s, g] = len(names)
            names.append(name)
    cls = np.array([index.get((int(s), int(g)), len(names)) for s, g in zip(sub, grp)], np.int64)
    faint = table["faint"].to_numpy(bool) if "faint" in table.columns else np.zeros(len(cls), bool)
    if (cls[~faint] == len(names)).any():
        names.append("no sublattice")
    if faint.any():  # (too faint for any group: FAINT)
        cls[faint] = len(names)
        names.append("faint")
    return cls, names


# --------------------------------------------------------------------------- classes in a run

def _normalized(table: pd.DataFrame, honeycomb: bool | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Each column's sublattice and its intensity on the frame's own scale: on a honeycomb,
    1 at the median of sublattice 0 and 0 at the floor (the camera's offset taken off with the
    floor, a frame's dose by the scale; without a floor, 0 at the median of sublattice 1);
    otherwise 0 at the median and 1 an interquartile range above. ``honeycomb``: whether the
    run's columns form one (None: judge by this frame)."""
    inten = net_intensity(table)  # (over the floor: see IntensityClasses)
    if honeycomb is None:
        sub, honeycomb = _sublattices(table)
    else:
        sub = honeycomb_sublattices(table) if honeycomb else np.zeros(len(table), np.int64)
    ok = np.isfinite(inten)
    if honeycomb and (ok & (sub == 0)).any() and (ok & (sub == 1)).any():
        floor = "background" in table.columns and bool(np.isfinite(table["background"].to_numpy(np.float64)).any())
        lo = 0.0 if floor else np.median(inten[ok & (sub == 1)])
        hi = np.median(inten[ok & (sub == 0)])
    elif ok.any():
        lo = np.median(inten[ok])
        hi = lo + (np.subtract(*np.percentile(inten[ok], [75, 25])) or 1.0)
    else:
        lo, hi = 0.0, 1.0
    return sub, (inten - lo) / ((hi - lo) or 1.0), honeycomb


class IntensityClasses:
    """Column classes from intensities, for a run whose locator knows one class (a STEM finder
    finds "columns"): each column's class is its sublattice and its intensity group there, as
    :func:`group_columns` makes them, learned on the run's first frames and then kept, so that
    a site's class means the same all run long and its changes (an S2 column losing an atom)
    are followed as the site map follows any class change.

    Intensities are taken over the image's floor about each column (:func:`net_intensity`) and
    put on each frame's own scale (:func:`_normalized`), so that a background that changes across
    the field (contamination, thickness) does not move a column from one group to another: on the
    MoS2 ADF demo movie (``etem demo --movie mos2-stem``, 60 frames of 256², 144 true S2 <-> S
    changes) with a ramp of 5 counts across the field added to every frame, class changes within
    2 frames were found with recall 0.81 and precision 1.00 over the floor against 0.26 and 0.35
    with the raw means; with no ramp 0.79 and 0.99 against 0.80 and 1.00 (2026-12-06). The groups
    are fitted to the frames seen until ``learn_columns`` columns have been, and fixed from there
    (the first frames are classed by the fit of the frames until then, and classed again by the
    fixed groups once they are, or by the last fit where the run ends first: a class number
    means the same in every frame of a run's tables; the site map, which saw the first
    classes, decides a site's first class only when it is probable enough, so that a column
    the first frame's fit put in the wrong group is no class change when the next frames put
    it right). Classes are numbered
    sublattice by sublattice, faintest group first: on a MoS2 ADF movie, 0 the Mo columns, 1
    the single S atoms, 2 the S2 columns. A column on no sublattice (an edge, a defect) takes
    the most probable of all the groups.

    Groups closer than ``separation`` (Ashman's D, :func:`intensity_groups`; 2 where two equal
    groups begin to show two peaks) are one: a class boundary through the flank of one group
    puts the columns near it in either class as noise, position or field move their means a
    little, and each such flip is a class change. On a real MoS2 ADF movie drifting by whole
    pixels (identical pixels) the S sublattice's faint tail made a group 0.32 ± 0.08 of the Mo
    columns beside the S2 columns' 0.43 ± 0.06 (D = 1.6), and 2 to 8 columns crossed between
    them in 12 frames.

    Intensities are over the floor and scaled by the median of sublattice 0 (the metal) of the
    frame, 0 at the floor: the median of the other sublattice, which was the zero, moved by
    3 % as the drifting field brought in more of the flake's faint S columns, and the classes
    of the columns near a bound with it."""

    def __init__(self, *, groups: int | None = None, max_groups: int = 3, learn_columns: int = 2000,
                 separation: float = 2.0) -> None:
        self.groups, self.max_groups, self.learn_columns = groups, max_groups, learn_columns
        self.separation = separation
        self.honeycomb: bool | None = None
        self.fixed = False
        self.comps: list[dict] = []   # per sublattice: {"sublattice", "w", "mu", "sd"}
        self._pool: dict[int, list[np.ndarray]] = {}

    def __call__(self, table: pd.DataFrame) -> np.ndarray:
        """The class of each column of one frame's table (with ``y, x, intensity``)."""
        if not len(table):
            return np.zeros(0, np.int64)
        sub, u, self.honeycomb = _normalized(table, self.honeycomb)
        if not self.fixed:
            for s in np.unique(sub[sub >= 0]):
                here = u[(sub == s) & np.isfinite(u)]
                self._pool.setdefault(int(s), []).append(here)
            self._fit()
        return self._classify(sub, u)

    def classify(self, table: pd.DataFrame) -> np.ndarray:
        """The class of each column of ``table`` by the groups as they are now, learning nothing
        (the frames classed before the groups were fixed, classed again by the fixed ones)."""
        if not len(table):
            return np.zeros(0, np.int64)
        sub, u, _ = _normalized(table, self.honeycomb)
        return self._classify(sub, u)

    def _fit(self) -> None:
        comps = []
        for s in sorted(self._pool):
            x = np.concatenate(self._pool[s])
            if len(x) < 2:
                continue
            g, info = intensity_groups(x, max_groups=self.groups or self.max_groups, min_groups=self.groups or 1,
                                       separation=self.separation)
            w = np.bincount(g[g >= 0], minlength=len(info["means"])) / max((g >= 0).sum(), 1)
            comps.append({"sublattice": s, "w": w.tolist(), "mu": info["means"],
                          "sd": [max(v, 1e-6) for v in info["sds"]]})
        self.comps = comps
        if sum(len(p) for ps in self._pool.values() for p in ps) >= self.learn_columns:
            self.fixed, self._pool = True, {}

    def _classify(self, sub: np.ndarray, u: np.ndarray) -> np.ndarray:
        if not self.comps:
            return np.zeros(len(u), np.int64)
        params = [(c["sublattice"], *(np.asarray(c[k], float) for k in ("w", "mu", "sd"))) for c in self.comps]
        # a column on no sublattice (or on one not fitted) takes the most probable of all groups
        logp = [np.log(np.maximum(w, 1e-12)) - np.log(sd) - 0.5 * ((u[:, None] - mu) / sd) ** 2
                for _, w, mu, sd in params]
        out = np.nan_to_num(np.concatenate(logp, 1), nan=0.0).argmax(1).astype(np.int64)
        first = 0
        for s, w, mu, sd in params:  # one on a fitted sublattice, the group its intensity falls in there
            here = sub == s
            out[here] = first + _ordered_labels(u[here], w, mu, sd)
            first += len(mu)
        return out

    @property
    def class_names(self) -> list[str]:
        """Per sublattice (``A``, ``B``; ``I`` where the columns form no honeycomb) its groups,
        faintest first: ``A``, ``B0``, ``B1`` (a sublattice of one group keeps its letter)."""
        return [name for c in self.comps for name in _group_names(c["sublattice"], len(c["mu"]), self.honeycomb)]

    def ratios(self) -> list[float]:
        """Each class's mean intensity over the floor as a fraction of the brightest
        sublattice's (the metal's) mean, beside :attr:`class_names` (for :func:`display_names`;
        NaN where the columns form no honeycomb). Where the frames had no floor to take off, the
        scale's zero is the B sublattice's median, and the ratios name no species."""
        a = next((c for c in self.comps if c["sublattice"] == 0), None)
        ref = float(np.dot(a["w"], a["mu"])) if a is not None and self.honeycomb else np.nan
        return [float(m) / ref if np.isfinite(ref) and ref > 0 else np.nan for c in self.comps for m in c["mu"]]

    def state(self) -> dict:
        """What a resumed run needs (JSON)."""
        return {"honeycomb": self.honeycomb, "fixed": self.fixed, "comps": self.comps,
                "pool": {str(s): np.concatenate(p).tolist() for s, p in self._pool.items() if p}}

    def restore(self, state: dict) -> None:
        self.honeycomb, self.fixed, self.comps = state["honeycomb"], bool(state["fixed"]), list(state["comps"])
        self._pool = {int(s): [np.asarray(v, float)] for s, v in state.get("pool", {}).items()}


# --------------------------------------------------------------------------- names for figures

#: In annular dark-field STEM a column's intensity over the floor grows about as the sum of Z^1.7
#: of its atoms (Mo 42, S 16, Se 34): each column of the B (chalcogen) sublattice of MoS2 against
#: a Mo column. S2 0.39 (the real Se-implanted image gives 0.40), a single S 0.19, an S2 column
#: with one Se (SeS) 0.89, Se2 1.40.
MOS2_ADF_RATIOS = {name: sum(z ** 1.7 for z in zs) / 42 ** 1.7
                   for name, zs in (("S", (16,)), ("S2", (16, 16)), ("SeS", (34, 16)), ("Se2", (34, 34)))}

#: The materials whose intensity classes :func:`display_names` names by species.
_SPECIES_MATERIALS = ("mos2",)


def _species_of(ratio: float) -> str | None:
    """The MoS2 chalcogen column whose ADF intensity ratio to Mo (:data:`MOS2_ADF_RATIOS`) lies
    nearest ``ratio`` (on a log scale), None where none lies within a factor 1.6."""
    if not (ratio and np.isfinite(ratio) and ratio > 0):
        return None
    name, ref = min(MOS2_ADF_RATIOS.items(), key=lambda kv: abs(np.log(ratio / kv[1])))
    return name if abs(np.log(ratio / ref)) < np.log(1.6) else None


def material_in_view(material, demo) -> str | None:
    """The material a run looks at, where it knows it: the one named (``--material``, the
    config's), else the demo movie's (its ``demo`` attributes: the MoS2 movies)."""
    if material:
        return str(material)
    return "mos2" if isinstance(demo, dict) and str(demo.get("movie", "")).startswith("mos2") else None


def display_names(names, material: str | None = None, ratios=None) -> list[str]:
    """The labels to show for classes named ``names`` (legends, titles, the dashboard), the
    names kept in run files and tables unchanged: for the intensity classes of MoS2 (material
    ``"mos2"``; ``A`` the brighter sublattice, its groups ``B``, ``B0``, ``B1`` …) each with its
    species, ``A (Mo)``, ``B0 (S)``, ``B1 (S2)``; any other name (a model's ``Mo``, ``S2``, ``S``;
    ``no sublattice``; another material's or an unknown one's classes) as it is.

    ``ratios``: each class's mean intensity over the floor as a fraction of the A (Mo)
    columns' (a sequence beside ``names``, or a dict by name; :meth:`IntensityClasses.ratios`,
    :func:`group_ratios`): a B group is named by the column whose Z^1.7 ratio
    (:data:`MOS2_ADF_RATIOS`) lies nearest (on the real Se-implanted image: B0 0.40, S2; B1 0.74,
    SeS), and left unnamed where none lies within a factor 1.6 or two groups would get one name.
    Without ``ratios``: ``B`` is S2 and ``B0``, ``B1`` are S and S2, as on the MoS2 ADF demo
    movie (S2 columns losing atoms; ``etem demo --movie mos2-stem``, whose scoring maps B0 to S
    and B1 to S2); pass the ratios where Se or other atoms may be in the B columns.
    The colours (:func:`etem.tracker.plots.class_colours`) follow the species in brackets, so
    that an S2 column has one colour in an HRTEM model's run and in an ADF intensity-class run."""
    names = [str(n) for n in (names or ())]
    if (material or "").strip().lower() not in _SPECIES_MATERIALS:
        return names
    letters = {n.rstrip("0123456789") for n in names if n not in ("no sublattice", "faint")}
    if not letters <= {"A", "B"} or "A" not in names:  # (not the A/B classes of a honeycomb: as they are)
        return names
    b = [n for n in names if n.rstrip("0123456789") == "B"]
    species: dict[str, str] = {"A": "Mo"}
    if ratios is not None:
        get = ratios.get if isinstance(ratios, dict) else dict(zip(names, ratios)).get
        found = {n: _species_of(float(get(n) if get(n) is not None else np.nan)) for n in b}
        named = [s for s in found.values() if s]
        if len(set(named)) == len(named):  # (two groups of one species: say neither)
            species.update({n: s for n, s in found.items() if s})
    elif b == ["B"]:
        species["B"] = "S2"
    elif b == ["B0", "B1"]:
        species.update(B0="S", B1="S2")
    return [f"{n} ({species[n]})" if n in species else n for n in names]


def group_ratios(summary: list[dict], names: list[str], frame=None) -> dict[str, float]:
    """For :func:`display_names`: each group's mean over the floor as a fraction of the A
    sublattice's (one group) mean, from :func:`group_columns`'s summary of one frame (its first
    where ``frame`` is None), named as :func:`group_classes` names them."""
    rows = [s for s in summary if frame is None or s["frame"] == frame]
    if frame is None and rows:
        key = (rows[0].get("file"), rows[0]["frame"])
        rows = [s for s in rows if (s.get("file"), s["frame"]) == key]
    by_sub = {s["sublattice"]: s["means"] for s in rows}
    a = by_sub.get(0)
    if not a or len(a) != 1 or not a[0] or not 1 in by_sub:
        return {}
    out = {"A": 1.0}
    for g, name in zip(range(len(by_sub[1])), _group_names(1, len(by_sub[1]), True)):
        out[name] = float(by_sub[1][g]) / float(a[0])
    return {k: v for k, v in out.items() if k in names}
