"""Graphene-like sheets: :func:`graphene`, and the periodic sheet that also serves as a support
under the Au nanoparticles and MoS2 flakes of :mod:`etem.simulate.structures`.

Seed points with a minimum distance (a Poisson-disc set) at the number density of hexagon
centres in graphene (one per sqrt(3)/2 a², a = 2.46 Å) are moved by a few Lloyd steps; the
vertices of their Voronoi diagram are the carbon atoms and its edges the bonds, so each atom has
three bonds and the rings are mostly hexagons with some pentagons and heptagons (rarely four or
eight atoms). The Voronoi edges of a random seed set vary a lot in length (interquartile range
about 0.8 Å after three Lloyd steps), so a short relaxation follows: bond stretching (1.42 Å),
weak angle bending (120°) and a repulsion of unbonded atoms closer than 2.13 Å; it keeps the
ring network. The sheet is built periodic in its box; :func:`graphene` opens it, removes the
atoms inside holes (random blobs) and then those left with fewer than two neighbours.

The structures carry their labels as described in :mod:`etem.simulate.structures`.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.optimize import minimize
from scipy.spatial import Voronoi, cKDTree

from etem.tracker.errors import ConfigError

from ._common import Range, _atoms, _draw, _generator, _hard_core_points, _padding, _prune, _size, _unlabelled

__all__ = ["graphene", "pristine_graphene"]

GRAPHENE_BOND_A = 1.42
_HOLE_MARGIN_A = 3.0  # between holes, and between a hole and the sheet edge
_BLOB_AMPLITUDE = 0.08  # of each of the three harmonics of a hole outline


# --------------------------------------------------------------------------------------------
# Network (periodic in a box)

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
# Sheets


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


def pristine_graphene(size_A: float | tuple[float, float] = (40.0, 40.0), *, padding_A: float = 5.0) -> Atoms:
    """A perfect, periodic honeycomb (bonds of exactly 1.42 Å): one class ("C").

    The reference for position accuracy (Madsen et al. 2018 measure the spread of bond lengths
    from found positions on a pristine sheet). The cell holds whole rectangular unit cells
    (3 x 1.42 Å along x, sqrt(3) x 1.42 Å along y, 4 atoms each) and is periodic in x and y, so
    an exit wave of it, and any crop of that, is a seamless sheet.

    Parameters
    ----------
    size_A
        Smallest size (x, y) of the sheet [Å]; rounded up to whole unit cells.
    padding_A
        Vacuum above and below the sheet [Å].
    """
    box = _size(size_A, "size_A", 10.0)
    padding_A = _padding(padding_A)
    a = GRAPHENE_BOND_A
    cell = np.array([3 * a, np.sqrt(3) * a])
    basis = np.array([[0.0, 0.0], [a, 0.0], [1.5 * a, cell[1] / 2], [2.5 * a, cell[1] / 2]])
    nx, ny = (int(v) for v in np.ceil(box / cell))
    ij = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), -1).reshape(-1, 1, 2)
    xy = (ij * cell + basis + [a / 4, cell[1] / 4]).reshape(-1, 2)
    m = len(xy)
    xyz = np.column_stack([xy, np.full(m, padding_A)])
    atoms = _atoms(["C"] * m, xyz, np.arange(m), np.zeros(m), ("C",), "graphene",
                   {"pristine": True, "cells": [nx, ny]})
    atoms.cell = [nx * cell[0], ny * cell[1], 2 * padding_A]
    atoms.pbc = (True, True, False)
    return atoms


def _graphene_support(rng: np.random.Generator, box_xy: np.ndarray, z_A: float) -> Atoms:
    """A periodic graphene sheet filling ``box_xy`` at height ``z_A``, unlabelled."""
    pos, _ = _periodic_sheet(rng, box_xy, bond_A=GRAPHENE_BOND_A, lloyd_steps=3, relax=True)
    return _unlabelled("C", np.column_stack([pos, np.full(len(pos), z_A)]))
