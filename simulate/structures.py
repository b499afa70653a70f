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

- **Graphene-like sheets** (:func:`graphene`, defined in :mod:`etem.simulate.graphene`). The
  carbon atoms are the vertices of the Voronoi diagram of Lloyd-smoothed Poisson-disc seeds
  at the density of graphene's hexagons, its edges the bonds, relaxed towards 1.42 Å bonds
  and 120° angles; holes are random blobs whose atoms are removed, and atoms left with fewer
  than two neighbours are removed.
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
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from etem.tracker.errors import ConfigError, choice_error

from ._common import Range, _atoms, _draw, _generator, _hard_core_points, _padding, _prune, _size, _unlabelled
from .graphene import GRAPHENE_BOND_A, _graphene_support, graphene, pristine_graphene  # noqa: F401  (GRAPHENE_BOND_A: re-exported)

__all__ = ["graphene", "pristine_graphene", "au_nanoparticle", "mos2", "columns", "Range"]

AU_LATTICE_A = 4.08
MOS2_LATTICE_A = 3.16
MOS2_BOND_A = 2.41  # Mo-S
_CARBON_DENSITY = 0.100  # amorphous carbon, atoms per Å³ (about 2.0 g/cm³)
_CARBON_MIN_DIST_A = 1.4
_AU_SUPPORT_GAP_A = 2.5  # lowest Au atom to the top of the support
_MOS2_GRAPHENE_GAP_A = 3.4  # lower S layer to the graphene sheet
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
    # S columns need two Mo neighbours and Mo two S columns (of three in the bulk).
    keep = _prune(np.ones(len(s) + len(mo), dtype=bool), bonds, 2)
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
