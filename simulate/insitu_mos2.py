"""In-situ movies of a 2H-MoS2 monolayer flake whose sulfur vacancies hop, form and heal.

The MoS2 counterpart of :mod:`etem.simulate.insitu` (same renderer, same truth tables, same
file format), after the in-situ work on 2D materials at 80 kV:

- **Structure.** A hexagonal 2H-MoS2 flake with zigzag edges (the lattice of
  :func:`etem.simulate.structures.mos2`, a = 3.16 Å, Mo-S bond 2.41 Å) cut to a hexagon of
  inradius ``flake_radius_A``, pruned so that every S column has two Mo neighbours and every
  Mo two S columns, turned by a random angle; optionally on a graphene sheet (a = 2.46 Å,
  random orientation) that fills the field. Seen along [001] the Mo and S columns sit on two
  triangular sublattices, 1.82 Å apart.
- **Sites.** Mo sites (``kind`` ``"core"``: always a one-atom Mo column) and S sites
  (``"surface"``): each holds two S atoms (an ``S2`` column, one above and one below the Mo
  plane), one (an ``S`` column: a sulfur vacancy) or none (no column).
- **Kinetics** (kinetic Monte Carlo, one step per frame, rates per frame). A vacancy (an
  empty S position) tries a hop with probability ``1 - exp(-hop_rate)`` to a random
  neighbouring S site (3.16 Å away) in its own layer: the hop succeeds when that position holds
  an atom, which moves into the vacancy (the vacancy migrates). Then every S atom is sputtered
  with probability ``1 - exp(-sputter_rate)`` (S2 -> S, S -> empty) and every vacancy refilled
  with probability ``1 - exp(-refill_rate)`` (S -> S2, empty -> S; adatoms or residual gas).
  A site takes part in at most one event per step, so every change of a column is one recorded
  event. The vacancies start at the steady state ``sputter / (sputter + refill)`` (per
  probability) unless ``vacancy_fraction`` says otherwise.
- **Images.** :class:`etem.simulate.insitu.FrameRenderer` with abTEM exit waves of the column
  types Mo, S2, S and C (graphene), composed in the independent-column approximation, the
  graphene layer's wave multiplying the flake's; or HAADF-STEM with ``sum Z^1.7`` weights (Mo
  1, S2 0.39, S 0.19, C 0.04 of a Mo atom). HRTEM defaults: 80 kV, Cs -15 µm, a small overfocus
  (negative-Cs imaging: columns bright) and a 20 Å focal spread; an optional focal series.

Truth: ``positions.cls`` is 0 (Mo), 1 (S2) or 2 (S) per column and frame (class names in
``params["classes"]``); an empty S site has no column. ``hops`` are S atoms moving
``from_site`` -> ``to_site`` (the vacancy moves the other way); ``exchanges`` are ``sputter``
(an S site loses an atom) and ``refill`` (gains one); a column's class before and after is in
``positions``. ``sites.intensity`` holds the atoms of each site's column in frame 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from etem.tracker.errors import ConfigError

from .insitu import FrameRenderer, check_movie_args, movie_truth, moved_columns, scene_motion
from .toy import MovieTruth, ToyMovie, _transform

__all__ = ["CLASSES", "MoS2Scene", "mos2_scene", "mos2_movie", "sulfur_kinetics"]

#: Column classes of the truth's ``positions.cls``.
CLASSES = ("Mo", "S2", "S")
_SUBSTRATES = (None, "graphene")
_GRAPHENE_A = 2.46
_MOS2_A = 3.16
_DZ_A = math.sqrt(2.41**2 - _MOS2_A**2 / 3)  # S above and below the Mo plane
_GRAPHENE_BELOW_A = 3.4 + _DZ_A  # the graphene sheet below the Mo plane
#: The column types the frames are made of: atoms as (symbol, height along the beam [Å]).
_COLUMNS = {
    "Mo": [("Mo", 0.0)],
    "S2": [("S", -_DZ_A), ("S", _DZ_A)],
    "S": [("S", _DZ_A)],
    "C": [("C", 0.0)],
}
_SCENE_ARGS = ("n_frames", "shape", "sampling", "flake_radius_A", "vacancy_fraction", "hop_rate", "sputter_rate",
               "refill_rate", "drift_A_per_frame", "rotation_deg_per_frame", "substrate", "seed")
_DEFAULT_RADIUS_A = 16.0
_STEM_BACKGROUND = 0.01  # HAADF signal of the field without columns (detector offset, stray scattering)


@dataclass
class MoS2Scene:
    """What happens in a MoS2 movie, without the images.

    Attributes
    ----------
    truth
        The movie's truth (see the module docstring).
    atoms
        ``[N, n_sites]`` int8: atoms in each site's column in each frame (Mo sites 1, S sites
        0-2).
    is_mo
        ``[n_sites]`` bool: Mo sites (the first ones); the others are S sites.
    s_slots
        ``[N, n_S, 2]`` bool: whether the S sites' upper and lower positions hold an atom
        (S site ``j`` is site ``n_Mo + j``).
    s_neighbours
        For each S site, its neighbouring S sites (S-site indices).
    carbon_yx
        ``[n_C, 2]`` (y, x) [px] of the graphene atoms in frame 0's coordinates (before the
        frame's drift and rotation), or None without a substrate.
    centre
        The image centre (y, x) [px] the scene turns about.
    column_frame, column_yx, column_cls
        Every column in every frame, in the field or not: frame, (y, x) [px] and class.
    params
        The arguments that made it.
    """

    truth: MovieTruth
    atoms: np.ndarray
    is_mo: np.ndarray
    s_slots: np.ndarray
    s_neighbours: list[np.ndarray]
    carbon_yx: np.ndarray | None
    centre: np.ndarray
    column_frame: np.ndarray
    column_yx: np.ndarray
    column_cls: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def class_counts(self) -> np.ndarray:
        """``[N, 4]`` number of Mo, S2 and S columns and empty S sites in each frame."""
        s = self.atoms[:, ~self.is_mo]
        return np.stack([np.full(len(s), int(self.is_mo.sum())), (s == 2).sum(1), (s == 1).sum(1), (s == 0).sum(1)], 1)


def _rate(value: float, name: str) -> float:
    """The per-step probability ``1 - exp(-rate)`` of a rate [1/frame]."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(value, bool) or not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"{name} must be a non-negative rate [1/frame]; got {value!r}.")
    return 1.0 - math.exp(-rate)


def sulfur_kinetics(
    rng: np.random.Generator,
    *,
    n_frames: int,
    neighbours: Sequence[np.ndarray],
    hop_rate: float,
    sputter_rate: float,
    refill_rate: float,
    vacancy_fraction: float | None = None,
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[tuple[int, int, str]]]:
    """Kinetic Monte Carlo of the S sites (see the module docstring).

    Parameters
    ----------
    rng
        Random generator.
    n_frames
        Number of frames N (N - 1 steps).
    neighbours
        For each S site, the indices of its neighbouring S sites.
    hop_rate, sputter_rate, refill_rate
        Rates [1/frame]: hop attempts per vacancy, sputtering per S atom, refilling per vacancy.
        ``2 (1 - exp(-rate))`` must not exceed 1 for the sputter and refill rates (at most one
        event per site and step).
    vacancy_fraction
        Fraction of empty S positions in frame 0 (drawn independently); None for the steady
        state.

    Returns
    -------
    slots
        ``[N, n_S, 2]`` bool: atoms at each S site's upper and lower position.
    hops
        ``(frame, from_site, to_site)``: an S atom moved from ``from_site`` at f-1 to ``to_site``
        at f (S-site indices).
    exchanges
        ``(frame, site, kind)``, kind ``"sputter"`` or ``"refill"``.
    """
    p_h = _rate(hop_rate, "hop_rate")
    p_s = _rate(sputter_rate, "sputter_rate")
    p_r = _rate(refill_rate, "refill_rate")
    if 2 * max(p_s, p_r) > 1:
        raise ConfigError("sputter_rate and refill_rate must be at most ln 2 = 0.69 per frame "
                          f"(at most one event per site and frame); got {sputter_rate!r} and {refill_rate!r}.")
    if vacancy_fraction is None:
        vacancy_fraction = p_s / (p_s + p_r) if p_s + p_r > 0 else 0.0
    if not 0 <= vacancy_fraction <= 1:
        raise ConfigError(f"vacancy_fraction must be between 0 and 1; got {vacancy_fraction!r}.")
    m = len(neighbours)
    slots = np.zeros((n_frames, m, 2), dtype=bool)
    hops: list[tuple[int, int, int]] = []
    exchanges: list[tuple[int, int, str]] = []
    state = rng.random((m, 2)) >= vacancy_fraction
    slots[0] = state
    for f in range(1, n_frames):
        state = state.copy()
        busy = np.zeros(m, dtype=bool)
        vacancies = np.argwhere(~state)
        for s, layer in vacancies[rng.permutation(len(vacancies))]:
            if busy[s] or rng.random() >= p_h or neighbours[s].size == 0:
                continue
            t = neighbours[s][rng.integers(neighbours[s].size)]
            if busy[t] or not state[t, layer]:
                continue
            state[t, layer], state[s, layer] = False, True
            busy[s] = busy[t] = True
            hops.append((f, int(t), int(s)))
        n_atoms = state.sum(1)
        u = rng.random(m)
        sputter = ~busy & (u < n_atoms * p_s)
        refill = ~busy & ~sputter & (u < n_atoms * p_s + (2 - n_atoms) * p_r)
        for s in np.flatnonzero(sputter | refill):
            kind = "sputter" if sputter[s] else "refill"
            choices = np.flatnonzero(state[s] if sputter[s] else ~state[s])
            state[s, choices[rng.integers(choices.size)]] = not sputter[s]
            exchanges.append((f, int(s), kind))
        slots[f] = state
    return slots, hops, exchanges


def _flake(rng: np.random.Generator, radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) [Å, about the flake centre] of the Mo and of the S columns of a hexagonal flake with
    zigzag edges and inradius ``radius_A``, turned by a random angle."""
    from ._common import _prune
    from .structures import columns, mos2

    side = 2 * radius_A / math.cos(math.pi / 6) + 4 * _MOS2_A
    atoms = mos2(rng, size_A=(side, side), vacancy_fraction={}, padding_A=0.0)
    cols = columns(atoms, by="label")
    xy = cols[["x_A", "y_A"]].to_numpy()
    xy = xy - (xy.min(0) + xy.max(0)) / 2
    is_mo = (cols["label"] == "Mo").to_numpy()
    # zigzag edges run along the lattice rows (0, 60 and 120 degrees from x)
    normals = np.array([[math.cos(a), math.sin(a)] for a in np.deg2rad([30.0, 90.0, 150.0])])
    keep = np.all(np.abs(xy @ normals.T) <= radius_A, axis=1)
    mo, s = np.flatnonzero(is_mo), np.flatnonzero(~is_mo)
    pairs = cKDTree(xy[mo]).query_ball_point(xy[s], _MOS2_A / math.sqrt(3) + 0.1)
    bonds = np.array([(s[k], mo[j]) for k, row in enumerate(pairs) for j in row], dtype=np.int64).reshape(-1, 2)
    keep = _prune(keep, bonds, 2)
    theta = rng.uniform(0, np.pi / 3)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    xy = xy @ rot.T
    return xy[keep & is_mo], xy[keep & ~is_mo]


def _graphene(rng: np.random.Generator, half_A: float) -> np.ndarray:
    """(x, y) [Å] of a graphene sheet of random orientation and offset covering the square
    ``[-half_A, half_A]^2``."""
    a = _GRAPHENE_A
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * math.sqrt(3) / 2])
    basis = np.array([[0.0, 0.0], (a1 + a2) / 3])
    m = int(math.ceil(half_A * 1.5 / a)) + 2
    ij = np.stack(np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1), indexing="ij"), -1).reshape(-1, 2)
    cells = ij @ np.stack([a1, a2]) + rng.uniform(0, 1, 2) @ np.stack([a1, a2])
    xy = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    theta = rng.uniform(0, np.pi / 3)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    xy = xy @ rot.T
    return xy[np.all(np.abs(xy) <= half_A, axis=1)]


def mos2_scene(
    *,
    n_frames: int = 40,
    shape: tuple[int, int] = (256, 256),
    sampling: float = 0.2,
    flake_radius_A: float | None = None,
    vacancy_fraction: float | None = None,
    hop_rate: float = 0.05,
    sputter_rate: float = 0.003,
    refill_rate: float = 0.03,
    drift_A_per_frame: tuple[float, float] = (0.02, 0.03),
    rotation_deg_per_frame: float = 0.01,
    substrate: Literal["graphene"] | None = None,
    seed: int = 0,
) -> MoS2Scene:
    """The flake, its kinetics and its motion: everything of :func:`mos2_movie` but the images
    (cheap: a long kinetics run costs no imaging).

    Parameters
    ----------
    n_frames, shape, sampling
        Number of frames, frame size (H, W) [px], pixel size [Å/px].
    flake_radius_A
        Inradius of the hexagonal flake [Å] (edge to centre); the flake must stay in the field.
        None: 16 Å, or the largest that stays in a smaller field.
    vacancy_fraction
        Empty S positions in frame 0; None for the kinetics' steady state.
    hop_rate, sputter_rate, refill_rate
        See :func:`sulfur_kinetics` [1/frame].
    drift_A_per_frame, rotation_deg_per_frame
        Motion of the specimen [Å/frame, degrees/frame about the image centre].
    substrate
        None (a free-standing flake) or ``"graphene"``.
    seed
        Seed of every random choice; the images' noise has its own stream, so the imaging
        options never change the scene.
    """
    check_movie_args(n_frames=n_frames, sampling=sampling, dose_per_frame=0.0, mode="stem", shape=shape)
    if substrate not in _SUBSTRATES:
        raise ConfigError(f"substrate must be None (a free-standing flake) or 'graphene'; got {substrate!r}.")
    centre, drift, rotation_deg = scene_motion(n_frames, shape, sampling, drift_A_per_frame, rotation_deg_per_frame)
    # room for the flake [px]: half the field, less 1 Å, half the drift and the turn of the corners
    room = (min(shape) - 1) / 2 - 1.0 / sampling - np.abs(drift[-1]).max() / 2 \
        - np.hypot(*shape) / 2 * np.deg2rad(abs(rotation_deg[-1]))
    largest = room * sampling * math.cos(math.pi / 6)  # the inradius of a hexagon whose corners just fit
    if flake_radius_A is None:
        if largest < _MOS2_A:
            raise ConfigError(f"a {shape[0]}x{shape[1]} px field at {sampling:g} Å/px with this drift holds no flake "
                              f"of the smallest radius, {_MOS2_A} Å; use a larger field.")
        flake_radius_A = min(_DEFAULT_RADIUS_A, math.floor(2 * largest) / 2)
    if not flake_radius_A >= _MOS2_A:
        raise ConfigError(f"flake_radius_A must be at least {_MOS2_A} Å; got {flake_radius_A!r}.")
    params = {k: v for k, v in locals().items() if k in _SCENE_ARGS}
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    r_struct, r_kin, r_sub, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    n = n_frames

    mo_xy, s_xy = _flake(r_struct, flake_radius_A)
    xy = np.concatenate([mo_xy, s_xy])
    n_mo, n_s = len(mo_xy), len(s_xy)
    if np.abs(xy).max() / sampling > room:
        raise ConfigError(f"a flake of radius {flake_radius_A:g} Å does not stay in a {shape[0]}x{shape[1]} px "
                          f"field at {sampling:g} Å/px with this drift; use flake_radius_A of at most "
                          f"{math.floor(2 * largest) / 2:g} Å, or a larger field.")
    origin = centre - drift[-1] / 2  # the flake is centred half-way through the movie
    site_yx = origin + xy[:, ::-1] / sampling

    s_tree = cKDTree(s_xy)
    s_nb = [np.array([j for j in row if j != k], dtype=int)
            for k, row in enumerate(s_tree.query_ball_point(s_xy, _MOS2_A * 1.1))]
    slots, hops_s, ex_s = sulfur_kinetics(r_kin, n_frames=n, neighbours=s_nb, hop_rate=hop_rate,
                                          sputter_rate=sputter_rate, refill_rate=refill_rate,
                                          vacancy_fraction=vacancy_fraction)
    atoms = np.concatenate([np.ones((n, n_mo), np.int8), slots.sum(2).astype(np.int8)], axis=1)
    occupancy = atoms > 0
    f_idx, s_idx, yx = moved_columns(site_yx, occupancy, centre, drift, rotation_deg)
    n_at = atoms[f_idx, s_idx]
    cls = np.where(s_idx < n_mo, 0, np.where(n_at == 2, 1, 2))

    carbon = None
    if substrate == "graphene":
        half = (np.hypot(*shape) / 2 * sampling + np.abs(drift).max() * sampling + 8.0)
        carbon = origin + _graphene(r_sub, half)[:, ::-1] / sampling

    truth = movie_truth(
        shape=shape, occupancy=occupancy, f_idx=f_idx, s_idx=s_idx, yx=yx, cls=cls, drift=drift,
        rotation_deg=rotation_deg,
        sites={"site": np.arange(n_mo + n_s), "y": site_yx[:, 0], "x": site_yx[:, 1],
               "kind": np.where(np.arange(n_mo + n_s) < n_mo, "core", "surface"),
               "intensity": atoms[0].astype(float)},
        hops=[(f, a + n_mo, b + n_mo) for f, a, b in hops_s],
        exchanges=[(f, s + n_mo, kind) for f, s, kind in ex_s])
    params["classes"] = list(CLASSES)
    params["material"] = "mos2"  # what is in view (on graphene or not), as a microscope file may say
    return MoS2Scene(truth=truth, atoms=atoms, is_mo=np.arange(n_mo + n_s) < n_mo, s_slots=slots, s_neighbours=s_nb,
                     carbon_yx=carbon, centre=centre, column_frame=f_idx, column_yx=yx, column_cls=cls,
                     params=params)


def mos2_movie(
    *,
    n_frames: int = 40,
    shape: tuple[int, int] = (256, 256),
    sampling: float = 0.2,
    flake_radius_A: float | None = None,
    vacancy_fraction: float | None = None,
    hop_rate: float = 0.05,
    sputter_rate: float = 0.003,
    refill_rate: float = 0.03,
    drift_A_per_frame: tuple[float, float] = (0.02, 0.03),
    rotation_deg_per_frame: float = 0.01,
    substrate: Literal["graphene"] | None = None,
    dose_per_frame: float = 300.0,
    mode: Literal["hrtem", "stem"] = "hrtem",
    energy_eV: float = 80e3,
    defocus_A: float = -90.0,
    Cs_A: float = -15e4,
    focal_spread_A: float = 20.0,
    focal_offsets_A: Sequence[float] | None = None,
    probe_semiangle_mrad: float = 30.0,
    blur_A: float = 0.2,
    mtf: tuple[float, float, float] = (0.05, 0.5, 2.5),
    fps: float = 25.0,
    seed: int = 0,
) -> ToyMovie:
    """An in-situ movie of a MoS2 flake with hopping, forming and healing sulfur vacancies.

    Parameters as in :func:`mos2_scene`, and:

    dose_per_frame
        Electron dose per image [e/Å²] (a focal series of F images gives the specimen F times
        this per frame).
    mode
        ``"hrtem"`` (exit waves through the objective lens) or ``"stem"`` (incoherent HAADF).
    energy_eV, defocus_A, Cs_A, focal_spread_A
        HRTEM microscope [eV, Å]: by default 80 kV (below the knock-on threshold of Mo, near
        that of S) with negative-Cs imaging, where the columns show bright.
    focal_offsets_A
        None for one image per frame; F defocus offsets [Å] (e.g. ``(-100, 0, 100)``) for a
        focal series, frames ``[N, F, H, W]``. In STEM the offsets defocus the probe.
    probe_semiangle_mrad
        STEM probe convergence semiangle [mrad].
    blur_A, mtf
        Image blur [Å] and detector MTF (c1, c2, c3).
    fps
        Frame rate [1/s]: frame i is taken at i/fps s; the rates are per frame.

    Returns
    -------
    ToyMovie
        ``frames`` ``[N, H, W]`` (or ``[N, F, H, W]``) float32 counts, ``truth``, ``params``.
    """
    check_movie_args(n_frames=n_frames, sampling=sampling, dose_per_frame=dose_per_frame, mode=mode, shape=shape,
                     fps=fps)
    args = dict(locals())
    scene = mos2_scene(**{k: args[k] for k in _SCENE_ARGS})
    params = {**scene.params, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()
                                 if k not in _SCENE_ARGS}}
    r_noise = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])
    columns = {k: v for k, v in _COLUMNS.items() if k != "C" or scene.carbon_yx is not None}
    renderer = FrameRenderer(
        columns, shape=shape, sampling=sampling, mode=mode, energy_eV=energy_eV, dose_per_frame=dose_per_frame,
        defocus_A=defocus_A, Cs_A=Cs_A, focal_spread_A=focal_spread_A, focal_offsets_A=focal_offsets_A,
        probe_semiangle_mrad=probe_semiangle_mrad, blur_A=blur_A, mtf=mtf, stem_background=_STEM_BACKGROUND,
        generator=torch.Generator().manual_seed(int(r_noise.integers(2**62))))
    t = scene.truth
    f_idx, yx, names = scene.column_frame, scene.column_yx, np.array(CLASSES)[scene.column_cls]
    frames = []
    for f in range(n_frames):
        sel = f_idx == f
        layers = [(yx[sel], names[sel])]
        if scene.carbon_yx is not None:
            c = _transform(scene.carbon_yx, scene.centre, np.deg2rad(t.rotation_deg[f]), t.drift[f])
            layers.append((c, np.full(len(c), "C")))
        frames.append(renderer.render(layers))
    return ToyMovie(frames=np.stack(frames), sampling=float(sampling), truth=t, params=params)
