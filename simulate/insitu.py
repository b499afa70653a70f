"""In-situ movies with exit waves: a Au nanoparticle whose surface columns hop between sites.

The physics-based counterpart of :mod:`etem.simulate.toy` (same truth tables, same file
format), for judging the tracker on images that look like microscope images:

- **Structure.** A faceted fcc Au particle seen along [110] (:func:`etem.simulate.structures.
  au_nanoparticle`); its projected columns (with their heights) define the site lattice: the
  column positions and the lattice points next to them. The particle's outermost columns and
  the first shell of empty lattice sites outside are *surface* sites; the rest are *core*
  sites, occupied throughout. Each surface site holds, when occupied, a column of fixed
  height: its own height in the particle, or 1–3 atoms in the shell.
- **Kinetics.** As in the toy model (kinetic Monte Carlo on the surface sites, Metropolis hops
  between neighbouring sites, optional adsorption/desorption, at set rates per frame): whole
  columns hop, which is what a tracker of columns sees.
- **Exit waves.** One abTEM multislice per column type (:func:`isolated_column_waves`; for Au
  an isolated column of ``h`` atoms spaced a/√2 along the beam), composed into each frame's
  wave in the *independent-column approximation* ``psi = 1 + sum_c (psi_t(r - r_c) - 1)``
  (:func:`compose_waves`): exact for isolated columns, neglecting the cross-talk of
  neighbouring columns (small at 2.5 Å spacing for a few atoms, larger for thick columns).
  A full multislice per frame would cost seconds per frame.
- **Imaging** (:class:`FrameRenderer`). HRTEM: the coherent transfer function with defocus, Cs,
  C5, astigmatism and focal spread (:func:`etem.simulate.optics.image_from_waves`), optionally
  a focal series; then the camera pixels (area average), detector MTF and blur, and Poisson
  counts at the dose per frame. STEM (``mode = "stem"``): Z^1.7-weighted Gaussian columns
  convolved with the probe intensity (incoherent HAADF). Drift and rotation of the scene, as in
  the toy model.

The structure-independent parts (column waves, their composition, the renderer, the scene's
motion and the truth tables) serve the MoS2 movie of :mod:`etem.simulate.insitu_mos2` too.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from scipy.fft import next_fast_len
from scipy.spatial import cKDTree

from etem.tracker.errors import ConfigError, choice_error

from .toy import MovieTruth, ToyMovie, _kinetics, _table, _transform

__all__ = ["insitu_movie", "column_waves", "isolated_column_waves", "compose_waves", "FrameRenderer",
           "scene_motion", "moved_columns", "movie_truth", "check_movie_args"]

_AU_SPACING_A = 4.08 / math.sqrt(2)  # atoms along a [110] column
_BOND_ENERGY = 1.0  # kT per interior neighbour of a surface site
_ENERGY_DISORDER = 0.6
_PATCH_A = 10.0  # side of the cell an isolated column's wave is computed in [Å]
_FINE_A = 0.05  # the finest pixel the waves are composed on [Å]; the camera pixel is a multiple
_STEM_WIDTH_A = 0.3  # standard deviation of a HAADF column (thermal smearing, atom size) [Å]
_MAX_HEIGHT = 10  # the tallest height class (a height model's last class holds every taller column)

#: A column type: its atoms as (chemical symbol, height along the beam [Å]).
ColumnSpec = Sequence[tuple[str, float]]

_WAVE_CACHE: dict[tuple, np.ndarray] = {}


def isolated_column_waves(columns: Mapping[Hashable, ColumnSpec], *, sampling_A: float,
                          energy_eV: float) -> dict[Hashable, np.ndarray]:
    """abTEM exit waves of isolated columns, one per column type.

    Parameters
    ----------
    columns
        ``{key: [(symbol, z_A), ...]}``: the atoms of each column type, stacked along the beam
        at heights ``z_A`` [Å] (any origin) on one axis through the cell centre.
    sampling_A
        Pixel size of the waves [Å/px].
    energy_eV
        Beam energy [eV].

    Returns
    -------
    dict
        ``{key: complex64 [P, P]}``, the column at pixel ``(P // 2, P // 2)`` of a 10 Å cell,
        indexed (row, col) = (y, x). A wave is computed once per process and reused (read-only).
    """
    n = int(round(_PATCH_A / sampling_A))
    side = n * sampling_A
    out = {}
    for key, atoms_spec in columns.items():
        spec = tuple((str(s), float(z)) for s, z in atoms_spec)
        if not spec:
            raise ValueError(f"column type {key!r} has no atoms.")
        cache_key = (spec, round(float(sampling_A), 9), round(float(energy_eV), 3))
        if cache_key not in _WAVE_CACHE:
            _WAVE_CACHE[cache_key] = _multislice(spec, n, side, energy_eV)
        out[key] = _WAVE_CACHE[cache_key]
    return out


def _multislice(spec: tuple[tuple[str, float], ...], n: int, side: float, energy_eV: float) -> np.ndarray:
    from ase import Atoms

    from .waves import abtem_module

    abtem = abtem_module()
    z = np.array([zi for _, zi in spec])
    z = 1.0 + z - z.min()
    atoms = Atoms([s for s, _ in spec], positions=[(side / 2, side / 2, zi) for zi in z],
                  cell=[side, side, float(z.max() + 1.0)])
    pot = abtem.Potential(atoms, gpts=(n, n), slice_thickness=1.0, parametrization="lobato", device="cpu")
    wave = abtem.PlaneWave(energy=energy_eV, device="cpu").multislice(pot).compute(progress_bar=False)
    arr = np.ascontiguousarray(np.asarray(wave.array, dtype=np.complex64).T)
    arr.flags.writeable = False
    return arr


def column_waves(heights: list[int], *, sampling_A: float, energy_eV: float, symbol: str = "Au",
                 spacing_A: float = _AU_SPACING_A) -> dict[int, np.ndarray]:
    """abTEM exit waves of isolated columns, one per height: ``{h: complex64 [P, P]}`` centred."""
    specs = {int(h): [(symbol, spacing_A * i) for i in range(int(h))] for h in sorted(set(int(v) for v in heights))}
    return isolated_column_waves(specs, sampling_A=sampling_A, energy_eV=energy_eV)


def _splat(yx: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear point deposits of ``weights`` at sub-pixel ``yx`` on a grid of ``shape``: the
    weights' sum and centre of mass are exact; points off the grid are left out."""
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    ok = np.all(np.isfinite(yx), axis=1) & (yx[:, 0] >= 0) & (yx[:, 0] < shape[0] - 1) \
        & (yx[:, 1] >= 0) & (yx[:, 1] < shape[1] - 1)
    yx, weights = yx[ok], np.asarray(weights, dtype=float)[ok]
    i = np.floor(yx).astype(np.int64)
    f = yx - i
    flat = i[:, 0] * shape[1] + i[:, 1]
    out = np.zeros(shape[0] * shape[1])
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        w = (f[:, 0] if dy else 1 - f[:, 0]) * (f[:, 1] if dx else 1 - f[:, 1])
        out += np.bincount(flat + dy * shape[1] + dx, weights=weights * w, minlength=out.size)
    return out.reshape(shape)


def _embed(patch: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A centred patch on a periodic grid of ``shape`` with its centre pixel at ``[0, 0]``."""
    p0, p1 = patch.shape
    out = np.zeros(shape, dtype=patch.dtype)
    out[:p0, :p1] = patch
    return np.roll(out, (-(p0 // 2), -(p1 // 2)), axis=(0, 1))


def compose_waves(yx: np.ndarray, keys: Sequence[Hashable], waves: Mapping[Hashable, np.ndarray],
                  shape: tuple[int, int]) -> np.ndarray:
    """``1 + sum_c (psi_c(r - r_c) - 1)`` on a periodic grid of ``shape`` (the waves' pixels).

    Each column type's ``psi - 1`` is convolved (by FFT) with bilinear deposits at its columns'
    sub-pixel positions ``yx`` [px]: every column lands at its exact position (the deposit's
    centre of mass), spread by at most one pixel (0.05 Å on the movies' grids, far below the
    optics' resolution), at a cost independent of the number of columns.

    Returns
    -------
    numpy.ndarray
        complex64 ``[H, W]``.
    """
    return _compose(np.asarray(yx, float), np.asarray(list(keys)), _wave_kernels(waves, shape), shape).numpy()


def _wave_kernels(waves: Mapping[Hashable, np.ndarray], shape: tuple[int, int]) -> dict[Hashable, torch.Tensor]:
    return {key: torch.fft.fft2(torch.from_numpy(_embed(np.asarray(w, np.complex64) - 1, shape)))
            for key, w in waves.items()}


def _compose(yx: np.ndarray, keys: np.ndarray, kernels: Mapping[Hashable, torch.Tensor],
             shape: tuple[int, int]) -> torch.Tensor:
    spectrum = torch.zeros(shape, dtype=torch.complex64)
    for key in np.unique(keys) if keys.size else ():
        key = key.item() if hasattr(key, "item") else key
        if key not in kernels:
            raise ValueError(f"no exit wave for column type {key!r}; have {sorted(map(str, kernels))}.")
        dep = torch.from_numpy(_splat(yx[keys == key], np.ones(int(np.sum(keys == key))), shape).astype(np.float32))
        spectrum += torch.fft.fft2(dep) * kernels[key]
    return 1 + torch.fft.ifft2(spectrum)


class FrameRenderer:
    """The microscope and camera of an in-situ movie: frames from column positions.

    Columns are placed on a fine grid (a whole number ``k`` of pixels per camera pixel, at most
    0.05 Å) padded by half a column cell on every side, so that columns just outside the field
    still reach into it and the periodic filters wrap only into the padding. Per frame:

    - ``"hrtem"``: each layer's exit wave by :func:`compose_waves` from the column types' abTEM
      waves, the layers' waves multiplied (a support under the specimen), the coherent transfer
      function (one image per focal offset), ``|psi|^2``;
    - ``"stem"``: Gaussian columns of width 0.3 Å weighted by ``sum Z^1.7`` over their atoms
      (relative to the heaviest single atom of the column types), all layers added, plus a
      constant ``stem_background``, convolved with the probe intensity;

    then the camera pixels (area average over ``k x k`` fine pixels), the detector MTF and blur
    (:func:`etem.simulate.augment.detector_response`) and Poisson counts at ``dose_per_frame``
    [e/Å² per image].

    Parameters
    ----------
    columns
        ``{key: [(symbol, z_A), ...]}``, the column types the frames are made of.
    shape, sampling
        Frame size (H, W) [px] and pixel size [Å/px].
    mode
        ``"hrtem"`` or ``"stem"``.
    focal_offsets_A
        None for one image per frame ``[H, W]``; a sequence of F defocus offsets [Å] (added to
        ``defocus_A`` in HRTEM, the probe's defocus in STEM) for ``[F, H, W]`` per frame.
    generator
        The torch generator of the shot noise.

    The other parameters are those of :func:`insitu_movie`.
    """

    def __init__(self, columns: Mapping[Hashable, ColumnSpec], *, shape: tuple[int, int], sampling: float,
                 mode: Literal["hrtem", "stem"], energy_eV: float, dose_per_frame: float,
                 defocus_A: float = 0.0, Cs_A: float = 0.0, focal_spread_A: float = 0.0,
                 focal_offsets_A: Sequence[float] | None = None, probe_semiangle_mrad: float = 25.0,
                 blur_A: float = 0.0, mtf: tuple[float, float, float] = (1.0, 0.5, 2.5),
                 stem_background: float = 0.05, generator: torch.Generator | None = None) -> None:
        from .optics import OpticsParams, probe_intensity

        if mode not in ("hrtem", "stem"):
            raise ValueError(f"mode must be 'hrtem' or 'stem'; got {mode!r}.")
        self.mode, self.shape, self.sampling = mode, (int(shape[0]), int(shape[1])), float(sampling)
        self.energy_eV, self.dose_per_frame = float(energy_eV), float(dose_per_frame)
        self.focal_offsets_A = None if focal_offsets_A is None else tuple(float(v) for v in focal_offsets_A)
        if self.focal_offsets_A is not None and not self.focal_offsets_A:
            raise ValueError("focal_offsets_A must hold at least one defocus offset [Å] (or be None).")
        self.k = max(1, int(math.ceil(self.sampling / _FINE_A - 1e-9)))
        self.fine = self.sampling / self.k
        half = int(round(_PATCH_A / self.fine)) // 2 + 2
        self.pad = self.k * int(math.ceil(half / self.k))
        h, w = self.shape
        self.grid = (next_fast_len(h * self.k + 2 * self.pad), next_fast_len(w * self.k + 2 * self.pad))
        self.optics = OpticsParams.constant(1, defocus_A=defocus_A, Cs_A=Cs_A, focal_spread_A=focal_spread_A,
                                            blur_A=blur_A, mtf_c1=mtf[0], mtf_c2=mtf[1], mtf_c3=mtf[2],
                                            probe_semiangle_mrad=probe_semiangle_mrad)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        offsets = self.focal_offsets_A or (0.0,)
        if mode == "hrtem":
            waves = isolated_column_waves(columns, sampling_A=self.fine, energy_eV=self.energy_eV)
            self._kernels = _wave_kernels(waves, self.grid)
        else:
            self.weights = _stem_weights(columns)
            self.stem_background = float(stem_background)
            probe = probe_intensity(self.grid, sampling_A=self.fine, energy_eV=self.energy_eV,
                                    params=OpticsParams.constant(1, probe_semiangle_mrad=probe_semiangle_mrad),
                                    focal_offsets_A=offsets)[0]  # [F, G0, G1], sums to 1
            sigma = _STEM_WIDTH_A / self.fine
            gy = np.minimum(np.arange(self.grid[0]), self.grid[0] - np.arange(self.grid[0]))[:, None]
            gx = np.minimum(np.arange(self.grid[1]), self.grid[1] - np.arange(self.grid[1]))[None, :]
            gauss = torch.from_numpy(np.exp(-(gy**2 + gx**2) / (2 * sigma**2)).astype(np.float32))
            self._stem_kernel = torch.fft.rfft2(gauss) * torch.fft.rfft2(probe)

    def render(self, layers: Sequence[tuple[np.ndarray, Sequence[Hashable]]]) -> np.ndarray:
        """One frame: ``layers`` of (``yx`` ``[n, 2]`` camera pixels, column-type keys ``[n]``).

        Returns ``[H, W]`` float32 counts, or ``[F, H, W]`` with ``focal_offsets_A``.
        """
        from .augment import detector_response
        from .optics import image_from_waves

        k, pad, grid = self.k, self.pad, self.grid
        fine_layers = [(np.asarray(yx, float).reshape(-1, 2) * k + (k - 1) / 2 + pad, np.asarray(list(keys)))
                       for yx, keys in layers]
        if self.mode == "hrtem":
            psi = torch.ones(grid, dtype=torch.complex64)
            for yx, keys in fine_layers:
                psi = psi * _compose(yx, keys, self._kernels, grid)
            img = image_from_waves(psi[None], sampling_A=self.fine, energy_eV=self.energy_eV, params=self.optics,
                                   focal_offsets_A=self.focal_offsets_A or (0.0,))[0]
        else:
            dep = np.zeros(grid)
            for yx, keys in fine_layers:
                unknown = set(keys.tolist()) - set(self.weights)
                if unknown:
                    raise ValueError(f"no HAADF weight for column type(s) {sorted(map(str, unknown))}.")
                dep += _splat(yx, np.array([self.weights[key] for key in keys.tolist()]), grid)
            spec = torch.fft.rfft2(torch.from_numpy(dep.astype(np.float32)))
            img = torch.fft.irfft2(spec[None] * self._stem_kernel, s=grid) + self.stem_background
        h, w = self.shape
        img = img[:, pad:pad + h * k, pad:pad + w * k]
        cam = torch.nn.functional.avg_pool2d(img, k) if k > 1 else img
        cam = detector_response(cam[None], pixel_size_A=self.sampling, params=self.optics)[0]
        lam = cam.clamp(min=0) * self.dose_per_frame * self.sampling ** 2
        counts = torch.poisson(lam, generator=self.generator).numpy().astype(np.float32)
        return counts if self.focal_offsets_A is not None else counts[0]


def _stem_weights(columns: Mapping[Hashable, ColumnSpec]) -> dict[Hashable, float]:
    """``sum Z^1.7`` of each column type over that of the heaviest single atom among them."""
    from ase.data import atomic_numbers

    try:
        z = {key: [atomic_numbers[s] for s, _ in spec] for key, spec in columns.items()}
    except KeyError as exc:
        raise ValueError(f"unknown chemical symbol {exc.args[0]!r} in a column type.") from None
    unit = max(max(v) for v in z.values()) ** 1.7
    return {key: float(sum(zi ** 1.7 for zi in v) / unit) for key, v in z.items()}


def scene_motion(n_frames: int, shape: tuple[int, int], sampling: float, drift_A_per_frame: tuple[float, float],
                 rotation_deg_per_frame: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image centre ``[2]`` (y, x) [px], each frame's drift ``[N, 2]`` [px] and rotation
    ``[N]`` [degrees] relative to frame 0 (rotation about the image centre)."""
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    steps = np.arange(n_frames, dtype=float)
    drift = steps[:, None] * np.asarray(drift_A_per_frame, float)[None, :] / sampling
    return centre, drift, steps * rotation_deg_per_frame


def moved_columns(site_yx: np.ndarray, occupancy: np.ndarray, centre: np.ndarray, drift: np.ndarray,
                  rotation_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every occupied site in every frame: ``frame, site`` indices and ``[n, 2]`` (y, x) [px]
    with the frame's drift and rotation applied."""
    f_idx, s_idx = np.nonzero(occupancy)  # frame by frame
    bounds = np.searchsorted(f_idx, np.arange(occupancy.shape[0] + 1))
    yx = np.empty((f_idx.size, 2))
    for f, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        yx[lo:hi] = _transform(site_yx[s_idx[lo:hi]], centre, np.deg2rad(rotation_deg[f]), drift[f])
    return f_idx, s_idx, yx


def movie_truth(*, shape: tuple[int, int], sites: dict, occupancy: np.ndarray, f_idx: np.ndarray,
                s_idx: np.ndarray, yx: np.ndarray, cls: np.ndarray, drift: np.ndarray, rotation_deg: np.ndarray,
                hops: list[tuple[int, int, int]], exchanges: list[tuple[int, int, str]]) -> MovieTruth:
    """The truth tables of a movie; ``positions`` keeps the columns whose centre is in the frame."""
    h, w = shape
    inside = (yx[:, 0] >= -0.5) & (yx[:, 0] < h - 0.5) & (yx[:, 1] >= -0.5) & (yx[:, 1] < w - 0.5)
    positions = _table("positions", {"frame": f_idx[inside], "y": yx[inside, 0], "x": yx[inside, 1],
                                     "site": s_idx[inside], "cls": np.asarray(cls)[inside]})
    return MovieTruth(
        sites=_table("sites", sites), occupancy=occupancy, positions=positions, drift=drift,
        rotation_deg=rotation_deg,
        hops=_table("hops", {"frame": [x[0] for x in hops], "from_site": [x[1] for x in hops],
                             "to_site": [x[2] for x in hops]}),
        exchanges=_table("exchanges", {"frame": [e[0] for e in exchanges], "site": [e[1] for e in exchanges],
                                       "kind": [e[2] for e in exchanges]}),
    )


def _lattice(cols_xy: np.ndarray, radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice points [Å] spanned by the columns' two shortest independent neighbour vectors,
    and for each the index of the column on it (-1 for none)."""
    tree = cKDTree(cols_xy)
    c0 = int(np.argmin(np.linalg.norm(cols_xy - cols_xy.mean(0), axis=1)))
    d, i = tree.query(cols_xy[c0], k=9)
    vecs = cols_xy[i[1:]] - cols_xy[c0]
    vecs = vecs[np.argsort(np.linalg.norm(vecs, axis=1))]
    a1 = vecs[0]
    a2 = next(v for v in vecs[1:] if abs(a1[0] * v[1] - a1[1] * v[0]) > 0.3 * np.linalg.norm(a1) * np.linalg.norm(v))
    m = int(np.ceil((radius_A + 8) / min(np.linalg.norm(a1), np.linalg.norm(a2)))) + 2
    ij = np.stack(np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1), indexing="ij"), -1).reshape(-1, 2)
    pts = cols_xy[c0] + ij @ np.stack([a1, a2])
    pts = pts[np.linalg.norm(pts - cols_xy.mean(0), axis=1) < radius_A + 8]
    dist, idx = tree.query(pts)
    return pts, np.where(dist < 0.6, idx, -1)


def check_movie_args(*, n_frames: int, sampling: float, dose_per_frame: float, mode: str,
                     shape: tuple[int, int], fps: float = 25.0) -> None:
    """The checks every in-situ movie makes on its common arguments."""
    if not fps > 0:
        raise ConfigError(f"fps (frames per second) must be positive; got {fps!r}.")
    if mode not in ("hrtem", "stem"):
        raise choice_error("mode", mode, ("hrtem", "stem"))
    if n_frames < 1 or not sampling > 0 or not dose_per_frame >= 0:
        raise ConfigError("n_frames must be at least 1, sampling positive and dose_per_frame not negative; "
                          f"got {n_frames!r}, {sampling!r} and {dose_per_frame!r}.")
    if len(shape) != 2 or min(shape) < 8:
        raise ConfigError(f"shape must be (H, W) with both at least 8 px; got {shape!r}.")


def insitu_movie(
    *,
    n_frames: int = 40,
    shape: tuple[int, int] = (256, 256),
    sampling: float = 0.2,
    particle_radius_A: float = 14.0,
    coverage: float = 0.5,
    hop_rate: float = 0.08,
    exchange_rate: float = 0.003,
    dose_per_frame: float = 300.0,
    mode: Literal["hrtem", "stem"] = "hrtem",
    energy_eV: float = 300e3,
    defocus_A: float = -60.0,
    Cs_A: float = -15e4,
    focal_spread_A: float = 30.0,
    focal_offsets_A: Sequence[float] | None = None,
    blur_A: float = 0.2,
    mtf: tuple[float, float, float] = (0.05, 0.5, 2.5),
    drift_A_per_frame: tuple[float, float] = (0.02, 0.03),
    rotation_deg_per_frame: float = 0.0,
    fps: float = 25.0,
    classes: Literal["species", "height"] = "species",
    seed: int = 0,
) -> ToyMovie:
    """An in-situ movie of a Au nanoparticle on [110] with hopping surface columns.

    Parameters as in :func:`etem.simulate.toy.make_movie`, and:

    mode
        ``"hrtem"`` (exit waves through the objective lens) or ``"stem"`` (incoherent HAADF).
    energy_eV, defocus_A, Cs_A, focal_spread_A
        Microscope [eV, Å]. HRTEM defaults: 300 kV, negative Cs (-15 µm) with a small
        overfocus, which shows the columns bright (negative-Cs imaging, as in aberration-
        corrected in-situ work).
    focal_offsets_A
        None for one image per frame; F defocus offsets [Å] for a focal series of F images
        per frame (frames ``[N, F, H, W]``, each image at ``dose_per_frame``).
    blur_A
        Image blur (vibration, drift within the exposure) [Å].
    mtf
        Detector MTF (c1, c2, c3) of Madsen eq. 5.
    classes
        The true columns' class (``truth.positions.cls``): ``"species"``, one class (Au);
        ``"height"``, the column's height as a height model's classes count it (class ``k``
        holds ``k + 1`` atoms; the last, 9, every taller column: :func:`etem.simulate.structures.columns`).

    Returns
    -------
    ToyMovie
        ``frames`` ``[N, H, W]`` (or ``[N, F, H, W]``) float32 counts; ``truth`` as for the toy
        movie, with ``sites.intensity`` holding each site's column height (atoms); ``params``.
    """
    from .structures import au_nanoparticle, columns

    check_movie_args(n_frames=n_frames, sampling=sampling, dose_per_frame=dose_per_frame, mode=mode, shape=shape,
                     fps=fps)
    if classes not in ("species", "height"):
        raise ValueError(f"classes must be 'species' or 'height'; got {classes!r}")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in locals().items()
              if k not in ("au_nanoparticle", "columns")}
    params["material"] = "au110"  # what is in view, as a microscope file may say (etem.tracker.lattice names)
    r_struct, r_kin, r_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    n = n_frames

    # Structure and site lattice [Å, about the particle centre]
    atoms = au_nanoparticle(r_struct, radius_A=particle_radius_A, zone_axis="110", growth=0.0, tilt_deg=0.0)
    cols = columns(atoms, classes="species")
    xy = cols[["x_A", "y_A"]].to_numpy()
    centre_A = xy.mean(0)
    pts, on = _lattice(xy, particle_radius_A)
    tree = cKDTree(pts)
    nb = [np.array([j for j in row if j != k]) for k, row in enumerate(tree.query_ball_point(pts, 3.0))]
    inside = on >= 0
    n_in = np.array([inside[r].sum() for r in nb])
    full = max(len(r) for r in nb)
    outer = inside & (n_in < full)
    shell = ~inside & (n_in > 0)
    interior = inside & ~outer
    n_interior = np.array([interior[r].sum() for r in nb])
    core_idx = np.flatnonzero(interior)
    surf_idx = np.flatnonzero(outer | shell)
    keep = np.concatenate([core_idx, surf_idx])
    n_core = core_idx.size
    remap = -np.ones(len(pts), int)
    remap[keep] = np.arange(keep.size)
    surf_nb = [np.array([remap[m] - n_core for m in nb[k] if remap[m] >= n_core], int) for k in surf_idx]
    heights = np.where(on[keep] >= 0, cols["n_atoms"].to_numpy()[np.maximum(on[keep], 0)],
                       r_struct.integers(1, 4, keep.size))
    energies = -_BOND_ENERGY * n_interior[surf_idx] + _ENERGY_DISORDER * r_struct.standard_normal(surf_idx.size)

    occ_s, hops_s, ex_s = _kinetics(r_kin, n_frames=n, energies=energies, neighbours=surf_nb, coverage=coverage,
                                    hop_rate=hop_rate, exchange_rate=exchange_rate)
    occupancy = np.concatenate([np.ones((n, n_core), bool), occ_s], axis=1)

    # Positions in frame pixels (y, x), drift and rotation about the image centre
    centre, drift, rotation_deg = scene_motion(n, shape, sampling, drift_A_per_frame, rotation_deg_per_frame)
    site_yx = centre - drift[-1] / 2 + (pts[keep][:, ::-1] - centre_A[::-1]) / sampling
    f_idx, s_idx, yx = moved_columns(site_yx, occupancy, centre, drift, rotation_deg)

    renderer = FrameRenderer(
        {int(h): [("Au", _AU_SPACING_A * i) for i in range(int(h))] for h in np.unique(heights)},
        shape=shape, sampling=sampling, mode=mode, energy_eV=energy_eV, dose_per_frame=dose_per_frame,
        defocus_A=defocus_A, Cs_A=Cs_A, focal_spread_A=focal_spread_A, focal_offsets_A=focal_offsets_A,
        blur_A=blur_A, mtf=mtf, stem_background=0.05,  # a faint support under the particle
        generator=torch.Generator().manual_seed(int(r_noise.integers(2**62))))
    frames = np.stack([renderer.render([(yx[f_idx == f], heights[s_idx[f_idx == f]])]) for f in range(n)])

    truth = movie_truth(
        shape=shape, occupancy=occupancy, f_idx=f_idx, s_idx=s_idx, yx=yx,
        cls=np.minimum(heights[s_idx], _MAX_HEIGHT) - 1 if classes == "height" else np.zeros(f_idx.size, int),
        drift=drift, rotation_deg=rotation_deg,
        sites={"site": np.arange(keep.size), "y": site_yx[:, 0], "x": site_yx[:, 1],
               "kind": np.where(np.arange(keep.size) < n_core, "core", "surface"), "intensity": heights.astype(float)},
        hops=[(f, a + n_core, b + n_core) for f, a, b in hops_s],
        exchanges=[(f, s + n_core, kind) for f, s, kind in ex_s])
    return ToyMovie(frames=frames, sampling=float(sampling), truth=truth, params=params)
