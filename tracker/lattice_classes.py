"""Species from the lattice: in a honeycomb dichalcogenide seen along its axis (MoS2 [001]) the
metal columns make one sublattice and the chalcogen columns the other, so which sublattice a
column is on says whether it is metal or chalcogen more surely than a network can tell from its
contrast. The network's classes decide only what the sublattice leaves open (S2 or S).

On the simulated MoS2 HRTEM movie `mos2-unet` gives a quarter of the Mo and S2 columns each
other's class; with the sublattice, 4 % of all columns are given a wrong class
(docs/guides/statistics.md). An antisite (a metal atom on a chalcogen site) is given the
chalcogen's class: switch this off to look for antisites.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, choice_error
from .intensity import psi3
from .locate import LATTICE_CLASSES
#: honeycomb materials: (metal classes, the chalcogen class a metal-classed column on the
#: chalcogen sublattice is given: the fuller column, which the network mistakes for the metal)
_SPECIES: dict[str, tuple[tuple[str, ...], str]] = {"mos2": (("Mo",), "S2")}
#: which sublattice is the metal's is judged from the columns within about this many
#: neighbour distances (more than the sublattice of intensities uses: a network's votes are
#: noisier than ADF intensities)
REACH_NN = 8.0


def lattice_species(card: Mapping[str, Any] | None) -> tuple[np.ndarray, int] | None:
    """For a model that classes the species of a honeycomb material (its card's ``use``
    materials and ``class_names``): which of its classes are metal (a bool per class) and the
    class given to a metal-classed column on the chalcogen sublattice. None for any other
    model (or none)."""
    if not card or card.get("classes_by") != "species":
        return None
    names = list(card.get("class_names") or [])
    for material in (card.get("use") or {}).get("materials") or []:
        spec = _SPECIES.get(str(material).lower())
        if spec and spec[1] in names and any(m in names for m in spec[0]):
            return np.array([n in spec[0] for n in names]), names.index(spec[1])
    return None


def resolve(choice: str, card: Mapping[str, Any] | None) -> tuple[np.ndarray, int] | None:
    """What ``[locate] lattice_classes`` comes to for a locator with model card ``card``:
    ``"auto"`` and ``"on"``: :func:`lattice_species` (``"on"`` refuses a model it does not
    fit, with a ConfigError); ``"off"``: None."""
    if choice not in LATTICE_CLASSES:
        raise choice_error("lattice_classes", choice, LATTICE_CLASSES)
    if choice == "off":
        return None
    species = lattice_species(card)
    if species is None and choice == "on":
        name = (card or {}).get("name") or "the classical locator"
        raise ConfigError(f"lattice_classes = \"on\" needs a model that classes the species of a honeycomb "
                          f"material (mos2-unet, mos2-msdnet); {name} does not.")
    return species


def lattice_classes(table: pd.DataFrame, species: tuple[np.ndarray, int]) -> np.ndarray:
    """Each column's class with its sublattice's species (one frame; ``y, x, cls``): a column
    on the metal sublattice is the metal, one on the chalcogen sublattice keeps its class
    unless that is a metal's (then the fuller chalcogen class), an undecided column (an edge, a
    defect, too few neighbours) keeps its class. Which sublattice is the metal's is judged
    about each column from the network's classes (:func:`metal_sublattice`)."""
    metal, fallback = species
    cls = table["cls"].to_numpy().astype(np.int64)
    if len(cls) == 0:
        return cls
    is_metal = metal[np.clip(cls, 0, len(metal) - 1)] & (cls >= 0) & (cls < len(metal))
    sub = metal_sublattice(table[["y", "x"]].to_numpy(np.float64), is_metal.astype(np.float64))
    out = cls.copy()
    out[(sub == 0) & ~is_metal] = int(np.flatnonzero(metal)[0])
    out[(sub == 1) & is_metal] = fallback
    return out


def metal_sublattice(yx: np.ndarray, score: np.ndarray, *, reach_nn: float = REACH_NN,
                     min_order: float = 0.5) -> np.ndarray:
    """The sublattice of each point of a honeycomb (``[N, 2]``): 0 where ``score`` (a vote
    for the metal per point) is higher, 1 on the other, -1 undecided. A point's two
    sublattices differ in the sign of ``psi_3`` (:func:`etem.tracker.intensity.psi3`); the
    metal's is the direction of the covariance of ``psi_3`` and the score over the points
    about it, a window of about ``reach_nn`` neighbour distances either side (box sums on a
    grid of cells one neighbour distance wide: the cost grows with the points, not with the
    window). Undecided: fewer than two neighbours, fewer than 6 points in the window, or a
    ``psi_3`` less than ``min_order`` along the covariance (an edge, a defect)."""
    n = len(yx)
    out = np.full(n, -1, np.int64)
    found = psi3(yx)
    if found is None:
        return out
    psi, ok, _, nn = found
    k = max(1, int(np.ceil(reach_nn)))  # window half-width, in cells
    cell = ((yx - yx.min(axis=0)) // nn).astype(np.int64)
    h, w = int(cell[:, 0].max()) + 2 * k + 2, int(cell[:, 1].max()) + 2 * k + 2
    at = (cell[ok, 0] + k + 1) * w + cell[ok, 1] + k + 1
    y0, x0 = cell[:, 0], cell[:, 1]
    y1, x1 = y0 + 2 * k + 1, x0 + 2 * k + 1

    def box(values: np.ndarray) -> np.ndarray:  # each point's window sum of ``values`` over the ok points
        c = np.bincount(at, values[ok], h * w).reshape(h, w).cumsum(0).cumsum(1)
        return c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0]

    s = np.asarray(score, np.float64)
    count, total = box(np.ones(n)), box(s)
    cov = (box(s * psi.real) - total / np.maximum(count, 1) * box(psi.real)) \
        + 1j * (box(s * psi.imag) - total / np.maximum(count, 1) * box(psi.imag))
    size = np.abs(cov)
    own = (psi * np.conj(cov)).real / np.where(size > 0, size, 1.0)
    decided = ok & (size > 1e-9) & (count >= 6) & (np.abs(own) >= min_order)
    out[decided] = np.where(own[decided] > 0, 0, 1)
    return out
