"""Link: trackpy's linking on drift-corrected coordinates, frame by frame.

Drift is estimated frame to frame from the columns themselves (no image needed, so it works
when only column tables come back from the GPU): the new frame's columns are shifted by the
predicted drift, paired with the previous frame's drift-corrected columns by nearest
neighbour, and the median residual updates the drift (a few iterations). Linking then runs in
the reference frame of frame 0, where columns stand still apart from real hops.

The linker is trackpy's ``Linker`` or, by default, :class:`~etem.tracker.fastlink.FastLinker`,
which applies trackpy's rules to arrays and calls trackpy's solver only for ambiguous
subnetworks: the same tracks, fast enough for 1,000+ columns at hundreds of frames/s.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .errors import ConfigError, choice_error
from .fastlink import LINK_STRATEGIES, FastLinker

log = logging.getLogger("etem.link")


@dataclass(frozen=True)
class LinkConfig:
    """Linking options.

    search_range_A
        Largest distance a column moves between frames after drift correction [Å].
    memory
        Frames a column may vanish (blink) and still keep its track.
    drift
        Estimate and correct frame-to-frame drift.
    max_drift_A
        Largest drift between two consecutive frames that the estimator looks for [Å].
    max_jump_A
        A frame whose columns pair with too few of the last frame's at the estimated drift (under
        85 % of the share the last 20 frames paired) may have jumped (the stage or the particle
        moved, the view was re-centred): shifts up to this far [Å] are searched by
        cross-correlating the two frames' columns, and a shift that pairs clearly more of them
        (10 % of the columns, at least 5) is taken. 0: off.
    link_strategy
        trackpy's solver for ambiguous subnetworks (``auto``: numba where installed).
    adaptive_stop_A, adaptive_step
        trackpy's adaptive search: a subnetwork too large to solve (a clump of columns closer
        than the search range) is split by shrinking the search range in steps of
        ``adaptive_step``, down to ``adaptive_stop_A`` [Å]; None: off. With ``fast`` linking, a
        clump still too large starts new tracks (counted) rather than ending the run.
    method
        ``fast``: :class:`~etem.tracker.fastlink.FastLinker`, trackpy's rules on arrays with
        trackpy's solver for the ambiguous subnetworks: the same tracks, many times faster
        (``bench/bench_link.py``); ``trackpy``: trackpy's own ``Linker``.
    """

    search_range_A: float = 1.0
    memory: int = 3
    drift: bool = True
    max_drift_A: float = 1.5
    max_jump_A: float = 20.0
    link_strategy: str = "auto"
    adaptive_stop_A: float | None = 0.1
    adaptive_step: float = 0.95
    method: Literal["fast", "trackpy"] = "fast"

    def __post_init__(self) -> None:
        if self.method not in ("fast", "trackpy"):
            raise choice_error("link.method", self.method, ("fast", "trackpy"))
        if self.link_strategy not in LINK_STRATEGIES:
            raise choice_error("link.link_strategy", self.link_strategy, LINK_STRATEGIES)
        if not self.max_jump_A >= 0:
            raise ConfigError(f"link.max_jump_A must be >= 0 Å (0: off); got {self.max_jump_A!r}")
        if not self.search_range_A > 0:
            raise ConfigError(f"link.search_range_A must be > 0 Å; got {self.search_range_A!r}")
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 0:
            raise ConfigError(f"link.memory must be an integer >= 0 (frames); got {self.memory!r}")
        if self.adaptive_stop_A is not None and not 0 < self.adaptive_stop_A < self.search_range_A:
            raise ConfigError("link.adaptive_stop_A must be > 0 and below search_range_A "
                              f"({self.search_range_A} Å), or unset; got {self.adaptive_stop_A!r}")
        if not 0 < self.adaptive_step < 1:
            raise ConfigError(f"link.adaptive_step must be between 0 and 1; got {self.adaptive_step!r}")


def estimate_shift(
    ref_yx: np.ndarray, yx: np.ndarray, guess: np.ndarray, radius: float, *, iterations: int = 4
) -> tuple[np.ndarray, int]:
    """Shift ``d`` such that ``yx - d`` lands on ``ref_yx``; returns (d, number of pairs used).

    Robust to columns appearing and vanishing: only nearest neighbours within ``radius`` vote
    (within ``radius / 2`` after the first pass), through their median residual. Falls back to
    ``guess`` with too few pairs. Stops once a pass finds the same pairs as the one before
    (``d``, the median of the same residuals, would not change).

    One k-d tree query usually serves every pass: it keeps each column's two nearest
    neighbours, and a later pass at a shift ``delta`` away needs no new query when no column
    is within ``|delta|`` of changing its nearest neighbour or of crossing the radius (the
    pairs are then known exactly; otherwise the tree is queried again).
    """
    d, n, _ = _estimate_shift(ref_yx, yx, guess, radius, iterations, None)
    return d, n


def _estimate_shift(ref_yx, yx, guess, radius, iterations, sources):
    """:func:`estimate_shift`, searching ``sources`` where given: ``(tree, n)``, a k-d tree whose
    first ``n`` points are ``ref_yx`` (its others, the linker's remembered columns, are passed
    over), rather than a tree of its own. Also returns the last search of ``sources`` for the
    linker, ``(shift, dist, idx)`` with every point found (None where there was none)."""
    d = np.asarray(guess, dtype=float).copy()
    if len(ref_yx) < 3 or len(yx) < 3:
        return d, 0, None
    tree = cKDTree(ref_yx) if sources is None else None
    found = None
    n = 0
    r = radius
    prev_idx = None
    last = None  # (shift, radius, distances, indices) of the last real query
    for _ in range(iterations):
        idx = None if last is None else _pairs_without_query(last, d, r)
        if idx is None:
            if tree is None:
                dist, nn, found = _two_nearest(sources, yx - d, radius)
                found = (d.copy(), *found)
            else:
                dist, nn = tree.query(yx - d, k=2, distance_upper_bound=radius)
            last = (d.copy(), radius, dist, nn)
            idx = _pairs_without_query(last, d, r)
            if idx is None:  # ties at the radius: decide as the tree does
                if tree is None and ((dist[:, 0] < r) & (dist[:, 0] == dist[:, 1])).any():
                    # two neighbours at one distance: which comes first is up to the tree, so
                    # ask a tree of ref_yx alone, as without sources
                    tree = cKDTree(ref_yx)
                    dist, nn = tree.query(yx - d, k=2, distance_upper_bound=radius)
                    last = (d.copy(), radius, dist, nn)
                idx = np.where(dist[:, 0] < r, nn[:, 0], -1)
        ok = idx >= 0
        n = int(ok.sum())
        if n < 3:
            return np.asarray(guess, dtype=float), 0, found
        if prev_idx is not None and np.array_equal(idx, prev_idx):
            break
        d = d + np.median((yx - d)[ok] - ref_yx.take(idx[ok], axis=0), axis=0)
        prev_idx = idx
        r = max(radius / 2, 0.5)  # tighten once roughly aligned
    return d, n, found


def find_jump(ref_yx: np.ndarray, yx: np.ndarray, guess: np.ndarray, reach: float, radius: float,
              candidates: int = 5) -> tuple[np.ndarray, int]:
    """The shift ``d`` within ``reach`` of ``guess`` that pairs the most of ``yx - d`` with
    ``ref_yx`` (as :func:`estimate_shift` counts pairs within ``radius``), and that count.

    The two point sets are binned at a third of ``radius``, blurred by a bin and cross-correlated
    (FFT); the ``candidates`` highest peaks are refined by :func:`estimate_shift` from there. A
    crystal's columns correlate at every lattice vector, but at the true shift all of them pair,
    at another the columns of the particle's edge (or the field's) do not."""
    from scipy import ndimage

    d0 = np.asarray(guess, dtype=float)
    if len(ref_yx) < 3 or len(yx) < 3:
        return d0, 0
    b = radius / 3.0
    cur = yx - d0
    lo = np.minimum(ref_yx.min(0), cur.min(0)) - b
    pad = int(np.ceil(reach / b)) + 2
    size = ((np.maximum(ref_yx.max(0), cur.max(0)) - lo) / b).astype(int) + 2 + pad
    shape = tuple(int(2 ** np.ceil(np.log2(n))) for n in size)

    def density(points):
        h = np.zeros(shape)
        i = np.floor((points - lo) / b).astype(int)
        np.add.at(h, (i[:, 0], i[:, 1]), 1.0)
        return ndimage.gaussian_filter(h, 1.0, mode="wrap")

    corr = np.fft.irfft2(np.fft.rfft2(density(cur)) * np.conj(np.fft.rfft2(density(ref_yx))), s=shape)
    sy, sx = (np.fft.fftfreq(n, 1.0 / n) for n in shape)  # each bin's shift [bins]
    inside = (sy[:, None] * b) ** 2 + (sx[None, :] * b) ** 2 <= reach ** 2
    corr = np.where(inside, corr, -np.inf)
    peaks = (corr == ndimage.maximum_filter(corr, size=3, mode="wrap")) & np.isfinite(corr)
    iy, ix = np.nonzero(peaks)
    best = (d0, 0)
    for k in np.argsort(corr[iy, ix])[::-1][:candidates]:
        start = d0 + b * np.array([sy[iy[k]], sx[ix[k]]])
        d, n = estimate_shift(ref_yx, yx, start, radius)
        if n > best[1]:
            best = (d, n)
    return best


def _two_nearest(sources, q: np.ndarray, radius: float):
    """The two nearest of the first ``n`` points of ``sources = (tree, n)`` within ``radius`` of
    each of ``q``, as ``tree.query(q, k=2, distance_upper_bound=radius)`` on those points alone
    gives them (up to the order of two at one distance); and the query's own ``(dist, idx)``."""
    tree, n = sources  # n >= 3 (the estimate needs three columns)
    k = min(3, tree.n)
    dist, nn = tree.query(q, k=k, distance_upper_bound=radius)
    dist, nn = dist.reshape(len(q), k), nn.reshape(len(q), k)
    d2 = dist[:, :2].copy()
    n2 = np.minimum(nn[:, :2], n)  # not found: the index one past the points, as in a tree of them alone
    # rows where another point (a remembered column) comes before the second of ours
    mixed = np.zeros(0, np.intp)
    if tree.n > n:
        mixed = np.flatnonzero(((nn[:, 0] >= n) & (nn[:, 0] < tree.n)) | ((nn[:, 1] >= n) & (nn[:, 1] < tree.n)))
    if mixed.size:
        kk = k
        dm, nm = dist[mixed], nn[mixed]
        while kk < tree.n and not (((nm < n).sum(axis=1) >= 2) | ~np.isfinite(dm[:, -1])).all():
            kk = min(2 * kk, tree.n)  # other points crowd ours out: look further
            dm, nm = tree.query(q[mixed], k=kk, distance_upper_bound=radius)
            dm, nm = dm.reshape(len(mixed), kk), nm.reshape(len(mixed), kk)
        # ours first, in their order (a stable sort of "not ours"), and the two first of them
        ours = nm < n
        col = np.argsort(~ours, axis=1, kind="stable")[:, :2]
        has = np.take_along_axis(ours, col, axis=1)
        d2[mixed] = np.where(has, np.take_along_axis(dm, col, axis=1), np.inf)
        n2[mixed] = np.where(has, np.take_along_axis(nm, col, axis=1), n)
    return d2, n2, (dist, nn)


def _pairs_without_query(last, d: np.ndarray, r: float) -> np.ndarray | None:
    """Nearest reference index within ``r`` of each column at shift ``d`` (-1: none), derived
    from the two-neighbour query ``last``; None where a column is too close to call."""
    d_q, r_q, dist, nn = last
    delta = float(np.hypot(*(d - d_q))) + 1e-9 * max(r_q, 1.0)
    d1 = dist[:, 0]
    d2 = np.minimum(dist[:, 1], r_q)  # the second neighbour is at least r_q away when not found
    inside = (d1 + delta < r) & (d2 - delta > d1 + delta)
    outside = np.minimum(d1, r_q) - delta > r
    if not (inside | outside).all():
        return None
    return np.where(inside, nn[:, 0], -1)


class StreamLinker:
    """Frame-by-frame linking with drift correction (trackpy's rules underneath).

    ``update(frame, columns)`` takes one frame's columns (``y, x`` in px) and returns them
    with ``particle``, ``y_ref``, ``x_ref`` (drift-corrected px) added, and records the
    frame's cumulative drift ``(dy, dx)`` in ``self.drift``. ``cfg.method`` picks the linker
    (:class:`~etem.tracker.fastlink.FastLinker` or trackpy's ``Linker``); both give the same
    tracks. Frames are linked in call order: a frame missing from the stream is not a gap
    for ``memory``.
    """

    def __init__(self, cfg: LinkConfig, sampling: float | None) -> None:
        import trackpy

        self.cfg = cfg
        self.sampling = sampling
        px = 1.0 if sampling is None else 1.0 / sampling  # px per Å
        if sampling is None:
            log.warning("sampling unknown: search_range_A and max_drift_A are taken as px")
        self.search_range_px = cfg.search_range_A * px
        self.max_drift_px = cfg.max_drift_A * px
        self.max_jump_px = cfg.max_jump_A * px
        self.jumps = 0  #: frames whose drift was found by the jump search (the view jumped)
        self._paired: deque[float] = deque(maxlen=20)  # recent frames' share of columns paired at the drift
        adaptive = {"adaptive_stop": None if cfg.adaptive_stop_A is None else cfg.adaptive_stop_A * px,
                    "adaptive_step": cfg.adaptive_step}
        if cfg.method == "fast":
            self._linker = FastLinker(self.search_range_px, memory=cfg.memory, link_strategy=cfg.link_strategy,
                                      **adaptive)
        else:
            self._linker = trackpy.linking.Linker(
                self.search_range_px, memory=cfg.memory, link_strategy=cfg.link_strategy, **adaptive
            )
        self._started = False
        self._prev_ref: np.ndarray | None = None
        self._velocity = np.zeros(2)
        self.drift = np.zeros(2)
        self.drift_pairs = 0
        self._layouts: dict[tuple, tuple] = {}  # the output's column index per input layout (table)

    def _sources(self) -> tuple[cKDTree, int] | None:
        """The fast linker's tree of its sources, whose first points are the previous frame's
        drift-corrected columns (``_prev_ref``): the drift estimate searches that tree rather
        than one of its own. None where it does not hold ``_prev_ref`` (trackpy's linker, a
        frame without columns before this one)."""
        if self.cfg.method != "fast" or not self._started:
            return None
        pos = self._linker._pos
        if pos.shape != self._prev_ref.shape or not np.array_equal(pos, self._prev_ref):
            return None
        return self._linker.source_tree()

    @property
    def counts(self) -> dict[str, int]:
        """The last frame's unique pairs, ambiguous subnetworks and columns in them (``fast``
        only; empty for ``trackpy``)."""
        return dict(getattr(self._linker, "counts", {}))

    def update(self, frame: int, columns: pd.DataFrame) -> pd.DataFrame:
        """Link a frame's columns: ``columns`` with ``particle, y_ref, x_ref`` added."""
        ids, ref = self.link(frame, columns)
        return self.table(columns, ids, ref)

    def link(self, frame: int, columns: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Link a frame's columns without making the table: their track ids ``[N]`` and their
        drift-corrected positions ``[N, 2]`` (px; :meth:`table` puts them in one)."""
        yx = _yx(columns, columns.columns.tolist())
        found = None
        if self.cfg.drift and self._prev_ref is not None:
            guess = self.drift + self._velocity
            new, self.drift_pairs, found = _estimate_shift(self._prev_ref, yx, guess, self.max_drift_px, 4,
                                                           self._sources())
            few = min(len(yx), len(self._prev_ref))
            jumped = False
            # the share of columns that pair, against the run's recent frames' (noisy frames pair
            # fewer of their columns every frame; a jump pairs fewer than the frames before it);
            # or a drift far from the one predicted: a crystal's columns also pair, all but those
            # of its edges, at a lattice vector from the true shift, where a jump of the view can
            # leave the search (a toy particle's view rolled by 17 px: 79 of 93 paired at 6.5 px
            # off the prediction, a lattice vector from the true jump)
            usual = float(np.median(self._paired)) if len(self._paired) >= 3 else 1.0
            off = float(np.hypot(*(new - guess)))
            if self.max_jump_px > self.max_drift_px and few >= 5 and (
                    self.drift_pairs < 0.85 * usual * few or off > 0.5 * self.max_drift_px):
                jump, pairs = find_jump(self._prev_ref, yx, new, self.max_jump_px, self.max_drift_px)
                if pairs >= self.drift_pairs + max(5, 0.05 * few):  # (the alias loses its edge columns)
                    log.info("frame %d: the view jumped by (%.1f, %.1f) px: %d of %d columns pair there, %d at "
                             "the drift", frame, *(jump - new), pairs, few, self.drift_pairs)
                    new, self.drift_pairs, found, jumped = jump, pairs, None, True
                    self.jumps += 1
            if few >= 5:
                self._paired.append(self.drift_pairs / few)
            if self.drift_pairs and not jumped:  # a jump is not a velocity
                self._velocity = 0.5 * self._velocity + 0.5 * (new - self.drift)
            self.drift = new
        ref = yx - self.drift
        if not self._started:
            self._linker.init_level(ref, frame)
            self._started = True
        elif found is not None:
            # the drift estimate's last search, of the linker's own tree, near these columns
            # before the drift was final: ``shift`` bounds how far from them it searched
            shift_q, dist, idx = found
            moved = (yx - shift_q) - ref
            shift = float(np.sqrt((moved * moved).sum(axis=1).max())) if len(ref) else 0.0
            self._linker.next_level(ref, frame, near=(shift, self.max_drift_px, dist, idx))
        else:
            self._linker.next_level(ref, frame)
        if len(ref):
            self._prev_ref = ref
        return np.array(self._linker.particle_ids, dtype=np.int64), ref

    def table(self, columns: pd.DataFrame, ids: np.ndarray, ref: np.ndarray, *, frame: int | None = None,
              site: np.ndarray | None = None) -> pd.DataFrame:
        """``columns`` with ``particle, y_ref, x_ref`` added (replacing any of those names), as
        :meth:`link` gave them; with ``frame``, a first column ``frame`` of that value, and with
        ``site``, a last column ``site`` (the pipeline's table, made at once).

        The first table of a layout (the input's column names and their index's type, and which
        of ``frame``/``site`` are given) is made from dicts of the new columns, whose names pandas
        makes into the labels it would give them; its column index is kept, and every later
        table of the layout gets that very index, with the new columns as ready blocks: a column
        looked up by name in a new index of strings first builds its hash table (tens of µs per
        table in pandas 3, and the site map and the writer look up several), pandas builds a
        frame from blocks in a fraction of the time it takes from a dict, and inserting a
        column into a table costs more than either. The new columns are copies (the linker
        keeps its ids and ``ref`` for the next frame), which pandas takes as they are."""
        names = columns.columns.tolist()
        n = len(columns)
        # the new columns' names and values, in order; the first ``len(lead)`` go before the input's
        lead = [(("frame",), np.full((n, 1), frame, np.int64))] if frame is not None else []
        tail = [(("particle",), ids.reshape(n, 1).astype(np.int64, copy=True)),
                (("y_ref", "x_ref"), np.array(ref, dtype=float).reshape(n, 2))]
        if site is not None:
            tail.append((("site",), np.asarray(site, dtype=np.int64).reshape(n, 1).copy()))
        stale = [c for k, _ in lead + tail for c in k if c in names]
        kept = columns.drop(columns=stale) if stale else columns
        layout = (type(columns.columns), columns.columns.dtype, tuple(names), tuple(k for k, _ in lead + tail))
        known = self._layouts.get(layout)
        if known is None:
            parts = [pd.DataFrame(dict(zip(k, b.T)), index=columns.index, copy=False) for k, b in lead + tail]
        else:
            fast = _from_arrays(lead, kept, tail, known[0])
            if fast is not None:
                fast.attrs = dict(columns.attrs)
                return fast
            parts = [pd.DataFrame(b, index=columns.index, columns=c, copy=False)
                     for (_, b), c in zip(lead + tail, known[1])]
        out = pd.concat(parts[:len(lead)] + [kept] + parts[len(lead):], axis=1)
        if known is None:
            if len(self._layouts) > 8:
                self._layouts.clear()
            # each new part's labels, as pandas made them, for the next tables of this layout
            self._layouts[layout] = (out.columns, [p.columns for p in parts])
        else:
            out.columns = known[0]
        out.attrs = dict(columns.attrs)
        return out


def _from_arrays(lead: list, kept: pd.DataFrame, tail: list, labels: pd.Index) -> pd.DataFrame | None:
    """The table of a known layout made straight from its columns' arrays, with ``labels`` as
    its column index: the new columns' blocks, split, around copies of ``kept``'s columns. A
    fifth of the time of joining the pieces with ``pd.concat`` (30 against 140 µs at 460
    columns, pandas 3.1), which builds and joins their column indexes first. None where this
    pandas lacks the (private) constructor or the index is not a plain range, for the caller's
    public way."""
    make = getattr(pd.DataFrame, "_from_arrays", None)
    get = getattr(kept, "_get_column_array", None)
    if make is None or get is None or not isinstance(kept.index, pd.RangeIndex):
        return None
    arrays = [c for _, b in lead for c in b.T]
    arrays += [get(i).copy() for i in range(kept.shape[1])]
    arrays += [c for _, b in tail for c in b.T]
    return make(arrays, columns=labels, index=kept.index, verify_integrity=False)


def _yx(table: pd.DataFrame, names: list) -> np.ndarray:
    """Columns ``y, x`` of ``table`` as floats, ``[N, 2]``.

    Where both names are unique and every column is numeric they are cut from the whole
    table as one float array: pandas makes that in a fraction of the time it takes to make a
    column object and look its name up in the table's column index (the values are the same,
    each converted to float as by itself)."""
    if names.count("y") == 1 and names.count("x") == 1:
        try:
            values = table.to_numpy(dtype=float)
        except (TypeError, ValueError, OverflowError):  # a column that is not a number
            pass
        else:
            return np.column_stack([values[:, names.index("y")], values[:, names.index("x")]])
    return np.column_stack([table["y"].to_numpy(dtype=float), table["x"].to_numpy(dtype=float)])


#: The columns :meth:`StreamLinker.update` adds to a frame's table.
_ADDED = ("particle", "y_ref", "x_ref")
