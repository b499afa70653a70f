"""Exit waves with abTEM, computed once per structure and stored with the structure and labels.

The slow part of making a training image is the multislice through the specimen; the optics
and noise (:mod:`etem.simulate.optics`, :mod:`etem.simulate.augment`) are cheap and applied
afresh to every sample while training. So exit waves are computed once, here, and saved in a
*wave set*: one HDF5 file holding, per structure, the complex exit wave, its sampling, the
atoms and the table of true columns.

Layout of a wave-set file (``format = "etem-waves"``, ``format_version = 1``; lengths in Å)::

    /attrs            energy_eV, parametrization, slice_thickness_A, sampling_A, frozen_phonons, created
    /<i>/wave         complex64 [H, W]   the exit wave (mean over frozen phonons: the coherent wave)
    /<i>/columns      compound table     x_A, y_A, cls, n_atoms (cell frame, as truth_columns)
    /<i>/atoms        numbers [n], positions [n, 3], cell [3, 3], column [n], cls [n]
    /<i>.attrs        material, classes (JSON), params (JSON), sampling_A (y, x), seed

Structures are independent, so :func:`compute_waves` maps them over a Dask bag (processes) when
asked; each task seeds its own frozen phonons from the structure's index and the run's seed.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from ase import Atoms

from etem.tracker.errors import ConfigError, FileFormatError, choice_error

__all__ = ["WaveConfig", "ExitWave", "exit_wave", "truth_columns", "compute_waves", "save_waves", "load_waves",
           "iter_waves", "wave_metas", "FORMAT", "abtem_module"]

FORMAT = "etem-waves"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class WaveConfig:
    """How exit waves are computed (abTEM's parameters).

    Parameters
    ----------
    energy_eV
        Beam energy [eV].
    sampling_A
        Real-space sampling of the wave [Å/px] (finer than any image pixel it will make).
    slice_thickness_A
        Multislice slice thickness [Å].
    parametrization
        abTEM's potential parametrization: ``"lobato"`` or ``"kirkland"``.
    frozen_phonons
        Number of thermal configurations averaged (0: the static structure). Displacements
        are coordination-dependent (:mod:`etem.simulate.vibrations`) for materials with a
        table, else ``sigma_A``.
    sigma_A
        Thermal displacement [Å] where the material has no table.
    """

    energy_eV: float = 300e3
    sampling_A: float = 0.05
    slice_thickness_A: float = 1.0
    parametrization: str = "lobato"
    frozen_phonons: int = 0
    sigma_A: float = 0.08

    def __post_init__(self) -> None:
        if not self.energy_eV > 0:
            raise ConfigError(f"energy_eV must be positive [eV]; got {self.energy_eV!r}")
        if not 0 < self.sampling_A <= 0.2:
            raise ConfigError(f"sampling_A must be in (0, 0.2] Å/px for an exit wave; got {self.sampling_A!r}")
        if not self.slice_thickness_A > 0:
            raise ConfigError(f"slice_thickness_A must be positive [Å]; got {self.slice_thickness_A!r}")
        if self.parametrization not in ("lobato", "kirkland"):
            raise ConfigError(f"parametrization must be 'lobato' or 'kirkland'; got {self.parametrization!r}")
        if self.frozen_phonons < 0:
            raise ConfigError(f"frozen_phonons must be 0 or more; got {self.frozen_phonons!r}")


@dataclass
class ExitWave:
    """One structure's exit wave with what is needed to label it."""

    wave: np.ndarray          #: complex64 [H, W]
    sampling_A: tuple[float, float]  #: (y, x) [Å/px]
    columns: pd.DataFrame     #: x_A, y_A, cls, n_atoms (cell frame)
    atoms: Atoms
    classes: tuple[str, ...]
    energy_eV: float
    meta: dict[str, Any] = field(default_factory=dict)

    def columns_px(self) -> pd.DataFrame:
        """The columns in the wave's pixels: ``y, x, cls`` (row, col)."""
        return pd.DataFrame({"y": self.columns["y_A"].to_numpy() / self.sampling_A[0],
                             "x": self.columns["x_A"].to_numpy() / self.sampling_A[1],
                             "cls": self.columns["cls"].to_numpy()})

    def haadf_object(self, device: str | None = None):
        """The incoherent HAADF-STEM object of this structure on the wave's grid: a Gaussian of
        0.3 Å at each labelled atom's projected position, weighted by Z^1.7 relative to the
        heaviest element present (``[1, H, W]`` float32 tensor, for
        :func:`etem.simulate.optics.stem_image`).

        Atoms, not columns: a column of a tilted particle is the streak of its atoms, as the probe
        sees it, and each species weighs as its Z (Mo against S in MoS2). Unlabelled atoms (a
        support) are left out; training puts a flat background under the noise instead.
        """
        import torch

        from .optics import haadf_object

        keep = self.atoms.arrays["column"] >= 0 if "column" in self.atoms.arrays else slice(None)
        yx = self.atoms.positions[keep][:, [1, 0]] / np.asarray(self.sampling_A, dtype=float)
        z = self.atoms.numbers[keep].astype(np.float64)
        w = (z / z.max()) ** 1.7 if z.size else z
        return haadf_object(torch.from_numpy(yx)[None], torch.from_numpy(w)[None], shape=self.wave.shape,
                            sampling_A=self.sampling_A[0]).to(device or "cpu")


def _thermal(atoms: Atoms, rng: np.random.Generator, sigma_A: float) -> Atoms:
    from .vibrations import amplitudes, displace

    try:
        # coordination-dependent where the material has a table; sigma_A for the rest (a support)
        sig = amplitudes(atoms, default_A=sigma_A)
    except (ConfigError, KeyError, ValueError):
        sig = sigma_A
    return displace(atoms, rng, sig)


def abtem_module():
    """abTEM, imported and set for reproducible waves (every multislice here goes through it).

    abTEM's FFTW plans default to ``FFTW_MEASURE``, which times candidate algorithms and may
    pick another one in each process; the waves then differed in their last bits from run to
    run (1e-6 of the wave), and a Poisson sampler fed by them draws a different number of random
    numbers, so an in-situ movie's shot noise differed between runs from the first such pixel
    on. ``FFTW_ESTIMATE`` picks plans without timing: the same waves in every process of one
    machine (a test checks it). The setting is abTEM's global one (a context manager would be
    undone out of order by the threads of a Dask scheduler), so it also holds for other abTEM
    calls in the same process.
    """
    import abtem

    if abtem.config.get("fftw.planning_effort") != "FFTW_ESTIMATE":
        abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"})
    return abtem


def _columns_by(atoms: Atoms) -> str:
    return "label" if "column" in atoms.arrays else "position"


def truth_columns(atoms: Atoms, *, classes: str = "species", max_height: int | None = None) -> pd.DataFrame:
    """The true columns of a structure, as a wave set stores them: the generator's columns
    (``column`` labels) where the atoms carry them, else the atoms grouped by projected position.

    The labels are the columns of the untilted crystal, each at the mean projected position of
    its atoms; grouping by position instead would split a tilted column into single atoms once
    its atoms drift apart by more than the grouping tolerance between neighbours (a Au [111]
    column, atoms 7.1 Å apart along it, past 4° of tilt), so that the table of one particle
    would change from columns to atoms within a fraction of a degree.
    """
    from .structures import columns as columns_of

    kw = {} if max_height is None else {"max_height": max_height}
    return columns_of(atoms, classes=classes, by=_columns_by(atoms), **kw)


def exit_wave(atoms: Atoms, config: WaveConfig | None = None, *, seed: int = 0,
              classes: str = "species") -> ExitWave:
    """The exit wave of one structure (abTEM multislice, plane-wave illumination).

    The cell must be orthorhombic with the beam along z (as :mod:`etem.simulate.structures`
    makes them). With frozen phonons the returned wave is the mean of the configurations'
    waves (the coherent part; the diffuse part would go to large angles and is not kept).
    """
    abtem = abtem_module()

    cfg = config or WaveConfig()
    cell = np.asarray(atoms.cell)
    if not np.allclose(cell - np.diag(np.diag(cell)), 0, atol=1e-6):
        raise ConfigError("the structure's cell must be orthorhombic with the beam along z "
                          "(etem.simulate.structures makes them so; ase's orthogonalize_cell can help).")
    rng = np.random.default_rng(seed)
    configs = [atoms] if cfg.frozen_phonons == 0 else [_thermal(atoms, rng, cfg.sigma_A)
                                                       for _ in range(cfg.frozen_phonons)]
    waves = []
    for a in configs:
        pot = abtem.Potential(a, sampling=cfg.sampling_A, slice_thickness=cfg.slice_thickness_A,
                              parametrization=cfg.parametrization, projection="infinite", device="cpu")
        w = abtem.PlaneWave(energy=cfg.energy_eV, device="cpu").multislice(pot).compute(progress_bar=False)
        waves.append(np.asarray(w.array, dtype=np.complex64))
        sampling = (float(w.sampling[1]), float(w.sampling[0]))  # abTEM's arrays are [x, y]
    # abTEM indexes arrays as [x, y]; ours are [row = y, col = x]
    wave = np.mean(waves, axis=0).T.astype(np.complex64)
    cls_names = tuple(atoms.info.get("classes", ()))
    cols = truth_columns(atoms, classes=classes)
    if classes == "height":  # the same classes for every structure: "1" .. "10" (10 or more)
        cls_names = height_classes()
    return ExitWave(wave=wave, sampling_A=sampling, columns=cols[["x_A", "y_A", "cls", "n_atoms"]].copy(),
                    atoms=atoms, classes=cls_names, energy_eV=cfg.energy_eV,
                    meta={"material": atoms.info.get("material", ""), "params": atoms.info.get("params", {}),
                          "seed": seed, "classes_by": classes, "columns_by": _columns_by(atoms)})


def compute_waves(
    structures: Sequence[Atoms] | Callable[[int], Atoms],
    n: int | None = None,
    config: WaveConfig | None = None,
    *,
    seed: int = 0,
    classes: str = "species",
    scheduler: str | None = None,
    progress: bool = False,
) -> list[ExitWave]:
    """Exit waves of many structures, in parallel with Dask when ``scheduler`` is given.

    Parameters
    ----------
    structures
        The structures, or a function ``i -> Atoms`` (built inside the task, so a process
        pool never pickles big structures) with ``n`` the count.
    scheduler
        None: one after the other in this process; ``"processes"`` or ``"threads"``: a Dask bag
        on that local scheduler; an address (``tcp://host:8786``): a Dask distributed cluster.
    """
    count = len(structures) if not callable(structures) else n
    if count is None:
        raise ConfigError("give n, the number of structures, with a structure function")

    def one(i: int) -> ExitWave:
        atoms = structures(i) if callable(structures) else structures[i]
        return exit_wave(atoms, config, seed=seed * 1_000_003 + i, classes=classes)

    if scheduler is None:
        out = []
        it: Iterator[int] = iter(range(count))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=count, unit="wave", desc="exit waves")
        for i in it:
            out.append(one(i))
        return out
    import dask.bag as db

    bag = db.from_sequence(range(count), npartitions=max(1, min(count, 64))).map(one)
    if "://" in scheduler:  # a Dask distributed scheduler (a cluster)
        from distributed import Client

        with Client(scheduler) as client:
            return bag.compute(scheduler=client)
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return bag.compute(scheduler=scheduler)
    return bag.compute(scheduler=scheduler)


# ------------------------------------------------------------------------------------ storage
def save_waves(path: str | Path, waves: Sequence[ExitWave], config: WaveConfig | None = None, *,
               append: bool = False) -> Path:
    """Write (or append to) a wave-set file."""
    path = Path(path)
    mode = "a" if append and path.exists() else "w"
    with h5py.File(path, mode) as f:
        if mode == "w":
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            if config is not None:
                f.attrs["config"] = json.dumps(asdict(config))
        elif f.attrs.get("format") != FORMAT:
            raise FileFormatError(f"{path} is not a wave-set file; cannot append to it.")
        start = len([k for k in f if k.isdigit()])
        for i, w in enumerate(waves, start=start):
            g = f.create_group(str(i))
            g.create_dataset("wave", data=w.wave, compression="gzip", compression_opts=1)
            tab = w.columns
            g.create_dataset("columns", data=np.rec.fromarrays(
                [tab["x_A"].to_numpy(float), tab["y_A"].to_numpy(float), tab["cls"].to_numpy(np.int16),
                 tab["n_atoms"].to_numpy(np.int32)], names="x_A,y_A,cls,n_atoms"))
            a = g.create_group("atoms")
            a["numbers"] = w.atoms.numbers
            a["positions"] = w.atoms.positions
            a["cell"] = np.asarray(w.atoms.cell)
            for k in ("column", "cls"):
                if k in w.atoms.arrays:
                    a[k] = w.atoms.arrays[k]
            g.attrs["sampling_A"] = w.sampling_A
            g.attrs["energy_eV"] = w.energy_eV
            g.attrs["classes"] = json.dumps(list(w.classes))
            g.attrs["meta"] = json.dumps(w.meta, default=_json_default)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _read(g: h5py.Group) -> ExitWave:
    a = g["atoms"]
    atoms = Atoms(numbers=a["numbers"][()], positions=a["positions"][()], cell=a["cell"][()], pbc=False)
    for k in ("column", "cls"):
        if k in a:
            atoms.arrays[k] = a[k][()]
    classes = tuple(json.loads(g.attrs["classes"]))
    atoms.info["classes"] = classes
    meta = json.loads(g.attrs["meta"])
    if meta.get("columns_by", "position") != _columns_by(atoms):
        # written before the columns followed the generator's labels: grouped by projected
        # position, which splits tilted columns into atoms; the labels are in the file
        by = meta.get("classes_by", "species")
        cols = truth_columns(atoms, classes=by, **({"max_height": len(classes)} if by == "height" else {}))
        cols = cols[["x_A", "y_A", "cls", "n_atoms"]]
        meta["columns_by"] = _columns_by(atoms)
    else:
        rec = g["columns"][()]
        cols = pd.DataFrame({"x_A": rec["x_A"], "y_A": rec["y_A"], "cls": rec["cls"].astype(np.int64),
                             "n_atoms": rec["n_atoms"].astype(np.int64)})
    return ExitWave(wave=g["wave"][()], sampling_A=tuple(float(v) for v in g.attrs["sampling_A"]), columns=cols,
                    atoms=atoms, classes=classes, energy_eV=float(g.attrs["energy_eV"]), meta=meta)


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise FileFormatError(f"cannot read wave set {path}: {exc}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise FileFormatError(f"{path} is not a wave-set file (format {FORMAT!r}); make one with `etem simulate waves`.")
    return f


def iter_waves(path: str | Path) -> Iterator[ExitWave]:
    """The exit waves of a wave-set file, one at a time (memory stays at one wave)."""
    with _open(path) as f:
        for k in sorted((k for k in f if k.isdigit()), key=int):
            yield _read(f[k])


def wave_metas(path: str | Path) -> list[dict[str, Any]]:
    """Each exit wave's ``meta`` (material, drawn structure parameters, seed …) without reading
    the waves."""
    with _open(path) as f:
        return [json.loads(f[k].attrs["meta"]) for k in sorted((k for k in f if k.isdigit()), key=int)]


def load_waves(path: str | Path) -> list[ExitWave]:
    """All exit waves of a wave-set file."""
    return list(iter_waves(path))


#: The tallest column-height class; it holds every taller column too.
MAX_HEIGHT = 10


def height_classes(max_height: int = MAX_HEIGHT) -> tuple[str, ...]:
    """Names of the column-height classes: ``"1"`` .. ``str(max_height)`` (atoms per column)."""
    return tuple(str(h) for h in range(1, int(max_height) + 1))


def relabel(waves: Sequence[ExitWave], classes: str, *, max_height: int = MAX_HEIGHT) -> list[ExitWave]:
    """The same exit waves with their columns classed by ``"species"``, ``"height"`` or
    ``"column"`` (one class for every column: a finder for any material).

    The waves do not change (labelling is independent of the multislice): the columns are
    grouped again from each wave's structure, as :func:`exit_wave` groups them, so one wave set
    trains both a species model and a column-height model.
    """
    from dataclasses import replace

    if classes not in ("species", "height", "column"):
        raise choice_error("classes", classes, ("species", "height", "column"))
    out = []
    for w in waves:
        if classes == "column":  # the columns as grouped, whatever they were classed by
            out.append(replace(w, columns=w.columns.assign(cls=np.zeros(len(w.columns), np.int64)),
                               classes=("column",), meta={**w.meta, "classes_by": "column"}))
            continue
        was = w.meta.get("classes_by", "species")
        if was == classes and (classes == "species" or len(w.classes) == max_height):
            out.append(w)
            continue
        if classes == "species":
            raise ConfigError("these waves were labelled by column height; their species classes are not stored. "
                              "Simulate the wave set with --classes species.")
        cols = truth_columns(w.atoms, classes=classes, max_height=max_height)
        names = height_classes(max_height)
        out.append(replace(w, columns=cols[["x_A", "y_A", "cls", "n_atoms"]].copy(), classes=names,
                           meta={**w.meta, "classes_by": classes}))
    return out
