"""The trust flag: frames judged against a locator's measured ranges, and the sweep that measures them."""
import numpy as np
import pandas as pd
import pytest

from etem.tracker import find
from etem.tracker.trust import FLAGS, TrustRanges, TrustTally, describe, judge, ranges_for

RANGES = TrustRanges(sampling_A=(0.05, 0.5), snr_min=20.0, resolution_max_A=1.8, confidence_min=0.6)


@pytest.mark.parametrize("figures, flags", [
    ((100.0, 1.2, 0.2, 0.8), 0),
    ((10.0, 1.2, 0.2, 0.8), FLAGS["snr"]),
    ((100.0, 2.5, 0.2, 0.8), FLAGS["resolution"]),
    ((100.0, 1.2, 0.7, 0.8), FLAGS["sampling"]),
    ((100.0, 1.2, 0.2, 0.4), FLAGS["confidence"]),
    ((5.0, 3.0, 0.9, 0.1), sum(v for k, v in FLAGS.items() if k not in ("nowhere", "contrast"))),
    ((np.nan, np.nan, None, np.nan), 0),  # what cannot be measured does not condemn a frame
    # the pixel size unknown: the SNR is per pixel and the resolution in px, not the ranges' units
    ((10.0, 2.5, None, 0.8), 0),
    ((10.0, 2.5, None, 0.4), FLAGS["confidence"]),
])
def test_judge_sets_one_bit_per_figure_out_of_range(figures, flags):
    assert judge(*figures, RANGES) == flags


def test_a_range_of_one_pixel_size_takes_that_size_as_calibrated():
    """A model that passed its sweep at its own pixel size only: a file's 0.19996 Å/px is that size."""
    one = TrustRanges(sampling_A=(0.2, 0.2))
    assert judge(100.0, 1.0, 0.2, 0.9, one) == judge(100.0, 1.0, 0.19996, 0.9, one) == 0
    assert judge(100.0, 1.0, 0.15, 0.9, one) == judge(100.0, 1.0, 0.25, 0.9, one) == FLAGS["sampling"]


def test_without_ranges_there_is_no_flag():
    assert judge(1.0, 9.0, 0.2, 0.1, None) == -1
    assert describe(-1) == "no ranges"
    assert describe(0, RANGES) == "in range"
    words = describe(FLAGS["snr"] | FLAGS["sampling"], RANGES)
    assert "SNR below 20" in words and "pixel size outside 0.05–0.5" in words


def test_ranges_round_trip_and_come_from_a_card():
    assert TrustRanges.from_dict(RANGES.to_dict()) == RANGES

    class Engine:
        name = "eager"
        card = {"trust": RANGES.to_dict()}

    assert ranges_for(Engine()) == RANGES
    Engine.card = {}
    assert ranges_for(Engine()) is None


def test_the_classical_locator_ships_measured_ranges():
    from etem.tracker.engines import make_engine

    for contrast in ("bright", "dark"):
        r = ranges_for(make_engine("classical", None, device="cpu", contrast=contrast))
        assert r is not None and r.snr_min > 0 and r.sampling_A[0] < r.sampling_A[1]
        assert "sweep" in r.source


def _stem_movie(n_frames=2, sampling=0.2, **kw):
    """A HAADF-STEM movie of a small Au particle from exit waves: the kind of image the classical
    locator's packaged ranges were measured on (toy Gaussian columns are not)."""
    from etem.simulate.insitu import insitu_movie

    return insitu_movie(n_frames=n_frames, shape=(int(round(25.6 / sampling)),) * 2, sampling=sampling, mode="stem",
                        particle_radius_A=8.0, seed=3, **kw)


def _flags(**movie):
    m = _stem_movie(**movie)
    cols = find(m.frames, sampling=m.sampling, classical=True)
    return [f["in_range"] for f in cols.attrs["frames"]], [f["out_of_range"] for f in cols.attrs["frames"]]


def test_the_flag_is_on_inside_the_cutoffs_and_off_past_them():
    inside, _ = _flags(dose_per_frame=3000)
    assert inside == [1, 1]
    low_dose, masks = _flags(dose_per_frame=5)
    assert low_dose == [0, 0] and all(m & FLAGS["snr"] for m in masks)
    coarse, masks = _flags(sampling=0.8, dose_per_frame=3000)
    assert coarse == [0, 0] and all(m & FLAGS["sampling"] for m in masks)


def test_track_stores_the_flag_per_frame_and_counts_it(tmp_path):
    from etem.tracker import track
    from etem.tracker.runfile import open_run

    m = _stem_movie(n_frames=6, dose_per_frame=3000)
    frames = m.frames.copy()
    frames[3:] = np.random.default_rng(0).poisson(frames[3:] / 200.0) * 200.0  # three frames at 1/200 the dose
    live = []
    res = track(frames, sampling=m.sampling, classical=True, run_path=tmp_path / "run.h5",
                on_frame=lambda r, pipe: live.append(pipe.status()["trust_last_out"]))
    assert res.frames["in_range"].tolist() == [1, 1, 1, 0, 0, 0]
    # the live status says why the latest frame out of range was
    assert live[:3] == ["", "", ""] and live[3].startswith("out of range: SNR below")
    stored = open_run(tmp_path / "run.h5").frames
    assert stored["in_range"].tolist() == [1, 1, 1, 0, 0, 0]
    assert (stored["out_of_range"].to_numpy()[3:] & FLAGS["snr"]).all()
    assert len(res.columns[res.columns["frame"] >= 3]) > 0  # flagged frames are still processed


# -- the sweep ---------------------------------------------------------------------------------

def test_trust_ranges_take_the_range_over_which_every_condition_passed():
    from etem.train.sweep import trust_ranges

    table = pd.DataFrame({
        "axis": ["dose"] * 5 + ["sampling"] * 4 + ["resolution"] * 3,
        "snr": [5, 12, 30, 60, 90, 80, 80, 80, 80, 70, 60, 50],
        "sampling": [0.2] * 5 + [0.1, 0.3, 0.5, 0.7] + [0.2] * 3,
        "resolution_A": [2.5, 2.0, 1.3, 1.2, 1.1, 1.2, 1.2, 1.4, 1.8, 1.0, 1.6, 2.4],
        "confidence": [0.4, 0.5, 0.7, 0.75, 0.8, 0.7, 0.7, 0.7, 0.6, 0.7, 0.7, 0.6],
        # a lucky pass below a failure does not count: the floor is above the last failure
        "passed": [True, False, True, True, True, True, True, True, False, True, True, False],
    })
    r = trust_ranges(table, source="test")
    assert r.snr_min == 30
    assert r.sampling_A == (0.1, 0.5)
    assert r.resolution_max_A == 1.6
    assert r.confidence_min == 0.4


def test_a_small_sweep_fails_where_the_locator_fails():
    from etem.train.sweep import Condition, run_sweep

    table = run_sweep([Condition("dose", dose=3.0), Condition("dose", dose=1000.0),
                       Condition("sampling", sampling=0.9)], n_frames=1)
    assert table["passed"].tolist() == [False, True, False]
    assert table.loc[1, "recall"] >= 0.9 and table.loc[1, "rms_A"] < 0.3


def _wave_table(passed_by_axis):
    """A sweep table as wave_sweep writes it: one method, the axes' values and pass/fail."""
    from etem.train.sweep import WAVE_AXES

    rows = []
    for axis, passed in passed_by_axis.items():
        values = WAVE_AXES[axis][:len(passed)]
        for k, (v, p) in enumerate(zip(values, passed)):
            rows.append({"method": "m", "axis": axis, "value": v,
                         "snr": 100.0 / (k + 1) if axis in ("dose", "contrast") else 50.0,
                         "resolution_A": 1.0 + 0.2 * k if axis == "resolution" else 1.1,
                         "confidence": 0.9 - 0.01 * k, "passed": p})
    t = pd.DataFrame(rows)
    t.attrs["base"] = {"dose": 1e4, "sampling": 0.2, "resolution": 0.0, "contrast": 1.0}
    t.attrs["wave_set"] = "test.h5"
    return t


def test_wave_sweep_cutoffs_go_from_the_base_towards_the_hard_end():
    from etem.train.sweep import WAVE_AXES, cutoffs, wave_trust_ranges

    # dose values 3e4, 1e4 (base), 5e3, 3e3, 2e3, 1e3, 500: 3e4 fails (above the base: ignored),
    # a lucky pass at 500 below the failure at 1e3 is not reached
    t = _wave_table({"dose": [False, True, True, True, True, False, True],
                     # pixel sizes 0.05 … 0.6 around the base 0.2: 0.05 fails, 0.3 fails
                     "sampling": [False, True, True, True, True, True, True, False, True],
                     "resolution": [True, True, True, False],
                     "contrast": [True, True, False]})
    c = cutoffs(t).set_index("axis")
    assert c.loc["dose", "cutoff"] == 2e3 and c.loc["dose", "reach"] == pytest.approx(4 / 6)
    assert c.loc["sampling", "cutoff"] == 0.25 and c.loc["sampling", "easy_end"] == 0.075
    assert c.loc["resolution", "cutoff"] == WAVE_AXES["resolution"][2] and c.loc["contrast", "cutoff"] == 0.8
    assert not c["fails_at_base"].any()
    r = wave_trust_ranges(t, "m")
    # SNR floor above every failure between base and hard end: the failure at 1e3 measured
    # 100/6, the contrast failure 100/3; so the floor is the least SNR above both
    assert r.snr_min == pytest.approx(50.0) and r.sampling_A == (0.075, 0.25)
    assert r.resolution_max_A == pytest.approx(1.4) and not r.passed_nowhere
    assert judge(60.0, 1.2, 0.2, 0.9, r) == 0 and judge(40.0, 1.2, 0.2, 0.9, r) == FLAGS["snr"]


def test_a_locator_that_fails_at_the_base_is_trusted_nowhere():
    from etem.train.sweep import cutoffs, wave_trust_ranges

    t = _wave_table({"dose": [True, False, False], "resolution": [True, True]})
    assert cutoffs(t).set_index("axis").loc["dose", "fails_at_base"]
    r = wave_trust_ranges(t, "m")
    assert r.passed_nowhere and "nowhere" in r.text()
    assert TrustRanges.from_dict(r.to_dict()) == r
    mask = judge(1e3, 1.0, 0.2, 0.9, r)  # every figure fine, and still out of range
    assert mask == FLAGS["nowhere"] and "nowhere in its evaluation" in describe(mask, r)


def test_the_bundled_models_carry_ranges_measured_on_exit_wave_images():
    from etem.tracker.engines import make_engine

    from etem.train.bundle import bundled_models

    assert {"au-hrtem", "haadf-stem", "mos2-unet", "mos2-msdnet"} <= set(bundled_models())
    for name in bundled_models():
        r = ranges_for(make_engine("eager", name, device="cpu"))
        assert r is not None and "exit-wave" in r.source, name
        if r.passed_nowhere:  # a model that failed its sweep's base condition has no ranges, and says so
            assert "fails at the base" in r.source and r.snr_min is None and r.sampling_A is None, name
            continue
        assert r.snr_min > 0 and r.sampling_A[0] <= r.sampling_A[1] and 0 < r.confidence_min < 1
    assert not ranges_for(make_engine("eager", "haadf-stem", device="cpu")).passed_nowhere


def test_tally_says_how_many_frames_were_inside_and_why_not():
    from etem.tracker.trust import tally

    assert tally([-1, -1]) is None and tally([]) is None
    assert tally([0, 0, -1]) == "2 of 2 frames inside the locator's trust ranges"
    assert tally([0, FLAGS["snr"], FLAGS["snr"] | FLAGS["confidence"]]) == (
        "1 of 3 frames inside the locator's trust ranges; outside for SNR (2 frames), confidence (1 frame)")


def test_saying_what_the_frames_are_picks_the_classical_ranges_of_that_kind(tmp_path, capsys):
    from etem.tracker.cli import main
    from etem.tracker.detect import EngineConfig
    from etem.tracker.engines import make_engine
    from etem.tracker.errors import ConfigError

    engine = make_engine("classical", None, device="cpu", contrast="bright")
    strict, hrtem, stem = (ranges_for(engine, imaging=k) for k in (None, "hrtem", "stem"))
    assert "exit-wave" in hrtem.source and "exit-wave" in stem.source
    assert hrtem.snr_min < stem.snr_min == strict.snr_min  # STEM needs more of this figure than HRTEM
    assert strict.resolution_max_A <= min(hrtem.resolution_max_A, stem.resolution_max_A)
    with pytest.raises(ConfigError, match="imaging"):
        EngineConfig(imaging="tem")
    from etem.tracker.detect import Detector
    from etem.tracker.frames import Frame

    m = _stem_movie(dose_per_frame=3000)
    for imaging, expected in ((None, strict), ("hrtem", hrtem)):
        det = Detector(EngineConfig(kind="classical", imaging=imaging))
        det.detect([Frame(image=m.frames[0], frame=0, sampling=m.sampling)])
        assert det.trust_ranges == expected
    # what the frame's file says, where the run says nothing
    det = Detector(EngineConfig(kind="classical"))
    det.detect([Frame(image=m.frames[0], frame=0, sampling=m.sampling, meta={"imaging": "stem"})])
    assert det.trust_ranges == stem
    # from the command line: a STEM frame judged as one
    np.save(tmp_path / "f.npy", _stem_movie(dose_per_frame=3000).frames[:1])
    assert main(["find", str(tmp_path / "f.npy"), "--sampling", "0.2", "--imaging", "stem"]) == 0
    out = capsys.readouterr()
    assert "  in range: SNR" in out.out + out.err
    with pytest.raises(SystemExit):
        main(["find", str(tmp_path / "f.npy"), "--imaging", "tem"])



def test_frames_of_the_other_contrast_than_looked_for_are_out_of_range(capsys):
    """Bright (annular dark-field) columns looked for as dark ones, and the same frame negated
    (dark columns, as in annular bright field) looked for as bright ones: the locator finds the
    gaps between the columns, and every frame is out of range for its contrast; looked for as
    they are, it is not."""
    m = _stem_movie(dose_per_frame=3000)
    bright = m.frames[:2].astype(np.float32)
    dark = bright.max() - bright
    for frames, is_dark, opposed in ((bright, False, False), (bright, True, True), (dark, False, True),
                                     (dark, True, False)):
        df = find(frames, sampling=m.sampling, classical=True, dark=is_dark)
        masks = [r["out_of_range"] for r in df.attrs["frames"]]
        assert len(masks) == 2 and all(bool(k & FLAGS["contrast"]) == opposed for k in masks), (is_dark, masks)
    assert describe(FLAGS["contrast"]).startswith("out of range: contrast (the columns look dark where bright")

def test_frames_judged_by_the_strictest_ranges_say_why_and_what_to_add(tmp_path, capsys):
    """The kind of image unknown, the classical locator is judged by the strictest of its HRTEM
    and STEM ranges; a frame out of them says so, and that --imaging takes one kind's."""
    from etem.simulate.toy import make_movie
    from etem.tracker.cli import main
    from etem.tracker.engines import make_engine
    from etem.tracker.trust import UNKNOWN_KIND_NOTE

    engine = make_engine("classical", None, device="cpu", contrast="bright")
    assert ranges_for(engine).note == UNKNOWN_KIND_NOTE
    assert ranges_for(engine, imaging="hrtem").note == "" and "note" not in ranges_for(engine).to_dict()
    # a toy movie at 70 e/Å² per frame: SNR about 42, under STEM's 184, over HRTEM's 27
    movie = make_movie(n_frames=4, shape=(128, 128), sampling=0.08, particle_radius_A=3.0, seed=3)
    np.save(tmp_path / "m.npy", movie.frames)
    assert main(["find", str(tmp_path / "m.npy"), "--sampling", "0.08", "-o", str(tmp_path / "c.csv")]) == 0
    said = "".join(capsys.readouterr())
    assert "outside for SNR (4 frames)" in said and f"({UNKNOWN_KIND_NOTE})" in said
    assert main(["find", str(tmp_path / "m.npy"), "--sampling", "0.08", "--imaging", "hrtem", "--classical",
                 "-o", str(tmp_path / "c.csv")]) == 0
    assert UNKNOWN_KIND_NOTE not in "".join(capsys.readouterr())
    for mode in ("thread", "process"):  # a replay's summary, the note passed from the detection process
        assert main(["replay", str(tmp_path / "m.npy"), "--sampling", "0.08", "--detection", mode, "--quiet",
                     "-o", str(tmp_path / f"{mode}.h5")]) == 0
        out = capsys.readouterr().out
        assert "outside for SNR (4 frames)" in out and f"({UNKNOWN_KIND_NOTE})" in out, mode


def test_the_live_alert_goes_by_the_latest_frames():
    """Frames flickering at the edge of a range do not raise the alert; a run of frames out of
    range does, and it clears when the data come back; the whole run's counts keep everything."""
    t = TrustTally(window=10)
    assert not t.alert and t.status()["recent_judged"] == 0
    for k in range(20):  # at the SNR floor: every third frame out
        t.add(int(k % 3 != 0), "out of range: SNR below 30")
    assert not t.alert and t.status()["recent_in_range"] == 7 and t.last_out == "out of range: SNR below 30"
    t.add(-1, "not judged")  # no flag: counted nowhere
    for _ in range(6):  # the focus drifts off: out, frame after frame
        t.add(0, "out of range: resolution worse than 1.2 Å")
    assert t.alert and t.last_out.endswith("1.2 Å")
    for _ in range(6):
        t.add(1)
    assert not t.alert  # back in range for most of the latest 10
    s = t.status()
    assert (s["in_range"], s["out_of_range"], s["recent_judged"]) == (13 + 6, 7 + 6, 10)
    assert s["trust_alert"] is False
    with pytest.raises(ValueError, match="window"):
        TrustTally(window=0)


def test_frames_of_unknown_pixel_size_say_what_they_were_judged_by(tmp_path, capsys):
    # SNR and resolution need the pixel size (judge): a verdict without it says so, in find
    # and in a run's report, and not where the pixel size is given
    from etem.simulate.toy import make_movie
    from etem.tracker.cli import main

    m = make_movie(n_frames=3, shape=(96, 96), particle_radius_A=6.0, seed=1)
    np.save(tmp_path / "m.npy", m.frames)
    words = "the pixel size unknown: judged by the columns' confidence alone"
    for cmd in (["find", str(tmp_path / "m.npy"), "-o", str(tmp_path / "c.csv")],
                ["replay", str(tmp_path / "m.npy"), "--quiet", "-o", str(tmp_path / "r.h5")]):
        assert main(cmd) == 0
        assert capsys.readouterr().out.count(words) == 1
        assert main([*cmd, "--sampling", "0.2", *(["--overwrite"] if cmd[0] == "replay" else [])]) == 0
        assert words not in capsys.readouterr().out
