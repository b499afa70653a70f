"""The onnxruntime engine's int8 graph (CPU): calibration files, the quantized graph checked
against the float32 one, its cache, `etem engine calibrate|build --int8`, `--int8` on the
tracking commands and `etem evaluate --int8`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from etem.tracker.cli import main
from etem.tracker.engines import make_engine
from etem.tracker.engines.cache import EngineCache
from etem.tracker.engines.quantize import (MIN_AGREEMENT, calibration_file, load_calibration, network_inputs,
                                           save_calibration)
from etem.tracker.errors import ConfigError, ModelError
from etem.train.bundle import bundle_paths, bundled_models, load_bundle, save_bundle
from etem.train.networks import FusionNet

pytest.importorskip("onnxruntime", reason="the onnxruntime engine needs onnxruntime")
pytest.importorskip("onnxruntime.quantization", reason="the int8 graph needs onnxruntime's quantization tools")

SHIPPED_INT8 = ("au-hrtem", "au-heights", "haadf-stem", "graphene-hrtem", "mos2-unet")
CARD = {"inputs": [0.0], "class_names": ["column"], "sampling_A": 0.2,
        "normalization": {"method": "local", "sigma_A": 12.0}}


def _etem(*args):
    return subprocess.run([sys.executable, "-m", "etem.tracker.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def _lattice(seed: int, size: int = 96, dose: float = 400.0) -> np.ndarray:
    """Poisson counts of bright Gaussian columns on a square lattice 2.5 Å apart (0.2 Å/px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = np.zeros((size, size))
    off = rng.uniform(0, 12.5, 2)
    for y in np.arange(off[0], size, 12.5):
        for x in np.arange(off[1], size, 12.5):
            img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0 ** 2))
    return rng.poisson(dose * (0.2 + img)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small random FusionNet bundle with calibration images beside it (NAME.calib.npz)."""
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(3)
    _, card_path = save_bundle(FusionNet(n_inputs=1, n_classes=2, width=4, depth=2).eval(), folder / "tiny", CARD)
    save_calibration(calibration_file(card_path), np.stack([_lattice(s) for s in range(4)]), 0.2, {"model": "tiny"})
    return card_path


# --- calibration files -------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED_INT8)
def test_the_shipped_models_bring_calibration_images_of_their_own_kind(name):
    card_path = bundle_paths(name)[1]
    images, head = load_calibration(calibration_file(card_path))
    _, card = load_bundle(name)
    assert images.shape[1] == len(card["inputs"]) and images.shape[0] >= 10
    assert head["sampling_A"] == pytest.approx(card["sampling_A"]) and head["model"] == name
    assert len(set(head["doses"])) == 5 and images.min() >= 0  # counts, before normalization
    x = network_inputs(images, head, card, len(card["inputs"]))
    assert len(x) == len(images) and abs(float(np.mean([a.mean() for a in x]))) < 0.2  # locally normalized


def test_calibration_files_refuse_what_they_cannot_hold(tmp_path):
    with pytest.raises(ConfigError, match="finite"):
        save_calibration(tmp_path / "c.npz", np.full((2, 8, 8), np.nan), 0.2)
    with pytest.raises(ConfigError, match=r"\[N, H, W\]"):
        save_calibration(tmp_path / "c.npz", np.zeros((8, 8)), 0.2)
    with pytest.raises(ConfigError, match="not found.*etem engine calibrate"):
        load_calibration(tmp_path / "none.calib.npz")
    np.savez(tmp_path / "plain.npz", images=np.zeros((2, 8, 8)))
    with pytest.raises(ConfigError, match="not a readable calibration file"):
        load_calibration(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable calibration file"):
        load_calibration(tmp_path / "junk.npz")
    save_calibration(tmp_path / "c.npz", np.ones((2, 3, 8, 8)), 0.1)
    images, head = load_calibration(tmp_path / "c.npz")
    with pytest.raises(ConfigError, match="3 image"):
        network_inputs(images, head, CARD, 1)
    save_calibration(tmp_path / "d.npz", np.ones((2, 8, 8)), 0.1)
    with pytest.raises(ConfigError, match="0.1 Å/px.*0.2 Å/px"):
        network_inputs(*load_calibration(tmp_path / "d.npz"), CARD, 1)


# --- the engine ----------------------------------------------------------------------------------

def test_the_int8_graph_of_au_hrtem_finds_the_float32_graphs_columns(tmp_path):
    """Built from the shipped calibration images, measured against float32 on them, then on a
    frame it never saw; a second engine takes it from the cache with the same measure."""
    fp32 = make_engine("onnxruntime", "au-hrtem", device="cpu", cache_dir=tmp_path)
    q = make_engine("onnxruntime", "au-hrtem", device="cpu", cache_dir=tmp_path, int8=True)
    assert q.int8 and q.cache_path.name == "model.int8.onnx" and not q.cache_hit
    assert MIN_AGREEMENT <= q.agreement <= 1.0
    again = make_engine("onnxruntime", "au-hrtem", device="cpu", cache_dir=tmp_path, int8=True)
    assert again.cache_hit and again.agreement == q.agreement and "int8=True" in repr(again)
    keys = [e.key.get("precision") for e in EngineCache(tmp_path).entries()]
    assert sorted(keys) == ["float32", "int8"]

    from etem.tracker.locate import LocateConfig, locate
    from etem.tracker.preprocess import local_normalize

    frame = torch.from_numpy(_lattice(11, size=160, dose=2000.0))[None, None]
    batch = local_normalize(frame, 12.0 / 0.2)
    p32, p8 = fp32.predict(batch), q.predict(batch)
    assert p8.shape == p32.shape and torch.allclose(p8.sum(1), torch.ones(1, 160, 160), atol=1e-4)
    cfg = LocateConfig(threshold=fp32.card.get("threshold"))
    a, b = (locate(p, cfg)[0] for p in (p32, p8))
    assert len(a) > 50 and abs(len(a) - len(b)) <= 0.1 * len(a)
    d = np.hypot(*(a[["y", "x"]].to_numpy()[:, None, :] - b[["y", "x"]].to_numpy()[None, :, :]).transpose(2, 0, 1))
    assert (d.min(axis=1) < 2.5).mean() > 0.9  # within 0.5 Å


def test_a_graph_whose_columns_differ_is_refused_and_not_cached(tiny, tmp_path, monkeypatch):
    import etem.tracker.engines.onnxrt as onnxrt

    monkeypatch.setattr(onnxrt, "MIN_AGREEMENT", 1.01)  # no graph can agree this well
    with pytest.raises(ModelError, match=r"other columns than the float32 one.*F1 [01]\.\d+ < 1.01"):
        make_engine("onnxruntime", tiny, device="cpu", cache_dir=tmp_path, int8=True)
    assert [e.key.get("precision") for e in EngineCache(tmp_path).entries()] == ["float32"]


def test_calibration_images_are_part_of_the_int8_graphs_key(tiny, tmp_path):
    other = tmp_path / "other.calib.npz"
    save_calibration(other, np.stack([_lattice(s, dose=100.0) for s in range(10, 13)]), 0.2)
    a = make_engine("onnxruntime", tiny, device="cpu", cache_dir=tmp_path, int8=True)
    b = make_engine("onnxruntime", tiny, device="cpu", cache_dir=tmp_path, int8=True, calibration=other)
    assert a.cache_path != b.cache_path and not b.cache_hit
    assert json.loads(b.cache_path.with_name("int8.json").read_text())["calibration"] == "other.calib.npz"


def test_int8_options_are_checked(tiny, tmp_path):
    model, card = load_bundle(tiny)
    save_bundle(model, tmp_path / "bare", card)
    with pytest.raises(ConfigError, match="has none beside it.*etem engine calibrate"):
        make_engine("onnxruntime", tmp_path / "bare", device="cpu", cache_dir=tmp_path, int8=True)
    with pytest.raises(ConfigError, match="int8 must be true or false"):
        make_engine("onnxruntime", tiny, device="cpu", cache_dir=tmp_path, int8="yes")
    with pytest.raises(ConfigError, match="with int8 = true"):
        make_engine("onnxruntime", tiny, device="cpu", cache_dir=tmp_path, calibration="x.npz")
    from etem.tracker.engines.onnxrt import OnnxRuntimeEngine

    with pytest.raises(ConfigError, match="runs on the CPU"):
        OnnxRuntimeEngine(model, card, device="cuda", cache_dir=tmp_path, int8=True)
    with pytest.raises(ConfigError, match="the eager engine takes no option 'int8'"):
        make_engine("eager", tiny, device="cpu", int8=True)


# --- commands ------------------------------------------------------------------------------------

def test_etem_engine_calibrate_then_build_int8(tmp_path):
    """Calibration images drawn from a wave set as held-out images are, then the int8 graph of
    au-hrtem built on them, listed as onnx-int8."""
    from etem.simulate.structures import au_nanoparticle
    from etem.simulate.waves import WaveConfig, compute_waves, save_waves

    waves = tmp_path / "waves.h5"
    structures = [au_nanoparticle(np.random.default_rng([995, i]), radius_A=(7.0, 8.0)) for i in range(2)]
    save_waves(waves, compute_waves(structures, config=WaveConfig(sampling_A=0.2 / 3, energy_eV=300e3)))
    out = tmp_path / "au.calib.npz"
    r = _etem("engine", "calibrate", "au-hrtem", waves, "-o", out, "--per-dose", "1", "--size", "96")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    images, head = load_calibration(out)
    assert images.shape == (5, 1, 96, 96) and head["wave_sets"] == ["waves.h5"] and head["per_dose"] == 1
    assert len({float(im.mean()) for im in images}) == 5  # five doses, not one image five times
    cache = tmp_path / "cache"
    r = _etem("engine", "build", "au-hrtem", "--engine", "onnxruntime", "--int8", "--calibration", out,
              "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("model.int8.onnx") and "match the float32 graph's with F1" in r.stderr
    r = _etem("engine", "list", "--cache-dir", cache)
    assert "onnx-int8" in r.stdout and r.stdout.count("\nonnx ") == 1
    r = _etem("engine", "build", "au-hrtem", "--engine", "compiled", "--int8")
    assert r.returncode != 0 and "--engine onnxruntime" in r.stderr


def test_find_with_int8_and_its_refusals(tmp_path, capsys):
    image = tmp_path / "frame.npy"
    np.save(image, _lattice(21, size=160, dose=2000.0))
    out32, out8 = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["find", str(image), "--model", "au-hrtem", "--sampling", "0.2", "--engine", "onnxruntime",
                 "-o", str(out32)]) == 0
    capsys.readouterr()
    assert main(["find", str(image), "--model", "au-hrtem", "--sampling", "0.2", "--int8", "-o", str(out8)]) == 0
    said = capsys.readouterr()
    assert "located by model au-hrtem (onnxruntime int8)" in said.out + said.err
    import pandas as pd

    a, b = pd.read_csv(out32), pd.read_csv(out8)
    assert len(a) > 50 and abs(len(a) - len(b)) <= 0.1 * len(a)
    capsys.readouterr()
    assert main(["find", str(image), "--model", "au-hrtem", "--sampling", "0.2", "--int8", "--engine", "eager"]) == 2
    assert "--int8 is the onnxruntime engine's" in capsys.readouterr().err


def test_evaluate_int8_keeps_cards_as_they_are(tmp_path, capsys):
    (tmp_path / "w.h5").write_bytes(b"")  # (refused before it is read)
    assert main(["evaluate", "au-hrtem", str(tmp_path / "w.h5"), "--int8", "--write-card"]) == 2
    err = capsys.readouterr().err
    assert "--int8" in err and "--write-card" in err


def test_the_bundled_models_without_calibration_images_say_how_to_make_them():
    missing = [m for m in bundled_models() if not calibration_file(bundle_paths(m)[1]).is_file()]
    assert missing == ["mos2-msdnet"]  # run by torch on CPUs (engine auto picks eager for MSD-nets)


def test_the_cpus_8_bit_dot_product_is_read_from_its_flags():
    from etem.tracker.engines.quantize import cpu_has_vnni

    assert cpu_has_vnni("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n", "x86_64") is True
    assert cpu_has_vnni("flags\t\t: fpu sse2 avx2 fma\n", "x86_64") is False
    assert cpu_has_vnni("Features : fp asimd asimddp\n", "aarch64") is True
    assert cpu_has_vnni("Features : fp asimd\n", "aarch64") is False
    assert cpu_has_vnni("nothing here\n", "x86_64") is None and cpu_has_vnni("flags : x\n", "riscv64") is None


def test_a_replay_with_int8_says_so_in_its_run_file(tmp_path):
    from etem.tracker.runfile import open_run

    stack = tmp_path / "movie.npy"
    np.save(stack, np.stack([_lattice(30 + i, size=128, dose=2000.0) for i in range(3)]))
    run = tmp_path / "run.h5"
    assert main(["replay", str(stack), "--model", "au-hrtem", "--sampling", "0.2", "--int8", "-o", str(run),
                 "--quiet"]) == 0
    with open_run(run) as r:
        assert r.attrs["engine"]["kind"] == "onnxruntime" and r.attrs["engine"]["int8"] is True
        assert r.attrs["config"]["engine"]["options"] == {"int8": True} and len(r.frames) == 3
    assert main(["replay", str(stack), "--resume", str(run), "--int8"]) == 2  # a resumed run keeps its own options


def test_int8_left_out_by_engine_auto_is_said(tmp_path, caplog):
    """engine 'auto' runs an MSD-net in torch on CPUs; asked for int8 it says it did not."""
    import logging

    from etem.train.networks import MSDNet

    _, path = save_bundle(MSDNet(n_inputs=1, n_classes=2, depth=4, width=1, dilations=(1, 2)).eval(),
                          tmp_path / "msd", CARD)
    with caplog.at_level(logging.WARNING, logger="etem.engine"):
        engine = make_engine("auto", path, device="cpu", cache_dir=tmp_path, int8=True)
    assert engine.name == "eager"
    assert any("int8 was asked for" in r.getMessage() and "MSD-net" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_the_result_names_the_int8_graph_whichever_stage_detects(detection):
    from etem.tracker import track

    stack = np.stack([_lattice(40 + i, size=96, dose=2000.0) for i in range(3)])
    cfg = {"default_sampling": 0.2, "detection": detection, "engine": {"options": {"int8": True}}}
    result = track(stack, config=cfg, model="au-hrtem", engine="onnxruntime")
    assert result.engine == "onnxruntime int8" and result.counters["processed"] == 3
