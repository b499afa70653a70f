"""The trust flag: frames judged against a locator's measured ranges, and the sweep that measures them."""
import numpy as np
import pandas as pd
import pytest

from etem.simulate.toy import make_movie
from etem.tracker import find
from etem.tracker.trust import FLAGS, TrustRanges, describe, judge, ranges_for

RANGES = TrustRanges(sampling_A=(0.05, 0.5), snr_min=20.0, resolution_max_A=1.8, confidence_min=0.6)


@pytest.mark.parametrize("figures, flags", [
    ((100.0, 1.2, 0.2, 0.8), 0),
    ((10.0, 1.2, 0.2, 0.8), FLAGS["snr"]),
    ((100.0, 2.5, 0.2, 0.8), FLAGS["resolution"]),
    ((100.0, 1.2, 0.7, 0.8), FLAGS["sampling"]),
    ((100.0, 1.2, 0.2, 0.4), FLAGS["confidence"]),
    ((5.0, 3.0, 0.9, 0.1), sum(FLAGS.values())),
    ((np.nan, np.nan, None, np.nan), 0),  # what cannot be measured does not condemn a frame
])
def test_judge_sets_one_bit_per_figure_out_of_range(figures, flags):
    assert judge(*figures, RANGES) == flags


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


def _flags(**movie):
    m = make_movie(n_frames=2, shape=(int(round(51.2 / movie.get("sampling", 0.2))),) * 2, seed=7, **movie)
    cols = find(m.frames, sampling=m.sampling, classical=True)
    return [f["in_range"] for f in cols.attrs["frames"]], [f["out_of_range"] for f in cols.attrs["frames"]]


def test_the_flag_is_on_inside_the_cutoffs_and_off_past_them():
    inside, _ = _flags(dose_per_frame=1000)
    assert inside == [1, 1]
    low_dose, masks = _flags(dose_per_frame=5)
    assert low_dose == [0, 0] and all(m & FLAGS["snr"] for m in masks)
    coarse, masks = _flags(sampling=0.8)
    assert coarse == [0, 0] and all(m & FLAGS["sampling"] for m in masks)


def test_track_stores_the_flag_per_frame_and_counts_it(tmp_path):
    from etem.tracker import track
    from etem.tracker.runfile import open_run

    m = make_movie(n_frames=6, shape=(128, 128), particle_radius_A=8.0, dose_per_frame=1000, seed=8)
    frames = m.frames.copy()
    frames[3:] = np.random.default_rng(0).poisson(frames[3:] / 200.0) * 200.0  # three frames at 1/200 the dose
    res = track(frames, sampling=m.sampling, classical=True, run_path=tmp_path / "run.h5")
    assert res.frames["in_range"].tolist() == [1, 1, 1, 0, 0, 0]
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
