"""Fast linking with trackpy's rules: arrays for the plain cases, trackpy's solver for the rest.

trackpy's ``Linker`` builds a Python ``Point`` object per column and a subnetwork per
destination column, then merges them one candidate pair at a time; at 1,000 columns a frame
that bookkeeping, not the solving, is what costs 6-7 ms. :class:`FastLinker` applies the same
rules to arrays and hands trackpy only the subnetworks it would have had to solve anyway:

1. *Sources* are the previous frame's columns plus the remembered ones (lost for at most
   ``memory`` frames, at their last position), exactly as in trackpy.
2. *Candidates* come from the same query trackpy makes: a k-d tree over the sources, the
   ``MAX_NEIGHBORS`` (10) nearest sources of each new column within
   ``search_range + 1e-7``. The candidate pairs are the edges of a bipartite graph, and
   trackpy's subnetworks are its connected components.
3. A new column without candidates starts a track; a source without candidates is lost (a
   previous-frame column goes to memory, a remembered one stays there until it expires).
4. A new column whose only candidate is a source whose only candidate is that column (a
   mutual unique pair, remembered sources counted) is a component of one source and one
   destination: trackpy links it without solving anything, and so does this code, in bulk.
5. Every other component (several sources or several destinations) is handed to trackpy's own
   subnet linker (``link_strategy``: ``hybrid`` = numba/recursive, ...) with its candidates
   sorted by distance as trackpy sorts them, so the minimum-total-squared-displacement choice
   and trackpy's handling of oversize subnetworks are trackpy's: with ``adaptive_stop``, a
   subnetwork too large to solve is split by a search range shrunk in steps of
   ``adaptive_step`` (trackpy's adaptive search). One still too large at ``adaptive_stop`` (or
   at all, without adaptive search), where trackpy raises ``SubnetOversizeException`` and
   stops, starts new tracks for its columns instead, counted in ``counts["oversize"]``: a
   live run does not end on a dense clump of false detections.

The resulting tracks are trackpy's up to the numbers given to new tracks (new tracks are
numbered in column order here); only exact distance ties, which trackpy breaks by object
address, could differ. Unlike trackpy's ``Linker``, the state is per instance (trackpy keeps
its point and track counters on the classes, so two of its linkers in one process disturb
each other's track numbers).
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: link_strategy values that the fast linker passes on to trackpy's subnet linkers.
LINK_STRATEGIES = ("auto", "hybrid", "numba", "recursive", "nonrecursive", "drop")


class _Node:
    """The little of a trackpy ``Point`` that the subnet linkers use."""

    __slots__ = ("index", "forward_cands", "subnet")

    def __init__(self, index: int) -> None:
        self.index = index
        self.forward_cands: list = []
        self.subnet = None  # set by trackpy's adaptive search when it splits a subnetwork


class FastLinker:
    """Frame-by-frame linker with trackpy ``Linker``'s interface and results.

    Parameters
    ----------
    search_range
        Largest displacement between frames (same units as the coordinates).
    memory
        Frames a column may vanish and still keep its track.
    link_strategy
        trackpy's subnet solver for ambiguous subnetworks; see :data:`LINK_STRATEGIES`.
    adaptive_stop, adaptive_step
        trackpy's adaptive search (same units as ``search_range``; None: off).

    Call :meth:`init_level` with the first frame's coordinates (N, ndim), then
    :meth:`next_level` per frame; :attr:`particle_ids` holds the current frame's track ids.
    ``counts`` holds the last frame's number of unique pairs, ambiguous subnetworks and
    columns in them.
    """

    MAX_NEIGHBORS = 10  # trackpy.linking.Linker.MAX_NEIGHBORS
    COUNTS = ("unique", "subnets", "in_subnets", "oversize")

    def __init__(self, search_range: float, memory: int = 0, link_strategy: str | None = "auto", *,
                 adaptive_stop: float | None = None, adaptive_step: float = 0.95) -> None:
        import trackpy
        from trackpy.linking.utils import SubnetOversizeException

        search_range = float(search_range)
        if not (np.isfinite(search_range) and search_range > 0):
            raise ValueError(f"search_range must be a positive number; got {search_range!r}")
        if isinstance(memory, bool) or not isinstance(memory, (int, np.integer)) or memory < 0:
            raise ValueError(f"memory must be an integer >= 0; got {memory!r}")
        if link_strategy is not None and link_strategy not in LINK_STRATEGIES:
            valid = ", ".join(map(repr, LINK_STRATEGIES))
            raise ValueError(f"link_strategy must be one of {valid}; got {link_strategy!r}")
        # trackpy resolves the strategy (numba present or not) and wraps the solver with its
        # size limit and adaptive search; only its subnet_linker is used, never its state.
        self.subnet_linker = trackpy.linking.Linker(
            search_range, memory=memory, link_strategy=link_strategy, adaptive_stop=adaptive_stop,
            adaptive_step=adaptive_step,
        ).subnet_linker
        self._oversize = SubnetOversizeException
        self.search_range = search_range
        self.memory = int(memory)
        self.ndim: int | None = None
        self.counts = dict.fromkeys(self.COUNTS, 0)

    # -- state ---------------------------------------------------------------------------
    def init_level(self, coords, t=None) -> None:
        """Start from the first frame: every column starts a track (ids 0..N-1)."""
        coords = np.asarray(coords, dtype=float)
        if coords.ndim != 2:
            raise ValueError(f"coords must be an (N, ndim) array; got shape {coords.shape}")
        self.ndim = coords.shape[1]
        coords = self._check(coords)
        self._pos = coords.copy()
        self._ids = np.arange(len(coords), dtype=np.int64)
        self._next_id = len(coords)
        self._mem_pos = np.empty((0, self.ndim))
        self._mem_ids = np.empty(0, dtype=np.int64)
        self._mem_since = np.empty(0, dtype=np.int64)  # step at which the column was lost
        self._step = 0
        self._tree_key: tuple | None = None  # the arrays source_tree() was built from

    @property
    def particle_ids(self) -> np.ndarray:
        """Track ids of the current frame's columns, in input order."""
        return self._ids

    @property
    def n_remembered(self) -> int:
        """Columns lost within the last ``memory`` frames, still candidates."""
        return len(self._mem_ids)

    def source_tree(self) -> tuple[cKDTree, int]:
        """The k-d tree :meth:`next_level` searches (the previous frame's columns, then the
        remembered ones) and the number of previous-frame columns, which come first in it.

        Built once per frame: a caller that searches the previous frame's columns before
        linking (the drift estimate) uses this tree and spares building its own. It is a cache
        of the sources, rebuilt whenever they are other arrays than those it was built from."""
        key = self._tree_key
        if key is None or key[0] is not self._pos or key[1] is not self._mem_pos:
            src = np.concatenate([self._pos, self._mem_pos]) if len(self._mem_pos) else self._pos
            self._tree = cKDTree(src, 15)  # trackpy's query (Subnets.compute): same tree
            self._tree_key = (self._pos, self._mem_pos)
        return self._tree, len(self._pos)

    def _check(self, coords) -> np.ndarray:
        coords = np.asarray(coords, dtype=float)
        if len(coords) == 0:
            return coords.reshape(0, self.ndim)
        if coords.ndim != 2 or coords.shape[1] != self.ndim:
            raise ValueError(f"coords must be an (N, {self.ndim}) array; got shape {coords.shape}")
        if not np.isfinite(coords).all():
            raise ValueError("coords contain NaN or infinite values")
        return coords

    # -- one frame -----------------------------------------------------------------------
    def next_level(self, coords, t=None, *, near=None) -> None:
        """Link the next frame's coordinates to the previous frame and the remembered columns.

        ``near``: what a search of :meth:`source_tree` has found near these columns, to spare
        searching again: ``(shift, bound, dist, idx)``, the ``k`` nearest sources within
        ``bound`` of points at most ``shift`` away from each column (``cKDTree.query``'s
        output). A column whose candidates it settles beyond doubt (none, or one) is not
        searched for again; the others are, so the links are the same with or without it."""
        if self.ndim is None:
            raise RuntimeError("the linker was not initialized: call init_level for the first frame")
        coords = self._check(coords)
        self._step += 1
        n_prev = len(self._pos)
        src_ids = np.concatenate([self._ids, self._mem_ids])
        n_s, n_d = len(src_ids), len(coords)
        dest_src = np.full(n_d, -1, dtype=np.int64)  # source linked to each column, -1: new track
        self.counts = dict.fromkeys(self.COUNTS, 0)
        if n_s and n_d:
            # trackpy's query (Subnets.compute): same tree, same k, same bound
            tree, _ = self.source_tree()
            bound = self.search_range + 1e-7
            deg_d, first, rows, dist, idx = self._candidates(tree, coords, bound, near)
            queried = np.zeros(n_d, bool)
            queried[rows] = True
            deg_s = np.bincount(idx[np.isfinite(dist)], minlength=n_s)
            deg_s += np.bincount(first[(deg_d == 1) & ~queried], minlength=n_s)
            uniq = deg_d == 1
            uniq[uniq] = deg_s[first[uniq]] == 1
            dest_src[uniq] = first[uniq]
            self.counts["unique"] = int(uniq.sum())
            amb = np.flatnonzero((deg_d > 0) & ~uniq)
            if amb.size:
                # the ambiguous columns' candidates as the query gives them, in column order
                more = amb[~queried[amb]]
                if more.size:
                    d2, i2 = tree.query(coords[more], self.MAX_NEIGHBORS, distance_upper_bound=bound)
                    rows, dist, idx = (np.concatenate([rows, more]), np.concatenate([dist, d2]),
                                       np.concatenate([idx, i2]))
                at = np.argsort(rows, kind="stable")
                rows, dist, idx = rows[at], dist[at], idx[at]
                keep = ~uniq[rows]
                self._solve_subnets(rows[keep], dist[keep], idx[keep], deg_d[rows[keep]], dest_src)
        linked = dest_src >= 0
        ids = np.empty(n_d, dtype=np.int64)
        ids[linked] = src_ids[dest_src[linked]]
        n_new = n_d - int(linked.sum())
        ids[~linked] = np.arange(self._next_id, self._next_id + n_new, dtype=np.int64)
        self._next_id += n_new
        if self.memory > 0:
            used = np.zeros(n_s, dtype=bool)
            used[dest_src[linked]] = True
            lost_prev = ~used[:n_prev]  # previous-frame columns without a link: remembered
            kept_mem = ~used[n_prev:]  # remembered columns linked now leave the memory
            since = np.concatenate([self._mem_since[kept_mem], np.full(int(lost_prev.sum()), self._step)])
            alive = since > self._step - self.memory  # trackpy's mem_history window
            self._mem_pos = np.concatenate([self._mem_pos[kept_mem], self._pos[lost_prev]])[alive]
            self._mem_ids = np.concatenate([self._mem_ids[kept_mem], self._ids[lost_prev]])[alive]
            self._mem_since = since[alive]
        self._pos = coords.copy()
        self._ids = ids

    def _candidates(self, tree, coords, bound, near):
        """Each column's number of candidates (sources within ``bound``) and its nearest one;
        and the query's rows (``cKDTree.query`` with trackpy's k and bound) of the columns
        queried that have candidates: ``(deg, first, rows, dist, idx)``.

        Without ``near`` every column is queried. With it, a column is not where its list in
        ``near`` settles its candidates beyond doubt: the list holds every source within
        ``bound`` plus the shift (it reaches beyond that, or is not full), each source in it
        lies clearly inside ``bound`` or clearly outside (by more than the shift plus a margin
        far above rounding), and at most one lies inside. A column with several candidates is
        queried, for their distances and order as trackpy has them."""
        n_d = len(coords)
        deg_d = np.zeros(n_d, np.int64)
        first = np.full(n_d, -1, np.int64)
        todo = None
        if near is not None:
            shift, reach_max, nd, ni = near
            margin = 1e-9 * (bound + reach_max)
            reach = bound + shift + margin
            if reach < reach_max - margin and nd.shape[1] >= 2:
                # each row is sorted nearest first: one source inside at most, and none in
                # doubt, where the second lies clearly outside and the first either way
                lo, hi = bound - margin - shift, bound + margin + shift
                inside = nd[:, 0] < lo
                settled = (nd[:, 1] > hi) & (inside | (nd[:, 0] > hi)) & ~(nd[:, -1] <= reach)
                one = settled & inside
                deg_d[one] = 1
                first[one] = ni[one, 0]
                todo = np.flatnonzero(~settled)
        q = coords if todo is None else coords[todo]
        dist, idx = tree.query(q, self.MAX_NEIGHBORS, distance_upper_bound=bound)
        dist, idx = dist.reshape(len(q), self.MAX_NEIGHBORS), idx.reshape(len(q), self.MAX_NEIGHBORS)
        valid = np.isfinite(dist)  # sorted nearest first, so a prefix of each row
        if todo is None:
            todo = np.arange(n_d)
        deg_d[todo] = valid.sum(axis=1)
        first[todo] = idx[:, 0]
        some = valid[:, 0]
        return deg_d, first, todo[some], dist[some], idx[some]

    def _solve_subnets(self, rows, dist, idx, k, dest_src) -> None:
        """Hand each ambiguous connected component to trackpy's subnet linker (``rows``: the
        ambiguous columns, ascending; ``dist, idx``: their query rows; ``k``: their numbers of
        candidates)."""
        e_d = np.repeat(rows, k)  # edges in trackpy's order: by column, then nearest first
        sel = np.arange(dist.shape[1]) < k[:, None]
        e_s = idx[sel]
        e_w = dist[sel]
        d_loc = np.repeat(np.arange(len(rows)), k)
        s_uniq, s_loc = np.unique(e_s, return_inverse=True)
        n = len(rows) + len(s_uniq)
        graph = coo_matrix((np.ones(len(e_d), dtype=np.int8), (d_loc, len(rows) + s_loc)), shape=(n, n))
        n_comp, label = connected_components(graph, directed=False)
        comp = label[d_loc]
        order = np.argsort(comp, kind="stable")
        bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
        e_d, e_s, e_w = e_d[order].tolist(), e_s[order].tolist(), e_w[order].tolist()
        r = self.search_range
        for c in range(n_comp):
            dnodes: dict[int, _Node] = {}
            snodes: dict[int, _Node] = {}
            for i in range(bounds[c], bounds[c + 1]):
                d, s = e_d[i], e_s[i]
                dn = dnodes.get(d)
                if dn is None:
                    dn = dnodes[d] = _Node(d)
                sn = snodes.get(s)
                if sn is None:
                    sn = snodes[s] = _Node(s)
                sn.forward_cands.append((dn, e_w[i]))
            for sn in snodes.values():
                sn.forward_cands.sort(key=lambda x: x[1])  # as Linker.assign_links
            try:
                spl, dpl = self.subnet_linker(set(snodes.values()), set(dnodes.values()), r)
            except self._oversize:
                self.counts["oversize"] += 1  # its columns start new tracks
                continue
            for sp, dp in zip(spl, dpl):
                if sp is not None and dp is not None:
                    dest_src[dp.index] = sp.index
            self.counts["subnets"] += 1
            self.counts["in_subnets"] += len(dnodes)


_WARM: set = set()


def warm_up(link_strategy: str | None = "auto") -> None:
    """Link two tiny frames with an ambiguous subnetwork, once per process and strategy.

    trackpy's numba subnet solver compiles at its first use (about half a second); a pipeline
    calls this while its engine is being built, so that the stream's second frame does not wait
    for the compiler.
    """
    if link_strategy in _WARM:
        return
    rng = np.random.default_rng(0)
    # a 5 x 5 grid at 1.5 spacing, linked within 1.6: every column has its neighbours in reach
    crowd = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2) * 1.5
    linker = FastLinker(1.6, link_strategy=link_strategy)
    linker.init_level(crowd)
    linker.next_level(crowd + rng.normal(0, 0.3, crowd.shape))
    _WARM.add(link_strategy)
