"""Diffusion statistics against known truth, and the export that writes them."""
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import diffusion as D
from etem.tracker import track
from etem.tracker.cli import main
from etem.tracker.evaluate import score_sites
from etem.tracker.pipeline import PipelineConfig
from etem.tracker.sites import SitesConfig


@pytest.fixture(scope="module")
def tracked():
    movie = make_movie(n_frames=200, seed=3, hop_rate=0.1)
    return movie, track(movie.frames, sampling=movie.sampling, classical=True)


@pytest.fixture(scope="module")
def tracked_gaps(tracked):
    movie, _ = tracked
    cfg = PipelineConfig(sites=SitesConfig(occupancy="gaps"))
    return movie, track(movie.frames, sampling=movie.sampling, classical=True, config=cfg)


# The toy movie's detector misses nothing and finds nothing false, and its surface atoms hop
# fast (0.1 per frame): many visits last one frame. Counting every frame as seen ("gaps") is
# then exact; the HMM occupancy (the default) takes a one-frame visit for a false detection
# when the site's hop rate is low compared with the false-detection rate, so it counts fewer.
@pytest.mark.parametrize("which, hop_tol", [("gaps", 0.10), ("hmm", 0.15)])
def test_hop_and_flip_rates_and_occupancy_match_the_truth(which, hop_tol, request):
    movie, res = request.getfixturevalue("tracked_gaps" if which == "gaps" else "tracked")
    t = movie.truth
    rates = D.event_rates(res.flips, res.hops, len(res.frames))
    assert rates["flips_per_frame"] == pytest.approx(len(t.flips()) / (t.n_frames - 1), rel=0.10)
    assert rates["hops_per_frame"] == pytest.approx(len(t.hops) / (t.n_frames - 1), rel=hop_tol)
    sites = score_sites(res.sites, res.flips, t, radius_px=1 / movie.sampling)
    assert sites["occupancy_mae"] < 0.01
    # surface sites: mean occupancy within 10 % of the truth's
    active = res.sites[(res.sites["occupancy"] > 0) & (res.sites["occupancy"] < 1)]
    true_surface = t.site_occupancy()[(t.sites["kind"] == "surface").to_numpy()]
    true_active = true_surface[(true_surface > 0) & (true_surface < 1)]
    assert active["occupancy"].mean() == pytest.approx(true_active.mean(), rel=0.10)


def test_site_kinetics_are_censored_maximum_likelihood_rates():
    sites = pd.DataFrame({"site": [0, 1], "y": [0.0, 5.0], "x": [0.0, 0.0], "occupancy": [0.5, 1.0],
                          "event_rate": [0.1, 0.0]})
    residence = pd.DataFrame({
        "site": [0, 0, 0, 0, 1], "start": [0, 4, 10, 14, 0], "frames": [4, 6, 4, 6, 20],
        "occupied": [True, False, True, False, True], "censored": [False, False, False, True, True]})
    k = D.site_kinetics(sites, residence).set_index("site")
    assert k.loc[0, "k_off"] == pytest.approx(2 / 8)       # two completed occupied runs in 8 frames
    assert k.loc[0, "k_on"] == pytest.approx(1 / 12)       # one completed empty run in 12 frames
    assert k.loc[0, "tau_occupied"] == pytest.approx(4.0)
    assert k.loc[1, "k_off"] == 0 and np.isinf(k.loc[1, "tau_occupied"])  # never left: censored only
    assert k.loc[1, "k_off_err"] == pytest.approx(1 / 20)  # (not 0 ± 0: below about 3 / 20)
    assert k.loc[0, "k_off_err"] == pytest.approx(np.sqrt(2) / 8)
    # the histogram's completed runs were seen to begin and end: the run from frame 0 began
    # before the recording (a table without left_censored: the runs from the first frame)
    hist = D.residence_histogram(residence).set_index(["state", "frames"])
    assert hist.loc[("occupied", 4), "completed"] == 1 and hist.loc[("occupied", 4), "censored"] == 1
    cut = residence.assign(left_censored=[True, False, False, False, True])
    assert D.residence_histogram(cut).equals(D.residence_histogram(residence))
    # (and a run cut at its start by the site's coming into view, not at the first frame)
    cut.loc[2, "left_censored"] = True
    hist = D.residence_histogram(cut).set_index(["state", "frames"])
    assert hist.loc[("occupied", 4), "completed"] == 0 and hist.loc[("occupied", 4), "censored"] == 2
    pd.testing.assert_frame_equal(D.site_kinetics(sites, cut), D.site_kinetics(sites, residence))  # (rates: the same)


def test_msd_gives_the_diffusion_coefficient_of_random_walks():
    rng = np.random.default_rng(0)
    d_true = 0.05  # Å² per frame; steps have variance 2 D per axis
    rows = []
    for p in range(40):
        steps = rng.normal(0, np.sqrt(2 * d_true), (100, 2))
        yx = np.cumsum(steps, axis=0) / 0.2  # px at 0.2 Å/px
        rows.append(pd.DataFrame({"frame": np.arange(100), "particle": p, "y_ref": yx[:, 0], "x_ref": yx[:, 1]}))
    msd, tracks = D.track_msd(pd.concat(rows), 0.2, max_lag=8)
    assert len(tracks) == 40
    assert tracks["D"].mean() == pytest.approx(d_true, rel=0.15)
    assert np.median(np.abs(tracks["D"] - d_true) / tracks["D_err"]) < 2.0  # honest error bars
    assert set(msd.columns) == {"lag", "lag_s", "particle", "msd"}
    # the MSD is trackpy's
    import trackpy as tp

    one = rows[0].rename(columns={"y_ref": "y", "x_ref": "x"})
    ref = tp.imsd(one, mpp=0.2, fps=1.0, max_lagtime=8)[0].to_numpy()
    np.testing.assert_allclose(msd[msd["particle"] == 0]["msd"].to_numpy(), ref, rtol=1e-9)



def test_columns_that_stay_put_are_told_from_mobile_ones():
    """Twenty random walkers among sixty columns that only jitter about their sites (no sites
    table: the noise is each fit's intercept): nearly every walker and none of the others move
    above their localisation noise; the walkers get their D, the others no D (their fits'
    slopes scatter about 0, some below it) but a bound, and the report says so."""
    from etem.tracker.report import figure_lines, motion_summary

    rng = np.random.default_rng(1)
    d_true, rows = 0.05, []
    for p in range(80):
        if p < 20:
            yx = np.cumsum(rng.normal(0, np.sqrt(2 * d_true), (100, 2)), axis=0)
        else:
            yx = rng.normal(0, 0.1, (100, 2)) + rng.uniform(0, 50, 2)
        rows.append(pd.DataFrame({"frame": np.arange(100), "particle": p, "y_ref": yx[:, 0] / 0.2,
                                  "x_ref": yx[:, 1] / 0.2}))
    _, tracks = D.track_msd(pd.concat(rows), 0.2, max_lag=8)
    walker = tracks["particle"] < 20
    assert tracks["mobile"][walker].mean() >= 0.9 and not tracks["mobile"][~walker].any()
    assert (tracks["D_fit"][~walker] < 0).any() and tracks["D"][~walker].isna().all()
    assert (tracks["sigma_from"] == "intercept").all()
    # the jitter's sigma, 0.1 Å, from the intercept; a bound above the slope each fit found
    assert tracks["sigma_A"][~walker].median() == pytest.approx(0.1, rel=0.15)
    assert (tracks["D_upper"][~walker] > tracks["D_fit"][~walker]).all()
    summ = {"frames": 100, **motion_summary(tracks, 0.2, None)}
    assert summ["median_D_mobile"] == pytest.approx(d_true, rel=0.3)
    assert summ["tracks_mobile"] == int(tracks["mobile"].sum()) and summ["tracks_still"] >= 60
    text = "\n".join(figure_lines(summ))
    assert f"tracks fitted (MSD = 4 D t + c): 80\n  {summ['tracks_mobile']} move above localisation noise" in text
    assert "no motion above localisation\n    noise (σ = 0.1 Å)" in text and "D <" in text


def test_export_writes_tables_statistics_report_and_movie(tmp_path, capsys):
    movie = make_movie(n_frames=20, shape=(128, 128), particle_radius_A=8.0, seed=5)
    save_movie(movie, tmp_path / "movie.h5")
    run = tmp_path / "run.h5"
    assert main(["replay", str(tmp_path / "movie.h5"), "-o", str(run), "--quiet"]) == 0
    out = tmp_path / "out"
    assert main(["export", str(run), "-o", str(out), "--movie", str(out / "movie.gif"),
                 "--source", str(tmp_path / "movie.h5")]) == 0
    for name in ("site_kinetics.csv", "residence_histogram.parquet", "tracks.csv", "msd.csv", "class_counts.csv",
                 "summary.json", "report.png", "report.pdf", "statistics.h5"):
        assert (out / name).stat().st_size > 0, name
    with h5py.File(out / "statistics.h5") as f:
        assert {"hops", "site_kinetics", "tracks"} <= set(f)
    counts = pd.read_csv(out / "class_counts.csv")  # (the classical locator's one class: "column")
    assert list(counts.columns) == ["frame", "n_column"] and len(counts) == 20
    with Image.open(out / "movie.gif") as gif:
        assert gif.n_frames == 20
    # without --source, the recording the run names, where it is still there
    assert main(["export", str(run), "-o", str(out), "--formats", "csv", "--movie", str(out / "m.gif")]) == 0
    with Image.open(out / "m.gif") as gif:
        assert gif.n_frames == 20
    (tmp_path / "movie.h5").rename(tmp_path / "moved.h5")
    capsys.readouterr()
    assert main(["export", str(run), "--movie", str(out / "m2.gif")]) == 2  # ... else it needs --source
    err = capsys.readouterr().err
    assert "--movie needs --source" in err and "movie.h5, which is not there" in err


def test_class_counts_are_named_by_the_classes():
    from etem.tracker.diffusion import class_counts

    cols = pd.DataFrame({"frame": [0, 0, 0, 1, 1], "cls": [0, 1, 3, 1, 1]})
    c = class_counts(cols, ["Mo", "S2", "S"])
    assert list(c.columns) == ["frame", "n_Mo", "n_S2", "n_class3"]
    assert c["n_S2"].tolist() == [1, 2] and c["n_class3"].tolist() == [1, 0]
    assert list(class_counts(cols, ["a b", "a b"]).columns) == ["frame", "n_class0", "n_class1", "n_class3"]
    assert list(class_counts(cols[:0], ["Mo"]).columns) == ["frame"]


def test_hop_jumps_are_the_vectors_between_the_sites():
    """Each hop between two known sites is a jump from its first site to its second, in Å
    where the sampling is known; one-sided rows are left out; the summary has the median."""
    sites = pd.DataFrame({"site": [0, 1, 2], "y": [10.0, 10.0, 40.0], "x": [10.0, 40.0, 10.0],
                          "occupancy": [0.5, 0.5, 0.5]})
    hops = pd.DataFrame({"frame": [3, 5, 7, 9], "from_site": [0, 1, -1, 0], "to_site": [1, 2, 2, 2]})
    j = D.hop_jumps(hops, sites, sampling=0.1)
    assert j["frame"].tolist() == [3, 5, 9]
    np.testing.assert_allclose(j[["dy", "dx"]].to_numpy(), [[0.0, 3.0], [3.0, -3.0], [3.0, 0.0]])
    np.testing.assert_allclose(j["length"], [3.0, np.hypot(3, 3), 3.0])
    np.testing.assert_allclose(j["angle_deg"], [0.0, 135.0, 90.0])
    assert D.hop_jumps(hops, sites, sampling=None)["length"].iloc[0] == pytest.approx(30.0)  # (pixels)
    assert len(D.hop_jumps(hops.iloc[:0], sites, 0.1)) == 0
    frames = pd.DataFrame({"frame": np.arange(10), "n_columns": 3})
    s = D.summary(frames, sites, {"hops": hops, "flips": pd.DataFrame(columns=["frame", "site", "kind"])}, 0.1)
    assert s["hop_length_median"] == pytest.approx(3.0) and s["hop_length_units"] == "Å"


def test_columns_that_stay_put_get_no_d_but_a_bound(tmp_path):
    """summary.json said "median_D": -5.08e-06 Å²/frame on a drifting real movie whose columns
    stay put, and on the MoS2 ADF demo a "resolved" median D of 6e-4 Å²/s, both the MSDs'
    noise: columns whose MSD does not rise above their localisation noise (measured from
    their scatter about their sites) get no D, and the report says "no motion above
    localisation noise", with the noise and a bound."""
    from etem.tracker.report import figure_lines, run_statistics
    from etem.tracker.runfile import RunWriter, open_run

    rng = np.random.default_rng(0)
    n_frames, n, sigma_px = 20, 40, 0.05
    with RunWriter(tmp_path / "run.h5", attrs={}, counter_names=["received"]) as w:
        w.begin((64, 64), 0.2)
        home = rng.uniform(5, 50, (n, 2))
        for f in range(n_frames):
            yx = home + rng.normal(0, sigma_px, (n, 2))
            w.append("frames", {"frame": f, "seq": f, "n_columns": n})
            w.append("columns", {"frame": f, "y": yx[:, 0], "x": yx[:, 1], "y_ref": yx[:, 0], "x_ref": yx[:, 1],
                                 "particle": np.arange(n), "site": np.arange(n), "cls": 0})
        w.replace("sites", pd.DataFrame({"site": np.arange(n), "y": home[:, 0], "x": home[:, 1],
                                               "n_obs": n_frames, "n_occupied": n_frames, "occupancy": 1.0}))
    with open_run(tmp_path / "run.h5") as run:
        tables, summ = run_statistics(run)
    tracks = tables["tracks"]
    assert len(tracks) == n and not tracks["mobile"].any() and tracks["D"].isna().all()
    assert (tracks["sigma_from"] == "site").all()
    assert summ["tracks_mobile"] == 0 and summ["median_D_mobile"] is None and "median_D" not in summ
    assert summ["localisation_sigma"] == pytest.approx(sigma_px * 0.2, rel=0.15) and summ["length_units"] == "Å"
    assert 0 < summ["D_upper_still"] < 1e-3
    text = "\n".join(figure_lines(summ))
    assert f"all: no motion above localisation\n    noise (σ = {summ['localisation_sigma']:.2g} Å)" in text
    assert "D of" not in text and "D <" in text

    walkers = np.abs(rng.normal(0.05, 0.01, 30))
    resolved = D.median_d(walkers)
    assert resolved["median_D_resolved"] and resolved["median_D"] == pytest.approx(np.median(walkers))
    assert 0 < resolved["median_D_err"] < 0.01
