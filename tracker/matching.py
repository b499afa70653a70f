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

__all__ = ["candidate_pairs", "match_pairs", "match_within"]


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
    """:func:`match_pairs` by connected groups of candidates, one assignment per group."""
    ui, ii = np.unique(i, return_inverse=True)
    uj, jj = np.unique(j, return_inverse=True)
    ni, nj = len(ui), len(uj)
    graph = coo_matrix((np.ones(i.size), (ii, ni + jj)), shape=(ni + nj, ni + nj))
    n_comp, label = connected_components(graph, directed=False)
    comp = label[ii]
    rows_in = np.bincount(label[:ni], minlength=n_comp)
    cols_in = np.bincount(label[ni:], minlength=n_comp)
    lone = (rows_in[comp] == 1) & (cols_in[comp] == 1)
    out_i, out_j = [ii[lone]], [jj[lone]]
    hard = np.flatnonzero(~lone)
    if hard.size:
        order = hard[np.argsort(comp[hard], kind="stable")]
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
