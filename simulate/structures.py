"""Atomic structures for simulated training images: graphene-like sheets, Au nanoparticles, MoS2.

Every generator returns an :class:`ase.Atoms` with the beam along z, in an orthorhombic cell with
the structure centred in x and y and ``padding_A`` of vacuum around it. The atoms carry their
labels:

- ``atoms.info["classes"]``: the class names, e.g. ``("Mo", "S2", "S")``;
- ``atoms.arrays["column"]``: the column each atom belongs to (-1 for unlabelled atoms such as a
  support);
- ``atoms.arrays["cls"]``: the class of the atom's column, an index into ``classes`` (-1 where
  unlabelled);
- ``atoms.info["material"]`` and ``atoms.info["params"]`` (the randomly drawn parameters).

:func:`columns` projects the labelled atoms along z and returns one row per column, classed by
species or by height (number of atoms), ready for label rendering.

Structure models (Madsen et al. 2018; Larsen et al.):

- **Graphene-like sheets.** Seed points with a minimum distance (a Poisson-disc set) at the
  number density of hexagon centres in graphene (one per sqrt(3)/2 a², a = 2.46 Å), moved by a
  few Lloyd steps; the vertices of their Voronoi diagram are the carbon atoms and its edges the
  bonds, so each atom has three bonds and the rings are mostly hexagons with some pentagons and
  heptagons (rarely four or eight atoms). The Voronoi edges of a random seed set vary a lot in
  length (interquartile range about 0.8 Å after three Lloyd steps), so a short relaxation
  follows: bond stretching (1.42 Å), weak angle bending (120°) and a repulsion of unbonded atoms
  closer than 2.13 Å; it keeps the ring network. Holes are random blobs whose atoms are
  removed; atoms left with fewer than two neighbours are removed.
- **Au nanoparticles.** An fcc crystal (a = 4.08 Å) cut by the 26 low-index facets
  ({111}, {100}, {110}), each at a random distance (Wulff-like: {111} nearest, {110} farthest),
  roughened by adding atoms one at a time to empty lattice sites next to the particle with
  probability proportional to exp(n / T), n being the site's number of occupied neighbours;
  aligned with a <110> or <111> zone axis along z, turned randomly about it and tilted by a
  small random angle; optionally on a support (amorphous carbon or graphene) filling the cell.
- **MoS2.** A 2H monolayer flake (a = 3.16 Å, Mo-S bond 2.41 Å) with S vacancies (an S2 column
  that loses one atom becomes an S column), S2 and Mo vacancies and optional substitutions;
  optionally on graphene.

Random parameters take a number (used as is) or a ``(low, high)`` range drawn uniformly
(inclusive integers for counts). Everything is reproducible from ``rng``.
"""
from __future__ import annotations

from itertools import permutations, product
from typing import Literal

import numpy as np
import pandas as pd
from ase import Atoms
from scipy import sparse
from scipy.optimize import minimize
from scipy.sparse.csgraph import connected_components
from scipy.spatial import Voronoi, cKDTree

from etem.tracker.errors import ConfigError, choice_error

__all__ = ["graphene", "au_nanoparticle", "mos2", "columns", "Range"]

#: A number, or a ``(low, high)`` range to draw from uniformly.
Range = float | tuple[float, float]

GRAPHENE_BOND_A = 1.42
AU_LATTICE_A = 4.08
MOS2_LATTICE_A = 3.16
MOS2_BOND_A = 2.41  # Mo-S
_CARBON_DENSITY = 0.100  # amorphous carbon, atoms per Å³ (about 2.0 g/cm³)
_CARBON_MIN_DIST_A = 1.4
_AU_SUPPORT_GAP_A = 2.5  # lowest Au atom to the top of the support
_MOS2_GRAPHENE_GAP_A = 3.4  # lower S layer to the graphene sheet
_HOLE_MARGIN_A = 3.0  # between holes, and between a hole and the sheet edge
_BLOB_AMPLITUDE = 0.08  # of each of the three harmonics of a hole outline
# Centre-to-facet distance of each facet family as a fraction of radius_A, drawn per family,
# then a jitter of +-6 % per facet.
_FACETS = {(1, 1, 1): (0.85, 1.0), (1, 0, 0): (0.95, 1.15), (1, 1, 0): (1.05, 1.3)}
_FACET_JITTER = 0.06
_FCC_NN = np.array([v for v in np.ndindex(3, 3, 3) if sorted(np.abs(np.array(v) - 1)) == [0, 1, 1]]) - 1
_ZONE_AXES = {"110": ((1, 1, 0), (0, 0, 1)), "111": ((1, 1, 1), (1, -1, 0))}  # (z, x) in the crystal
_SUPPORTS = (None, "amorphous_carbon", "graphene")
_SIGNS = [np.array(sg) for sg in product((1, -1), repeat=3)]


# --------------------------------------------------------------------------------------------
# Helpers


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ConfigError(
        f"rng must be a numpy Generator or an integer seed; got {type(rng).__name__}. "
        "Pass np.random.default_rng(seed)."
    )


def _draw(rng: np.random.Generator, value, name: str, *, low: float = 0.0, integer: bool = False):
    """A number as is, or a uniform draw from a (low, high) range (inclusive for integers)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not value[0] <= value[1]:
            raise ConfigError(f"{name} must be a number or a (low, high) pair with low <= high; got {value!r}.")
        lo, hi = value
    else:
        lo = hi = value
    if integer and (int(lo) != lo or int(hi) != hi):
        raise ConfigError(f"{name} must be an integer or a pair of integers; got {value!r}.")
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < low:
        raise ConfigError(f"{name} must be at least {low:g}; got {value!r}.")
    if integer:
        return int(rng.integers(int(lo), int(hi) + 1))
    return float(rng.uniform(lo, hi))


def _size(size_A, name: str, minimum: float) -> np.ndarray:
    box = np.broadcast_to(np.asarray(size_A, dtype=float), (2,)).copy()
    if not np.all(box >= minimum):
        raise ConfigError(f"{name} must be at least {minimum:g} Å in x and y; got {size_A!r}.")
    return box


def _padding(padding_A: float) -> float:
    if not padding_A >= 0:
        raise ConfigError(f"padding_A must not be negative; got {padding_A!r}.")
    return float(padding_A)


def _group_xy(xy: np.ndarray, tolerance_A: float) -> np.ndarray:
    """Column index of each point: points within ``tolerance_A`` of each other, linked in chains,
    share a column; indices in order of first appearance."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = cKDTree(xy).query_pairs(tolerance_A, output_type="ndarray")
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def _atoms(symbols, positions, column, cls, classes, material: str, params: dict) -> Atoms:
    atoms = Atoms(symbols=list(symbols), positions=np.asarray(positions, dtype=float))
    atoms.set_array("column", np.asarray(column, dtype=np.int64))
    atoms.set_array("cls", np.asarray(cls, dtype=np.int64))
    atoms.info["classes"] = tuple(classes)
    atoms.info["material"] = material
    atoms.info["params"] = params
    return atoms


def _unlabelled(symbol: str, positions: np.ndarray) -> Atoms:
    n = len(positions)
    return _atoms([symbol] * n, positions, -np.ones(n), -np.ones(n), (), "", {})


def _place(atoms: Atoms, support: Atoms | None, box_xy: np.ndarray, padding_A: float) -> Atoms:
    """Join the support (in the same coordinates) to ``atoms``, shift the top to ``padding_A``
    and set the orthorhombic cell."""
    if support is not None:
        atoms = atoms + support  # keeps ``atoms``' info, joins the arrays
    z_min, z_max = atoms.positions[:, 2].min(), atoms.positions[:, 2].max()
    atoms.translate([0.0, 0.0, padding_A - z_min])
    atoms.set_cell([box_xy[0], box_xy[1], z_max - z_min + 2 * padding_A])
    atoms.pbc = False
    return atoms


def _rotation(axis, angle_deg: float) -> np.ndarray:
    """The 3 x 3 matrix turning vectors by ``angle_deg`` about ``axis`` (right-handed)."""
    u = np.asarray(axis, dtype=float)
    u = u / np.linalg.norm(u)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _hard_core_points(
    rng: np.random.Generator, box: np.ndarray, n: int, min_dist_A: float, *, periodic: tuple[bool, ...]
) -> np.ndarray:
    """``n`` uniform random points in ``box`` [Å], no two closer than ``min_dist_A``.

    Random sequential addition in batches: a candidate within ``min_dist_A`` of a placed point,
    or of another candidate of its batch, is dropped. ``periodic`` says which axes wrap round.
    """
    box = np.asarray(box, dtype=float)
    boxsize = np.where(periodic, box, box + 3 * min_dist_A + 1.0)  # a far image = no wrap
    pts = np.empty((0, box.size))
    for _ in range(500):
        need = n - len(pts)
        if need <= 0:
            return pts
        cand = rng.uniform(0, 1, (max(2 * need, 64), box.size)) * box
        if len(pts):
            d, _ = cKDTree(pts, boxsize=boxsize).query(cand, distance_upper_bound=min_dist_A)
            cand = cand[d >= min_dist_A]
        pairs = cKDTree(cand, boxsize=boxsize).query_pairs(min_dist_A, output_type="ndarray")
        clash = np.zeros(len(cand), dtype=bool)
        clash[pairs.ravel()] = True
        pts = np.concatenate([pts, cand[~clash][:need]])
    raise ConfigError(f"cannot place {n} points {min_dist_A:g} Å apart in a {box.tolist()} Å box: too dense.")


# --------------------------------------------------------------------------------------------
# Graphene network (periodic in a box)

_ANGLE_WEIGHT = 0.02  # angle-bending against bond-stretching stiffness of the relaxation


def _tile(p: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``p`` and its eight periodic images, the originals first."""
    shifts = [(0, 0)] + [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    return (p[None] + np.array(shifts)[:, None] * box).reshape(-1, 2)


def _wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    x = np.mod(x, box)
    return np.where(x >= box, x - box, x)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _lloyd(seeds: np.ndarray, box: np.ndarray) -> np.ndarray:
    """One Lloyd step: every seed moves to the centroid of its (periodic) Voronoi cell."""
    n = len(seeds)
    pts = _tile(seeds, box)
    vor = Voronoi(pts)
    rv = np.asarray(vor.ridge_vertices)
    area = np.zeros(n)
    moment = np.zeros((n, 2))
    for side in (0, 1):  # each ridge bounds the cells of both its points
        k = vor.ridge_points[:, side]
        m = (k < n) & (rv >= 0).all(axis=1)
        s, v1, v2 = pts[k[m]], vor.vertices[rv[m, 0]], vor.vertices[rv[m, 1]]
        a = np.abs(_cross(v1 - s, v2 - s)) / 2
        area += np.bincount(k[m], a, n)
        c = (s + v1 + v2) / 3
        moment += np.column_stack([np.bincount(k[m], a * c[:, 0], n), np.bincount(k[m], a * c[:, 1], n)])
    return _wrap(moment / area[:, None], box)


def _voronoi_network(seeds: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi vertices in the box (atoms) and the Voronoi edges between them (bonds)."""
    vor = Voronoi(_tile(seeds, box))
    v = vor.vertices
    inside = np.all((v >= 0) & (v < box), axis=1)
    pos = v[inside]
    rv = np.asarray(vor.ridge_vertices)
    rv = rv[(rv >= 0).all(axis=1)]
    rv = rv[inside[rv[:, 0]] | inside[rv[:, 1]]]
    _, ends = cKDTree(pos, boxsize=box).query(_wrap(v[rv.ravel()], box))
    bonds = np.unique(np.sort(ends.reshape(-1, 2), axis=1), axis=0)
    return pos, bonds[bonds[:, 0] != bonds[:, 1]]


def _relax(pos: np.ndarray, bonds: np.ndarray, box: np.ndarray, bond_A: float) -> np.ndarray:
    """Minimise sum (r - bond_A)² + w bond_A² sum (cos(angle) + 1/2)² over bonds and bond angles,
    plus sum (r_min - r)² over unbonded pairs closer than r_min = 1.5 bond_A (so that a ring of
    four cannot fold up)."""
    n = len(pos)
    nb: list[list[int]] = [[] for _ in range(n)]
    for i, j in bonds:
        nb[i].append(j)
        nb[j].append(i)
    tri = np.array([(c, p, q) for c in range(n) for k, p in enumerate(nb[c]) for q in nb[c][k + 1:]]).reshape(-1, 3)
    w = _ANGLE_WEIGHT * bond_A**2
    r_min = 1.5 * bond_A
    bonded = np.sort(bonds.min(axis=1) * n + bonds.max(axis=1))

    def vec(i, j, x):
        d = x[j] - x[i]
        return d - box * np.round(d / box)

    def acc(i, g):
        return np.column_stack([np.bincount(i, g[:, 0], n), np.bincount(i, g[:, 1], n)])

    def energy(flat):
        x = flat.reshape(-1, 2)
        d = vec(bonds[:, 0], bonds[:, 1], x)
        r = np.hypot(d[:, 0], d[:, 1])
        gb = (2 * (r - bond_A) / r)[:, None] * d
        g = acc(bonds[:, 1], gb) - acc(bonds[:, 0], gb)
        u, v = vec(tri[:, 0], tri[:, 1], x), vec(tri[:, 0], tri[:, 2], x)
        nu, nv = np.hypot(u[:, 0], u[:, 1]), np.hypot(v[:, 0], v[:, 1])
        c = (u * v).sum(axis=1) / (nu * nv)
        du = v / (nu * nv)[:, None] - (c / nu**2)[:, None] * u
        dv = u / (nu * nv)[:, None] - (c / nv**2)[:, None] * v
        k = (2 * w * (c + 0.5))[:, None]
        g += acc(tri[:, 1], k * du) + acc(tri[:, 2], k * dv) - acc(tri[:, 0], k * (du + dv))
        close = cKDTree(_wrap(x, box), boxsize=box).query_pairs(r_min, output_type="ndarray")
        close = close[~np.isin(close.min(axis=1) * n + close.max(axis=1), bonded)]
        e = ((r - bond_A) ** 2).sum() + w * ((c + 0.5) ** 2).sum()
        if len(close):
            d = vec(close[:, 0], close[:, 1], x)
            rc = np.hypot(d[:, 0], d[:, 1])
            gc = (-2 * (r_min - rc) / rc)[:, None] * d
            g += acc(close[:, 1], gc) - acc(close[:, 0], gc)
            e += ((r_min - rc) ** 2).sum()
        return e, g.ravel()

    res = minimize(energy, pos.ravel(), jac=True, method="CG", options={"maxiter": 200})
    return _wrap(res.x.reshape(-1, 2), box)


def _periodic_sheet(
    rng: np.random.Generator, box: np.ndarray, *, bond_A: float, lloyd_steps: int, relax: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions ``[n, 2]`` [Å] and bonds ``[m, 2]`` of a graphene-like sheet that is periodic
    in ``box``: seeds at the hexagon density, Lloyd steps, Voronoi vertices, relaxation."""
    hex_area = np.sqrt(3) / 2 * (bond_A * np.sqrt(3)) ** 2
    n = max(int(round(box.prod() / hex_area)), 4)
    seeds = _hard_core_points(rng, box, n, 0.65 * bond_A * np.sqrt(3), periodic=(True, True))
    for _ in range(lloyd_steps):
        seeds = _lloyd(seeds, box)
    pos, bonds = _voronoi_network(seeds, box)
    if relax:
        pos = _relax(pos, bonds, box, bond_A)
    return pos, bonds


# --------------------------------------------------------------------------------------------
# Graphene


def _holes(rng: np.random.Generator, box: np.ndarray, n: int, radius_A: Range) -> list[tuple]:
    """``n`` non-overlapping blob outlines (centre, r0, amplitudes, phases, reach) inside ``box``,
    at least ``_HOLE_MARGIN_A`` from each other and from the edges."""
    for _restart in range(50):
        holes: list[tuple] = []
        for _attempt in range(50 * n):
            if len(holes) == n:
                return holes
            r0 = _draw(rng, radius_A, "hole_radius_A", low=1.0)
            amp = rng.uniform(0, _BLOB_AMPLITUDE, 3)
            phase = rng.uniform(0, 2 * np.pi, 3)
            reach = r0 * (1 + amp.sum())
            lo, hi = reach + _HOLE_MARGIN_A, box - reach - _HOLE_MARGIN_A
            if np.any(hi <= lo):
                continue
            c = rng.uniform(lo, hi)
            if all(np.hypot(*(c - h[0])) >= reach + h[4] + _HOLE_MARGIN_A for h in holes):
                holes.append((c, r0, amp, phase, reach))
        if len(holes) == n:
            return holes
    raise ConfigError(
        f"cannot fit {n} holes of radius {radius_A!r} Å into a {box[0]:g} x {box[1]:g} Å sheet; "
        "enlarge size_A, or lower n_holes or hole_radius_A."
    )


def _inside_hole(xy: np.ndarray, hole: tuple) -> np.ndarray:
    c, r0, amp, phase, _ = hole
    d = xy - c
    theta = np.arctan2(d[:, 1], d[:, 0])
    k = np.arange(2, 5)
    r = r0 * (1 + (amp * np.cos(k * theta[:, None] + phase)).sum(axis=1))
    return np.hypot(d[:, 0], d[:, 1]) < r


def _prune(keep: np.ndarray, bonds: np.ndarray, min_neighbours: int) -> np.ndarray:
    """Drop atoms with fewer than ``min_neighbours`` kept neighbours, repeatedly."""
    keep = keep.copy()
    while True:
        ok = keep[bonds[:, 0]] & keep[bonds[:, 1]]
        degree = np.bincount(bonds[ok].ravel(), minlength=len(keep))
        drop = keep & (degree < min_neighbours)
        if not drop.any():
            return keep
        keep &= ~drop


def graphene(
    rng: np.random.Generator | int,
    *,
    size_A: float | tuple[float, float] = (40.0, 40.0),
    n_holes: int | tuple[int, int] = (0, 4),
    hole_radius_A: Range = (4.0, 7.0),
    lloyd_steps: int = 3,
    relax: bool = True,
    padding_A: float = 5.0,
) -> Atoms:
    """A graphene-like sheet with holes: one class ("C"), every atom its own column.

    Parameters
    ----------
    rng
        Random generator (or an integer seed).
    size_A
        Size (x, y) of the sheet before edge atoms are pruned [Å], at least 10 Å.
    n_holes
        Number of holes, or an inclusive (low, high) range.
    hole_radius_A
        Mean radius of a hole [Å] (its outline wobbles by up to +-24 %); a range is drawn per hole.
    lloyd_steps
        Lloyd relaxation steps of the Voronoi seeds (more: fewer non-hexagonal rings).
    relax
        Relax the atoms with the bond and angle model (bonds of 1.42 Å). Without it the atoms
        are the bare Voronoi vertices, whose bonds spread widely in length.
    padding_A
        Vacuum around the sheet in x, y and z [Å].

    Returns
    -------
    ase.Atoms
        The sheet at z = ``padding_A``; ``info["params"]`` holds ``n_holes`` and the hole centres.
    """
    rng = _generator(rng)
    box = _size(size_A, "size_A", 10.0)
    padding_A = _padding(padding_A)
    if int(lloyd_steps) != lloyd_steps or lloyd_steps < 0:
        raise ConfigError(f"lloyd_steps must be a non-negative integer; got {lloyd_steps!r}.")
    n = _draw(rng, n_holes, "n_holes", integer=True)
    holes = _holes(rng, box, n, hole_radius_A)
    pos, bonds = _periodic_sheet(rng, box, bond_A=GRAPHENE_BOND_A, lloyd_steps=int(lloyd_steps), relax=relax)
    # Open the periodic sheet: bonds across the box boundary go.
    d = pos[bonds[:, 1]] - pos[bonds[:, 0]]
    bonds = bonds[np.all(np.abs(d) < box / 2, axis=1)]
    keep = np.ones(len(pos), dtype=bool)
    for hole in holes:
        keep &= ~_inside_hole(pos, hole)
    keep = _prune(keep, bonds, 2)
    xyz = np.column_stack([pos[keep], np.zeros(int(keep.sum()))])
    m = len(xyz)
    params = {"n_holes": n, "hole_centres_A": [h[0].tolist() for h in holes], "lloyd_steps": int(lloyd_steps)}
    atoms = _atoms(["C"] * m, xyz, np.arange(m), np.zeros(m), ("C",), "graphene", params)
    atoms.center(vacuum=padding_A)
    atoms.pbc = False
    return atoms


def _graphene_support(rng: np.random.Generator, box_xy: np.ndarray, z_A: float) -> Atoms:
    """A periodic graphene sheet filling ``box_xy`` at height ``z_A``, unlabelled."""
    pos, _ = _periodic_sheet(rng, box_xy, bond_A=GRAPHENE_BOND_A, lloyd_steps=3, relax=True)
    return _unlabelled("C", np.column_stack([pos, np.full(len(pos), z_A)]))


def _carbon_support(rng: np.random.Generator, box_xy: np.ndarray, z_A: float, thickness_A: float) -> Atoms:
    """Amorphous carbon: random points at least 1.4 Å apart, periodic in x and y, unlabelled."""
    box = np.array([box_xy[0], box_xy[1], thickness_A])
    n = int(round(_CARBON_DENSITY * box.prod()))
    pos = _hard_core_points(rng, box, n, _CARBON_MIN_DIST_A, periodic=(True, True, False))
    pos[:, 2] += z_A
    return _unlabelled("C", pos)


# --------------------------------------------------------------------------------------------
# Au nanoparticle


def _facet_normals() -> list[tuple[tuple[int, int, int], np.ndarray]]:
    """(family, unit normals) of {111}, {100} and {110}."""
    out = []
    for fam in _FACETS:
        vs = {tuple(int(c) for c in np.array(p) * sg) for p in set(permutations(fam)) for sg in _SIGNS}
        out.append((fam, np.array(sorted(vs), dtype=float) / np.linalg.norm(fam)))
    return out


def _grow(rng: np.random.Generator, occ: np.ndarray, lattice: np.ndarray, n_add: int, T: float) -> None:
    """Add ``n_add`` atoms one at a time to empty fcc sites touching the particle, each with
    probability proportional to exp(n / T) (n: occupied neighbours of the site). In place."""
    count = np.zeros(occ.shape, dtype=np.int64)
    for v in _FCC_NN:
        count += np.roll(occ, tuple(v), axis=(0, 1, 2))
    inner = np.zeros(occ.shape, dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True  # np.roll wraps round: never grow on the border
    for _ in range(n_add):
        cand = np.flatnonzero(~occ & lattice & inner & (count > 0))
        if cand.size == 0:
            break
        n = count.ravel()[cand]
        w = np.exp((n - n.max()) / T)
        site = np.unravel_index(cand[rng.choice(cand.size, p=w / w.sum())], occ.shape)
        occ[site] = True
        nb = np.array(site)[None, :] + _FCC_NN
        count[nb[:, 0], nb[:, 1], nb[:, 2]] += 1


def _au_crystal(rng: np.random.Generator, radius_A: float, growth: float, T: float) -> np.ndarray:
    """Positions [Å] of a cut and roughened fcc particle, crystal axes, about its centre."""
    half = AU_LATTICE_A / 2
    m = int(np.ceil(1.4 * radius_A / half)) + 4
    idx = np.stack(np.meshgrid(*[np.arange(-m, m + 1)] * 3, indexing="ij"), axis=-1)
    lattice = idx.sum(axis=-1) % 2 == 0
    centre = rng.uniform(0, half, 3)
    p = idx * half - centre
    inside = lattice.copy()
    for fam, normals in _facet_normals():
        base = rng.uniform(*_FACETS[fam]) * radius_A
        d = base * (1 + rng.uniform(-_FACET_JITTER, _FACET_JITTER, len(normals)))
        inside &= np.all(p @ normals.T <= d, axis=-1)
    if not inside.any():
        raise ConfigError(f"radius_A = {radius_A:g} Å leaves no atoms; use at least 3 Å.")
    _grow(rng, inside, lattice, int(round(growth * inside.sum())), T)
    return p[inside]


def au_nanoparticle(
    rng: np.random.Generator | int,
    *,
    radius_A: Range = (8.0, 15.0),
    zone_axis: Literal["110", "111"] | None = None,
    growth: Range = (0.0, 0.15),
    roughness_T: Range = (0.5, 2.0),
    tilt_deg: Range = (0.0, 5.0),
    support: Literal["amorphous_carbon", "graphene"] | None = None,
    support_thickness_A: Range = (6.0, 12.0),
    padding_A: float = 5.0,
) -> Atoms:
    """An fcc Au nanoparticle (a = 4.08 Å), faceted and roughened, along a zone axis.

    Parameters
    ----------
    rng
        Random generator (or an integer seed).
    radius_A
        Size of the particle [Å]: its {111} facets lie 0.85-1 ``radius_A`` from the centre,
        {100} 0.95-1.15 and {110} 1.05-1.3 (one draw per family, +-6 % per facet).
    zone_axis
        ``"110"`` or ``"111"`` along z; None picks one at random.
    growth
        Atoms added by roughening, as a fraction of the cut particle's atoms.
    roughness_T
        Temperature T of the growth law exp(n / T) (n: occupied neighbours of an empty site):
        small T fills sheltered sites (smooth facets), large T lets adatoms stick anywhere.
    tilt_deg
        Tilt of the zone axis away from z, about a random in-plane axis [degrees].
    support
        None, ``"amorphous_carbon"`` (a slab of random atoms at least 1.4 Å apart, 2.0 g/cm³)
        or ``"graphene"``: fills the cell in x and y below the particle (at larger z, 2.5 Å from
        its lowest atom); its atoms are unlabelled (``column`` = ``cls`` = -1).
    support_thickness_A
        Thickness of the amorphous-carbon slab [Å].
    padding_A
        Vacuum around the particle in x and y, above it and below the support [Å].

    Returns
    -------
    ase.Atoms
        Classes ``("Au",)``; the columns are those of the untilted particle. ``info["params"]``
        holds the drawn radius, zone axis, rotation, tilt axis and angle.
    """
    rng = _generator(rng)
    padding_A = _padding(padding_A)
    if zone_axis is None:
        zone_axis = ("110", "111")[int(rng.integers(2))]
    if zone_axis not in _ZONE_AXES:
        raise choice_error("zone_axis", zone_axis, _ZONE_AXES)
    if support not in _SUPPORTS:
        raise ConfigError(f"support must be None, 'amorphous_carbon' or 'graphene'; got {support!r}.")
    radius = _draw(rng, radius_A, "radius_A", low=3.0)
    grow = _draw(rng, growth, "growth")
    T = _draw(rng, roughness_T, "roughness_T", low=1e-3)
    tilt = _draw(rng, tilt_deg, "tilt_deg")
    spin = float(rng.uniform(0, 360))
    tilt_axis = float(rng.uniform(0, 360))
    pos = _au_crystal(rng, radius, grow, T)

    z_dir, x_dir = (np.array(v, dtype=float) for v in _ZONE_AXES[zone_axis])
    z_dir /= np.linalg.norm(z_dir)
    x_dir /= np.linalg.norm(x_dir)
    to_zone = np.stack([x_dir, np.cross(z_dir, x_dir), z_dir])
    pos = pos @ (_rotation((0, 0, 1), spin) @ to_zone).T
    column = _group_xy(pos[:, :2], 0.1)
    axis = (np.cos(np.deg2rad(tilt_axis)), np.sin(np.deg2rad(tilt_axis)), 0.0)
    pos = (pos - pos.mean(axis=0)) @ _rotation(axis, tilt).T

    lo, hi = pos.min(axis=0), pos.max(axis=0)
    box_xy = hi[:2] - lo[:2] + 2 * padding_A
    pos[:, :2] += padding_A - lo[:2]
    params = {"radius_A": radius, "zone_axis": zone_axis, "growth": grow, "roughness_T": T,
              "rotation_deg": spin, "tilt_deg": tilt, "tilt_axis_deg": tilt_axis, "support": support}
    atoms = _atoms(["Au"] * len(pos), pos, column, np.zeros(len(pos)), ("Au",), "Au", params)
    z_support = hi[2] + _AU_SUPPORT_GAP_A
    layer = None
    if support == "graphene":
        layer = _graphene_support(rng, box_xy, z_support)
    elif support == "amorphous_carbon":
        thickness = _draw(rng, support_thickness_A, "support_thickness_A", low=2.0)
        params["support_thickness_A"] = thickness
        layer = _carbon_support(rng, box_xy, z_support, thickness)
    return _place(atoms, layer, box_xy, padding_A)


# --------------------------------------------------------------------------------------------
# MoS2


def mos2(
    rng: np.random.Generator | int,
    *,
    size_A: float | tuple[float, float] = (40.0, 40.0),
    vacancy_fraction: dict[str, Range] | None = None,
    substitution: dict[str, tuple[str, Range]] | None = None,
    on_graphene: bool = False,
    padding_A: float = 5.0,
) -> Atoms:
    """A 2H-MoS2 monolayer flake with vacancies; classes ``("Mo", "S2", "S")``.

    Parameters
    ----------
    rng
        Random generator (or an integer seed).
    size_A
        Size (x, y) of the flake [Å], at least 10 Å; its edges are pruned so that every S
        column has at least two Mo neighbours and every Mo at least two S columns (three in the bulk).
    vacancy_fraction
        Fractions (numbers or ranges) by kind: ``"S"``, S2 columns that lose one of their two
        atoms (they become S columns); ``"S2"``, S2 columns removed; ``"Mo"``, Mo atoms removed.
        Missing kinds are 0; None means ``{"S": (0, 0.08), "S2": (0, 0.02), "Mo": (0, 0.02)}``.
    substitution
        ``{species: (new_species, fraction)}``, e.g. ``{"Mo": ("W", 0.05)}``: that fraction of
        the remaining atoms of ``species`` is replaced. Their columns keep their class.
    on_graphene
        Put the flake on a graphene sheet that fills the cell in x and y (3.4 Å below the lower
        S layer, at larger z); its atoms are unlabelled.
    padding_A
        Vacuum around the flake in x and y, above it and below the lowest layer [Å].

    Returns
    -------
    ase.Atoms
        ``info["params"]`` holds the drawn fractions and the resulting counts.
    """
    rng = _generator(rng)
    box = _size(size_A, "size_A", 10.0)
    padding_A = _padding(padding_A)
    if vacancy_fraction is None:
        vacancy_fraction = {"S": (0.0, 0.08), "S2": (0.0, 0.02), "Mo": (0.0, 0.02)}
    unknown = set(vacancy_fraction) - {"S", "S2", "Mo"}
    if unknown:
        raise ConfigError(f"vacancy_fraction keys must be 'S', 'S2' or 'Mo'; got {sorted(unknown)!r}.")
    frac = {k: _draw(rng, vacancy_fraction.get(k, 0.0), f"vacancy_fraction[{k!r}]") for k in ("S", "S2", "Mo")}
    if any(f > 1 for f in frac.values()):
        raise ConfigError(f"vacancy fractions must lie in [0, 1]; got {frac!r}.")

    a = MOS2_LATTICE_A
    dz = np.sqrt(MOS2_BOND_A**2 - a**2 / 3)
    cell = np.array([a, a * np.sqrt(3)])
    ij = np.stack(np.meshgrid(np.arange(int(box[0] // cell[0]) + 2), np.arange(int(box[1] // cell[1]) + 2),
                              indexing="ij"), axis=-1).reshape(-1, 2) * cell
    mo = np.concatenate([ij, ij + [a / 2, cell[1] / 2]]) + rng.uniform(0, 1, 2) * cell - cell
    s = mo + [0.0, a / np.sqrt(3)]
    mo, s = mo[np.all((mo >= 0) & (mo < box), axis=1)], s[np.all((s >= 0) & (s < box), axis=1)]
    pairs = cKDTree(mo).query_ball_point(s, a / np.sqrt(3) + 0.1, return_sorted=False)
    bonds = np.array([(k, len(s) + j) for k, row in enumerate(pairs) for j in row], dtype=np.int64).reshape(-1, 2)
    keep = np.ones(len(s) + len(mo), dtype=bool)
    while True:  # S columns need two Mo neighbours and Mo two S columns (of three in the bulk)
        ok = keep[bonds[:, 0]] & keep[bonds[:, 1]]
        degree = np.bincount(bonds[ok].ravel(), minlength=len(keep))
        drop = keep & (degree < 2)
        if not drop.any():
            break
        keep &= ~drop
    s, mo = s[keep[: len(s)]], mo[keep[len(s):]]

    # Vacancies: one draw per S2 column (none, one atom, both) and per Mo.
    u = rng.random(len(s))
    n_s = np.where(u < frac["S2"], 0, np.where(u < frac["S2"] + frac["S"] * (1 - frac["S2"]), 1, 2))
    top = rng.random(len(s)) < 0.5  # which atom a single-vacancy column keeps
    mo = mo[rng.random(len(mo)) >= frac["Mo"]]
    s2 = n_s == 2
    one = n_s == 1
    xyz = np.concatenate([
        np.column_stack([mo, np.zeros(len(mo))]),
        np.column_stack([s[s2], np.full(s2.sum(), -dz)]),
        np.column_stack([s[s2], np.full(s2.sum(), dz)]),
        np.column_stack([s[one], np.where(top[one], -dz, dz)]),
    ])
    symbols = np.array(["Mo"] * len(mo) + ["S"] * (2 * int(s2.sum()) + int(one.sum())))
    s2_ids = len(mo) + np.arange(s2.sum())
    column = np.concatenate([np.arange(len(mo)), s2_ids, s2_ids, len(mo) + s2.sum() + np.arange(one.sum())])
    cls = np.concatenate([np.zeros(len(mo)), np.ones(2 * s2.sum()), np.full(one.sum(), 2)])

    params = {"vacancy_fraction": frac, "n_Mo": int(len(mo)), "n_S2": int(s2.sum()), "n_S": int(one.sum())}
    for species, (new, fraction) in (substitution or {}).items():
        f = _draw(rng, fraction, f"substitution[{species!r}]")
        hit = (symbols == species) & (rng.random(len(symbols)) < f)
        symbols[hit] = new
        params[f"substitution_{species}_{new}"] = int(hit.sum())
    box_xy = box + 2 * padding_A
    xyz[:, :2] += (box_xy - xyz[:, :2].min(axis=0) - xyz[:, :2].max(axis=0)) / 2  # centred
    atoms = _atoms(symbols, xyz, column, cls, ("Mo", "S2", "S"), "MoS2", params)
    layer = _graphene_support(rng, box_xy, dz + _MOS2_GRAPHENE_GAP_A) if on_graphene else None
    return _place(atoms, layer, box_xy, padding_A)


# --------------------------------------------------------------------------------------------
# Columns


def columns(
    atoms: Atoms,
    *,
    classes: Literal["species", "height"] = "species",
    tolerance_A: float = 0.5,
    max_height: int = 10,
    by: Literal["position", "label"] = "position",
) -> pd.DataFrame:
    """The atomic columns seen along z: one row per column of labelled atoms.

    Parameters
    ----------
    atoms
        A structure; atoms with ``arrays["column"] == -1`` (supports) are left out. Without
        ``column``/``cls`` arrays every atom counts and the species classes are the sorted
        chemical symbols.
    classes
        ``"species"``: the class stored with the atoms (``info["classes"]``, ``arrays["cls"]``;
        the majority class where a column mixes them). ``"height"``: the number of atoms in the
        column, classes ``"1"`` .. ``str(max_height)``, the last one holding every taller column.
    tolerance_A
        Atoms whose projected (x, y) lie within this distance [Å], linked in chains, form one
        column (``by="position"``).
    max_height
        The tallest height class.
    by
        ``"position"``: group by projected position; ``"label"``: by the stored ``column``
        array (the generator's columns, e.g. those of a particle before it was tilted).

    Returns
    -------
    pandas.DataFrame
        ``x_A, y_A`` (mean projected position [Å], cell frame), ``cls`` (int), ``n_atoms``
        (int), ``label`` (class name), in order of each column's first atom.
    """
    if classes not in ("species", "height"):
        raise choice_error("classes", classes, ("species", "height"))
    if by not in ("position", "label"):
        raise choice_error("by", by, ("position", "label"))
    if not tolerance_A > 0:
        raise ConfigError(f"tolerance_A must be positive; got {tolerance_A!r}.")
    if int(max_height) != max_height or max_height < 1:
        raise ConfigError(f"max_height must be a positive integer; got {max_height!r}.")
    column = atoms.arrays.get("column")
    idx = np.flatnonzero(column >= 0) if column is not None else np.arange(len(atoms))
    xy = atoms.positions[idx, :2]
    if by == "position":
        group = _group_xy(xy, tolerance_A)
    elif column is None:
        raise ConfigError("by='label' needs the atoms' 'column' array (set by the generators); use by='position'.")
    else:
        _, first, inverse = np.unique(column[idx], return_index=True, return_inverse=True)
        group = np.argsort(np.argsort(first))[inverse]
    k = int(group.max()) + 1 if group.size else 0
    n_atoms = np.bincount(group, minlength=k)
    x = np.bincount(group, xy[:, 0], minlength=k) / np.maximum(n_atoms, 1)
    y = np.bincount(group, xy[:, 1], minlength=k) / np.maximum(n_atoms, 1)
    if classes == "height":
        cls = np.minimum(n_atoms, int(max_height)) - 1
        names = [str(h) for h in range(1, int(max_height) + 1)]
    else:
        names = list(atoms.info.get("classes", ()))
        atom_cls = atoms.arrays.get("cls")
        if atom_cls is None or not names:
            symbols = np.array(atoms.get_chemical_symbols())[idx]
            names = sorted(set(symbols))
            atom_cls = np.searchsorted(names, symbols)
        else:
            atom_cls = atom_cls[idx]
        # Majority class of each column (the lowest class index on a tie).
        key, count = np.unique(group * len(names) + atom_cls, return_counts=True)
        order = np.lexsort((key % len(names), -count, key // len(names)))
        grp = key[order] // len(names)
        first = np.r_[True, grp[1:] != grp[:-1]]
        cls = np.empty(k, dtype=np.int64)
        cls[grp[first]] = key[order][first] % len(names)
    return pd.DataFrame({
        "x_A": pd.Series(x, dtype="float64"),
        "y_A": pd.Series(y, dtype="float64"),
        "cls": pd.Series(cls, dtype="int64"),
        "n_atoms": pd.Series(n_atoms, dtype="int64"),
        "label": pd.Series([names[c] for c in cls], dtype="str"),
    })
