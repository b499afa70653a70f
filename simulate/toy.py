"""A fast synthetic in-situ movie with known truth: Gaussian columns of a projected nanoparticle.

This is the image model behind ``etem demo`` and the tracker's end-to-end tests. It is not a
physical image simulation (that is the exit-wave simulator's job); it gives a movie whose every
column position, site occupancy and hop event is known, in well under a second.

Model
-----
- **Structure.** Columns sit on a hexagonal lattice of spacing ``lattice_A`` with a random
  in-plane orientation. The particle is a disc of radius ``particle_radius_A`` cut by six
  facets along the close-packed rows, so its outline is faceted with rounded corners. Its
  outermost layer of lattice sites and the first shell of sites outside it are *surface*
  sites, whose occupancy changes; the sites inside are *core* sites, occupied in every frame.
- **Kinetics.** Surface sites have binding energies (in units of kT): lower by a bond energy
  per interior neighbour, plus random disorder, so the particle's own outer layer is mostly
  full, the shell mostly empty, and every site in between. Between consecutive frames every
  surface atom tries a hop to a random neighbouring surface site with probability
  ``1 - exp(-hop_rate)``; the hop needs the target empty and passes a Metropolis test on the
  energy difference. With ``exchange_rate`` a site
  also adsorbs or desorbs an atom (with the site's equilibrium odds, so the coverage stays put).
  A site takes part in at most one event per frame step, so every occupancy flip is accounted
  for: flips = 2 x hops + exchanges.
- **Image.** A sum of Gaussian columns (peak ~1 for core columns, ~0.7 for the shorter surface
  columns, +-10 % per column) on a faint, smooth amorphous background. The scene drifts by
  ``drift_A_per_frame`` and turns by ``rotation_deg_per_frame`` (about the image centre) each
  frame. Counts are
  Poisson with mean ``dose_per_frame * sampling**2 * (intensity + background)``;
  ``contrast="dark"`` gives dark columns on a bright background instead.

Random streams for structure, kinetics, column intensities, background and shot noise are
independent children of ``seed``: changing the dose changes only the noise, so a dose sweep
keeps the same truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import ndimage

if TYPE_CHECKING:
    from .movie_io import FORMAT, load_movie, save_movie  # noqa: F401  (loaded by __getattr__ below)


#: Column dtypes of the truth tables (kept exactly through save/load).
_TABLES: dict[str, dict[str, str]] = {
    "sites": {"site": "int64", "y": "float64", "x": "float64", "kind": "str", "intensity": "float64"},
    "positions": {"frame": "int64", "y": "float64", "x": "float64", "site": "int64", "cls": "int64"},
    "hops": {"frame": "int64", "from_site": "int64", "to_site": "int64"},
    "exchanges": {"frame": "int64", "site": "int64", "kind": "str"},
}

# Image-model constants (dimensionless intensities, lengths in Å).
_CORE_INTENSITY = 1.0
_SURFACE_INTENSITY = 0.7
_INTENSITY_SPREAD = 0.10
_BACKGROUND_LEVEL = 0.20
_BACKGROUND_FINE = (1.5, 0.05)  # (smoothing length [Å], standard deviation) of the support texture
_BACKGROUND_COARSE = (8.0, 0.04)
_DARK_DEPTH = 0.7
# Site energies [kT] of surface sites: -_BOND_ENERGY per interior neighbour plus Gaussian disorder.
_BOND_ENERGY = 0.7
_ENERGY_DISORDER = 0.5


def _table(name: str, data: dict[str, Any] | None = None) -> pd.DataFrame:
    """A truth table with its fixed columns and dtypes (empty when ``data`` is None)."""
    cols = _TABLES[name]
    data = data or {}
    return pd.DataFrame(
        {c: pd.Series(np.asarray(data.get(c, [])), dtype=t) for c, t in cols.items()}
    )


@dataclass
class MovieTruth:
    """The ground truth of a toy movie.

    Attributes
    ----------
    sites
        One row per lattice site: ``site`` (index into ``occupancy``'s columns), ``y``, ``x``
        [px, frame 0's coordinates], ``kind`` (``'core'`` or ``'surface'``), ``intensity``
        (column peak, normalised).
    occupancy
        ``[N, n_sites]`` bool: whether site holds a column in each frame. Core sites are always
        occupied.
    positions
        ``frame, y, x, site, cls``: the true pixel position of every occupied column in every
        frame (drift, rotation and jitter applied), for columns whose centre lies in the frame.
        ``cls`` is 0 (one species).
    drift
        ``[N, 2]`` (dy, dx) [px] of each frame relative to frame 0 (translation of the image
        centre).
    rotation_deg
        ``[N]`` rotation [degrees] of each frame relative to frame 0, about the image centre.
    hops
        ``frame, from_site, to_site``: a hop at frame f moved the atom at ``from_site`` in frame
        f-1 to ``to_site`` in frame f.
    exchanges
        ``frame, site, kind``: adsorption (``'adsorb'``, empty at f-1, occupied at f) or
        desorption (``'desorb'``) events.
    """

    sites: pd.DataFrame
    occupancy: np.ndarray
    positions: pd.DataFrame
    drift: np.ndarray
    rotation_deg: np.ndarray
    hops: pd.DataFrame
    exchanges: pd.DataFrame

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.occupancy.shape[0])

    def site_occupancy(self) -> np.ndarray:
        """Fraction of frames each site is occupied, ``[n_sites]``."""
        if self.n_frames == 0:
            return np.zeros(self.occupancy.shape[1])
        return self.occupancy.mean(axis=0)

    def site_event_rate(self) -> np.ndarray:
        """Occupied/empty flips per frame step of each site, ``[n_sites]`` (flips / (N - 1))."""
        if self.n_frames < 2:
            return np.zeros(self.occupancy.shape[1])
        flips = np.diff(self.occupancy.astype(np.int8), axis=0) != 0
        return flips.sum(axis=0) / (self.n_frames - 1)

    def flips(self) -> pd.DataFrame:
        """Every occupancy flip: ``frame, site, kind`` (``'on'``: empty at f-1, occupied at f;
        ``'off'``: the reverse), sorted by frame and site."""
        d = np.diff(self.occupancy.astype(np.int8), axis=0)
        f, s = np.nonzero(d)
        kind = np.where(d[f, s] > 0, "on", "off")
        return pd.DataFrame(
            {
                "frame": pd.Series(f + 1, dtype="int64"),
                "site": pd.Series(s, dtype="int64"),
                "kind": pd.Series(kind, dtype="str"),
            }
        )

    def site_table(self) -> pd.DataFrame:
        """``sites`` with the true ``occupancy`` and ``event_rate`` of each site added; the
        shape of the sites table a tracker reports, so the truth can be scored against itself."""
        out = self.sites.copy()
        out["occupancy"] = self.site_occupancy()
        out["event_rate"] = self.site_event_rate()
        return out


@dataclass
class ToyMovie:
    """A synthetic movie and its truth.

    Attributes
    ----------
    frames
        ``[N, H, W]`` float32 counts.
    sampling
        Pixel size [Å/px].
    truth
        What is in the movie.
    params
        The arguments of :func:`make_movie` that made it.
    """

    frames: np.ndarray
    sampling: float
    truth: MovieTruth
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def fps(self) -> float | None:
        """Frame rate [1/s] (None for a movie made before movies had one)."""
        fps = self.params.get("fps")
        return float(fps) if fps else None

    @property
    def times(self) -> np.ndarray | None:
        """Acquisition time of each frame [s], i/fps (None without a frame rate)."""
        return None if self.fps is None else np.arange(len(self)) / self.fps


# --------------------------------------------------------------------------------------------
# Structure


def _structure(
    rng: np.random.Generator,
    *,
    lattice_A: float,
    radius_A: float,
    n_adatom_sites: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Site positions [Å, relative to the particle centre] (core sites first), a core mask,
    the number of interior (never surface) neighbours of each site, and each surface site's
    neighbouring surface sites (indices counted from the first surface site)."""
    a = lattice_A
    a1 = np.array([0.0, a])  # (y, x)
    a2 = np.array([a * np.sqrt(3) / 2, a / 2])
    n = int(np.ceil(radius_A / a * 1.3)) + 3
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    ij = np.stack([i.ravel(), j.ravel()], axis=1)
    origin = rng.uniform(0, 1, 2) @ np.stack([a1, a2])  # lattice offset within one cell
    pts = ij @ np.stack([a1, a2]) + origin
    # Particle: a disc cut by six facets along the close-packed rows (normals at 30 + 60k deg).
    phi = np.deg2rad(30 + 60 * np.arange(6))
    normals = np.stack([np.sin(phi), np.cos(phi)], axis=1)
    cuts = radius_A * rng.uniform(0.86, 0.94, 6)
    inside = (np.hypot(pts[:, 0], pts[:, 1]) <= radius_A) & np.all(pts @ normals.T <= cuts, axis=1)
    # Nearest neighbours (exactly one spacing apart), looked up through the (i, j) index grid.
    nn = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, -1), (-1, 1))
    grid = {(int(p), int(q)): k for k, (p, q) in enumerate(ij)}
    neighbours = [[grid.get((p + dp, q + dq), -1) for dp, dq in nn] for p, q in ij]
    neighbours = [[k for k in row if k >= 0] for row in neighbours]
    n_inside_nb = np.array([inside[row].sum() for row in neighbours])
    # Surface sites: the particle's outermost layer and the first shell outside it.
    outer = inside & (n_inside_nb < 6)
    shell = ~inside & (n_inside_nb > 0)
    interior = inside & ~outer
    n_interior_nb = np.array([interior[row].sum() for row in neighbours])
    surf_idx = np.flatnonzero(outer | shell)
    if n_adatom_sites is not None:
        if not 1 <= n_adatom_sites <= surf_idx.size:
            raise ValueError(
                f"n_adatom_sites must be between 1 and {surf_idx.size} (the surface sites of a "
                f"{radius_A:g} Å particle on a {a:g} Å lattice); got {n_adatom_sites}. "
                "Use None for all of them."
            )
        # A contiguous arc of the surface, starting at a random angle; the particle's outer
        # layer outside the arc stays fixed, the shell outside it bare.
        ang = np.arctan2(pts[surf_idx, 0], pts[surf_idx, 1])
        ang = np.mod(ang - rng.uniform(-np.pi, np.pi), 2 * np.pi)
        surf_idx = np.sort(surf_idx[np.argsort(ang, kind="stable")[:n_adatom_sites]])
    is_surf = np.zeros(len(pts), dtype=bool)
    is_surf[surf_idx] = True
    core_idx = np.flatnonzero(inside & ~is_surf)
    keep = np.concatenate([core_idx, surf_idx])
    n_core = core_idx.size
    remap = -np.ones(len(pts), dtype=int)
    remap[keep] = np.arange(keep.size)
    surf_nb = [
        np.array([remap[m] - n_core for m in neighbours[k] if remap[m] >= n_core], dtype=int)
        for k in surf_idx
    ]
    # Random in-plane orientation of the whole particle.
    theta = rng.uniform(0, np.pi / 3)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts[keep] @ rot.T, np.arange(keep.size) < n_core, n_interior_nb[keep], surf_nb


# --------------------------------------------------------------------------------------------
# Kinetics


def _kinetics(
    rng: np.random.Generator,
    *,
    n_frames: int,
    energies: np.ndarray,
    neighbours: list[np.ndarray],
    coverage: float,
    hop_rate: float,
    exchange_rate: float,
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[tuple[int, int, str]]]:
    """Occupancy ``[N, n_surface]`` of the surface sites, hops (frame, from, to) and exchanges
    (frame, site, kind), in surface-site indices."""
    m = energies.size
    # Chemical potential giving the requested mean coverage at equilibrium (bisection).
    lo, hi = energies.min() - 20, energies.max() + 20
    for _ in range(60):
        mu = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(energies - mu))) < coverage:
            lo = mu
        else:
            hi = mu
    f_eq = 1 / (1 + np.exp(energies - mu))
    occ = np.zeros((n_frames, m), dtype=bool)
    if n_frames == 0:
        return occ, [], []
    state = rng.random(m) < f_eq
    occ[0] = state
    hops: list[tuple[int, int, int]] = []
    exchanges: list[tuple[int, int, str]] = []
    p_hop = 1 - np.exp(-hop_rate)
    p_ex = 1 - np.exp(-exchange_rate)
    for f in range(1, n_frames):
        state = state.copy()
        busy = np.zeros(m, dtype=bool)
        for s in rng.permutation(np.flatnonzero(state)):
            if busy[s] or rng.random() >= p_hop or neighbours[s].size == 0:
                continue
            t = neighbours[s][rng.integers(neighbours[s].size)]
            if state[t] or busy[t]:
                continue
            if rng.random() < np.exp(-(energies[t] - energies[s])):
                state[s], state[t] = False, True
                busy[s] = busy[t] = True
                hops.append((f, int(s), int(t)))
        if p_ex > 0:
            u = rng.random(m)
            for s in np.flatnonzero(~busy):
                if state[s] and u[s] < p_ex * (1 - f_eq[s]):
                    state[s] = False
                    exchanges.append((f, int(s), "desorb"))
                elif not state[s] and u[s] < p_ex * f_eq[s]:
                    state[s] = True
                    exchanges.append((f, int(s), "adsorb"))
        occ[f] = state
    return occ, hops, exchanges


# --------------------------------------------------------------------------------------------
# Image


def _render_columns(
    y: np.ndarray, x: np.ndarray, amp: np.ndarray, frame: np.ndarray, shape: tuple[int, int, int], sigma_px: float
) -> np.ndarray:
    """Sum of Gaussians of peak ``amp`` at (``frame``, ``y``, ``x``), only near each column."""
    n, h, w = shape
    r = int(np.ceil(4 * sigma_px))
    k = np.arange(2 * r + 2)
    iy = np.floor(y).astype(np.int64)[:, None] - r + k  # [n_col, K]
    ix = np.floor(x).astype(np.int64)[:, None] - r + k
    gy = np.exp(-((iy - y[:, None]) ** 2) / (2 * sigma_px**2))
    gx = np.exp(-((ix - x[:, None]) ** 2) / (2 * sigma_px**2))
    patch = amp[:, None, None] * gy[:, :, None] * gx[:, None, :]
    inside = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]
    flat = (frame.astype(np.int64)[:, None, None] * h + iy[:, :, None]) * w + ix[:, None, :]
    img = np.bincount(flat[inside], weights=patch[inside], minlength=n * h * w)
    return img.reshape(n, h, w)


def _background(
    rng: np.random.Generator, shape: tuple[int, int], margin: int, sampling: float
) -> np.ndarray:
    """A faint amorphous support on a canvas ``margin`` px larger on every side."""
    h, w = shape[0] + 2 * margin, shape[1] + 2 * margin
    bg = np.full((h, w), _BACKGROUND_LEVEL)
    for length_A, std in (_BACKGROUND_FINE, _BACKGROUND_COARSE):
        t = ndimage.gaussian_filter(rng.standard_normal((h, w)), length_A / sampling, mode="wrap")
        bg += std * t / (t.std() or 1.0)
    return np.clip(bg, 0.02, None)


def _move_canvas(
    canvas: np.ndarray, margin: int, centre: np.ndarray, angle_rad: float, shift: np.ndarray, *, out: np.ndarray
) -> None:
    """Sample the background canvas as seen in a frame turned by ``angle_rad`` and shifted by
    ``shift`` [px] (bilinear; the background is smooth)."""
    h, w = out.shape
    if angle_rad == 0:
        # Pure translation: output pixel p shows canvas point p - shift + margin.
        oy, ox = margin - shift[0], margin - shift[1]
        y0, x0 = int(np.floor(oy)), int(np.floor(ox))
        fy, fx = oy - y0, ox - x0
        c = canvas[y0 : y0 + h + 1, x0 : x0 + w + 1]
        out[:] = ((1 - fy) * (1 - fx)) * c[:-1, :-1] + ((1 - fy) * fx) * c[:-1, 1:]
        out += (fy * (1 - fx)) * c[1:, :-1] + (fy * fx) * c[1:, 1:]
        return
    # Output pixel p shows canvas point R^-1 (p - centre - shift) + centre + margin.
    inv = np.array([[np.cos(angle_rad), -np.sin(angle_rad)], [np.sin(angle_rad), np.cos(angle_rad)]])
    offset = centre + margin - inv @ (centre + shift)
    ndimage.affine_transform(canvas, inv, offset=offset, output_shape=(h, w), output=out, order=1, mode="nearest")


def _transform(
    yx: np.ndarray, centre: np.ndarray, angle_rad: float, shift: np.ndarray
) -> np.ndarray:
    """Rotate ``[n, 2]`` (y, x) about ``centre`` by ``angle_rad`` and translate by ``shift``."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    d = yx - centre
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1) + centre + shift


def make_movie(
    *,
    n_frames: int = 60,
    shape: tuple[int, int] = (256, 256),
    sampling: float = 0.2,
    lattice_A: float = 2.88,
    particle_radius_A: float = 16.0,
    n_adatom_sites: int | None = None,
    coverage: float = 0.5,
    hop_rate: float = 0.08,
    exchange_rate: float = 0.003,
    dose_per_frame: float = 300.0,
    column_sigma_A: float = 0.45,
    drift_A_per_frame: tuple[float, float] = (0.02, 0.03),
    rotation_deg_per_frame: float = 0.0,
    jitter_A: float = 0.0,
    contrast: Literal["bright", "dark"] = "bright",
    fps: float = 25.0,
    seed: int = 0,
) -> ToyMovie:
    """Make a synthetic in-situ movie of a nanoparticle with hopping surface adatoms.

    Parameters
    ----------
    n_frames
        Number of frames N.
    shape
        Frame size (H, W) [px].
    sampling
        Pixel size [Å/px].
    lattice_A
        Column spacing of the hexagonal lattice [Å]; columns are never closer than this.
    particle_radius_A
        Radius of the particle's core [Å].
    n_adatom_sites
        Number of surface sites: None for all of them (the particle's outer layer and the
        shell outside it), or a contiguous arc of that many (outside the arc the outer layer
        stays fixed and the shell bare).
    coverage
        Mean fraction of surface sites holding an atom (at equilibrium).
    hop_rate
        Hop attempt rate of each surface atom [1/frame]; a hop needs an empty neighbouring
        surface site and passes a Metropolis test, so the realised rate is lower.
    exchange_rate
        Adsorption/desorption attempt rate of each surface site [1/frame] (0 for hops only).
    dose_per_frame
        Electron dose per frame [e/Å²].
    column_sigma_A
        Gaussian width of a column [Å].
    drift_A_per_frame
        Drift (dy, dx) [Å/frame] of the whole scene.
    rotation_deg_per_frame
        Rotation of the scene about the image centre [degrees/frame]; keep it tiny (~0.01).
    jitter_A
        Standard deviation of a random per-frame displacement of each column [Å] (vibration).
    contrast
        ``"bright"``: bright columns on a dark background (HAADF-like); ``"dark"``: dark columns
        on a bright background.
    fps
        Frame rate [1/s]: frame i is taken at i/fps s (:attr:`ToyMovie.times`); the rates above
        are per frame whatever it is.
    seed
        Seed of every random choice.

    Returns
    -------
    ToyMovie
        ``frames`` ``[N, H, W]`` float32 counts, ``sampling`` and the ``truth``.
    """
    if contrast not in ("bright", "dark"):
        raise ValueError(f"contrast must be 'bright' or 'dark'; got {contrast!r}.")
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1; got {n_frames}.")
    for name, value in (("sampling", sampling), ("lattice_A", lattice_A),
                        ("particle_radius_A", particle_radius_A), ("column_sigma_A", column_sigma_A)):
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {value!r}.")
    if dose_per_frame < 0 or hop_rate < 0 or exchange_rate < 0 or jitter_A < 0:
        raise ValueError("dose_per_frame, hop_rate, exchange_rate and jitter_A must not be negative.")
    if not 0 <= coverage <= 1:
        raise ValueError(f"coverage must be between 0 and 1; got {coverage!r}.")
    if not fps > 0:
        raise ValueError(f"fps must be positive; got {fps!r}.")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items()}

    r_struct, r_kin, r_int, r_bg, r_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    h, w = shape
    n = n_frames

    # Structure, in Å about the particle centre.
    pos_A, is_core, n_bonds, surf_nb = _structure(
        r_struct, lattice_A=lattice_A, radius_A=particle_radius_A, n_adatom_sites=n_adatom_sites
    )
    n_sites = len(pos_A)
    n_core = int(is_core.sum())
    energies = -_BOND_ENERGY * n_bonds[n_core:] + _ENERGY_DISORDER * r_struct.standard_normal(
        n_sites - n_core
    )

    # Motion: drift and rotation about the image centre; the particle is placed so that it
    # sits centred half-way through the movie.
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    steps = np.arange(n, dtype=float)
    drift = steps[:, None] * np.asarray(drift_A_per_frame, dtype=float)[None, :] / sampling
    rotation_deg = steps * rotation_deg_per_frame
    site_yx = centre - drift[-1] / 2 + pos_A / sampling + r_struct.uniform(-0.5, 0.5, 2)

    # Kinetics of the surface sites; core sites are always occupied.
    occ_s, hops_s, ex_s = _kinetics(
        r_kin, n_frames=n, energies=energies, neighbours=surf_nb, coverage=coverage,
        hop_rate=hop_rate, exchange_rate=exchange_rate,
    )
    occupancy = np.concatenate([np.ones((n, n_core), dtype=bool), occ_s], axis=1)

    intensity = np.where(is_core, _CORE_INTENSITY, _SURFACE_INTENSITY) * (
        1 + r_int.uniform(-_INTENSITY_SPREAD, _INTENSITY_SPREAD, n_sites)
    )

    # Column positions of every occupied site in every frame.
    f_idx, s_idx = np.nonzero(occupancy)
    yx = np.empty((f_idx.size, 2))
    for f in range(n):
        sel = f_idx == f
        yx[sel] = _transform(site_yx[s_idx[sel]], centre, np.deg2rad(rotation_deg[f]), drift[f])
    if jitter_A > 0:
        yx += r_int.normal(0, jitter_A / sampling, yx.shape)

    sigma_px = column_sigma_A / sampling
    columns = _render_columns(yx[:, 0], yx[:, 1], intensity[s_idx], f_idx, (n, h, w), sigma_px)

    # Background: one canvas, moved with the scene (bilinear; it is smooth).
    reach = np.abs(drift).max() + np.hypot(h, w) / 2 * np.deg2rad(np.abs(rotation_deg).max())
    margin = int(np.ceil(reach)) + 4
    canvas = _background(r_bg, shape, margin, sampling)
    signal = np.empty((n, h, w))
    for f in range(n):
        _move_canvas(canvas, margin, centre, np.deg2rad(rotation_deg[f]), drift[f], out=signal[f])
    if contrast == "bright":
        signal += columns
    else:
        signal = np.clip(1.0 + signal - _DARK_DEPTH * columns, 0.02, None)
    frames = r_noise.poisson(dose_per_frame * sampling**2 * signal).astype(np.float32)

    inside = (yx[:, 0] >= -0.5) & (yx[:, 0] < h - 0.5) & (yx[:, 1] >= -0.5) & (yx[:, 1] < w - 0.5)
    positions = _table("positions", {
        "frame": f_idx[inside], "y": yx[inside, 0], "x": yx[inside, 1],
        "site": s_idx[inside], "cls": np.zeros(int(inside.sum()), dtype=int),
    })
    sites = _table("sites", {
        "site": np.arange(n_sites), "y": site_yx[:, 0], "x": site_yx[:, 1],
        "kind": np.where(is_core, "core", "surface"), "intensity": intensity,
    })
    hops = _table("hops", {
        "frame": [h_[0] for h_ in hops_s],
        "from_site": [h_[1] + n_core for h_ in hops_s],
        "to_site": [h_[2] + n_core for h_ in hops_s],
    })
    exchanges = _table("exchanges", {
        "frame": [e[0] for e in ex_s], "site": [e[1] + n_core for e in ex_s], "kind": [e[2] for e in ex_s],
    })
    truth = MovieTruth(sites=sites, occupancy=occupancy, positions=positions, drift=drift,
                       rotation_deg=rotation_deg, hops=hops, exchanges=exchanges)
    return ToyMovie(frames=frames, sampling=float(sampling), truth=truth, params=params)


def __getattr__(name: str) -> Any:
    # Saving and loading live in .movie_io, which builds on the classes above; it is loaded on
    # first use so that either module can be imported first.
    if name in ("FORMAT", "save_movie", "load_movie"):
        from . import movie_io
        return getattr(movie_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
