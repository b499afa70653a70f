"""With no model named, what the data say of how they were taken choose the locator: a file's
metadata, a stream's frame meta, or the run's ``imaging``; the command line says which ran."""
from __future__ import annotations

import numpy as np
import pytest
from test_files import _signal, stack


def test_without_a_model_the_files_metadata_choose(tmp_path, capsys, caplog):
    """No model named: a file that says STEM is read by the bundled STEM model, in find, track
    and on the command line (which says so); a file that says nothing, a run told to use the
    classical locator (by option or config) and an HRTEM file of an unnamed material keep the
    classical locator; a bright-field file read by the classical locator is read for dark
    columns in track as in find."""
    import logging

    import rsciio.hspy

    from etem.tracker import find, track
    from etem.tracker.cli import main
    from etem.tracker.config import config_from_dict

    data = stack(2, 64, 64).astype(np.float32)

    def write(name, mode=None, detector=None):
        sig = _signal(data, scale=0.02)
        if mode:
            sig["metadata"]["Acquisition_instrument"] = {"TEM": {"acquisition_mode": mode}}
        if detector:
            sig["original_metadata"] = {"ImageTags": {"Detector": detector}}
        rsciio.hspy.file_writer(str(tmp_path / name), sig)
        return tmp_path / name

    stem, plain, tem, abf = write("stem.hspy", "STEM"), write("plain.hspy"), write("tem.hspy", "TEM"), \
        write("abf.hspy", "STEM", "ABF")
    df = find(stem, device="cpu")
    assert df.attrs["model"] == "haadf-stem" and df.attrs["engine"] != "classical"
    assert track(stem, device="cpu").model == "haadf-stem"
    assert find(stem, classical=True).attrs["model"] is None
    classical_cfg = config_from_dict({"engine": {"kind": "classical"}})
    assert find(stem, config=classical_cfg).attrs["model"] is None
    assert track(stem, config=classical_cfg).model is None
    for path in (plain, tem):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="etem.engine"):
            assert find(path).attrs["model"] is None and track(path).model is None
        # an HRTEM file without a material: the classical locator, and a warning that says how
        # to take the bundled model instead
        assert ("no material is named" in caplog.text and "--material" in caplog.text) == (path == tem)
    assert find(tem, material="au", sampling=0.2, device="cpu").attrs["model"] == "au-hrtem"
    # the run says what the frames are where the file does not
    stem_cfg = config_from_dict({"engine": {"imaging": "stem"}})
    assert track(plain, config=stem_cfg, device="cpu").model == "haadf-stem"
    for run in (find, track):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="etem.engine"):
            run(abf, classical=True, sampling=0.2)
        assert "bright-field STEM: dark columns" in caplog.text
    assert main(["find", str(stem), "-o", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "located by model haadf-stem" in out and "--classical for the classical locator" in out
    assert main(["find", str(plain), "-o", str(tmp_path / "c.csv")]) == 0
    assert "located by the classical locator" in capsys.readouterr().out
    assert main(["replay", str(stem), "-o", str(tmp_path / "run.h5"), "--quiet"]) == 0
    assert "columns located by model haadf-stem" in capsys.readouterr().out
    # an engine named without a model runs the model the data choose (it was "the onnxruntime
    # engine needs a model"); --imaging against the file's own word is said
    df = find(stem, engine="onnxruntime", device="cpu")
    assert df.attrs["model"] == "haadf-stem" and df.attrs["engine"] == "onnxruntime"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="etem.engine"):
        find(stem, classical=True, config=config_from_dict({"engine": {"imaging": "hrtem"}}))
    assert "--imaging hrtem, but the data say the frames are STEM" in caplog.text


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_a_streams_frames_say_how_they_were_taken_and_choose_the_model(tmp_path, detection):
    """No model named: the first frame's meta (``imaging``, ``detector``) choose the model as a
    file's metadata would, with the detector in a thread or in its own process, and the run file
    records the choice; frames that say nothing, or a run told --classical, keep the classical
    locator."""
    import threading

    from etem.simulate.insitu import insitu_movie
    from etem.tracker import PipelineConfig, track
    from etem.tracker.frames import Frame
    from etem.tracker.publish import Publisher, publish_frames
    from etem.tracker.runfile import open_run

    m = insitu_movie(n_frames=4, shape=(128, 128), particle_radius_A=8.0, mode="stem", dose_per_frame=3000, seed=3)

    def run(meta, name, **options):
        frames = [Frame(image=im, frame=i, sampling=m.sampling, meta=dict(meta)) for i, im in enumerate(m.frames)]
        pub = Publisher("tcp://127.0.0.1:0", mode="push")
        t = threading.Thread(target=publish_frames, args=(frames, pub), daemon=True)
        t.start()
        try:
            return track(pub.address, mode="pull", idle_timeout_s=30, device="cpu", run_path=tmp_path / name,
                         config=PipelineConfig(detection=detection), **options)
        finally:
            t.join(10)
            pub.close()

    res = run({"imaging": "stem", "detector": "adf"}, "stem.h5")
    assert res.model == "haadf-stem" and res.engine != "classical"
    assert open_run(tmp_path / "stem.h5").attrs["config"]["engine"]["model"] == "haadf-stem"
    assert run({}, "plain.h5").model is None
    assert run({"imaging": "stem"}, "classical.h5", classical=True).model is None
    bf = run({"imaging": "stem", "detector": "bf"}, "bf.h5")
    assert bf.model == "haadf-stem"
    assert open_run(tmp_path / "bf.h5").attrs["config"]["engine"]["contrast"] == "dark"


def test_a_file_or_stream_that_names_its_material_takes_the_model_made_for_it(tmp_path, caplog):
    """A simulated movie file names the material in view, so a replay with no options takes the
    bundled HRTEM model for it: one image per frame (``au-hrtem``) or, read from a 4-D
    focal-series file, three (``mos2-unet``; the images per frame count, with ``model="auto"``
    as without). ``material=`` overrides the file's; a name the tracker does not know, in a
    file or a stream's frame meta, is passed over (the classical locator), said in the log."""
    import logging
    import threading

    import h5py

    from etem.simulate.insitu import insitu_movie
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.simulate.movie_io import save_movie
    from etem.tracker import track
    from etem.tracker.files import open_recording
    from etem.tracker.frames import Frame
    from etem.tracker.publish import Publisher, publish_frames

    au = insitu_movie(n_frames=2, shape=(96, 96), particle_radius_A=8.0, seed=1)
    save_movie(au, tmp_path / "au.h5")
    with open_recording(tmp_path / "au.h5") as rec:
        assert rec.frame_meta()["material"] == "au110" and rec.frame_meta()["imaging"] == "hrtem"
    assert track(tmp_path / "au.h5", device="cpu").model == "au-hrtem"
    assert track(tmp_path / "au.h5", device="cpu", material="graphene").model == "graphene-hrtem"

    mos2 = mos2_movie(n_frames=2, shape=(96, 96), flake_radius_A=8.0, focal_offsets_A=(-100.0, 0.0, 100.0), seed=1)
    save_movie(mos2, tmp_path / "mos2.h5")
    for model in (None, "auto"):
        res = track(tmp_path / "mos2.h5", device="cpu", model=model, run_path=tmp_path / f"mos2-{model}.h5")
        assert res.model == "mos2-unet"

    with h5py.File(tmp_path / "au.h5", "a") as f:
        f["frames"].attrs["material"] = "unobtainium"
    with open_recording(tmp_path / "au.h5") as rec:
        assert "material" not in rec.frame_meta()
    assert track(tmp_path / "au.h5").model is None

    def stream(meta):
        frames = [Frame(image=im, frame=i, sampling=au.sampling, meta=dict(meta)) for i, im in enumerate(au.frames)]
        pub = Publisher("tcp://127.0.0.1:0", mode="push")
        t = threading.Thread(target=publish_frames, args=(frames, pub), daemon=True)
        t.start()
        try:
            return track(pub.address, mode="pull", idle_timeout_s=30, device="cpu")
        finally:
            t.join(10)
            pub.close()

    assert stream({"imaging": "hrtem", "material": "au"}).model == "au-hrtem"
    with caplog.at_level(logging.WARNING, logger="etem.pipeline"):
        assert stream({"imaging": "hrtem", "material": "unobtainium"}).model is None
    assert "'unobtainium', which is not one the tracker knows" in caplog.text


def test_frames_and_models_of_other_focal_series(tmp_path, capsys, caplog):
    """A focal-series model given single images is a clear error, not a traceback from the
    engine; a single-image model given focal series takes the image nearest focus (the frame's
    defocus where it says it, else the middle one), not the first, most defocused one."""
    import logging

    import pandas as pd

    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.simulate.toy import save_movie
    from etem.tracker import find
    from etem.tracker.cli import main
    from etem.tracker.frames import Frame

    single = mos2_movie(n_frames=2, shape=(96, 96), seed=0, mode="hrtem")
    save_movie(single, tmp_path / "single.h5")
    for cmd in (["find", str(tmp_path / "single.h5")], ["replay", str(tmp_path / "single.h5"), "--quiet"]):
        assert main([*cmd, "--model", "mos2-unet", "-o", str(tmp_path / "x.h5")]) == 2
        err = capsys.readouterr().err
        assert "the model takes a focal series of 3 images per frame; frame 0 holds 1" in err and "Traceback" not in err
    # --model auto finds none for such frames: the classical locator, and why
    assert main(["find", str(tmp_path / "single.h5"), "--model", "auto", "--material", "mos2",
                 "-o", str(tmp_path / "x.csv")]) == 0
    assert ("located by the classical locator (--model auto: no bundled model is made for mos2 HRTEM frames of "
            "1 image" in capsys.readouterr().out)
    series = mos2_movie(n_frames=1, shape=(96, 96), seed=0, mode="hrtem", focal_offsets_A=(-100, 0, 100))
    img = series.frames[0]  # [3, H, W]: -100, 0, +100 Å
    ref = find(img[1], model="au-hrtem", sampling=series.sampling)
    logging.getLogger("etem").addHandler(caplog.handler)  # (the command line's set-up may stop propagation)
    try:
        with caplog.at_level(logging.WARNING, logger="etem"):  # (... and --quiet raise the level)
            got = find(img[None], model="au-hrtem", sampling=series.sampling)  # (one frame of 3 images)
    finally:
        logging.getLogger("etem").removeHandler(caplog.handler)
    assert "image 1 is used, the middle one" in caplog.text
    pd.testing.assert_frame_equal(got[["y", "x"]], ref[["y", "x"]])
    # where the frame says its defocus, the image nearest the model's (0 Å) is taken
    from etem.tracker.detect import Detector, EngineConfig

    det = Detector(EngineConfig(model="au-hrtem"))
    det._ensure_engine(series.sampling, img)
    f = Frame(image=img, frame=0, sampling=series.sampling, defocus=(-100.0, 100.0, 5.0))
    assert np.array_equal(det._inputs_of(f, 1), img[2])


def test_a_model_made_for_focal_series_is_not_taken_for_single_images_and_that_is_said(caplog):
    """Single HRTEM images of MoS2: the bundled MoS2 models take focal series of three, so the
    classical locator finds the columns; it did so without a word."""
    import logging

    from etem.tracker import find

    img = np.random.default_rng(0).poisson(20, (64, 64)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="etem.engine"):
        df = find(img, sampling=0.1, model="auto", material="mos2")
    assert df.attrs["model"] is None
    assert "takes 3 images per frame; these frames have 1: the classical locator" in caplog.text
