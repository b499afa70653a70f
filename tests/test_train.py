"""Training on simulated exit waves: the loop runs, learns, and writes a bundle the tracker loads."""
import json
import time

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
    # each validation says how often a found column's class is the true one's (NaN: none matched)
    assert all(np.isnan(h["cls_accuracy"]) or 0 <= h["cls_accuracy"] <= 1 for h in card["training"]["history"])
    assert card["evaluation"]["f1"] is None or 0 <= card["evaluation"]["f1"] <= 1
    model, loaded = load_bundle(tmp_path / "tiny")
    assert loaded["sha256"] and loaded["evaluation"]["f1"] == card["evaluation"]["f1"]
    # the threshold is the validation scan's best, and the tracker reads the maps with it
    from etem.tracker.detect import engine_threshold
    from etem.tracker.engines import make_engine
    from etem.train.loop import THRESHOLDS, retune_threshold

    scan = card["evaluation"]["threshold_scan"]
    assert [r["threshold"] for r in scan] == list(THRESHOLDS) and card["threshold"] in THRESHOLDS
    f1 = {r["threshold"]: (r["f1"] if r["f1"] is not None else -1) for r in scan}
    assert f1[card["threshold"]] == max(f1.values()) or (
        card["threshold"] == 0.5 and max(f1.values()) < f1[0.5] + 0.01)
    assert engine_threshold(make_engine("eager", tmp_path / "tiny", device="cpu")) == card["threshold"]
    assert retune_threshold(tmp_path / "tiny", wave_set) == card["threshold"]  # the same images again

    from etem.tracker import find

    cols = find(np.random.default_rng(0).poisson(50, (64, 64)).astype(np.float32), sampling=0.2,
                model=str(tmp_path / "tiny"))
    assert set(cols.columns) >= {"frame", "y", "x", "cls", "prob"}
    assert cols.attrs["engine"] in ("eager", "onnxruntime")  # what "auto" picks on a CPU


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


def _tiny(**kw):
    base = dict(arch_args={"width": 4, "depth": 2}, size=48, sampling_A=0.2, label_sigma_A=0.4, preset="graphene",
                batch=2, steps=6, validate_every=2, n_validation=2, threads=1)
    return TrainConfig(**{**base, **kw})


class _Stop(Exception):
    pass


def test_resume_gives_the_same_model_as_an_uninterrupted_run(wave_set, tmp_path):
    from safetensors.torch import load_file

    from etem.train.loop import checkpoint_paths

    cfg = _tiny(checkpoint_every=3)
    train(wave_set, tmp_path / "a", cfg)

    def stop_at_4(step, loss):
        if step == 4:
            raise _Stop  # killed after the checkpoint of step 3 and one more step
    with pytest.raises(_Stop):
        train(wave_set, tmp_path / "b", cfg, on_step=stop_at_4)
    assert not (tmp_path / "b.json").exists()
    card = train(wave_set, tmp_path / "b", cfg, resume=True)
    a, b = (load_file(str(checkpoint_paths(tmp_path / n)[0])) for n in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights, optimizer, rng
    assert [h["step"] for h in card["training"]["history"]] == [2, 4, 6]

    from etem.tracker.errors import ConfigError

    with pytest.raises(ConfigError, match="other settings.*lr"):
        train(wave_set, tmp_path / "b", _tiny(checkpoint_every=3, lr=1e-3), resume=True)
    # a checkpoint written before a setting existed resumes with that setting at its default
    state_path = checkpoint_paths(tmp_path / "b")[1]
    state = json.loads(state_path.read_text())
    del state["config"]["coarse_fraction"]
    state_path.write_text(json.dumps(state))
    train(wave_set, tmp_path / "b", cfg, resume=True)
    with pytest.raises(ConfigError, match="other settings.*coarse_fraction"):
        train(wave_set, tmp_path / "b", _tiny(checkpoint_every=3, coarse_fraction=0.5), resume=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(wave_set, tmp_path / "never", cfg, resume=True)


def test_a_bundle_named_with_its_suffix_has_the_checkpoint_it_has_without(wave_set, tmp_path):
    """``m.json``, ``m.safetensors`` and ``m`` name one bundle, and one checkpoint, ``m.ckpt.*``:
    a run stopped as ``m.json`` resumes as ``m``, and checkpoint_paths finds its checkpoint by
    either name (for ``m.json`` it said ``m.json.ckpt.*``, where nothing is)."""
    from etem.train.loop import checkpoint_paths

    cfg = _tiny(steps=4, checkpoint_every=1)

    def stop_at_2(step, loss):
        if step == 2:
            raise _Stop  # (its checkpoint written)

    with pytest.raises(_Stop):
        train(wave_set, tmp_path / "m.json", cfg, on_step=stop_at_2)
    named = [checkpoint_paths(tmp_path / n) for n in ("m.json", "m.safetensors", "m")]
    assert named[0] == named[1] == named[2] and all(p.is_file() for p in named[0])
    card = train(wave_set, tmp_path / "m", cfg, resume=True)
    assert [r["step"] for r in card["training"]["resumed"]] == [2] and card["training"]["steps"] == 4


def test_a_resumed_run_counts_the_time_before_its_checkpoint(wave_set, tmp_path):
    """The checkpoint keeps the training time spent; a resumed run goes on counting from it (the
    card's seconds, and a --minutes budget), and the card says it was resumed and from which step."""
    from etem.train.loop import checkpoint_paths

    def stop_at_3(step, loss):
        if step == 3:
            raise _Stop

    def spent_before(out, seconds):  # as if the steps before the checkpoint had taken that long
        path = checkpoint_paths(out)[1]
        state = json.loads(path.read_text())
        assert state["seconds"] > 0 and state["step"] == 2
        path.write_text(json.dumps({**state, "seconds": seconds}))

    cfg = _tiny(steps=4, checkpoint_every=2)
    with pytest.raises(_Stop):
        train(wave_set, tmp_path / "r", cfg, on_step=stop_at_3)
    spent_before(tmp_path / "r", 1000.0)
    card = train(wave_set, tmp_path / "r", cfg, resume=True)
    assert card["training"]["seconds"] >= 1000.0
    assert card["training"]["resumed"] == [{"step": 2, "seconds": 1000.0}]
    assert "resumed" not in train(wave_set, tmp_path / "u", cfg)["training"]

    # a time budget counts the time already spent: the minute gone, the run ends at its next step
    timed = _tiny(steps=10**6, checkpoint_every=2, validate_every=100, max_minutes=1.0)
    with pytest.raises(_Stop):
        train(wave_set, tmp_path / "t", timed, on_step=stop_at_3)
    spent_before(tmp_path / "t", 60.0)
    card = train(wave_set, tmp_path / "t", timed, resume=True)
    assert card["training"]["steps"] == 3 and card["training"]["seconds"] >= 60.0


def test_a_time_budget_ends_the_run_with_its_schedule_spent(wave_set, tmp_path, capsys):
    """``max_minutes``: the run stops when the time is up, not at ``steps``, and its learning
    rate has gone through the whole one-cycle schedule by then."""
    from etem.train.loop import _one_cycle

    lrs = []

    def watch(step, loss):  # the steps run
        lrs.append(step)
    t0 = time.perf_counter()
    card = train(wave_set, tmp_path / "timed", _tiny(steps=10**6, validate_every=5, max_minutes=0.08), on_step=watch)
    took = time.perf_counter() - t0
    steps = card["training"]["steps"]
    assert 5 <= steps < 10**6 and lrs[-1] == steps  # stopped by the clock, after a few steps
    assert took < 0.08 * 60 + 30  # and soon after the budget (validation and the bundle besides)
    assert card["training"]["history"][-1]["step"] == steps  # validated at the last step
    assert card["training"]["config"]["max_minutes"] == 0.08
    assert "step" not in capsys.readouterr().err  # no progress bar unless asked for
    # the schedule: warm-up from lr/25 to the peak at 15 %, then down to almost nothing
    assert _one_cycle(0.0) == pytest.approx(1 / 25) and _one_cycle(0.15) == pytest.approx(1.0)
    assert _one_cycle(1.0) == pytest.approx(1 / 25e4) and _one_cycle(0.5) < _one_cycle(0.3) < 1.0
    with pytest.raises(Exception, match="max_minutes"):
        train(wave_set, tmp_path / "x", _tiny(max_minutes=0))


def test_several_samples_per_wave(wave_set, tmp_path):
    """Each wave of a batch gives several samples, each with its own microscope and geometry;
    the table of true columns numbers them through the batch; training takes the option."""
    from etem.simulate.waves import load_waves
    from etem.train.loop import _batch

    waves = load_waves(wave_set)
    cfg = _tiny()
    gen = torch.Generator().manual_seed(3)
    cache: dict = {}
    img, lab, table = _batch(waves, [0, 1], cfg, gen, 1, per_wave=3, cache=cache)
    assert img.shape[0] == lab.shape[0] == 6 and set(cache) == {0, 1}
    assert sorted(table["frame"].unique()) == list(range(6))
    assert not torch.allclose(img[0], img[1]) and not torch.allclose(lab[0], lab[1])  # other draws
    again, _, none = _batch(waves, [0, 1], cfg, torch.Generator().manual_seed(3), 1, per_wave=3, cache=cache,
                            tables=False)
    assert none is None and torch.equal(again, img)  # the cache changes nothing drawn
    card = train(wave_set, tmp_path / "k", _tiny(batch=4, samples_per_wave=2, steps=2))
    assert card["training"]["config"]["samples_per_wave"] == 2
    with pytest.raises(Exception, match="samples_per_wave"):
        train(wave_set, tmp_path / "x", _tiny(batch=4, samples_per_wave=3))


def test_vacuum_samples_are_noise_alone_with_background_labels(wave_set, tmp_path):
    """A wave drawn as vacuum is imaged flat (shot noise about a constant, no lattice) and
    labelled background everywhere; the others keep their columns; training takes the option,
    and rejects a fraction of 1 or more."""
    from etem.simulate.waves import load_waves
    from etem.train.loop import _batch

    waves = load_waves(wave_set)
    cfg = _tiny(size=64)
    cfg.optics = {"dose_e_per_A2": [1e6, 1e6]}  # little noise, so that a lattice would show
    img, lab, table = _batch(waves, [0, 1], cfg, torch.Generator().manual_seed(3), 1, vacuum=[True, False])
    assert torch.all(lab[0, 0] == 1) and lab[1, 0].min() < 0.5  # background channel
    assert set(table["frame"]) == {1}  # no true columns in the vacuum sample
    assert img[0].std() < 0.2 * img[1].std()  # vacuum: flat but for the noise
    card = train(wave_set, tmp_path / "v", _tiny(steps=3, vacuum_fraction=0.5))
    assert card["training"]["config"]["vacuum_fraction"] == 0.5
    with pytest.raises(Exception, match="vacuum_fraction"):
        train(wave_set, tmp_path / "x", _tiny(vacuum_fraction=1.0))


@pytest.mark.parametrize("arch, arch_args", [("msdnet", {"depth": 4}), ("unet", {"width": 4, "depth": 2})])
def test_every_architecture_trains_into_a_bundle(wave_set, tmp_path, arch, arch_args):
    """The card holds the network's own arguments (MSD-net fills in its width and dilations)."""
    card = train(wave_set, tmp_path / arch, _tiny(arch=arch, arch_args=arch_args, steps=2, validate_every=2))
    model, loaded = load_bundle(tmp_path / arch)
    assert loaded["arch"] == arch and loaded["arch_args"] == model.arch_args == card["arch_args"]
    assert all(loaded["arch_args"][k] == v for k, v in arch_args.items())


def test_focal_series_model_and_mixed_precision(wave_set, tmp_path):
    cfg = _tiny(focal_offsets_A=(-50.0, 0.0, 50.0), amp="bf16", steps=2, validate_every=2)
    card = train(wave_set, tmp_path / "focal", cfg)
    assert card["inputs"] == [-50.0, 0.0, 50.0] and card["arch_args"]["n_inputs"] == 3

    from etem.tracker import find

    stack = np.random.default_rng(1).poisson(50, (2, 3, 64, 64)).astype(np.float32)
    cols = find(stack, sampling=0.2, model=str(tmp_path / "focal"), focal=3)
    assert set(cols["frame"]) <= {0, 1}
    with pytest.raises(Exception, match="amp"):
        train(wave_set, tmp_path / "x", _tiny(amp="fp8"))


def test_train_command_resumes_and_rejects_bad_options(wave_set, tmp_path):
    import subprocess
    import sys

    def etem(*a):
        return subprocess.run([sys.executable, "-m", "etem.tracker.cli", "train", *map(str, a)],
                              capture_output=True, text=True, timeout=300)

    common = [wave_set, "-o", tmp_path / "m", "--width", 4, "--depth", 2, "--size", 48, "--batch", 2,
              "--preset", "graphene", "--checkpoint-every", 2]
    r = etem(*common, "--steps", 2)
    assert r.returncode == 0, r.stderr
    r = etem(*common, "--steps", 2, "--resume")  # already at the last step: writes the bundle again
    assert r.returncode == 0 and "validation F1" in r.stdout, r.stderr
    r = etem(*common, "--steps", 2, "--focal", "a,b")
    assert r.returncode != 0 and "--focal" in r.stderr and "Traceback" not in r.stderr
    r = etem(tmp_path / "none.h5", "-o", tmp_path / "z")
    assert r.returncode != 0 and "no such wave set" in r.stderr
    r = etem(*common, "--minutes", -1)
    assert r.returncode != 0 and "--minutes" in r.stderr and "Traceback" not in r.stderr
    r = etem(*common, "--steps", 2, "--arch", "unet", "--unshuffle", 2)
    assert r.returncode != 0 and "--unshuffle" in r.stderr and "Traceback" not in r.stderr
    for bad in ("a,b", "0.5,2"):
        r = etem(*common, "--steps", 2, "--coarse-fraction", 0.5, "--coarse-factor", bad)
        assert r.returncode != 0 and "coarse" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_train_command_refuses_to_replace_a_bundle_unless_told(wave_set, tmp_path, capsys):
    """`etem train -o EXISTING` is refused (the bundle and its checkpoint untouched) unless
    --overwrite, which also drops the old checkpoint; --resume goes on; --init into a new name is fine."""
    from etem.train.loop import checkpoint_paths
    from etem.tracker.cli import main

    common = ["--width", "4", "--depth", "2", "--size", "48", "--batch", "2", "--preset", "graphene", "--steps", "2"]
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m"), *common, "--checkpoint-every", "1"]) == 0
    # what the score is: the validation images that chose the weights, not held-out ones; the
    # card says which step's weights it kept and which wave sets trained it
    out = capsys.readouterr().out
    assert "validation F1" in out and "held out for choosing the weights" in out and "held-out F1" not in out
    t = json.loads((tmp_path / "m.json").read_text())["training"]
    assert t["kept_step"] in [h["step"] for h in t["history"]] and f"the weights of step {t['kept_step']}" in out
    assert t["wave_sets"] == [{"file": wave_set.name, "structures": 3, "materials": ["graphene"],
                               "energy_eV": [80e3], "seed": 0}]
    files = [tmp_path / "m.json", tmp_path / "m.safetensors", *checkpoint_paths(tmp_path / "m")]
    before = [p.read_bytes() for p in files]
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m"), *common, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "m.safetensors" in err and "already there" in err and "--overwrite" in err and "--resume" in err, err
    assert len(err.strip().splitlines()) == 1 and [p.read_bytes() for p in files] == before
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m"), *common, "--checkpoint-every", "1",
                 "--resume"]) == 0
    assert main(["train", str(wave_set), "-o", str(tmp_path / "n"), "--init", str(tmp_path / "m"), "--steps", "1",
                 "--checkpoint-every", "0"]) == 0
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m"), *common, "--seed", "1", "--checkpoint-every", "0",
                 "--overwrite"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["training"]["config"]["seed"] == 1
    assert not any(p.exists() for p in checkpoint_paths(tmp_path / "m"))  # the old run's: gone
    # -o m.json names the same bundle (and checkpoint) as -o m: refused, then resumed, in place
    capsys.readouterr()
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m.json"), *common]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", str(wave_set), "-o", str(tmp_path / "m.json"), *common, "--overwrite",
                 "--checkpoint-every", "1"]) == 0
    assert f"bundle {tmp_path / 'm'}.safetensors/.json" in capsys.readouterr().out
    assert all(p.exists() for p in checkpoint_paths(tmp_path / "m"))
    assert not list(tmp_path.glob("m.json.*"))


def test_train_and_simulate_images_say_plainly_when_the_device_or_wave_set_will_not_do(wave_set, tmp_path, capsys):
    """--device cuda on a torch without CUDA, a device torch does not know, and a wave set of one
    structure (all of it held out for validation): one `error:` line, exit 2, no traceback."""
    from etem.tracker.cli import main

    bad = ["cpux"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for device in bad:
        for cmd in (["train", str(wave_set), "-o", str(tmp_path / "d"), "--steps", "1"],
                    ["simulate", "images", str(wave_set), "-n", "1", "--size", "32", "-o", str(tmp_path / "i.h5")]):
            assert main([*cmd, "--device", device]) == 2
            err = capsys.readouterr().err
            assert f"--device {device}" in err or repr(device) in err, err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "i.h5").exists()

    one = tmp_path / "one.h5"
    save_waves(one, compute_waves([graphene(np.random.default_rng(0), size_A=(12.0, 12.0), n_holes=0, padding_A=1.0)],
                                  config=WaveConfig(sampling_A=0.1, energy_eV=80e3)))
    assert main(["train", str(one), "-o", str(tmp_path / "o"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "one.h5: 1 structure" in err and "at least two" in err and len(err.strip().splitlines()) == 1, err


def test_coarse_camera_samples_train_and_are_recorded(wave_set, tmp_path):
    """`--coarse-fraction`: training images taken with larger pixels and enlarged; the card keeps it."""
    card = train(wave_set, tmp_path / "c", _tiny(steps=3, coarse_fraction=0.5, coarse_factor=(1.6, 2.4)))
    assert card["training"]["config"]["coarse_fraction"] == 0.5
    assert list(card["training"]["config"]["coarse_factor"]) == [1.6, 2.4]
    assert "pixels 1.6-2.4 times" in card["training"]["data"]
    with pytest.raises(Exception, match="coarse_fraction"):
        train(wave_set, tmp_path / "x", _tiny(coarse_fraction=2.0))


def test_unshuffled_model_trains_and_finds_at_full_resolution(wave_set, tmp_path):
    """The CPU model's architecture end to end: its card rebuilds it, and `find` reads it."""
    from etem.tracker import find

    card = train(wave_set, tmp_path / "u2", _tiny(arch_args={"width": 4, "depth": 2, "unshuffle": 2},
                                                  steps=2, validate_every=2))
    assert card["arch_args"]["unshuffle"] == 2
    image = np.random.default_rng(2).poisson(50, (60, 70)).astype(np.float32)
    cols = find(image, sampling=0.2, model=str(tmp_path / "u2"))
    assert {"y", "x", "prob"} <= set(cols.columns)


@pytest.mark.slow
def test_two_processes_under_torchrun(wave_set, tmp_path):
    """DistributedDataParallel on the CPU (gloo): process 0 writes one bundle."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "etem.tracker.cli", "train", str(wave_set), "-o", str(tmp_path / "ddp"),
                        "--width", "4", "--depth", "2", "--size", "48", "--batch", "2", "--steps", "4",
                        "--preset", "graphene"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "ddp.json").read_text())
    assert "x 2 processes" in card["training"]["machine"]


def test_wave_sets_of_two_materials_train_one_column_finder(wave_set, tmp_path):
    """`etem train A.h5 B.h5 --classes column`: the sets are pooled, each set's last quarter
    validates (the validation images take the sets in turn), and the card says what it saw;
    sets whose classes differ are refused unless trained as one class."""
    from etem.simulate.structures import mos2
    from etem.train.loop import training_waves

    other = tmp_path / "mos2.h5"
    flakes = [mos2(np.random.default_rng(s), size_A=(14.0, 14.0), padding_A=1.0) for s in range(2)]
    save_waves(other, compute_waves(flakes, config=WaveConfig(sampling_A=0.1, energy_eV=80e3)))

    waves, train_idx, val_idx = training_waves([wave_set, other], "column")
    assert len(waves) == 5 and train_idx == [0, 1, 3] and val_idx == [2, 4]  # 3 graphene, 2 MoS2
    assert all(w.classes == ("column",) and set(w.columns["cls"]) == {0} for w in waves)
    assert [len(w.columns) for w in waves[3:]] == [len(f) for f in (training_waves(other, "species")[0][i].columns
                                                                     for i in range(2))]
    with pytest.raises(Exception, match="--classes column"):
        training_waves([wave_set, other], "species")
    # one set: the split of before
    assert training_waves(wave_set, "species")[1:] == ([0, 1], [2])

    card = train([wave_set, other], tmp_path / "finder",
                 _tiny(steps=2, classes="column", preset="haadf", imaging="haadf"))
    assert card["class_names"] == ["column"] and card["classes_by"] == "column"
    assert card["use"] == {"imaging": "stem", "materials": [], "task": "columns"}
    assert "(1 MoS2, 2 graphene)" in card["training"]["data"] and "80 kV" in card["training"]["data"]

    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "etem.tracker.cli", "train", str(wave_set), str(other), "-o",
                        str(tmp_path / "cli"), "--width", "4", "--depth", "2", "--size", "48", "--batch", "2",
                        "--steps", "1", "--preset", "graphene"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "--classes column" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_fine_tuning_starts_from_a_model_and_keeps_it_where_nothing_beats_it(wave_set, tmp_path):
    """`TrainConfig.init`: the run starts from a bundle's weights, scores them first on its own
    validation images (the score to beat), and records where it started."""
    from etem.train.bundle import load_bundle

    train(wave_set, tmp_path / "start", _tiny(steps=4))
    start, start_card = load_bundle(tmp_path / "start")
    # a learning rate too small to move the weights: the bundle written is the starting model's
    card = train(wave_set, tmp_path / "tuned", _tiny(steps=2, lr=1e-12, init=str(tmp_path / "start"),
                                                     optics={"defocus_A": [-60.0, -40.0]}))
    tuned, _ = load_bundle(tmp_path / "tuned")
    theirs = dict(tuned.named_parameters())  # (BatchNorm's running statistics move in training mode)
    for k, v in start.named_parameters():
        assert torch.allclose(theirs[k], v, atol=1e-6), k
    h = card["training"]["history"]
    assert h[0]["step"] == 0 and h[0]["loss"] is None and [r["step"] for r in h[1:]] == [2]
    assert card["training"]["initialized_from"] == {
        "model": "start", "sha256": start_card["sha256"], "steps": 4, "date": start_card["training"]["date"],
        "validation_f1": h[0]["f1"]}
    assert card["training"]["data"].startswith(f"fine-tuned from start (weights sha256 {start_card['sha256'][:12]})")
    # a model fine-tuned from a fine-tuned one: its card goes back to the first
    again = train(wave_set, tmp_path / "again", _tiny(steps=1, validate_every=1, init=str(tmp_path / "tuned")))
    first = again["training"]["initialized_from"]
    assert first["model"] == "tuned" and first["steps"] == 2
    assert first["initialized_from"] == card["training"]["initialized_from"]
    # from random weights the same run ends elsewhere
    fresh = train(wave_set, tmp_path / "fresh", _tiny(steps=2, lr=1e-12, optics={"defocus_A": [-60.0, -40.0]}))
    assert "initialized_from" not in fresh["training"] and fresh["training"]["history"][0]["step"] == 2
    other, _ = load_bundle(tmp_path / "fresh")
    assert not torch.allclose(other.state_dict()["head.weight"], start.state_dict()["head.weight"])
    # a network of another shape is refused before training
    with pytest.raises(Exception, match="cannot start from .*arch_args"):
        train(wave_set, tmp_path / "x", _tiny(arch_args={"width": 8, "depth": 2}, init=str(tmp_path / "start")))


def test_train_command_fine_tunes_with_the_models_recipe_and_the_users_optics(wave_set, tmp_path, capsys):
    """`etem train --init MODEL --optics ...`: the model's recipe where no option is given, the
    microscope's ranges from the command line or a TOML file, options that would change the
    network refused, and bad ranges refused before any training."""
    import subprocess
    import sys

    def etem(*a):
        return subprocess.run([sys.executable, "-m", "etem.tracker.cli", "train", *map(str, a)],
                              capture_output=True, text=True, timeout=300)

    r = etem(wave_set, "-o", tmp_path / "start", "--width", 4, "--depth", 2, "--size", 48, "--batch", 2,
             "--preset", "graphene", "--steps", 2, "--sampling", 0.25, "--optics", "focal_spread_A=25")
    assert r.returncode == 0, r.stderr
    scope = tmp_path / "scope.toml"
    scope.write_text("# my microscope\n[optics]\ndefocus_A = [-90, -30]\nCs_A = [-2e5, -1e5]\n")
    r = etem(wave_set, "-o", tmp_path / "tuned", "--init", tmp_path / "start.json", "--steps", 2,
             "--optics", scope, "--optics", "blur_A=0.1,0.3", "--checkpoint-every", 1)
    assert r.returncode == 0, r.stderr
    assert "started from start: validation F1" in r.stdout
    cfg = json.loads((tmp_path / "tuned.json").read_text())["training"]["config"]
    assert cfg["arch_args"] == {"width": 4, "depth": 2} and cfg["size"] == 48 and cfg["batch"] == 2
    assert cfg["sampling_A"] == 0.25 and cfg["preset"] == "graphene" and cfg["lr"] == 5e-4
    assert cfg["optics"] == {"focal_spread_A": 25.0, "defocus_A": [-90, -30], "Cs_A": [-2e5, -1e5],
                             "blur_A": [0.1, 0.3]}
    assert cfg["init"] == str(tmp_path / "start.json")
    r = etem(wave_set, "-o", tmp_path / "tuned", "--init", tmp_path / "start.json", "--steps", 2,
             "--optics", scope, "--optics", "blur_A=0.1,0.3", "--checkpoint-every", 1, "--resume")
    assert r.returncode == 0 and "validation F1" in r.stdout, r.stderr

    bad = scope.with_name("bad.toml")
    bad.write_text("[optics\n")
    from etem.tracker.cli import main

    for extra, words in ((["--width", "8"], "fine-tuning keeps"), (["--classes", "column"], "fine-tuning keeps"),
                         (["--focal=-100,0,100"], "fine-tuning keeps"),
                         (["--optics", "defocus=1,2"], "unknown optics range"),
                         (["--optics", "defocus_A=a"], "one number or LO,HI"),
                         (["--optics", "Cs_A=3,2"], "low <= high"),
                         (["--optics", "preset=au"], "--preset"),
                         (["--optics", str(bad)], "not a TOML file"),
                         (["--optics", str(tmp_path / "none.toml")], "no such file"),
                         (["--optics", "scope.yaml"], "KEY=LO,HI"),
                         (["--init", "no-such-model"], "no bundled model"),
                         (["--validate", str(tmp_path / "none.h5")], "no such movie")):
        init = [] if "--init" in extra else ["--init", str(tmp_path / "start.json")]
        code = main(["train", str(wave_set), "-o", str(tmp_path / "x"), *init, "--steps", "1", *extra])
        err = capsys.readouterr().err
        assert code == 2 and words in err, (extra, err)
    assert not (tmp_path / "x.json").exists()


def test_the_documented_microscope_file_is_a_valid_optics_file():
    """docs/microscope-example.toml, as `--optics` reads it: the demo's microscope inside its ranges."""
    from pathlib import Path

    from etem.simulate.optics import OpticsRanges
    from etem.train.cli import optics_overrides

    path = Path(__file__).resolve().parents[1] / "docs" / "microscope-example.toml"
    ranges = OpticsRanges.from_dict({"preset": "au", **optics_overrides([str(path)])})
    demo = {"defocus_A": -60.0, "Cs_A": -15e4, "focal_spread_A": 30.0, "blur_A": 0.2}
    for key, value in demo.items():
        lo, hi = getattr(ranges, key)
        assert lo < value < hi, key
    assert ranges.dose_e_per_A2 == OpticsRanges.preset("au").dose_e_per_A2  # keys not given: the preset's
