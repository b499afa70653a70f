"""`etem simulate` as a user runs it: structures, waves, training images, movies."""
import h5py
import numpy as np
import pandas as pd
from ase.io import read

from etem.simulate.toy import load_movie
from etem.simulate.waves import load_waves
from etem.tracker.cli import main


def test_structures_waves_images_movie(tmp_path, capsys):
    assert main(["simulate", "structures", "--material", "graphene", "-n", "2", "-o", str(tmp_path / "g.extxyz")]) == 0
    frames = read(tmp_path / "g.extxyz", index=":")
    assert len(frames) == 2 and all(len(a) > 50 for a in frames)

    waves = tmp_path / "w.h5"
    assert main(["simulate", "waves", "--material", "mos2", "-n", "2", "--sampling", "0.1", "--seed", "3",
                 "-o", str(waves)]) == 0
    ws = load_waves(waves)
    assert len(ws) == 2 and ws[0].classes == ("Mo", "S2", "S") and ws[0].wave.dtype == np.complex64

    images = tmp_path / "i.h5"
    assert main(["simulate", "images", str(waves), "-n", "3", "--size", "64", "--sampling", "0.2",
                 "--label-sigma", "0.4", "-o", str(images)]) == 0
    with h5py.File(images) as f:
        assert f["images"].shape == (3, 1, 64, 64) and f["labels"].shape == (3, 4, 64, 64)
        labels = f["labels"][()]
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)  # background = 1 - sum
        pos = pd.DataFrame({k: f[f"positions/{k}"][()] for k in f["positions"]})
    # every labelled column sits on a label peak of its class
    for _, p in pos[pos["frame"] == pos["frame"].iloc[0]].iterrows():
        y, x = int(round(p["y"])), int(round(p["x"]))
        if 0 <= y < 64 and 0 <= x < 64:
            assert labels[int(p["frame"]), int(p["cls"]) + 1, y, x] > 0.5

    # HAADF-STEM images of the same flakes: Mo (Z 42) outshines a pair of S (Z 16) as Z^1.7 says
    stem = tmp_path / "s.h5"
    assert main(["simulate", "images", str(waves), "-n", "4", "--size", "96", "--sampling", "0.1",
                 "--preset", "haadf", "--imaging", "haadf", "--label-sigma", "0.4", "-o", str(stem)]) == 0
    with h5py.File(stem) as f:
        ims = f["images"][()][:, 0]
        pos = pd.DataFrame({k: f[f"positions/{k}"][()] for k in f["positions"]})
    pos = pos[(pos.y >= 0) & (pos.y < 95.5) & (pos.x >= 0) & (pos.x < 95.5)]
    at = ims[pos["frame"].to_numpy(int), pos["y"].round().to_numpy(int), pos["x"].round().to_numpy(int)]
    mo, s2 = (np.median(at[pos["cls"].to_numpy() == c]) for c in (0, 1))
    assert mo > 1.3 * s2

    # --optics: the microscope of the images (as `etem train --optics`): a blurred one is smoother
    def roughness(blur):
        out = tmp_path / f"blur{blur}.h5"
        assert main(["simulate", "images", str(waves), "-n", "2", "--size", "64", "--sampling", "0.1",
                     "--optics", "dose_e_per_A2=1e8", "--optics", f"blur_A={blur}", "-o", str(out)]) == 0
        with h5py.File(out) as f:
            return float(np.abs(np.diff(f["images"][()], axis=-1)).mean())

    assert roughness(1.5) < 0.5 * roughness(0)
    assert main(["simulate", "images", str(waves), "-n", "1", "--optics", "blur=1", "-o", str(tmp_path / "x.h5")]) == 2
    assert "unknown optics range" in capsys.readouterr().err

    movie = tmp_path / "m.h5"
    assert main(["simulate", "movie", "--imaging", "stem", "--frames", "3", "--size", "128", "-o", str(movie)]) == 0
    m = load_movie(movie)
    assert m.frames.shape == (3, 128, 128) and len(m.truth.positions) > 0
    assert "3 frames" in capsys.readouterr().out


def test_tilt_max_limits_the_au_particles_tilt(tmp_path, capsys):
    import json

    out = tmp_path / "au.extxyz"
    assert main(["simulate", "structures", "--material", "au", "-n", "4", "--tilt-max", "1", "-o", str(out)]) == 0
    tilts = [json.loads(a.info["params"])["tilt_deg"] for a in read(out, index=":")]
    assert all(0 <= t <= 1 for t in tilts) and max(tilts) > 0
    assert main(["simulate", "structures", "--material", "graphene", "-n", "1", "--tilt-max", "1",
                 "-o", str(tmp_path / "g.extxyz")]) == 2
    assert "--tilt-max applies to Au" in capsys.readouterr().err


def test_substrate_puts_mos2_flakes_on_graphene(tmp_path, capsys):
    def species(substrate):
        out = tmp_path / f"{substrate}.extxyz"
        assert main(["simulate", "structures", "--material", "mos2", "-n", "6", "--seed", "5",
                     "--substrate", substrate, "-o", str(out)]) == 0
        return ["C" in a.get_chemical_symbols() for a in read(out, index=":")]

    assert not any(species("none")) and all(species("graphene"))
    mixed = species("mixed")
    assert any(mixed) and not all(mixed)  # drawn per structure
    assert main(["simulate", "structures", "--material", "au", "-n", "1", "--substrate", "graphene",
                 "-o", str(tmp_path / "au.extxyz")]) == 2
    assert "--substrate applies to MoS2" in capsys.readouterr().err


def test_images_by_default_are_what_etem_train_trains_on(tmp_path, capsys):
    """`etem simulate images` ("look at a few samples first") takes etem train's pixel size,
    label width, crop size and optics preset where no option is given, and says so."""
    from etem.simulate.structures import graphene
    from etem.simulate.waves import WaveConfig, compute_waves, save_waves
    from etem.train.loop import TrainConfig

    waves = tmp_path / "g.h5"
    save_waves(waves, compute_waves([graphene(np.random.default_rng(0), size_A=(12.0, 12.0), n_holes=0,
                                              padding_A=1.0)], config=WaveConfig(sampling_A=0.1, energy_eV=80e3)))
    assert main(["simulate", "images", str(waves), "-n", "2", "-o", str(tmp_path / "i.h5")]) == 0
    train = TrainConfig()
    with h5py.File(tmp_path / "i.h5") as f:
        assert f["images"].shape == (2, 1, train.size, train.size)
        assert (f.attrs["sampling_A"], f.attrs["label_sigma_A"], f.attrs["preset"]) == (
            train.sampling_A, train.label_sigma_A, train.preset)
    out = capsys.readouterr().out
    assert f"at {train.sampling_A:g} Å/px" in out and f"σ {train.label_sigma_A:g} Å" in out and "'au'" in out
    # options still win
    assert main(["simulate", "images", str(waves), "-n", "1", "--size", "32", "--sampling", "0.1",
                 "--label-sigma", "1", "--preset", "graphene", "-o", str(tmp_path / "j.h5")]) == 0
    with h5py.File(tmp_path / "j.h5") as f:
        assert f["images"].shape == (1, 1, 32, 32)
        assert (f.attrs["sampling_A"], f.attrs["label_sigma_A"], f.attrs["preset"]) == (0.1, 1.0, "graphene")
