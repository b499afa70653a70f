"""Exit waves with abTEM and the wave-set file."""
import subprocess
import sys

import h5py
import numpy as np
import pytest
from ase import Atoms
from scipy import ndimage

from etem.simulate.waves import WaveConfig, compute_waves, exit_wave, iter_waves, load_waves, save_waves
from etem.tracker.errors import ConfigError, FileFormatError

CFG = WaveConfig(sampling_A=0.05, energy_eV=80e3)


def _two_atoms(x2=12.3, y2=4.4):
    a = Atoms("AuC", positions=[(5.0, 10.0, 2.0), (x2, y2, 2.0)], cell=[20.0, 15.0, 4.0])
    a.arrays["column"] = np.array([0, 1])
    a.arrays["cls"] = np.array([0, 1])
    a.info["classes"] = ("Au", "C")
    return a


def test_the_wave_is_in_row_col_order_with_the_atoms_where_the_columns_say():
    w = exit_wave(_two_atoms(), CFG)
    assert w.wave.dtype == np.complex64 and w.wave.shape == (300, 400)  # 15 Å x 20 Å at 0.05 Å/px
    phase = np.angle(w.wave)
    true = w.columns_px()[["y", "x"]].to_numpy()
    for y, x in true:  # the phase peaks within half a pixel (0.025 Å) of each column
        y0, x0 = int(round(y)) - 20, int(round(x)) - 20
        win = phase[y0:y0 + 41, x0:x0 + 41]
        lab, _ = ndimage.label(win > 0.5 * win.max())
        peak = lab[np.unravel_index(np.argmax(win), win.shape)]
        cy, cx = ndimage.center_of_mass(win, lab, peak)
        assert np.hypot(y0 + cy - y, x0 + cx - x) < 0.5
    # gold shifts the phase far more than carbon
    au = phase[int(round(true[0, 0])), int(round(true[0, 1]))]
    c = phase[int(round(true[1, 0])), int(round(true[1, 1]))]
    assert au > 3 * c > 0


def test_frozen_phonons_blur_the_coherent_wave():
    static = exit_wave(_two_atoms(), CFG)
    thermal = exit_wave(_two_atoms(), WaveConfig(sampling_A=0.05, energy_eV=80e3, frozen_phonons=6, sigma_A=0.15),
                        seed=1)
    assert np.angle(thermal.wave).max() < np.angle(static.wave).max()


def test_a_wave_set_round_trips(tmp_path):
    waves = compute_waves([_two_atoms(), _two_atoms(x2=8.0)], config=CFG)
    path = save_waves(tmp_path / "set.h5", waves, CFG)
    save_waves(path, [waves[0]], append=True)
    back = load_waves(path)
    assert len(back) == 3
    for a, b in zip(waves + [waves[0]], back):
        np.testing.assert_array_equal(a.wave, b.wave)
        assert a.sampling_A == b.sampling_A and a.classes == b.classes
        np.testing.assert_array_equal(a.columns.to_numpy(), b.columns.to_numpy())
        np.testing.assert_allclose(a.atoms.positions, b.atoms.positions)
    assert sum(1 for _ in iter_waves(path)) == 3


def _tilted_111_particle():
    from etem.simulate.structures import au_nanoparticle
    return au_nanoparticle(1, zone_axis="111", radius_A=8.0, tilt_deg=5.0)


def test_a_tilted_particle_keeps_its_columns():
    """Past 4° of tilt a Au [111] column's atoms (7.1 Å apart along it) project more than the
    grouping tolerance apart: grouped by position it would fall into single atoms. The true
    columns are the generator's, each at the mean position of its atoms."""
    from etem.simulate.structures import columns

    atoms = _tilted_111_particle()
    by_position, by_label = columns(atoms), columns(atoms, by="label")
    assert len(by_position) > 1.5 * len(by_label)  # the trap this guards against
    w = exit_wave(atoms, WaveConfig(sampling_A=0.1))
    assert w.meta["columns_by"] == "label"
    np.testing.assert_allclose(w.columns[["x_A", "y_A"]].to_numpy(), by_label[["x_A", "y_A"]].to_numpy())
    np.testing.assert_array_equal(w.columns["n_atoms"], by_label["n_atoms"])
    assert w.columns["n_atoms"].sum() == len(atoms) and w.columns["n_atoms"].max() >= 3


def test_a_wave_set_written_with_columns_grouped_by_position_is_read_with_the_labels(tmp_path):
    """Wave sets written before the columns followed the labels are read as they are now."""
    import json

    from etem.simulate.structures import columns
    from etem.simulate.waves import relabel

    w = exit_wave(_tilted_111_particle(), WaveConfig(sampling_A=0.1))
    path = save_waves(tmp_path / "old.h5", [w])
    with h5py.File(path, "a") as f:  # as such a file was written
        old = columns(w.atoms)
        del f["0/columns"]
        f["0"].create_dataset("columns", data=np.rec.fromarrays(
            [old["x_A"].to_numpy(), old["y_A"].to_numpy(), old["cls"].to_numpy(np.int16),
             old["n_atoms"].to_numpy(np.int32)], names="x_A,y_A,cls,n_atoms"))
        meta = json.loads(f["0"].attrs["meta"])
        del meta["columns_by"]
        f["0"].attrs["meta"] = json.dumps(meta)
    back = load_waves(path)[0]
    assert back.meta["columns_by"] == "label" and len(old) > 1.5 * len(back.columns)
    np.testing.assert_allclose(back.columns.to_numpy(float), w.columns.to_numpy(float))
    # the column-height labels come from the same columns
    heights = relabel([back], "height")[0].columns
    np.testing.assert_array_equal(heights["n_atoms"], w.columns["n_atoms"])
    np.testing.assert_array_equal(heights["cls"], np.minimum(w.columns["n_atoms"], 10) - 1)
    # a file written now is read as written
    fresh = load_waves(save_waves(tmp_path / "new.h5", [w]))[0]
    np.testing.assert_array_equal(fresh.columns.to_numpy(), w.columns.to_numpy())


def _no_wave(atoms, sampling_A=0.1):
    """An ExitWave of ``atoms`` without the multislice (the HAADF object needs only the atoms)."""
    from etem.simulate.waves import ExitWave, truth_columns

    shape = tuple(int(round(v / sampling_A)) for v in np.diag(atoms.cell)[[1, 0]])
    return ExitWave(wave=np.ones(shape, np.complex64), sampling_A=(sampling_A, sampling_A),
                    columns=truth_columns(atoms)[["x_A", "y_A", "cls", "n_atoms"]], atoms=atoms,
                    classes=tuple(atoms.info.get("classes", ())), energy_eV=300e3)


def test_the_haadf_object_is_made_of_atoms_weighted_by_z():
    import torch

    from etem.simulate.optics import haadf_object
    from etem.simulate.structures import au_nanoparticle

    # Au against C: Z^1.7, Au = 1
    w = _no_wave(_two_atoms(), 0.05)
    obj = w.haadf_object()[0].numpy()
    (ya, xa), (yc, xc) = np.round(w.columns_px()[["y", "x"]].to_numpy()).astype(int)
    assert obj[ya, xa] == pytest.approx(obj.max(), rel=1e-3)
    assert obj[yc, xc] / obj[ya, xa] == pytest.approx((6 / 79) ** 1.7, rel=1e-2)
    # an untilted particle: one Gaussian per column, as strong as its atoms are many
    flat = _no_wave(au_nanoparticle(3, zone_axis="110", radius_A=8.0, tilt_deg=0.0))
    cols = torch.tensor(flat.columns_px()[["y", "x"]].to_numpy())[None]
    by_column = haadf_object(cols, torch.tensor(flat.columns["n_atoms"].to_numpy(), dtype=torch.float64)[None],
                             shape=flat.wave.shape, sampling_A=0.1)
    np.testing.assert_allclose(flat.haadf_object().numpy(), by_column.numpy(), atol=2e-3 * float(by_column.max()))
    # tilted 5°: each column is the streak of its atoms, dimmer at the peak than the column's sum
    tilted = _no_wave(_tilted_111_particle())
    obj = tilted.haadf_object()[0].numpy()
    yx = np.round(tilted.columns_px()[["y", "x"]].to_numpy()).astype(int)
    tall = tilted.columns["n_atoms"].to_numpy() >= 3
    peak_per_atom = obj[yx[tall, 0], yx[tall, 1]] / tilted.columns["n_atoms"].to_numpy()[tall]
    assert np.median(peak_per_atom) < 0.8 * np.median(obj[yx[~tall, 0], yx[~tall, 1]] /
                                                       tilted.columns["n_atoms"].to_numpy()[~tall])


def test_dask_gives_the_same_waves_as_one_by_one():
    structures = [_two_atoms(x2=x) for x in (8.0, 12.0, 16.0)]
    seq = compute_waves(structures, config=CFG)
    par = compute_waves(lambda i: structures[i], n=3, config=CFG, scheduler="threads")
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a.wave, b.wave)


_HASH_WAVES = """
import hashlib
import numpy as np
from ase import Atoms
from etem.simulate.insitu import isolated_column_waves
from etem.simulate.waves import WaveConfig, exit_wave
a = Atoms("AuC", positions=[(5.0, 10.0, 2.0), (12.3, 4.4, 2.0)], cell=[20.0, 15.0, 4.0])
a.arrays["column"] = np.array([0, 1]); a.arrays["cls"] = np.array([0, 1]); a.info["classes"] = ("Au", "C")
h = hashlib.sha256(exit_wave(a, WaveConfig(sampling_A=0.05, energy_eV=80e3)).wave.tobytes())
for w in isolated_column_waves({"Mo": [("Mo", 0.0)], "S2": [("S", 0.0), ("S", 3.1)]}, sampling_A=0.05,
                               energy_eV=80e3).values():
    h.update(w.tobytes())
print(h.hexdigest())
"""


def test_every_process_computes_the_same_waves():
    # abTEM's default FFTW plans are timed, and another plan in another process changed the
    # waves' last bits (and with them an in-situ movie's whole shot-noise stream)
    digests = {subprocess.run([sys.executable, "-c", _HASH_WAVES], capture_output=True, text=True, check=True,
                              timeout=120).stdout.strip() for _ in range(3)}
    assert len(digests) == 1, digests


def test_bad_inputs_are_clear_errors(tmp_path):
    a = _two_atoms()
    a.set_cell([[20, 3, 0], [0, 15, 0], [0, 0, 4]])
    with pytest.raises(ConfigError, match="orthorhombic"):
        exit_wave(a, CFG)
    with pytest.raises(ConfigError, match="sampling_A"):
        WaveConfig(sampling_A=0.5)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(FileFormatError, match="wave-set"):
        load_waves(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FileFormatError):
        load_waves(tmp_path / "junk.h5")


def test_waves_on_a_dask_distributed_cluster():
    from distributed import LocalCluster

    structures = [_two_atoms(x2=x) for x in (8.0, 12.0)]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        par = compute_waves(structures, config=CFG, scheduler=cluster.scheduler_address)
    seq = compute_waves(structures, config=CFG)
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a.wave, b.wave)
