"""Training on simulated exit waves: the loop runs, learns, and writes a bundle the tracker loads."""
import numpy as np
import pytest
import torch

from etem.simulate.structures import graphene
from etem.simulate.waves import WaveConfig, compute_waves, save_waves
from etem.train.bundle import load_bundle
from etem.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def wave_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "waves.h5"
    structures = [graphene(np.random.default_rng(s), size_A=(20.0, 20.0), n_holes=0, padding_A=1.0) for s in range(3)]
    save_waves(path, compute_waves(structures, config=WaveConfig(sampling_A=0.1, energy_eV=80e3)))
    return path


def test_training_writes_a_bundle_the_tracker_can_use(wave_set, tmp_path):
    cfg = TrainConfig(arch_args={"width": 4, "depth": 2}, size=48, sampling_A=0.2, label_sigma_A=0.4,
                      preset="graphene", batch=2, steps=6, validate_every=3, n_validation=2, threads=1)
    card = train(wave_set, tmp_path / "tiny", cfg)
    assert card["class_names"] == ["C"] and card["sampling_A"] == 0.2
    assert len(card["training"]["history"]) == 2
    assert card["evaluation"]["f1"] is None or 0 <= card["evaluation"]["f1"] <= 1
    model, loaded = load_bundle(tmp_path / "tiny")
    assert loaded["sha256"] and loaded["evaluation"]["f1"] == card["evaluation"]["f1"]

    from etem.tracker import find

    cols = find(np.random.default_rng(0).poisson(50, (64, 64)).astype(np.float32), sampling=0.2,
                model=str(tmp_path / "tiny"))
    assert set(cols.columns) >= {"frame", "y", "x", "cls", "prob"}
    assert cols.attrs["engine"] == "eager"


@pytest.mark.slow
def test_the_loss_goes_down(wave_set, tmp_path):
    # HAADF imaging at high dose: columns plainly visible, so a small network must learn them
    cfg = TrainConfig(arch_args={"width": 8, "depth": 2}, size=48, sampling_A=0.2, label_sigma_A=0.4,
                      preset="haadf", imaging="haadf", batch=4, steps=120, validate_every=20, n_validation=4,
                      lr=5e-3, threads=2, optics={"dose_e_per_A2": [1e4, 1e5]})
    card = train(wave_set, tmp_path / "small", cfg)
    h = card["training"]["history"]  # mean loss over each 20 steps
    assert h[-1]["loss"] < 0.9 * h[0]["loss"]
    assert card["evaluation"]["f1"] > 0.6
