"""One-to-one matching of points within a radius, solved per connected group of candidates.

Among all pairings whose pairs lie at most ``radius`` apart: the most pairs, and among those
the smallest summed distance. Used to score columns against ground truth, to put columns on
sites and to pair sites that empty with sites that fill (hops). A pair whose two points have
no other candidate is taken as is; only the ambiguous groups go to the assignment solver, so
the cost grows with the number of points, not its square.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["GuidedMatcher", "candidate_pairs", "match_pairs", "match_within", "near_earlier"]


def candidate_pairs(a: np.ndarray, b: np.ndarray | cKDTree, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` with ``|a[i] - b[j]| <= radius`` and their distances.

    ``b`` may be a prebuilt ``cKDTree`` of the second point set.
    """
    tree = b if isinstance(b, cKDTree) else cKDTree(b)
    a = np.asarray(a, float)
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0))
    if len(a) == 0 or tree.n == 0:
        return empty
    # The k nearest within the radius, k doubled until no point has k candidates: an exact
    # ball query in arrays (no Python list per point).
    bound = radius * (1 + 1e-9) + 1e-100  # the query's bound is strict, and squared inside
    k = min(4, tree.n)
    while True:
        d, j = tree.query(a, k=k, distance_upper_bound=bound)
        d, j = d.reshape(len(a), k), j.reshape(len(a), k)
        if k == tree.n or not np.isfinite(d[:, -1]).any():
            break
        k = min(2 * k, tree.n)
    ok = d <= radius
    i = np.broadcast_to(np.arange(len(a))[:, None], d.shape)[ok]
    return i.astype(np.intp), j[ok].astype(np.intp), d[ok]


def match_pairs(i: np.ndarray, j: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching over candidate pairs ``(i[k], j[k])`` of cost ``cost[k] >= 0``.

    The most pairs, and among those the least total cost: what a dense assignment gives with a
    prohibitive cost off the candidates. Returns the matched ``(i, j)``, sorted by ``i``.
    """
    i, j = np.asarray(i, np.intp), np.asarray(j, np.intp)
    cost = np.asarray(cost, float)
    if i.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # A pair whose two points have no other candidate is a group of its own, taken as is: found
    # from the points' candidate counts. Where every pair is such (columns on sites, most
    # frames), that is the whole answer; otherwise only the other pairs are grouped.
    lone = _once(i) & _once(j)
    if lone.all():
        order = np.argsort(i, kind="stable")
        return i[order], j[order]
    out_i, out_j = [i[lone]], [j[lone]]
    hard = ~lone
    mi, mj = _match_groups(i[hard], j[hard], cost[hard])
    mi, mj = np.concatenate(out_i + [mi]), np.concatenate(out_j + [mj])
    order = np.argsort(mi, kind="stable")
    return mi[order], mj[order]


def _once(x: np.ndarray) -> np.ndarray:
    """Whether each value of ``x`` (integers) occurs only once in it."""
    x = x - x.min()
    if x.max() > 4 * x.size + 1024:  # sparse labels: count by sorting rather than in a huge table
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        return counts[inv] == 1
    return np.bincount(x)[x] == 1


def _match_groups(i: np.ndarray, j: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_pairs` by connected groups of candidates, one assignment per group (the
    pairs given are those :func:`match_pairs` did not take as lone ones)."""
    ui, ii = np.unique(i, return_inverse=True)
    uj, jj = np.unique(j, return_inverse=True)
    ni, nj = len(ui), len(uj)
    graph = coo_matrix((np.ones(i.size), (ii, ni + jj)), shape=(ni + nj, ni + nj))
    _, label = connected_components(graph, directed=False)
    comp = label[ii]
    out_i, out_j = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    if i.size:
        order = np.argsort(comp, kind="stable")
        for k in np.split(order, np.flatnonzero(np.diff(comp[order])) + 1):
            si, a = np.unique(ii[k], return_inverse=True)
            sj, b = np.unique(jj[k], return_inverse=True)
            # off the candidates: more than any full set of candidate pairs costs, so the
            # solver takes the most real pairs first
            big = float(cost[k].max()) * (min(si.size, sj.size) + 1) + 1.0
            dense = np.full((si.size, sj.size), big)
            dense[a, b] = cost[k]
            r, c = linear_sum_assignment(dense)
            real = dense[r, c] < big
            out_i.append(si[r[real]])
            out_j.append(sj[c[real]])
    return ui[np.concatenate(out_i)], uj[np.concatenate(out_j)]


def match_within(a: np.ndarray, b: np.ndarray | cKDTree, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Match points ``a`` to points ``b`` one-to-one within ``radius`` (Euclidean distance)."""
    return match_pairs(*candidate_pairs(a, b, radius))


def near_earlier(a: np.ndarray, radius: float, marked: np.ndarray | None = None) -> np.ndarray:
    """``marked`` (default: none) and the points of ``a`` within ``radius`` of an earlier point
    of ``a`` not marked: of each cluster of points closer than ``radius``, all but the first."""
    a = np.asarray(a, float).reshape(-1, 2)
    near = np.zeros(len(a), bool) if marked is None else np.array(marked, bool)
    if len(a) > 1:
        for i, j in sorted(cKDTree(a).query_pairs(radius * (1 + 1e-9))):
            if not near[i]:
                near[j] = True
    return near


class GuidedMatcher:
    """:func:`match_within` for points ``b`` that change little from call to call, helped by a
    guess of each ``a``'s partner; the same matching, bit for bit.

    Made for the sites of a run (``b``: a few are added per frame, each moves a little as its
    running mean settles; the guess: the site the column's track was last seen on),
    where a k-d tree built and searched every frame was most of the cost. A guess is taken
    without a search where it is certain: the point lies within ``radius`` of the guessed
    ``b`` (by a margin far above rounding), farther than ``radius`` from each of that ``b``'s
    neighbours (the other ``b`` that could be within ``2 radius`` of it, listed), and no other
    point makes the same guess. Neither point of such a pair then has another candidate, so in
    :func:`match_within` the pair is a group of its own and in the matching as it is. The other
    points (no guess, a guess that fails, a ``b`` that one of them reaches too) are matched as
    :func:`match_within` matches them, with their exact candidates: the ``b`` that a k-d tree
    of ``b``, as it was when the tree was built, finds within a slack more than ``radius``,
    measured where they are now.

    What the matcher holds (the tree, each point's position as it holds it, the neighbour
    lists) is a cache of ``b``: every call compares ``b`` with it, takes new points and points
    that moved more than the slack as *extras* (held where they are now, their neighbours found
    again, always candidates of the points searched for) and builds it all anew once the extras
    grow many. Whatever ``b`` does between calls, the result is :func:`match_within`'s.
    """

    def __init__(self, radius: float) -> None:
        self.radius = float(radius)
        self.slack = self.radius / 8  # how far a point may move from where the matcher holds it
        self.margin = 1e-9 * self.radius  # far above the rounding of any distance near radius
        # two points within radius of one point, each within slack of where it is held
        self.near = 2 * (self.radius + self.slack) + self.margin
        self._tree: cKDTree | None = None
        self._n = 0  # points held

    def match(self, a: np.ndarray, b: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``match_within(a, b, radius)``; ``guess[i]``: the index in ``b`` expected to match
        ``a[i]`` (-1: none). Sets :attr:`reached`: whether each ``a`` has a ``b`` within
        ``radius``, matched or not."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        if len(a) == 0 or len(b) == 0:
            self.reached = np.zeros(len(a), bool)
            return match_within(a, b, self.radius)
        self._follow(b)
        r, n = self.radius, len(b)
        g = np.asarray(guess, np.intp)
        rows = np.flatnonzero((g >= 0) & (g < n))
        guessed = g.take(rows)
        alone = np.bincount(guessed, minlength=n).take(guessed) == 1
        inside = alone & (_sqdist(a.take(rows, 0), b.take(guessed, 0)) <= (r - self.margin) ** 2)
        rows, guessed = rows[inside], guessed[inside]
        k = self._ptr.take(guessed + 1) - self._ptr.take(guessed)
        if k.any():  # out of reach of the guessed point's neighbours
            owner = np.repeat(np.arange(len(rows)), k)
            other = self._nb.take(_ragged(self._ptr.take(guessed), k))
            reach = _sqdist(a.take(rows.take(owner), 0), b.take(other, 0)) <= (r + self.margin) ** 2
            ok = np.ones(len(rows), bool)
            ok[owner[reach]] = False
            rows, guessed = rows[ok], guessed[ok]
        sure = np.zeros(len(a), bool)
        sure[rows] = True
        rest = np.flatnonzero(~sure)
        i, j, d = np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
        if rest.size:
            # candidates of the rest: what the tree holds within the slack more, and every extra
            _, held, _ = candidate_pairs(a[rest], self._tree, (r + self.slack) * (1 + 1e-9) + self.margin)
            cand = self._extra.copy()
            cand[held] = True
            cand = np.flatnonzero(cand)
            if cand.size:
                i, j, d = candidate_pairs(a[rest], b[cand], r)
                i, j = rest.take(i), cand.take(j)
        reached = np.zeros(n, bool)
        reached[j] = True
        shared = reached.take(guessed)
        if shared.any():  # a sure pair whose b the rest reach: matched with them, at its distance
            i2, j2, d2 = candidate_pairs(a[rows[shared]], b[guessed[shared]], r)
            i = np.concatenate([i, rows[shared][i2]])
            j = np.concatenate([j, guessed[shared][j2]])
            d = np.concatenate([d, d2])
            rows, guessed = rows[~shared], guessed[~shared]
        if i.size:
            mi, mj = match_pairs(i, j, d)
            rows, guessed = np.concatenate([rows, mi]), np.concatenate([guessed, mj])
        self.reached = np.zeros(len(a), bool)
        self.reached[i] = True
        self.reached[rows] = True
        order = np.argsort(rows, kind="stable")
        return rows.take(order), guessed.take(order)

    # -- the cache of b ------------------------------------------------------------------
    def _build(self, b: np.ndarray) -> None:
        self._ref = b.copy()  # where each point is held
        self._tree = cKDTree(self._ref)
        self._n = len(b)
        self._extra = np.zeros(self._n, bool)  # held elsewhere than where the tree has it
        pairs = self._tree.query_pairs(self.near, output_type="ndarray")
        self._pairs = (np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]]))
        self._index_pairs()

    def _follow(self, b: np.ndarray) -> None:
        """Bring the cache up to ``b``."""
        n = len(b)
        if self._tree is None or n < self._n or b.shape[1:] != self._ref.shape[1:]:
            return self._build(b)
        moved = ~(_sqdist(b[: self._n], self._ref) <= self.slack**2)
        fresh = np.concatenate([np.flatnonzero(moved), np.arange(self._n, n)])
        if not fresh.size:
            return
        if int(self._extra.sum()) + fresh.size > max(64, self._tree.n // 8):
            return self._build(b)
        self._ref = np.concatenate([self._ref, b[self._n:]])
        self._ref[fresh] = b[fresh]
        self._extra = np.concatenate([self._extra, np.ones(n - self._n, bool)])
        self._extra[fresh] = True
        self._n = n
        # the fresh points' neighbours: among the points the tree holds where they are held, and
        # among the extras (each pair of two fresh points is found from both ends)
        f, t, _ = candidate_pairs(self._ref[fresh], self._tree, self.near)
        held = ~self._extra[t]
        f, t = fresh[f[held]], t[held]
        extras = np.flatnonzero(self._extra)
        fe, ee = np.nonzero(((self._ref[fresh][:, None] - self._ref[extras][None]) ** 2).sum(-1) <= self.near**2)
        fe, ee = fresh[fe], extras[ee]
        keep = fe != ee
        fe, ee = fe[keep], ee[keep]
        back = ~np.isin(ee, fresh)
        src, dst = self._pairs
        self._pairs = (np.concatenate([src, f, t, fe, ee[back]]), np.concatenate([dst, t, f, ee, fe[back]]))
        self._index_pairs()

    def _index_pairs(self) -> None:
        src, dst = self._pairs
        self._nb = dst[np.argsort(src, kind="stable")]
        self._ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=self._n))])


def _sqdist(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``p`` and ``q`` (a sum over the few
    coordinates costs less than numpy's reduction along a short axis)."""
    d = p - q
    out = d[:, 0] * d[:, 0]
    for k in range(1, d.shape[1]):
        out += d[:, k] * d[:, k]
    return out


def _ragged(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[k] + 0, 1, ..., counts[k] - 1`` for each ``k``, concatenated."""
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(int(counts.sum()))
