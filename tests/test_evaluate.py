"""Ground-truth scoring: point matching, column scores, site scores."""
import time

import numpy as np
import pandas as pd
import pytest

from etem.simulate.toy import make_movie
from etem.tracker.evaluate import match_points, score_columns, score_sites

# ---------------------------------------------------------------------------- match_points


def test_match_points_hand_made():
    pred = np.array([[0.0, 0.0], [10.0, 10.0], [50.0, 50.0]])
    true = np.array([[10.5, 10.0], [0.0, 1.0], [30.0, 30.0]])
    p, t = match_points(pred, true, 2.0)
    np.testing.assert_array_equal(p, [0, 1])
    np.testing.assert_array_equal(t, [1, 0])


def test_match_points_prefers_more_pairs_over_greedy_nearest():
    # Greedy nearest-first would pair A with T1 (0.9) and leave B and T2 alone.
    pred = np.array([[0.0, 1.0], [0.0, -1.0]])  # A, B
    true = np.array([[0.0, 0.1], [0.0, 2.2]])  # T1, T2
    p, t = match_points(pred, true, 1.2 + 1e-9)
    np.testing.assert_array_equal(p, [0, 1])
    np.testing.assert_array_equal(t, [1, 0])


def test_match_points_minimises_distance_among_full_matchings():
    pred = np.array([[0.0, 0.0], [0.0, 1.0]])
    true = np.array([[0.0, 1.1], [0.0, 0.1]])
    p, t = match_points(pred, true, 5.0)
    np.testing.assert_array_equal(t[np.argsort(p)], [1, 0])


def test_match_points_radius_is_inclusive_and_never_exceeded():
    p, t = match_points([[0.0, 0.0]], [[0.0, 2.0]], 2.0)
    assert p.tolist() == [0] and t.tolist() == [0]
    p, t = match_points([[0.0, 0.0]], [[0.0, 2.0 + 1e-9]], 2.0)
    assert p.size == t.size == 0


@pytest.mark.parametrize("n_pred, n_true", [(0, 0), (0, 3), (3, 0)])
def test_match_points_empty(n_pred, n_true):
    p, t = match_points(np.zeros((n_pred, 2)), np.ones((n_true, 2)), 1.0)
    assert p.size == 0 and t.size == 0 and p.dtype.kind == "i"


def test_match_points_one_dimensional_with_zero_radius():
    p, t = match_points([3, 5, 5, 9], [5, 3, 4], 0)
    assert list(zip(p.tolist(), t.tolist())) == [(0, 1), (1, 0)]


def test_match_points_many():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:50, 0:40] * 10.0
    true = np.stack([yy.ravel(), xx.ravel()], axis=1) + rng.uniform(-2, 2, (2000, 2))
    pred = true + rng.normal(0, 0.3, true.shape)
    perm = rng.permutation(2000)
    t0 = time.perf_counter()
    p, t = match_points(pred[perm], true, 3.0)
    print(f"match_points 2000 x 2000: {time.perf_counter() - t0:.3f} s")
    assert p.size == 2000
    np.testing.assert_array_equal(perm[p], t)


@pytest.mark.parametrize("seed", range(5))
def test_match_pairs_by_groups_equals_one_dense_assignment(seed):
    # Crowded points: many ambiguous groups of several candidates, and lone pairs.
    from scipy.optimize import linear_sum_assignment

    from etem.tracker.matching import candidate_pairs, match_pairs

    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 30, (150, 2)), rng.uniform(0, 30, (170, 2))
    i, j, d = candidate_pairs(a, b, 1.5)
    mi, mj = match_pairs(i, j, d)
    assert len(set(mi.tolist())) == mi.size and len(set(mj.tolist())) == mj.size
    assert np.all(np.linalg.norm(a[mi] - b[mj], axis=1) <= 1.5)
    dense = np.full((len(a), len(b)), 1e6)
    dense[i, j] = d
    r, c = linear_sum_assignment(dense)
    real = dense[r, c] < 1e6
    assert mi.size == real.sum()  # as many pairs
    np.testing.assert_allclose(np.linalg.norm(a[mi] - b[mj], axis=1).sum(), dense[r, c][real].sum())


# ---------------------------------------------------------------------------- score_columns


def test_score_columns_counts_height_errors_when_classes_are_ordinal():
    true = _cols([(0, 10, 10), (0, 20, 20), (0, 30, 30), (0, 40, 40), (0, 50, 50)], cls=[0, 1, 2, 5, 3])
    pred = _cols([(0, 10, 10), (0, 20, 20), (0, 30, 30), (0, 40, 40)], cls=[0, 2, 4, 1])  # off by 0, 1, 2, 4
    s = score_columns(pred, true, radius_px=1.0, ordinal=True)
    assert s["tp"] == 4 and s["cls_accuracy"] == 0.25
    assert (s["miscount_1"], s["miscount_2"], s["miscount_3plus"]) == (0.25, 0.25, 0.25)
    per = score_columns(pred, true, radius_px=1.0, ordinal=True, per_frame=True)
    assert per.loc[0, "miscount_3plus"] == 0.25
    assert "miscount_1" not in score_columns(pred, true, radius_px=1.0)  # species: no order


def _cols(rows, cls=None):
    df = pd.DataFrame(rows, columns=["frame", "y", "x"])
    if cls is not None:
        df["cls"] = cls
    return df


def test_score_columns_hand_made():
    true = _cols([(0, 10, 10), (0, 20, 20), (0, 30, 30), (2, 40, 40)], cls=[0, 1, 0, 0])
    pred = _cols([(0, 10, 11), (0, 20, 20), (0, 50, 50), (1, 5, 5)], cls=[0, 0, 0, 0])
    s = score_columns(pred, true, radius_px=2.0, sampling=0.1)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 2)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["rms_px"] == pytest.approx(np.sqrt(0.5))
    assert s["rms_A"] == pytest.approx(0.1 * np.sqrt(0.5))
    assert s["cls_accuracy"] == 0.5

    pf = score_columns(pred, true, radius_px=2.0, per_frame=True)
    assert pf.index.tolist() == [0, 1, 2]
    assert pf.loc[0, ["tp", "fp", "fn", "n_pred", "n_true"]].tolist() == [2, 1, 1, 3, 3]
    assert pf.loc[1, ["tp", "fp", "fn"]].tolist() == [0, 1, 0]
    assert pf.loc[2, ["tp", "fp", "fn"]].tolist() == [0, 0, 1]
    assert pf.loc[0, "rms_px"] == pytest.approx(np.sqrt(0.5))
    assert np.isnan(pf.loc[1, "recall"]) and pf.loc[1, "precision"] == 0
    assert np.isnan(pf.loc[2, "precision"]) and np.isnan(pf.loc[2, "rms_px"])
    assert "rms_A" not in pf.columns


def test_score_columns_without_cls_or_sampling():
    s = score_columns(_cols([(0, 1, 1)]), _cols([(0, 1, 2)], cls=[3]), radius_px=1.5)
    assert "cls_accuracy" not in s and "rms_A" not in s
    assert s["rms_px"] == 1.0 and s["f1"] == 1.0


def test_score_columns_empty():
    empty = _cols([])
    s = score_columns(empty, empty, radius_px=1.0)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 0)
    assert all(np.isnan(s[k]) for k in ("precision", "recall", "f1", "rms_px"))
    s = score_columns(empty, _cols([(0, 1, 1), (3, 2, 2)]), radius_px=1.0)
    assert (s["fn"], s["recall"], s["f1"]) == (2, 0.0, 0.0) and np.isnan(s["precision"])
    assert score_columns(empty, empty, radius_px=1.0, per_frame=True).empty


def test_score_columns_bad_input():
    with pytest.raises(ValueError, match="missing x"):
        score_columns(pd.DataFrame({"frame": [0], "y": [1.0]}), _cols([]), radius_px=1.0)
    with pytest.raises(ValueError, match="radius_px must be positive"):
        score_columns(_cols([]), _cols([]), radius_px=0)


def test_score_columns_truth_against_itself_and_jittered():
    tr = make_movie(n_frames=5, seed=1).truth
    s = score_columns(tr.positions, tr.positions, radius_px=1.0)
    assert s["f1"] == 1.0 and s["rms_px"] == 0.0 and s["cls_accuracy"] == 1.0
    moved = tr.positions.assign(x=tr.positions["x"] + 0.3)
    assert score_columns(moved, tr.positions, radius_px=1.0)["rms_px"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------- score_sites


@pytest.fixture(scope="module")
def truth():
    return make_movie(n_frames=40, seed=7).truth


def _found(truth):
    """The truth as a tracker would report it: other site ids, slightly moved positions."""
    sites = truth.site_table()
    seen = sites[sites["occupancy"] > 0].copy()
    seen["site"] += 1000
    seen["y"] += 0.4
    flips = truth.flips()
    flips["site"] += 1000
    return seen.reset_index(drop=True), flips


def test_score_sites_perfect(truth):
    sites, flips = _found(truth)
    s = score_sites(sites, flips, truth, radius_px=3.0)
    n_seen = int((truth.site_occupancy() > 0).sum())
    assert s["n_true"] == s["n_found"] == s["n_matched"] == n_seen
    assert s["site_recall"] == s["site_precision"] == 1.0
    assert s["occupancy_mae"] == s["occupancy_max_error"] == s["occupancy_mae_surface"] == 0.0
    assert s["event_recall"] == s["event_precision"] == 1.0
    assert s["event_rate_mae"] == 0.0 and s["flip_count_error"] == 0.0


def test_score_sites_known_errors(truth):
    sites, flips = _found(truth)
    n = len(sites)
    n_flips = len(flips)
    busy = flips["site"].value_counts().index[0]  # a site with flips
    row = sites.index[sites["site"] == busy][0]
    sites.loc[row, "occupancy"] += 0.2
    sites.loc[row, "event_rate"] += 0.1
    # lose one core site, add one site where nothing is
    core_row = sites.index[sites["kind"] == "core"][0]
    sites = sites.drop(core_row)
    sites.loc[len(sites) + 5000] = [9999, -50.0, -50.0, "core", 1.0, 0.5, 0.0]
    # drop two flips of one site, move one flip of another by a frame
    first = flips.index[flips["site"] == busy][:2]
    flips = flips.drop(first).reset_index(drop=True)
    moved = flips.index[flips["site"] != busy][0]
    flips.loc[moved, "frame"] += 1

    s = score_sites(sites, flips, truth, radius_px=3.0)
    assert s["n_found"] == n and s["n_matched"] == n - 1
    assert s["site_recall"] == pytest.approx((n - 1) / n)
    assert s["site_precision"] == pytest.approx((n - 1) / n)
    assert s["occupancy_max_error"] == pytest.approx(0.2)
    assert s["occupancy_mae"] == pytest.approx(0.2 / (n - 1))
    assert s["event_rate_mae"] == pytest.approx(0.1 / (n - 1))
    assert s["event_recall"] == pytest.approx((n_flips - 3) / n_flips)
    assert s["event_precision"] == pytest.approx((n_flips - 3) / (n_flips - 2))
    assert s["flip_count_error"] == pytest.approx(-2 / n_flips)
    # a tolerance of one frame forgives the moved flip
    s1 = score_sites(sites, flips, truth, radius_px=3.0, frame_tolerance=1)
    assert s1["event_recall"] == pytest.approx((n_flips - 2) / n_flips)


def test_score_sites_flip_kind_must_agree(truth):
    sites, flips = _found(truth)
    flips["kind"] = flips["kind"].map({"on": "off", "off": "on"})
    s = score_sites(sites, flips, truth, radius_px=3.0, frame_tolerance=0)
    assert s["event_recall"] == 0.0 and s["event_precision"] == 0.0


def test_score_sites_nothing_found(truth):
    empty = pd.DataFrame({"site": [], "y": [], "x": [], "occupancy": []})
    s = score_sites(empty, None, truth, radius_px=3.0)
    assert s["n_matched"] == 0 and s["site_recall"] == 0.0 and s["event_recall"] == 0.0
    assert np.isnan(s["site_precision"]) and np.isnan(s["occupancy_mae"]) and np.isnan(s["event_precision"])
    assert "event_rate_mae" not in s and s["flip_count_error"] == -1.0


def test_columns_at_the_frame_edge_can_be_left_out_of_the_score():
    """A column cut by the frame's edge cannot be judged: with a border, columns (true or
    found) within it are not scored, and a pair across the band's edge counts where its true
    column lies."""
    true = pd.DataFrame({"frame": 0, "y": [50.0, 1.0, 50.0, 97.0, 3.5], "x": [50.0, 50.0, 1.5, 50.0, 50.0]})
    pred = pd.DataFrame({"frame": 0, "y": [50.2, 2.5, 20.0, 1.0, 60.0], "x": [50.0, 50.0, 1.0, 80.0, 60.0]})
    # pairs: (50.2, 50) - (50, 50) inside; (2.5, 50) in the band - (3.5, 50) inside; (1, 50) true in
    # the band matched to nothing once (3.5, 50) is taken; found (20, 1) and (1, 80) in the band,
    # unmatched; found (60, 60) inside, unmatched; true (50, 1.5) and (97, 50) in the band, missed
    plain = score_columns(pred, true, radius_px=1.5)
    assert (plain["tp"], plain["fp"], plain["fn"]) == (2, 3, 3)
    edge = score_columns(pred, true, radius_px=1.5, frame_shape=(100, 100), border_px=3.0)
    assert (edge["tp"], edge["fp"], edge["fn"]) == (2, 1, 0)
    per = score_columns(pred, true, radius_px=1.5, frame_shape=(100, 100), border_px=3.0, per_frame=True)
    assert per.loc[0, "n_true"] == 2 and per.loc[0, "n_pred"] == 3
    # a found column inside matched to a true one in the band is neither a hit nor a false one
    one = score_columns(pd.DataFrame({"frame": [0], "y": [3.5], "x": [50.0]}),
                        pd.DataFrame({"frame": [0], "y": [2.5], "x": [50.0]}),
                        radius_px=1.5, frame_shape=(100, 100), border_px=3.0)
    assert (one["tp"], one["fp"], one["fn"]) == (0, 0, 0)
    with pytest.raises(ValueError, match="frame_shape"):
        score_columns(pred, true, radius_px=1.5, border_px=3.0)
    with pytest.raises(ValueError, match="border_px"):
        score_columns(pred, true, radius_px=1.5, frame_shape=(100, 100), border_px=-1.0)


# ---------------------------------------------------------------------------- score_hops
def test_score_hops(truth):
    """The true hops reported back under the tracker's site ids: all found; reversed, or moved
    by more frames than the tolerance, none; hops with an unknown end are not counted, and a
    hop to a site without a true one is false."""
    from etem.tracker.evaluate import score_hops

    sites, _ = _found(truth)
    hops = truth.hops.copy()
    assert len(hops) >= 4
    hops[["from_site", "to_site"]] += 1000
    s = score_hops(sites, hops, truth, radius_px=3.0)
    assert s["n_true"] == s["n_found"] == len(hops) and s["recall"] == s["precision"] == 1.0
    back = hops.rename(columns={"from_site": "to_site", "to_site": "from_site"})
    assert score_hops(sites, back, truth, radius_px=3.0)["recall"] == 0.0
    late = hops.assign(frame=hops["frame"] + 2)
    assert score_hops(sites, late, truth, radius_px=3.0, frame_tolerance=1)["recall"] == 0.0
    assert score_hops(sites, late, truth, radius_px=3.0, frame_tolerance=2)["recall"] == 1.0
    lone = pd.DataFrame({"frame": [3, 4], "from_site": [-1, hops["from_site"].iloc[0]], "to_site": [hops["to_site"].iloc[0], -1]})
    nowhere = pd.DataFrame({"frame": [3], "from_site": [hops["from_site"].iloc[0]], "to_site": [424242]})
    s = score_hops(sites, pd.concat([hops, lone, nowhere], ignore_index=True), truth, radius_px=3.0)
    assert s["n_found"] == len(hops) + 1 and s["recall"] == 1.0
    assert s["precision"] == pytest.approx(len(hops) / (len(hops) + 1))
    s = score_hops(sites.iloc[:0], None, truth, radius_px=3.0)
    assert s["recall"] == 0.0 and np.isnan(s["precision"])


def test_a_recorded_image_given_as_truth_is_a_clear_error(tmp_path, capsys):
    """`etem evaluate found.csv image.dm3` said "not a readable CSV table ('utf-8' codec can't
    decode byte 0xe5 …)"; a recorded HDF5 movie gave a traceback. Both now say what a truth is."""
    import h5py

    from etem.tracker.cli import main

    found = tmp_path / "found.csv"
    pd.DataFrame({"frame": [0], "y": [1.0], "x": [2.0]}).to_csv(found, index=False)
    image = tmp_path / "image.dm3"
    image.write_bytes(b"\x00\x00\x00\x03\x00\x00\x00\xe5\xff" * 100)  # (binary, as a DM3 file)
    recording = tmp_path / "movie.h5"
    with h5py.File(recording, "w") as f:
        f["movie"] = np.zeros((2, 8, 8), np.float32)
    for truth in (image, recording):
        assert main(["evaluate", str(found), str(truth)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "codec" not in err, err
        assert "simulated movie (etem simulate movie" in err and "CSV or Parquet table" in err, err
        assert "frame, y, x" in err
