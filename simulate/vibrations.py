"""Thermal vibrations: coordination-dependent displacement amplitudes and frozen phonons.

Model (Larsen et al.): every atom vibrates independently and isotropically about its site with a
Gaussian displacement of standard deviation ``sigma`` per direction, which depends on the atom's
species and on its coordination number (under-coordinated surface atoms are held by fewer bonds
and vibrate more). A frozen-phonon image averages over several :func:`displace` draws.

The amplitudes come from a table per material (``data/vibration_amplitudes.json``):

- **Au**: computed by :func:`md_amplitudes`, molecular dynamics of a roughened Au nanoparticle
  with ASE's EMT potential and a Langevin thermostat; the per-atom RMS displacement per direction
  about the mean position (after removing the particle's rigid translation and rotation),
  grouped by coordination number. Regenerate it with ``python -m etem.simulate.vibrations``
  (about half a minute).
- **MoS2**: not computed (no cheap potential); bulk-site values from typical room-temperature
  Debye-Waller factors, under-coordinated sites scaled up; the entry's ``method`` says how.

An entry holds ``temperature_K``, ``cutoffs_A`` (``{"A-B": r}``: neighbours of species B within
r [Å] count towards the coordination of A, and the other way round; unlisted pairs do not count),
``sigma_A`` (``{species: {coordination: sigma [Å]}}``; coordinations between or beyond the listed
ones are interpolated linearly or take the nearest listed value), ``method`` and ``date``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from etem.tracker.errors import ConfigError, choice_error

__all__ = ["TABLE_PATH", "load_table", "coordination", "amplitudes", "displace", "md_amplitudes"]

#: The stored amplitude tables.
TABLE_PATH = Path(__file__).parent / "data" / "vibration_amplitudes.json"
FORMAT = "etem-vibration-amplitudes/1"
#: The particle of the stored Au entry: ``au_nanoparticle(seed, **kwargs)``.
MD_PARTICLE = {"seed": 0, "radius_A": 9.0, "zone_axis": "110", "growth": 0.1, "roughness_T": 1.0, "tilt_deg": 0.0}


def load_table(material: str, *, path: str | Path = TABLE_PATH) -> dict:
    """The amplitude table of ``material`` (``"Au"``, ``"MoS2"``) from the tables file."""
    with open(path, encoding="utf-8") as f:
        tables = json.load(f)
    if tables.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a vibration-amplitude file of format {FORMAT!r}.")
    if material not in tables["materials"]:
        raise choice_error("material", material, tables["materials"])
    return tables["materials"][material]


def coordination(atoms: Atoms, cutoffs_A: Mapping[str, float]) -> np.ndarray:
    """Number of neighbours of every atom, counting only the species pairs in ``cutoffs_A``.

    Parameters
    ----------
    atoms
        The structure (periodic along the axes where ``atoms.pbc`` is set).
    cutoffs_A
        ``{"A-B": r}``: an atom of A and one of B closer than r [Å] are neighbours.

    Returns
    -------
    numpy.ndarray
        ``[n]`` int coordination numbers.
    """
    pairs: dict[tuple[str, str], float] = {}
    for key, r in cutoffs_A.items():
        a, sep, b = key.partition("-")
        if not sep or not a or not b or not r > 0:
            raise ConfigError(f"cutoffs_A keys must read 'A-B' with a positive distance [Å]; got {key!r}: {r!r}.")
        pairs[(a, b)] = pairs[(b, a)] = float(r)
    n = len(atoms)
    if n == 0 or not pairs:
        return np.zeros(n, dtype=np.int64)
    i, j, d = neighbor_list("ijd", atoms, max(pairs.values()))
    symbols = np.array(atoms.get_chemical_symbols())
    limit = np.array([pairs.get((a, b), -1.0) for a, b in zip(symbols[i], symbols[j])]).reshape(-1)
    return np.bincount(i[d < limit], minlength=n).astype(np.int64)


def amplitudes(
    atoms: Atoms,
    *,
    material: str | None = None,
    table: Mapping | None = None,
    temperature_K: float | None = None,
    default_A: float | None = None,
) -> np.ndarray:
    """Vibration amplitude of every atom from its species and coordination.

    Parameters
    ----------
    atoms
        The structure, e.g. from :mod:`etem.simulate.structures`.
    material
        Table to use (``"Au"``, ``"MoS2"``); None takes ``atoms.info["material"]``.
    table
        An entry in the format of the tables file, used instead of the stored one.
    temperature_K
        Scale the table's amplitudes from its temperature to this one [K], classically
        (sigma ∝ sqrt(T)); None keeps the table's temperature.
    default_A
        Amplitude [Å] of atoms whose species the table lacks (a support, a substituted atom);
        None makes them an error.

    Returns
    -------
    numpy.ndarray
        ``[n]`` standard deviation of the displacement per direction [Å].
    """
    if table is None:
        material = material if material is not None else atoms.info.get("material")
        if not material:
            raise ConfigError("atoms.info has no 'material'; pass material='Au' or 'MoS2', or a table.")
        table = load_table(material)
    cn = coordination(atoms, table["cutoffs_A"])
    symbols = np.array(atoms.get_chemical_symbols())
    sigma = np.full(len(atoms), np.nan)
    for species, per_cn in table["sigma_A"].items():
        here = symbols == species
        keys = sorted(per_cn, key=int)
        sigma[here] = np.interp(cn[here], [int(k) for k in keys], [float(per_cn[k]) for k in keys])
    missing = np.isnan(sigma)
    if missing.any():
        if default_A is None:
            raise ConfigError(
                f"the {material or 'given'} table has no amplitude for {sorted(set(symbols[missing]))}; "
                "pass default_A=... (e.g. 0.08 Å for a carbon support) or a table that lists them."
            )
        if not default_A >= 0:
            raise ConfigError(f"default_A must not be negative; got {default_A!r}.")
        sigma[missing] = default_A
    if temperature_K is not None:
        if not temperature_K >= 0:
            raise ConfigError(f"temperature_K must not be negative; got {temperature_K!r}.")
        sigma *= np.sqrt(temperature_K / float(table["temperature_K"]))
    return sigma


def displace(atoms: Atoms, rng: np.random.Generator | int, sigma_A: float | np.ndarray) -> Atoms:
    """A frozen-phonon snapshot: every atom moved by a Gaussian displacement per direction.

    Parameters
    ----------
    atoms
        The structure; it is not changed.
    rng
        Random generator (or an integer seed).
    sigma_A
        Standard deviation per direction [Å]: one number, ``[n]`` (one per atom, as from
        :func:`amplitudes`) or ``[n, 3]``.

    Returns
    -------
    ase.Atoms
        A copy with the displaced positions (labels and info kept).
    """
    if not isinstance(rng, np.random.Generator):
        if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
            raise ConfigError(f"rng must be a numpy Generator or an integer seed; got {type(rng).__name__}.")
        rng = np.random.default_rng(int(rng))
    n = len(atoms)
    sigma = np.asarray(sigma_A, dtype=float)
    if sigma.ndim == 1:
        sigma = sigma[:, None]
    try:
        sigma = np.broadcast_to(sigma, (n, 3))
    except ValueError:
        raise ConfigError(
            f"sigma_A must be a number, [n] or [n, 3] with n = {n} atoms; got shape {np.shape(sigma_A)}."
        ) from None
    if not np.all(np.isfinite(sigma) & (sigma >= 0)):
        raise ConfigError("sigma_A must be finite and not negative.")
    out = atoms.copy()
    out.positions = atoms.positions + rng.standard_normal((n, 3)) * sigma
    return out


def _align(frames: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``frames`` ``[T, n, 3]`` moved and turned rigidly onto ``ref`` ``[n, 3]`` (Kabsch)."""
    x = frames - frames.mean(axis=1, keepdims=True)
    y = ref - ref.mean(axis=0)
    u, _, vt = np.linalg.svd(np.einsum("tni,nj->tij", x, y))
    d = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", u, vt)))
    vt[:, 2, :] *= d[:, None]
    rot = np.einsum("tij,tjk->tik", u, vt)  # x @ rot fits y
    return np.einsum("tni,tij->tnj", x, rot)


def md_amplitudes(
    atoms: Atoms | None = None,
    *,
    temperature_K: float = 300.0,
    time_step_fs: float = 5.0,
    equilibration_ps: float = 1.0,
    duration_ps: float = 4.0,
    sample_fs: float = 20.0,
    friction_per_fs: float = 0.01,
    cutoff_A: float = 3.4,
    seed: int = 0,
) -> dict:
    """Vibration amplitudes by coordination from molecular dynamics of a metal particle (EMT).

    Parameters
    ----------
    atoms
        A particle of one EMT metal (Al, Cu, Ag, Au, Ni, Pd, Pt) in vacuum; None builds the Au
        particle of :data:`MD_PARTICLE` (231 atoms, coordinations 3 to 12).
    temperature_K
        Temperature of the Langevin thermostat [K].
    time_step_fs
        MD time step [fs].
    equilibration_ps
        Time before sampling starts [ps].
    duration_ps
        Sampled time [ps].
    sample_fs
        Interval between samples [fs].
    friction_per_fs
        Langevin friction [1/fs].
    cutoff_A
        Neighbour distance for the coordination number [Å] (between the first and second
        neighbour shells).
    seed
        Seed of the initial velocities and the thermostat's noise.

    Returns
    -------
    dict
        A table entry (see the module docstring) with ``n_atoms`` per coordination and the MD
        settings, particle size and wall time under ``"md"``.
    """
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    if atoms is None:
        from .structures import au_nanoparticle

        kw = {k: v for k, v in MD_PARTICLE.items() if k != "seed"}
        atoms = au_nanoparticle(MD_PARTICLE["seed"], **kw)
        particle = f"au_nanoparticle({MD_PARTICLE['seed']}, " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"
    else:
        particle = atoms.get_chemical_formula()
    species = sorted(set(atoms.get_chemical_symbols()))
    if len(species) != 1:
        raise ConfigError(f"md_amplitudes needs a particle of one element; got {species}. Drop the support atoms.")
    for name, value in (("time_step_fs", time_step_fs), ("duration_ps", duration_ps), ("sample_fs", sample_fs),
                        ("temperature_K", temperature_K), ("cutoff_A", cutoff_A)):
        if not value > 0:
            raise ConfigError(f"{name} must be positive; got {value!r}.")
    every = max(int(round(sample_fs / time_step_fs)), 1)
    n_samples = int(round(duration_ps * 1000 / time_step_fs / every))
    if n_samples < 2:
        raise ConfigError("duration_ps holds fewer than two samples; lengthen it or shorten sample_fs.")

    rng = np.random.default_rng(seed)
    work = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions - atoms.positions.mean(axis=0))
    work.calc = EMT()
    work.set_constraint(FixCom())
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(work, temperature_K=temperature_K, rng=rng)
    vd.Stationary(work)
    vd.ZeroRotation(work)
    dyn = Langevin(work, time_step_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    t0 = time.perf_counter()
    dyn.run(int(round(equilibration_ps * 1000 / time_step_fs)))
    frames = []
    for _ in range(n_samples):
        dyn.run(every)
        frames.append(work.get_positions())
    wall = time.perf_counter() - t0

    x = np.asarray(frames)
    ref = x[0]
    for _ in range(2):  # align on the first sample, then on the mean structure
        x_al = _align(x, ref)
        ref = x_al.mean(axis=0)
    sigma = np.sqrt(((x_al - ref) ** 2).mean(axis=(0, 2)))
    mean_atoms = Atoms(work.get_chemical_symbols(), positions=ref)
    el = species[0]
    cn = coordination(mean_atoms, {f"{el}-{el}": cutoff_A})
    keys = np.unique(cn)
    return {
        "temperature_K": float(temperature_K),
        "method": (
            "molecular dynamics: EMT potential (ASE), Langevin thermostat; per-atom RMS displacement "
            "per direction about the mean position after removing rigid translation and rotation, "
            "RMS-averaged over the atoms of each coordination number"
        ),
        "date": date.today().isoformat(),
        "cutoffs_A": {f"{el}-{el}": float(cutoff_A)},
        "sigma_A": {el: {str(k): round(float(np.sqrt(np.mean(sigma[cn == k] ** 2))), 5) for k in keys}},
        "n_atoms": {el: {str(k): int(np.sum(cn == k)) for k in keys}},
        "md": {
            "particle": particle, "n_atoms": len(work), "time_step_fs": float(time_step_fs),
            "equilibration_ps": float(equilibration_ps), "duration_ps": float(duration_ps),
            "sample_fs": float(every * time_step_fs), "friction_per_fs": float(friction_per_fs),
            "seed": int(seed), "wall_s": round(wall, 1),
        },
    }


def _main() -> None:
    """Recompute the Au entry of the tables file (the other entries are kept)."""
    with open(TABLE_PATH, encoding="utf-8") as f:
        tables = json.load(f)
    tables["materials"]["Au"] = md_amplitudes()
    with open(TABLE_PATH, "w", encoding="utf-8") as f:
        json.dump(tables, f, indent=1, ensure_ascii=False)
        f.write("\n")
    au = tables["materials"]["Au"]
    print(f"Au, {au['temperature_K']:g} K, {au['md']['n_atoms']} atoms, MD {au['md']['wall_s']} s:")
    for k, s in au["sigma_A"]["Au"].items():
        print(f"  coordination {k:>2}: sigma = {s:.4f} Å ({au['n_atoms']['Au'][k]} atoms)")


if __name__ == "__main__":
    _main()
