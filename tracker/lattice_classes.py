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
from .intensity import honeycomb_sublattices

CHOICES = ("auto", "on", "off")
#: honeycomb materials: (metal classes, the chalcogen class a metal-classed column on the
#: chalcogen sublattice is given: the fuller column, which the network mistakes for the metal)
_SPECIES: dict[str, tuple[tuple[str, ...], str]] = {"mos2": (("Mo",), "S2")}
#: the lattice's direction, and which sublattice is the metal's, are judged from the columns
#: within this many neighbour distances (more than the sublattice of intensities uses: the
#: network's votes are noisier than ADF intensities; 4 gave 8 % wrong classes, 8 gave 4 %)
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
    if choice not in CHOICES:
        raise choice_error("lattice_classes", choice, CHOICES)
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
    about each column from the network's classes within :data:`REACH_NN` neighbour distances."""
    metal, fallback = species
    cls = table["cls"].to_numpy().astype(np.int64)
    if len(cls) == 0:
        return cls
    is_metal = metal[np.clip(cls, 0, len(metal) - 1)] & (cls >= 0) & (cls < len(metal))
    sub = honeycomb_sublattices(table, score=is_metal.astype(np.float64), reach_nn=REACH_NN)
    out = cls.copy()
    out[(sub == 0) & ~is_metal] = int(np.flatnonzero(metal)[0])
    out[(sub == 1) & is_metal] = fallback
    return out
