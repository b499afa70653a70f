"""Helpers shared by the structure generators of :mod:`etem.simulate.structures` and
:mod:`etem.simulate.graphene`: random parameters (a number or a ``(low, high)`` range), checks
of sizes and padding, labelled :class:`ase.Atoms`, random points with a minimum distance, and
pruning of under-bonded atoms from a bond network.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from etem.tracker.errors import ConfigError

#: A number, or a ``(low, high)`` range to draw from uniformly.
Range = float | tuple[float, float]


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
