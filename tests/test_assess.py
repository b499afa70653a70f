"""Model assessment on held-out simulated images: `etem evaluate MODEL WAVES`, and that `etem find`
followed by `etem evaluate` on the same images gives the same figures."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from etem.simulate.structures import au_nanoparticle
from etem.simulate.waves import WaveConfig, compute_waves, save_waves
from etem.train.assess import assess, format_summary, heldout_images, summary


def _etem(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "etem.tracker.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Two small Au particles (seeds the shipped models never saw) as a held-out wave set."""
    path = tmp_path_factory.mktemp("assess") / "heldout.h5"
    structures = [au_nanoparticle(np.random.default_rng([990, i]), radius_A=(7.0, 8.0)) for i in range(2)]
    save_waves(path, compute_waves(structures, config=WaveConfig(sampling_A=0.2 / 3, energy_eV=300e3)))
    return path


def test_heldout_images_are_reproducible_and_fixed_in_dose(heldout):
    a, ta = heldout_images(heldout, dose=1e3, n=2, size=96, sampling_A=0.2, preset="au")
    b, tb = heldout_images(heldout, dose=1e3, n=2, size=96, sampling_A=0.2, preset="au")
    assert a.shape == (2, 96, 96) and np.array_equal(a, b) and ta.equals(tb)
    assert len(ta) > 10 and set(ta["frame"]) == {0, 1}
    lo, _ = heldout_images(heldout, dose=1e2, n=2, size=96, sampling_A=0.2, preset="au")
    # same microscopes, ten times the dose: a tenth of the (white, Poisson) noise variance
    import torch

    from etem.tracker.quality import white_noise_variance

    ratio = white_noise_variance(torch.from_numpy(lo)) / white_noise_variance(torch.from_numpy(a))
    assert ratio.numpy() == pytest.approx([10, 10], rel=0.25)


@pytest.mark.parametrize("method", ["classical", "au-hrtem"])
def test_find_then_evaluate_matches_the_assessment(heldout, tmp_path, method):
    """What a user gets from `etem find` + `etem evaluate` equals the assessment's row."""
    dose = 3e3
    per = assess([method], heldout, doses=[dose], n=2, size=96, sampling_A=0.2, preset="au")
    images, truth = heldout_images(heldout, dose=dose, n=2, size=96, sampling_A=0.2, preset="au")
    np.save(tmp_path / "images.npy", images)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    kind = ["--classical"] if method == "classical" else ["--model", method]
    r = _etem("find", tmp_path / "images.npy", "--sampling", 0.2, *kind, "-o", tmp_path / "cols.csv")
    assert r.returncode == 0, r.stderr
    r = _etem("evaluate", tmp_path / "cols.csv", tmp_path / "truth.csv", "--sampling", 0.2)
    assert r.returncode == 0, r.stderr
    f1 = float(r.stdout.split("F1 ")[1].split()[0])
    rms = float(r.stdout.split("position RMS ")[1].split()[0])
    row = summary(per).iloc[0]
    assert f1 == pytest.approx(row["f1"], abs=5e-4)
    assert rms == pytest.approx(row["rms_A"], abs=5e-4)


def test_evaluate_model_command_prints_the_table_and_writes_plots(heldout, tmp_path):
    r = _etem("evaluate", "classical", heldout, "--sampling", 0.2, "--doses", "300,3000", "-n", 2,
              "--size", 96, "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "classical-dark" in r.stdout and "mean" in r.stdout  # the baseline rows are added
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(table["method"]) == {"classical", "classical-dark"}
    per = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert len(per) == 2 * 2 * 2  # images x doses x methods
    # each image names the structure it shows and that structure's drawn parameters
    from etem.simulate.waves import load_waves
    params = [w.meta["params"] for w in load_waves(heldout)]
    assert list(per["structure"]) == list(per["frame"]) and (per["material"] == "Au").all()
    for _, row in per.iterrows():
        p = params[row["structure"]]
        assert row["zone_axis"] == int(p["zone_axis"]) and row["tilt_deg"] == pytest.approx(p["tilt_deg"])
        assert row["support"] == "none"
    for name in ("f1_vs_dose.png", "f1_histogram.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5000


def test_the_contrast_advice_is_left_out_on_held_out_images(caplog):
    """`etem evaluate MODEL WAVES` printed the detector's advice to add or leave out --dark, an
    option the user never gave (the classical-dark baseline runs on every held-out set)."""
    import logging

    from etem.train.assess import _no_contrast_advice

    log = logging.getLogger("etem.detect")
    with caplog.at_level(logging.WARNING), _no_contrast_advice():
        log.warning("frames look dark: add --dark")
        log.warning("the pixel size is unknown")
    log.warning("after: add --dark")
    assert "frames look dark" not in caplog.text and "pixel size is unknown" in caplog.text
    assert "after: add --dark" in caplog.text


def test_bond_lengths_window_and_spread():
    from etem.tracker.evaluate import bond_lengths

    from etem.simulate.structures import pristine_graphene

    xy = pristine_graphene((15.0, 15.0)).positions[:, :2]
    d = bond_lengths(xy, 1.42)
    assert d.size > 0 and np.allclose(d, 1.42)  # second neighbours (2.46 Å) are outside the window
    jitter = np.random.default_rng(0).normal(0, 0.05, xy.shape)
    s = bond_lengths(xy + jitter, 1.42).std()
    assert 0.05 < s < 0.09  # two independent 0.05 Å errors per bond, projected on it: about 0.07
    assert bond_lengths(np.zeros((1, 2)), 1.42).size == 0
    with pytest.raises(ValueError):
        bond_lengths(xy, -1.0)


def test_evaluate_reports_the_bond_spread_on_a_pristine_sheet(tmp_path):
    """`etem evaluate --bonds`: the spread of bond lengths between found columns, per image."""
    from etem.simulate.structures import pristine_graphene

    path = tmp_path / "pristine.h5"
    save_waves(path, compute_waves([pristine_graphene((20.0, 20.0))], config=WaveConfig(sampling_A=0.2 / 3)))
    r = _etem("evaluate", "classical", path, "--sampling", 0.2, "--doses", "1000,100000", "-n", 2,
              "--size", 96, "--bonds", 1.42, "--no-baseline", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "bond σ Å" in r.stdout and "true σ Å" in r.stdout
    per = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert {"bonds", "bond_mean_A", "bond_std_A", "true_bond_std_A"} <= set(per.columns)
    assert (per["true_bond_std_A"] < 1e-3).all()  # a perfect sheet: the floor is zero
    assert per["bonds"].sum() > 0 and per["bond_mean_A"].dropna().between(1.1, 1.8).all()
    table = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("dose")
    for dose, g in per.dropna(subset=["bond_std_A"]).groupby("dose"):  # pooled over the bonds of the images
        pooled = np.sqrt((g["bond_std_A"] ** 2 * g["bonds"]).sum() / g["bonds"].sum())
        assert table.loc[dose, "bond_std_A"] == pytest.approx(pooled) and 0 < pooled < 0.5


def test_write_card_stores_the_table_under_its_key(heldout, tmp_path):
    import shutil

    from etem.train.bundle import bundle_paths

    for src in bundle_paths("au-hrtem"):
        shutil.copy(src, tmp_path / src.name.replace("au-hrtem", "mine"))
    args = ("evaluate", tmp_path / "mine.json", heldout, "--doses", "1000", "-n", 1, "--size", 64, "--no-baseline")
    assert _etem(*args, "--write-card").returncode == 0
    r = _etem(*args, "--write-card", "heldout_tilted")
    assert r.returncode == 0 and "as 'heldout_tilted'" in r.stdout, r.stderr
    card = json.loads((tmp_path / "mine.json").read_text())
    assert card["heldout"]["table"] and card["heldout_tilted"]["images_per_dose"] == 1
    r = _etem(*args, "--write-card", "weights")
    assert r.returncode != 0 and "starts with 'heldout'" in r.stderr and "Traceback" not in r.stderr


def test_write_card_refuses_a_bundled_models_card_and_touches_nothing(heldout, tmp_path, capsys):
    """`etem evaluate au-hrtem WAVES --write-card` would rewrite the card shipped in the package, and
    with it which model `--model auto` picks for everyone on the install: refused before any work,
    by name or by the path into the package, with how to get a card of one's own."""
    from etem.tracker.cli import main
    from etem.train.bundle import bundle_paths, update_card

    weights, card = bundle_paths("au-hrtem")
    before = card.read_bytes(), weights.read_bytes()
    for model in ("au-hrtem", str(card), "classical,au-hrtem"):
        for extra in ([], ["--sweep"]):
            code = main(["evaluate", model, str(heldout), "--doses", "1000", "-n", "1", "--size", "64",
                         "--write-card", *extra])
            err = capsys.readouterr().err
            assert code == 2 and "au-hrtem is a bundled model" in err and "evaluate the copy" in err, err
            assert len(err.strip().splitlines()) == 1
    with pytest.raises(Exception, match="bundled model"):
        update_card("au-hrtem", {"heldout": {}})
    assert (card.read_bytes(), weights.read_bytes()) == before
    assert not list(card.parent.glob("*.part"))


def test_evaluate_warns_where_the_wave_set_is_not_what_the_model_was_trained_on(heldout, tmp_path, capsys):
    """MoS2 waves default to 80 kV, as the bundled MoS2 models were trained (an explicit --energy
    still wins); a wave set of another energy or material than the card's, or a second model
    that takes other images than the first's card draws, gets one warning line above the table."""
    from etem.simulate.waves import load_waves
    from etem.tracker.cli import main

    for energy, name in ((None, "mos2-80.h5"), (300e3, "mos2-300.h5")):
        extra = [] if energy is None else ["--energy", f"{energy:g}"]
        assert main(["simulate", "waves", "--material", "mos2", "-n", "1", "--sampling", "0.1", *extra,
                     "-o", str(tmp_path / name)]) == 0
    assert load_waves(tmp_path / "mos2-80.h5")[0].energy_eV == 80e3
    assert load_waves(tmp_path / "mos2-300.h5")[0].energy_eV == 300e3
    capsys.readouterr()

    def warnings(model, waves):
        assert main(["evaluate", model, str(waves), "--doses", "1000", "-n", "1", "--size", "64",
                     "--no-baseline"]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]

    w = warnings("mos2-unet", tmp_path / "mos2-300.h5")
    assert len(w) == 1 and "300 kV waves, the model's 80 kV" in w[0] and "--energy 80e3" in w[0], w
    assert warnings("mos2-unet", tmp_path / "mos2-80.h5") == []
    w = warnings("au-hrtem", tmp_path / "mos2-80.h5")
    assert len(w) == 1 and "mos2, the model's au" in w[0] and "80 kV waves, the model's 300 kV" in w[0], w
    assert warnings("au-hrtem", heldout) == []
    w = warnings("au-hrtem,haadf-stem", heldout)
    assert len(w) == 1 and "haadf-stem" in w[0] and "hrtem images (drawn for the first model)" in w[0], w
    # a model that cannot take the images drawn for the first one: refused, not a traceback
    assert main(["evaluate", "au-hrtem,mos2-unet", str(heldout), "-n", "1", "--size", "64"]) == 2
    assert "mos2-unet takes 3 image(s) per frame" in capsys.readouterr().err


def test_sweep_prints_cutoffs_writes_the_radar_and_stores_the_trust_ranges(heldout, tmp_path):
    """`etem evaluate MODEL WAVES --sweep`: Wei et al.'s four axes from a fixed microscope, the
    cut-offs beside the classical baseline, and the ranges the tracker then judges frames by."""
    import shutil

    from etem.train.bundle import bundle_paths
    from etem.tracker.engines import make_engine
    from etem.tracker.trust import ranges_for

    for src in bundle_paths("au-hrtem"):
        shutil.copy(src, tmp_path / src.name.replace("au-hrtem", "mine"))
    card0 = json.loads((tmp_path / "mine.json").read_text())
    r = _etem("evaluate", tmp_path / "mine.json", heldout, "--sweep", "-n", 2, "--size", 96, "--write-card",
              "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "| method | dose ≥ | pixel size in | blur ≤ | contrast ≥ |" in r.stdout
    assert "| mine |" in r.stdout and "| classical |" in r.stdout and "trust ranges" in r.stdout
    sweep = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert set(sweep["axis"]) == {"dose", "sampling", "resolution", "contrast"}
    assert set(sweep["method"]) == {"mine", "classical"}
    # where nothing can be seen, nothing passes
    hard = sweep[((sweep["axis"] == "dose") & (sweep["value"] == 10)) |
                 ((sweep["axis"] == "contrast") & (sweep["value"] == 0.05))]
    assert not hard["passed"].any() and (hard["recall"] < 0.9).all()
    assert (tmp_path / "out" / "radar.png").stat().st_size > 10_000
    card = json.loads((tmp_path / "mine.json").read_text())
    assert card["sha256"] == card0["sha256"] and card["heldout"] == card0["heldout"]  # the rest stays
    assert card["sweep"]["images_per_condition"] == 2 and card["sweep"]["cutoffs"]
    # and under which preprocessing they were measured: frames 0.9-2x the model's pixel size as they are
    assert card["sweep"]["as_is_ratio"] == card0["inference"]["as_is_ratio"] == [0.9, 2.0]
    ranges = ranges_for(make_engine("eager", str(tmp_path / "mine.json"), device="cpu"))
    assert ranges is not None and "exit-wave images of heldout.h5" in ranges.source
    # the ranges are the model's own: trusted nowhere exactly where it failed at the base
    cuts = pd.read_csv(tmp_path / "out" / "cutoffs.csv")
    assert ranges.passed_nowhere == bool(cuts.loc[cuts["method"] == "mine", "fails_at_base"].any())
    r = _etem("evaluate", "classical", heldout, "--sweep", "--sampling", 0.2)
    assert r.returncode != 0 and "name a model first" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_takes_the_microscope_of_the_held_out_images(heldout, tmp_path):
    """`--preset`/`--optics`: the held-out images under other optics ranges than the card's (a
    model fine-tuned to one microscope, scored under the general ranges, or the reverse)."""
    common = ("evaluate", "classical", heldout, "--sampling", 0.2, "--doses", "3000", "-n", 3, "--size", 64,
              "--preset", "au")
    r = _etem(*common, "-o", tmp_path / "wide")
    assert r.returncode == 0 and "optics preset 'au');" in r.stdout, r.stderr
    r = _etem(*common, "--optics", "defocus_A=-60", "--optics", "Cs_A=-2e5,-1e5", "-o", tmp_path / "scope")
    assert r.returncode == 0, r.stderr
    assert "optics preset 'au', defocus_A -60.0, Cs_A [-200000.0, -100000.0])" in r.stdout
    wide, scope = (pd.read_csv(tmp_path / d / "per_image.csv") for d in ("wide", "scope"))
    assert not np.allclose(wide["f1"], scope["f1"])  # other images
    # each image's row says which microscope drew it
    assert (scope["defocus_A"] == -60).all() and scope["Cs_A"].between(-2e5, -1e5).all()
    assert wide["defocus_A"].between(-200, 200).all() and wide["defocus_A"].nunique() == 3
    assert {"focal_spread_A", "blur_A", "astigmatism_A"} <= set(scope.columns) and "dose_e_per_A2" not in scope
    r = _etem("evaluate", "au-hrtem", heldout, "--sweep", "--optics", "defocus_A=-60")
    assert r.returncode != 0 and "--sweep" in r.stderr and "Traceback" not in r.stderr
    r = _etem("evaluate", "classical", heldout, "--sampling", 0.2, "--optics", "defocus=-60")
    assert r.returncode != 0 and "unknown optics range" in r.stderr and "Traceback" not in r.stderr
    pd.DataFrame({"frame": [0], "y": [1.0], "x": [1.0]}).to_csv(tmp_path / "cols.csv", index=False)
    r = _etem("evaluate", tmp_path / "cols.csv", tmp_path / "cols.csv", "--optics", "defocus_A=-60")
    assert r.returncode != 0 and "held-out images" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_model_errors_are_clear(heldout, tmp_path):
    r = _etem("evaluate", "classical", tmp_path / "missing.h5", "--sampling", 0.2)
    assert r.returncode != 0 and "no such wave set" in r.stderr and "Traceback" not in r.stderr
    r = _etem("evaluate", "classical", heldout, "--doses", "a,b", "--sampling", 0.2)
    assert r.returncode != 0 and "--doses" in r.stderr and "Traceback" not in r.stderr


def test_column_height_model_trains_and_is_scored_by_miscounted_atoms(heldout, tmp_path):
    from etem.simulate.waves import height_classes, load_waves, relabel
    from etem.train.bundle import choose_model
    from etem.train.loop import TrainConfig, train

    waves = load_waves(heldout)
    tall = relabel(waves, "height")
    assert tall[0].classes == height_classes() == tuple(str(h) for h in range(1, 11))
    n_atoms = tall[0].columns["n_atoms"].to_numpy()
    np.testing.assert_array_equal(tall[0].columns["cls"], np.minimum(n_atoms, 10) - 1)
    assert n_atoms.max() > 1  # a particle: columns of several atoms
    np.testing.assert_allclose(tall[0].wave, waves[0].wave)  # the waves are the same

    cfg = TrainConfig(arch_args={"width": 4, "depth": 2}, size=48, sampling_A=0.2, preset="au", batch=2,
                      steps=2, validate_every=2, n_validation=2, threads=1, classes="height",
                      focal_offsets_A=(-100.0, 0.0, 100.0))
    card = train(heldout, tmp_path / "heights", cfg)
    assert card["class_names"] == list(height_classes()) and card["classes_by"] == "height"
    assert card["use"]["task"] == "heights" and card["arch_args"]["n_classes"] == 11
    assert choose_model("au", "hrtem") != "heights"  # the column finder stays the default

    r = _etem("evaluate", tmp_path / "heights", heldout, "--doses", "1000", "-n", 2, "--size", 64,
              "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "off 1" in r.stdout and "off 3+" in r.stdout
    per = pd.read_csv(tmp_path / "out" / "per_image.csv")
    model = per[per["method"] == "heights"]
    ok = model["tp"] > 0
    assert ok.any()
    total = model[["cls_accuracy", "miscount_1", "miscount_2", "miscount_3plus"]][ok].sum(axis=1)
    np.testing.assert_allclose(total, 1.0)  # every matched column is counted right or off by 1, 2, 3+
    assert per[per["method"] == "classical"]["miscount_1"].isna().all()  # a finder only
    assert (tmp_path / "out" / "heights_vs_dose.png").stat().st_size > 5000


def test_summary_pools_counts_and_averages_over_doses():
    per = pd.DataFrame({"method": ["m"] * 3, "dose": [1.0, 1.0, 2.0], "tp": [9, 0, 10], "fp": [1, 0, 0],
                        "fn": [0, 5, 0], "rms_A": [0.1, np.nan, 0.2]})
    t = summary(per)
    d1 = t[(t["dose"] == 1.0)].iloc[0]
    assert d1["f1"] == pytest.approx(18 / 24) and d1["rms_A"] == pytest.approx(0.1)
    mean = t[t["dose"].isna()].iloc[0]
    assert mean["f1"] == pytest.approx((18 / 24 + 1.0) / 2) and mean["images"] == 3
    assert "mean" in format_summary(t)


def test_shipped_model_cards_state_how_they_were_made():
    from etem.train.bundle import bundled_models

    models = bundled_models()
    assert {"au-hrtem", "haadf-stem", "mos2-unet"} <= set(models)
    for name, card_path in models.items():
        card = json.loads(card_path.read_text())
        assert card["training"]["data"] and card["training"]["config"]["steps"] > 0
        assert card["evaluation"]["f1"] is not None
        assert "heldout" in card and card["heldout"]["table"], name  # the held-out sweep, by dose
        weights = card_path.with_suffix(".safetensors")
        assert weights.stat().st_size < 5e6, "shipped weights stay a few MB"


def test_auto_model_picks_the_bundled_model_for_material_and_imaging():
    from etem.tracker.api import resolve_model
    from etem.tracker.errors import ConfigError

    assert resolve_model("auto", "au") == "au-hrtem"
    assert resolve_model("auto", "au110") == "au-hrtem"  # a member of the family
    assert resolve_model("auto:stem", "srtio3") == "haadf-stem"  # STEM models fit any material
    assert resolve_model("auto:stem", None) == "haadf-stem"
    assert resolve_model("auto", "graphene") == "graphene-hrtem"
    assert resolve_model("auto", "srtio3") is None  # none shipped: the classical locator
    assert resolve_model("au-hrtem", None) == "au-hrtem"
    # a focal series of three needs a three-image model: the single-image ones do not fit
    assert resolve_model("auto", "au", focal=3) is None and resolve_model("auto:stem", "au", focal=3) is None
    assert resolve_model("auto", "mos2", focal=3) == "mos2-unet" and resolve_model("auto", "mos2") is None
    with pytest.raises(ConfigError, match="material"):
        resolve_model("auto", None)
    with pytest.raises(ConfigError, match="hrtem' or 'stem"):
        resolve_model("auto:xray", "au")
    # a run that says its frames are STEM gets the STEM model from 'auto', without a material
    from etem.tracker.api import _engine_cfg
    from etem.tracker.detect import EngineConfig

    assert _engine_cfg(EngineConfig(imaging="stem"), "auto", False, False, None, None).model == "haadf-stem"
    assert _engine_cfg(EngineConfig(imaging="hrtem"), "auto", False, False, None, None, "au").model == "au-hrtem"


def test_find_with_auto_model_on_a_real_size_image():
    from etem.tracker import find

    image = np.random.default_rng(0).poisson(30, (96, 96)).astype(np.float32)
    assert find(image, sampling=0.2, model="auto", material="au").attrs["class_names"] == ["Au"]
    assert find(image, sampling=0.2, model="auto", material="srtio3").attrs["engine"] == "classical"


def test_shipped_mos2_model_finds_and_classifies_a_focal_series_movie():
    """The bundled focal-series model on the in-situ MoS2 movie, as `etem find --model auto
    --material mos2 --focal 3` runs it (docs/models.md: F1 0.99 at 3000 e/Å² on 256² frames)."""
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker import find
    from etem.tracker.evaluate import score_columns

    m = mos2_movie(n_frames=1, shape=(128, 128), dose_per_frame=3000, focal_offsets_A=(-100, 0, 100), seed=3)
    found = find(m.frames, sampling=0.2, model="auto", material="mos2", focal=3)
    assert found.attrs["class_names"] == ["Mo", "S2", "S"]
    s = score_columns(found, m.truth.positions, radius_px=1.0 / 0.2, sampling=0.2)
    assert s["f1"] > 0.9 and s["cls_accuracy"] > 0.5, s
    # a [N, F, H, W] stack says itself that it is a focal series: --focal is not needed
    assert find(m.frames, sampling=0.2, model="auto", material="mos2").attrs["class_names"] == ["Mo", "S2", "S"]


def test_a_border_leaves_the_columns_at_the_image_edge_out(heldout):
    kw = dict(doses=[3000], n=2, size=96, sampling_A=0.2, preset="au", imaging="hrtem")
    full = assess(["classical"], heldout, **kw)
    inner = assess(["classical"], heldout, border_A=1.0, **kw)
    assert inner.attrs["border_A"] == 1.0 and full.attrs["border_A"] == 0.0
    assert (inner["n_true"] <= full["n_true"]).all() and inner["n_true"].sum() < full["n_true"].sum()
    assert (inner["tp"] <= full["tp"]).all() and (inner["fn"] <= full["fn"]).all()


def test_border_is_refused_outside_the_model_form(tmp_path):
    pd.DataFrame({"frame": [0], "y": [5.0], "x": [5.0]}).to_csv(tmp_path / "t.csv", index=False)
    r = _etem("evaluate", tmp_path / "t.csv", tmp_path / "t.csv", "--border", 1)
    assert r.returncode == 2 and "--border applies to a model" in r.stderr and "Traceback" not in r.stderr


def test_the_sweeps_pixel_sizes_go_in_as_the_tracker_takes_them(heldout, tmp_path):
    """Wei's sweep runs every pixel size through the tracker's own preprocessing, so the trust
    ranges it stores describe what the tracker does: within the card's inference.as_is_ratio
    (au-hrtem: 0.9-2x its 0.2 Å/px) the frames go in as they are, outside it they are resampled.
    The same bundle without as_is_ratio scores the same frames alike at its own pixel size and
    outside the range, and otherwise within it."""
    import shutil

    from etem.train.bundle import bundle_paths
    from etem.train.sweep import wave_sweep

    paths = {}
    for variant in ("as_is", "resampled"):
        (tmp_path / variant).mkdir()
        for src in bundle_paths("au-hrtem"):
            shutil.copy(src, tmp_path / variant / src.name)
        paths[variant] = tmp_path / variant / "au-hrtem.json"
    card = json.loads(paths["resampled"].read_text())
    assert card["inference"]["as_is_ratio"] == [0.9, 2.0]
    del card["inference"]
    paths["resampled"].write_text(json.dumps(card))
    cols = ["recall", "precision", "confidence"]
    rows = {v: wave_sweep([str(p)], heldout, axes={"sampling": (0.3, 0.6)}, n=1, size=64).set_index("value")[cols]
            for v, p in paths.items()}
    pd.testing.assert_frame_equal(rows["as_is"].loc[[0.2, 0.6]], rows["resampled"].loc[[0.2, 0.6]])
    assert rows["as_is"].loc[0.3, "confidence"] != rows["resampled"].loc[0.3, "confidence"]


def test_two_models_of_the_same_name_keep_their_own_rows(heldout, tmp_path):
    """A fine-tuned copy (`etem train --init au-hrtem -o mine/au-hrtem`) beside the bundled model:
    each is named by its path in the tables, so neither's rows (nor, with --sweep --write-card,
    its trust ranges) are pooled with the other's."""
    import shutil

    from etem.tracker.errors import ConfigError
    from etem.train.bundle import bundle_paths
    from etem.train.sweep import wave_sweep

    (tmp_path / "mine").mkdir()
    for src in bundle_paths("au-hrtem"):
        shutil.copy(src, tmp_path / "mine" / src.name)
    copy = str(tmp_path / "mine" / "au-hrtem.json")
    per = assess(["au-hrtem", copy], heldout, doses=[1e3], n=1, size=64)
    assert set(per["method"]) == {"au-hrtem", copy.removesuffix(".json")}
    assert len(per) == 2
    sweep = wave_sweep(["au-hrtem", copy], heldout, axes={"dose": (1e4,)}, n=1, size=64)
    assert set(sweep["method"]) == {"au-hrtem", copy.removesuffix(".json")}
    with pytest.raises(ConfigError, match="named twice"):
        assess(["au-hrtem", "au-hrtem"], heldout, doses=[1e3], n=1, size=64)
