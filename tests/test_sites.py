import numpy as np
import pandas as pd
import pytest

from etem.tracker.errors import ConfigError
from etem.tracker.sites import SiteMap, SitesConfig, occupied_sites, render_site_values

# three sites on a line, 3 Å apart, sampling 0.1 Å/px -> 30 px apart
SITES = np.array([[50.0, 50.0], [50.0, 80.0], [50.0, 110.0]])
PATTERN = np.array(  # frames x sites, occupied?
    [
        [1, 0, 1],
        [1, 0, 1],
        [0, 1, 1],  # hop 0 -> 1
        [0, 1, 0],  # site 2 empties (desorbs)
        [1, 0, 0],  # hop 1 -> 0
        [1, 0, 1],  # site 2 back: same site
    ],
    bool,
)


def run(pattern, jitter=0.0, seed=0, fill_gaps=0, occupancy="gaps"):
    """Track ``pattern`` (frames x sites) with the "gaps" occupancy: every frame as detected."""
    rng = np.random.default_rng(seed)
    sm = SiteMap(SitesConfig(radius_A=0.8, hop_radius_A=4.0, fill_gaps=fill_gaps, occupancy=occupancy), sampling=0.1)
    ids = []
    for f, occ in enumerate(pattern):
        yx = SITES[: len(occ)][occ] + rng.normal(0, jitter, (occ.sum(), 2))
        ids.append(sm.update(f, yx))
    sm.flush()
    return sm, ids


def test_occupancy_events_and_identity():
    sm, ids = run(PATTERN, jitter=0.5)
    tab = sm.table()
    assert sm.n_sites == 3  # the column that came back is at the same site
    # site ids are in order of appearance: 0 -> A, 1 -> C (frame 0), 2 -> B (frame 2)
    order = [0, 2, 1]
    np.testing.assert_allclose(tab["occupancy"].to_numpy()[order], PATTERN.mean(0))
    flips = np.abs(np.diff(PATTERN.astype(int), axis=0)).sum(0)
    np.testing.assert_allclose(tab["event_rate"].to_numpy()[order], flips / (len(PATTERN) - 1))
    np.testing.assert_allclose(tab[["y", "x"]].to_numpy()[order], SITES, atol=1.2)  # mean of >= 2 samples of sigma 0.5
    assert ids[5].tolist() == [0, 1]


def test_hops_and_flips():
    sm, _ = run(PATTERN)
    hops = sm.hops_table()
    pairs = set(map(tuple, hops[["frame", "from_site", "to_site"]].to_numpy()))
    assert (2, 0, 2) in pairs  # A -> B at frame 2
    assert (4, 2, 0) in pairs  # B -> A at frame 4
    assert (3, 1, -1) in pairs  # C empties, no partner
    assert (5, -1, 1) in pairs  # C fills, no partner
    assert len(sm.flips_table()) == int(np.abs(np.diff(PATTERN.astype(int), axis=0)).sum())


def test_residence_runs_cover_every_frame():
    sm, _ = run(PATTERN)
    res = sm.residence_table(last_frame=len(PATTERN) - 1)
    per_site = res.groupby("site")["frames"].sum()
    assert (per_site == len(PATTERN)).all()
    a = res[res.site == 0].sort_values("start")
    assert a[["frames", "occupied"]].values.tolist() == [[2, True], [2, False], [2, True]]
    assert a["censored"].tolist() == [False, False, True]


def test_residence_runs_say_which_end_was_not_seen():
    sm, _ = run(PATTERN)
    res = sm.residence_table(last_frame=len(PATTERN) - 1)
    first = res["start"] == 0  # begun before the recording: their start was not seen
    assert (res["left_censored"] == first).all()
    assert res[res.site == 0].sort_values("start")["left_censored"].tolist() == [True, False, False]


@pytest.mark.parametrize("occupancy", ["gaps", "hmm"])
def test_sites_that_drift_out_of_view_do_not_empty(occupancy):
    # a 100 x 160 px view moving right by 10 px a frame and back: the site at x=50 is less than
    # 3 px from its edge, out of view, in frames 5-10; the column there is never lost, only
    # unseen. The site at x=110 empties for real in frames 18-25.
    sm = SiteMap(SitesConfig(radius_A=0.8, hop_radius_A=4.0, occupancy=occupancy), sampling=0.1,
                 view_margin_px=3.0)
    image = np.zeros((100, 160), np.float32)
    shift = [0, 10, 20, 30, 40, 50, 60, 60, 60, 50, 40, 30, 20, 10, 0] + [0] * 15
    for f, dx in enumerate(shift):
        ref = SITES[[0, 1, 2] if not 18 <= f < 26 else [0, 1]]
        in_view = ref[:, 1] - dx >= 3.0
        sm.update(f, ref[in_view], image=image, offset=np.array([0.0, -float(dx)]))
    sm.flush()
    tab = sm.table().set_index("site")
    # only the real emptying and filling; without the view, site 0 emptied at 5 and filled at 10
    assert sm.flips_table()[["frame", "site", "kind"]].values.tolist() == [[18, 2, "off"], [26, 2, "on"]]
    assert tab.loc[0, "n_obs"] == 25 and tab.loc[0, "occupancy"] == 1.0  # in view in 25 of the 30 frames
    assert tab.loc[1, "n_obs"] == 30 and tab.loc[2, "occupancy"] == pytest.approx(22 / 30)
    res = sm.residence_table(last_frame=len(shift) - 1)
    a = res[res.site == 0].sort_values("start")
    # cut where it left the view (its end not seen) and begun anew, cut, where it came back
    assert a[["start", "frames", "occupied", "censored", "left_censored"]].values.tolist() == [
        [0, 5, True, True, True], [10, 20, True, True, True]]
    c = res[res.site == 2].sort_values("start")
    assert c[["start", "frames", "occupied", "censored", "left_censored"]].values.tolist() == [
        [0, 18, True, False, True], [18, 8, False, False, False], [26, 4, True, True, False]]


@pytest.mark.parametrize("occupancy", ["gaps", "hmm"])
def test_a_column_cut_by_the_edge_and_found_now_and_then_makes_no_flips(occupancy):
    # the view moves 1 px a frame over a column, in and out again: while less than its radius
    # (8 px at 0.8 Å and 0.1 Å/px) inside the detected area, part of it is cut off and it is
    # found in some frames only (as the ADF columns 3 to 8 px from the edge of a real drifting
    # movie were): no flips there; the column at x=80 inside empties for real in frames 20-27
    sm = SiteMap(SitesConfig(radius_A=0.8, occupancy=occupancy), sampling=0.1, view_margin_px=3.0)
    image = np.zeros((100, 160), np.float32)
    rng = np.random.default_rng(3)
    shift = list(range(40, 56)) + list(range(56, 40, -1))  # the site at x=50: 10 px in, to -5 and back
    for f, dx in enumerate(shift):
        ref = SITES[[0, 1, 2] if not 20 <= f < 28 else [0, 2]]
        d = ref[:, 1] - dx  # distance from the left edge
        found = (d >= 10) | ((d >= 4) & (rng.random(len(d)) < 0.5))
        sm.update(f, ref[found], image=image, offset=np.array([0.0, -float(dx)]))
    sm.flush()
    assert sm.flips_table()[["frame", "site", "kind"]].values.tolist() == [[20, 1, "off"], [28, 1, "on"]]


@pytest.mark.parametrize("occupancy", ["gaps", "hmm"])
def test_in_a_still_view_a_site_near_the_edge_still_flips(occupancy):
    # the view drifts a tenth of a pixel a frame (a still view): the column 5 px from the edge,
    # inside the margin a moving view would add, empties for real in frames 10-17 and is counted
    sm = SiteMap(SitesConfig(radius_A=0.8, occupancy=occupancy), sampling=0.1, view_margin_px=3.0)
    image = np.zeros((100, 160), np.float32)
    ref = np.array([[50.0, 45.0], [50.0, 80.0]])
    for f in range(30):
        dx = 40.0 + 0.1 * f  # the site at x=45: 5 px from the left edge, less as it goes
        sm.update(f, ref[[0, 1] if not 10 <= f < 18 else [1]], image=image, offset=np.array([0.0, -dx]))
    sm.flush()
    assert sm.flips_table()[["frame", "site", "kind"]].values.tolist() == [[10, 0, "off"], [18, 0, "on"]]


def test_site_born_late_was_empty_before():
    sm = SiteMap(SitesConfig(), sampling=0.1)
    for f in range(10):
        sm.update(f, SITES[:1] if f < 5 else SITES[:2])
    sm.flush()
    tab = sm.table()
    assert tab["occupancy"].tolist() == [1.0, 0.5]
    assert tab["n_events"].tolist() == [0, 1]


def test_two_columns_never_share_a_site():
    sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1)
    sm.update(0, SITES[:1])
    ids = sm.update(1, np.array([[50.0, 50.0], [50.0, 53.0]]))  # second within radius of site 0
    assert len(set(ids.tolist())) == 2


def test_maps():
    sm, _ = run(PATTERN)
    occ, ev = sm.maps((100, 160))
    assert occ.shape == (100, 160)
    assert occ[50, 50] == pytest.approx(4 / 6)
    assert np.isnan(occ[0, 0])
    assert ev[50, 110] == pytest.approx(2 / 5)


def test_render_clips_at_edges():
    out = render_site_values(np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([0.3, 0.7]), (10, 10), 2.0)
    assert out[0, 0] == pytest.approx(0.3) and out[9, 9] == pytest.approx(0.7)


BLINKY = np.array([[1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1]], bool).T  # one site over 12 frames


@pytest.mark.parametrize("fill_gaps, occupied", [
    (0, BLINKY[:, 0]),
    # the one-frame gap (frame 2) is filled; the 2- and 3-frame gaps are not
    (1, np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1], bool)),
    (2, np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1], bool)),
    (3, np.ones(12, bool)),
])
def test_fill_gaps(fill_gaps, occupied):
    sm, _ = run(BLINKY, fill_gaps=fill_gaps)
    tab = sm.table()
    assert tab["n_occupied"].iloc[0] == occupied.sum()
    assert tab["n_events"].iloc[0] == np.abs(np.diff(occupied.astype(int))).sum()
    res = sm.residence_table(last_frame=len(occupied) - 1)
    assert res["frames"].sum() == len(occupied)


@pytest.mark.parametrize("fill_gaps, occupied", [
    (0, BLINKY[:, 0]),  # no window to look ahead in: nothing dropped
    # the one-frame blip at frame 7 goes (frames 3-4 are two frames: kept; frame 11, the last,
    # has no later frame to judge it by: kept); the one-frame gap at frame 2 is still filled
    (1, np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1], bool)),
])
def test_drop_blips(fill_gaps, occupied):
    sm = SiteMap(SitesConfig(radius_A=0.8, hop_radius_A=4.0, fill_gaps=fill_gaps, drop_blips=True, occupancy="gaps"),
                 sampling=0.1)
    for f, occ in enumerate(BLINKY):
        sm.update(f, SITES[:1][occ])
    sm.flush()
    tab = sm.table()
    assert tab["n_occupied"].iloc[0] == occupied.sum()
    assert tab["n_events"].iloc[0] == np.abs(np.diff(occupied.astype(int))).sum()


def test_gap_at_the_end_is_not_filled():
    sm, _ = run(np.array([[1], [1], [0]], bool), fill_gaps=2)
    assert sm.table()["n_occupied"].iloc[0] == 2


# ------------------------------------------------------------------------------ "hmm" occupancy
def markov_states(n_frames, n_sites, k, rng):
    """Two-state chains (occupied/empty), switching with probability k per frame."""
    s = np.zeros((n_frames, n_sites), bool)
    s[0] = rng.random(n_sites) < 0.5
    for f in range(1, n_frames):
        s[f] = s[f - 1] ^ (rng.random(n_sites) < k)
    return s


def feed(sm, seen, grid):
    for f, det in enumerate(seen):
        sm.update(f, grid[det])
    sm.flush()


def grid_index(sm, grid):
    """For each row of ``sm.table()``, the grid point it sits on."""
    yx = sm.table()[["y", "x"]].to_numpy()
    return np.argmin(((yx[:, None] - grid[None]) ** 2).sum(-1), axis=1)


def site_states(sm, grid, n_frames):
    """[frames, grid points] decided occupancy, from the residence runs."""
    gi = grid_index(sm, grid)
    state = np.zeros((n_frames, len(grid)), bool)
    runs = sm.residence_table(last_frame=n_frames - 1)
    for s, start, frames, occ in runs[["site", "start", "frames", "occupied"]].itertuples(index=False):
        if occ:
            state[start:start + frames, gi[s]] = True
    return state


def noisy_run(occupancy, rng_seed=1, n_frames=400, n_sites=40, k=0.02):
    rng = np.random.default_rng(rng_seed)
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    truth = markov_states(n_frames, n_sites, k, rng)
    r = np.where(np.arange(n_sites) % 2 == 0, 0.5, 0.95)  # half the sites hard to see (thin columns)
    f = 0.05
    seen = np.where(truth, rng.random(truth.shape) < r, rng.random(truth.shape) < f)
    sm = SiteMap(SitesConfig(radius_A=0.8, occupancy=occupancy, fill_gaps=1), sampling=0.1)
    feed(sm, seen, grid)
    return sm, truth, grid, r, f, k


def test_hmm_occupancy_sees_through_an_imperfect_detector():
    """A detector that finds half of the occupied frames at some sites and makes 5 % false
    detections: the HMM's states and hop activity are close to the truth, where counting every
    frame as seen (even with one-frame gaps filled) makes several times too many events."""
    sm, truth, grid, r, f, k = noisy_run("hmm")
    state = site_states(sm, grid, len(truth))
    true_flips = int(np.abs(np.diff(truth.astype(int), axis=0)).sum())
    assert (state == truth).mean() > 0.9
    assert abs(len(sm.flips) - true_flips) < 0.35 * true_flips
    gi = grid_index(sm, grid)
    assert np.abs(sm.table()["occupancy"].to_numpy() - truth.mean(0)[gi]).mean() < 0.06
    # the estimates it decided with: detection rate per site, false detections, switching
    r_hat, f_hat, k_hat = sm.hmm_parameters()
    assert np.abs(r_hat - r[gi]).mean() < 0.1
    assert f_hat == pytest.approx(f, abs=0.02) and np.median(k_hat) == pytest.approx(k, rel=0.35)

    gaps, *_ = noisy_run("gaps")
    assert len(gaps.flips) > 3 * true_flips
    assert (site_states(gaps, grid, len(truth)) == truth).mean() < (state == truth).mean()


def test_hmm_with_a_perfect_detector_is_exact():
    """Every occupied frame seen and nothing else: the states are the detections (runs of two
    frames or more; a one-frame visit is below what the model believes, see the module doc)."""
    rng = np.random.default_rng(4)
    grid = np.array([[20.0, 20.0], [20.0, 50.0], [20.0, 80.0], [50.0, 20.0]])
    truth = markov_states(200, 4, 0.05, rng)
    for s in range(4):  # no run shorter than 2 frames
        d = np.flatnonzero(np.diff(truth[:, s].astype(int))) + 1
        for a, b in zip(d[:-1], d[1:]):
            if b - a < 2:
                truth[a:b, s] = truth[a - 1, s]
    sm = SiteMap(SitesConfig(), sampling=0.1)
    feed(sm, truth, grid)
    np.testing.assert_array_equal(site_states(sm, grid, 200)[:, np.any(truth, 0)], truth[:, np.any(truth, 0)])
    assert len(sm.flips) == int(np.abs(np.diff(truth[:, np.any(truth, 0)].astype(int), axis=0)).sum())


def test_hmm_decides_lag_frames_late_and_flush_settles_the_rest():
    sm = SiteMap(SitesConfig(lag=4), sampling=0.1)
    for f in range(10):
        sm.update(f, SITES[:2])
    assert sm.n_frames == 6  # frames 6..9 wait for later ones
    sm.flush()
    assert sm.n_frames == 10 and sm.table()["occupancy"].tolist() == [1.0, 1.0]


def test_hmm_one_frame_false_detection_is_no_event():
    """A column seen once at an otherwise empty place makes a site, but no events."""
    sm = SiteMap(SitesConfig(), sampling=0.1)
    for f in range(30):
        sm.update(f, SITES[:1] if f != 12 else SITES[:2])
    sm.flush()
    tab = sm.table()
    assert sm.n_sites == 2 and tab["n_events"].tolist() == [0, 0] and tab["occupancy"].tolist() == [1.0, 0.0]
    # a place never judged occupied: kept in the table, left out of the maps and counts
    assert occupied_sites(tab)["site"].tolist() == [0]
    occ, _ = sm.maps((100, 160))
    assert occ[50, 50] == 1.0 and np.isnan(occ[50, 80])
    from etem.tracker.diffusion import summary

    frames = pd.DataFrame({"frame": range(30), "n_columns": 1})
    assert summary(frames, tab, {}, 0.1)["sites"] == 1 and summary(frames, tab, {}, 0.1)["sites_never_occupied"] == 1


def graded_run(bins, rng_seed=3, n_frames=400, n_sites=40, k=0.02):
    """A detector whose false columns are frequent (15 % of empty frames) but faint
    (probabilities 0.5-0.7), while occupied sites are seen 70 % of the time at 0.6-0.95."""
    rng = np.random.default_rng(rng_seed)
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    truth = markov_states(n_frames, n_sites, k, rng)
    seen = np.where(truth, rng.random(truth.shape) < 0.7, rng.random(truth.shape) < 0.15)
    prob = np.where(truth, rng.uniform(0.6, 0.95, truth.shape), rng.uniform(0.5, 0.7, truth.shape))
    sm = SiteMap(SitesConfig(confidence_bins=bins), sampling=0.1)
    for f, det in enumerate(seen):
        sm.update(f, grid[det], prob=prob[f, det])
    sm.flush()
    return sm, truth, grid


def test_hmm_weighs_detections_by_their_probability():
    """Where false columns are faint, weighing each detection by its probability bin
    (``confidence_bins``) gets the states closer to the truth than counting every detection
    alike: far fewer empty frames taken as occupied. The learned histograms tell the two kinds
    of detection apart."""
    scores = {}
    for bins in (0, 10):
        sm, truth, grid = graded_run(bins)
        state = site_states(sm, grid, len(truth))
        scores[bins] = ((state == truth).mean(), (state & ~truth).sum())
    (acc0, false0), (acc10, false10) = scores[0], scores[10]
    assert acc10 > acc0 + 0.015 and acc10 > 0.96
    assert false10 < 0.5 * false0
    h = sm.prob_hist / sm.prob_hist.sum(axis=1, keepdims=True)
    assert h[0, 8:].sum() > 0.4 and h[1, 8:].sum() < 0.02  # occupied: up to 0.95; false: below 0.7


def test_without_bins_probabilities_change_nothing():
    """``confidence_bins = 0`` (the default): the states are those of a run without probabilities."""
    sm, truth, grid = graded_run(0)
    plain = SiteMap(SitesConfig(), sampling=0.1)
    rng = np.random.default_rng(3)
    markov_states(400, 40, 0.02, rng)  # the same draws as graded_run
    seen = np.where(truth, rng.random(truth.shape) < 0.7, rng.random(truth.shape) < 0.15)
    feed(plain, seen, grid)
    pd.testing.assert_frame_equal(sm.table(), plain.table())
    assert sm.flips == plain.flips


@pytest.mark.parametrize("kw, match", [({"occupancy": "kalman"}, "occupancy"), ({"lag": -1}, "lag"),
                                       ({"fill_gaps": 1.5}, "fill_gaps"), ({"radius_A": 0}, "radius_A"),
                                       ({"confidence_bins": -2}, "confidence_bins"),
                                       ({"min_separation_A": -1.0}, "min_separation_A"),
                                       ({"min_separation_A": True}, "min_separation_A"),
                                       ({"min_separation_A": "auto"}, "min_separation_A")])
def test_sites_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        SitesConfig(**kw)


def test_hmm_counts_averaged_detections_as_less_evidence():
    """Detections made from a running mean of N frames share their noise: a false column
    persists for several frames. Told so (``frames_per_detection = N``), the HMM's hop activity
    stays near the truth; taking each frame as independent evidence it finds far too many."""
    rng = np.random.default_rng(7)
    n_frames, n_sites, N = 400, 40, 4
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    truth = markov_states(n_frames, n_sites, 0.02, rng)
    signal = truth + rng.normal(0, 1.3, truth.shape)  # one frame: a weak column in strong noise
    c = np.cumsum(np.vstack([np.zeros((1, n_sites)), signal]), axis=0)
    lo = np.maximum(np.arange(n_frames) - N + 1, 0)
    mean = (c[1:] - c[lo]) / (np.arange(n_frames) - lo + 1)[:, None]
    seen = mean > 0.5
    true_flips = int(np.abs(np.diff(truth.astype(int), axis=0)).sum())
    flips = {}
    for fpd in (1, N):
        sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1, frames_per_detection=fpd)
        feed(sm, seen, grid)
        flips[fpd] = len(sm.flips)
    assert abs(flips[N] - true_flips) < 0.3 * true_flips
    assert flips[1] > 1.5 * true_flips
    with pytest.raises(ConfigError, match="frames_per_detection"):
        SiteMap(SitesConfig(), sampling=0.1, frames_per_detection=0)


# ------------------------------------------------------------------------------ class changes
def test_class_changes_are_found_through_a_confusing_detector():
    """Sites whose class changes now and then (a sulfur vacancy turning S2 into S), seen
    through a detector that gives the right class 95 % of the time: the changes are found,
    most of them at their frame and nearly all within 2 frames, where taking each detection's
    class at face value would make one in every ten detections a change."""
    rng = np.random.default_rng(3)
    n_frames, n_sites, K = 300, 40, 3
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    cls = np.zeros((n_frames, n_sites), int)
    cls[0] = rng.integers(0, K, n_sites)
    for f in range(1, n_frames):
        change = rng.random(n_sites) < 0.02
        cls[f] = np.where(change, (cls[f - 1] + rng.integers(1, K, n_sites)) % K, cls[f - 1])
    seen = np.where(rng.random(cls.shape) < 0.95, cls, (cls + rng.integers(1, K, cls.shape)) % K)
    sm = SiteMap(SitesConfig(), sampling=0.1)
    for f in range(n_frames):
        sm.update(f, grid, seen[f])
    sm.flush()
    found = sm.class_changes_table()
    assert list(found.columns) == ["frame", "site", "from_cls", "to_cls"]
    tf, ts = np.nonzero(np.diff(cls, axis=0))
    tf += 1
    # (site, new class) far apart on one axis, frames on the other: matches within 2 frames
    key = lambda site, to: (np.asarray(site) * K + np.asarray(to)) * 100.0  # noqa: E731
    from etem.tracker.evaluate import match_points

    def matched(tolerance):
        return match_points(np.stack([key(found["site"], found["to_cls"]), found["frame"]], 1).astype(float),
                            np.stack([key(ts, cls[tf, ts]), tf], 1).astype(float), tolerance)[0].size

    assert matched(2) > 0.85 * len(tf) and matched(2) > 0.85 * len(found)
    assert matched(0) > 0.7 * len(tf)  # dated to the frame: the most likely split of the latest detections
    assert abs(len(found) - len(tf)) < 0.15 * len(tf)
    naive = int((np.diff(seen, axis=0) != 0).sum())
    assert naive > 5 * len(tf)
    conf, k = sm.class_model()
    assert np.diag(conf).min() > 0.85 and k < 0.05



def test_a_first_detection_in_a_wrong_class_is_no_change_and_changes_follow_each_other():
    """A run's first frame classes a fifth of the sites wrongly (as intensity classes fitted to
    that frame alone do) and the next frames right: no class change is logged for them. A
    site that changes class and back is dated in order: the second change after the first,
    though its latest detections still hold the class it had before the first."""
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    true = np.tile(np.arange(len(grid)) % 2, (40, 1))
    true[10:14, 3] = 0  # site 3: 1 -> 0 at frame 10, back to 1 at frame 14
    seen = true.copy()
    seen[0, ::5] = 1 - seen[0, ::5]
    sm = SiteMap(SitesConfig(), sampling=0.1)
    for f in range(len(true)):
        sm.update(f, grid + rng.normal(0, 0.5, grid.shape), seen[f])
    sm.flush()
    assert sm.class_changes_table()[["frame", "site", "from_cls", "to_cls"]].values.tolist() == [[10, 3, 1, 0],
                                                                                               [14, 3, 0, 1]]

def test_one_class_models_make_no_class_changes():
    sm = SiteMap(SitesConfig(), sampling=0.1)
    for f in range(20):
        sm.update(f, SITES, np.zeros(3, int))
    sm.flush()
    assert len(sm.class_changes_table()) == 0 and sm.n_classes == 1


def test_track_ids_only_make_site_finding_faster():
    # With the columns' track ids a site map looks for each column on its track's last site
    # first: the same sites, whatever the ids (reused, new, or another column's).
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"), -1).reshape(-1, 2) * 25.0 + 20.0
    a, b = SiteMap(SitesConfig(), 0.2), SiteMap(SitesConfig(), 0.2)
    for f in range(60):
        keep = rng.random(len(grid)) > 0.1
        yx = np.vstack([grid[keep] + rng.normal(0, 0.8, (keep.sum(), 2)), rng.uniform(0, 320, (5, 2))])
        ids = np.concatenate([np.flatnonzero(keep), 1000 + f * 10 + np.arange(5)])
        mixed = rng.random(len(ids)) < 0.05
        ids[mixed] = rng.permutation(ids[mixed])
        cls = rng.integers(0, 2, len(yx))
        np.testing.assert_array_equal(a.update(f, yx, cls, particles=ids), b.update(f, yx, cls))
    pd.testing.assert_frame_equal(a.table(), b.table(), check_exact=True)


def test_a_column_found_twice_makes_no_second_site():
    """A detector that now and then finds one column twice (two peaks 0.3 Å apart, within the
    site radius): the second peak gets no site (-1) instead of a site of its own, which would
    share the first's detections and make each read as emptied and refilled."""
    rng = np.random.default_rng(0)
    sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1)
    doubled = []
    for f in range(60):
        yx = SITES + rng.normal(0, 0.3, SITES.shape)
        if f % 3 == 1:  # the middle column found twice, the extra peak first in the list
            yx = np.vstack([SITES[1] + [0.0, 3.0], yx])
        ids = sm.update(f, yx)
        if f % 3 == 1:
            doubled.append(ids)
    sm.flush()
    assert sm.n_sites == 3 and len(sm.flips_table()) == 0
    assert (sm.table()["occupancy"] == 1).all()
    # each doubled frame: one of the two peaks on the middle site, the other on none
    for ids in doubled:
        assert sorted(ids.tolist()) == [-1, 0, 1, 2]
    # two peaks in the first frame, before there is any site: one site
    sm = SiteMap(SitesConfig(radius_A=0.8), sampling=0.1)
    assert sm.update(0, np.vstack([SITES, SITES[:1] + 2.0])).tolist() == [0, 1, 2, -1]
    assert sm.n_sites == 3


def test_a_class_the_detector_often_misses_is_not_read_as_an_empty_site():
    """Sites always occupied whose column changes now and then to a class the detector finds
    in 60 % of the frames (S2 to a single S in HRTEM, as `mos2-unet` on the demo movie), and
    back: with the classes, the "hmm" occupancy expects each class's own detection rate and
    reads few of the misses as the site emptying; without them (one rate per site) it makes
    many times as many flips. (Where the class is found in under half of the frames, 45 % here,
    the model takes the misses for emptiness either way, with a false-detection rate of 0.3:
    the data fit that reading as well.)"""
    rng = np.random.default_rng(5)
    n_frames, n_sites = 300, 40
    grid = np.stack(np.meshgrid(np.arange(8) * 30.0 + 20, np.arange(5) * 30.0 + 20, indexing="ij"), -1).reshape(-1, 2)
    cls = np.zeros((n_frames, n_sites), int)
    for f in range(1, n_frames):
        change = rng.random(n_sites) < 0.03
        cls[f] = np.where(change, 1 - cls[f - 1], cls[f - 1])
    seen = rng.random(cls.shape) < np.where(cls == 0, 0.95, 0.6)
    said = np.where(rng.random(cls.shape) < 0.9, cls, 1 - cls)

    def flips(with_classes):
        sm = SiteMap(SitesConfig(), sampling=0.1)
        for f in range(n_frames):
            sm.update(f, grid[seen[f]], said[f][seen[f]] if with_classes else None)
        sm.flush()
        return sm

    classed, plain = flips(True), flips(False)
    assert classed.n_sites == plain.n_sites == n_sites
    assert len(plain.flips_table()) > 10 * max(len(classed.flips_table()), 1), (len(plain.flips), len(classed.flips))
    assert (classed.table()["occupancy"] > 0.95).all()
    # the rates it learned, pooled over the sites: near 0.95 and 0.6 (each class is said wrongly in
    # 10 % of the detections, which mixes the two a little)
    occ, det = classed._w_occ_cls[:n_sites, :2].sum(0), classed._w_det_cls[:n_sites, :2].sum(0)
    np.testing.assert_allclose(det / occ, [0.95, 0.6], atol=0.07)


def test_a_particle_drifting_out_of_the_view_makes_no_flips_there():
    # the toy movie's scene drifts 0.5 Å a frame, so that a third of the particle leaves the
    # 128² view in 30 frames: before the sites knew the view, those columns read as emptyings
    # (31 flips for 24 true, precision 0.71; 2026-12-07), now only the real ones are found
    from etem.simulate.toy import make_movie
    from etem.tracker import track
    from etem.tracker.evaluate import score_sites

    m = make_movie(n_frames=30, shape=(128, 128), particle_radius_A=9.0, seed=5, drift_A_per_frame=(-0.3, 0.4))
    res = track(m.frames, sampling=m.sampling)
    s = score_sites(occupied_sites(res.sites), res.flips, m.truth, radius_px=1 / m.sampling)
    assert s["site_recall"] == 1.0 and s["site_precision"] == 1.0
    assert s["event_precision"] > 0.95 and s["event_recall"] > 0.85, s  # (measured 1.00 and 0.92)
    tab = res.sites
    assert tab["n_obs"].min() < 30 and tab["n_obs"].max() == 30  # some sites were out of view for a while
