"""The toy movie: reproducible, self-consistent truth, columns where the truth says, exact files."""
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from etem.simulate.toy import load_movie, make_movie, save_movie


@pytest.fixture(scope="module")
def movie():
    t0 = time.perf_counter()
    m = make_movie()
    print(f"make_movie() with defaults: {time.perf_counter() - t0:.3f} s")
    return m


def _assert_truth_equal(a, b):
    for name in ("sites", "positions", "hops", "exchanges"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    for name in ("occupancy", "drift", "rotation_deg"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_shapes_and_types(movie):
    tr = movie.truth
    assert movie.frames.shape == (60, 256, 256) and movie.frames.dtype == np.float32
    assert movie.sampling == 0.2
    assert (movie.frames >= 0).all() and np.array_equal(movie.frames, np.round(movie.frames))
    assert tr.occupancy.shape == (60, len(tr.sites)) and tr.occupancy.dtype == bool
    assert tr.drift.shape == (60, 2)
    assert list(tr.sites.columns[:4]) == ["site", "y", "x", "kind"]
    assert list(tr.positions.columns) == ["frame", "y", "x", "site", "cls"]
    assert list(tr.hops.columns) == ["frame", "from_site", "to_site"]
    assert set(tr.sites["kind"]) == {"core", "surface"}
    np.testing.assert_array_equal(tr.sites["site"], np.arange(len(tr.sites)))


def test_same_seed_same_movie_other_seed_differs():
    a = make_movie(n_frames=8, seed=5)
    b = make_movie(n_frames=8, seed=5)
    c = make_movie(n_frames=8, seed=6)
    np.testing.assert_array_equal(a.frames, b.frames)
    _assert_truth_equal(a.truth, b.truth)
    assert not np.array_equal(a.frames, c.frames)
    assert not a.truth.sites[["y", "x"]].equals(c.truth.sites[["y", "x"]])


def test_dose_changes_only_the_noise():
    a = make_movie(n_frames=10, seed=3, dose_per_frame=300.0)
    b = make_movie(n_frames=10, seed=3, dose_per_frame=30.0)
    _assert_truth_equal(a.truth, b.truth)
    assert b.frames.mean() < a.frames.mean() / 5


def test_positions_are_exactly_the_occupied_sites(movie):
    tr = movie.truth
    for f, g in tr.positions.groupby("frame"):
        assert sorted(g["site"]) == list(np.flatnonzero(tr.occupancy[f]))
    assert len(tr.positions) == tr.occupancy.sum()
    assert tr.occupancy[:, (tr.sites["kind"] == "core").to_numpy()].all()
    # no rotation: every position is its site moved by the frame's drift
    p = tr.positions
    site_yx = tr.sites[["y", "x"]].to_numpy()[p["site"]]
    np.testing.assert_allclose(p[["y", "x"]].to_numpy(), site_yx + tr.drift[p["frame"]], atol=1e-9)
    np.testing.assert_allclose(tr.drift[1] - tr.drift[0], np.array([0.02, 0.03]) / movie.sampling)


def test_flips_are_hops_and_exchanges(movie):
    tr = movie.truth
    occ = tr.occupancy
    assert len(tr.hops) > 10
    assert len(tr.flips()) == 2 * len(tr.hops) + len(tr.exchanges)
    for f, s, t in tr.hops.itertuples(index=False):
        assert occ[f - 1, s] and not occ[f, s] and occ[f, t] and not occ[f - 1, t]
    for f, s, kind in tr.exchanges.itertuples(index=False):
        assert occ[f, s] == (kind == "adsorb") and occ[f - 1, s] != occ[f, s]
    # only surface sites change
    core = (tr.sites["kind"] == "core").to_numpy()
    assert not tr.flips()["site"].isin(np.flatnonzero(core)).any()


def test_hops_only_between_neighbouring_sites(movie):
    tr = movie.truth
    yx = tr.sites[["y", "x"]].to_numpy()
    d_A = np.linalg.norm(yx[tr.hops["from_site"]] - yx[tr.hops["to_site"]], axis=1) * movie.sampling
    np.testing.assert_allclose(d_A, 2.88, rtol=1e-9)


def test_columns_never_closer_than_2_5_A(movie):
    yx = movie.truth.sites[["y", "x"]].to_numpy() * movie.sampling
    d, _ = cKDTree(yx).query(yx, k=2)
    assert d[:, 1].min() >= 2.5


def test_flip_methods_agree(movie):
    tr = movie.truth
    flips = tr.flips()
    assert set(flips["kind"]) <= {"on", "off"}
    counts = np.bincount(flips["site"], minlength=len(tr.sites))
    np.testing.assert_allclose(tr.site_event_rate(), counts / (tr.n_frames - 1))
    np.testing.assert_allclose(tr.site_occupancy(), tr.occupancy.mean(axis=0))
    for f, s, kind in flips.itertuples(index=False):
        assert tr.occupancy[f, s] == (kind == "on") and tr.occupancy[f - 1, s] != tr.occupancy[f, s]


def test_occupancy_spread_and_counts(movie):
    tr = movie.truth
    surface = (tr.sites["kind"] == "surface").to_numpy()
    occ = tr.site_occupancy()[surface]
    print(f"{(~surface).sum()} core, {surface.sum()} surface sites; "
          f"{tr.occupancy[:, surface].sum(axis=1).mean():.1f} adatoms; {len(tr.hops)} hops")
    assert 50 <= (~surface).sum() <= 150 and 40 <= surface.sum() <= 120
    assert 20 <= tr.occupancy[:, surface].sum(axis=1).mean() <= 60  # a few dozen mobile atoms
    assert np.mean((occ >= 0.1) & (occ <= 0.9)) >= 0.4
    assert np.mean(occ < 0.3) >= 0.1 and np.mean(occ > 0.7) >= 0.1


def _local_maxima(image, sigma_px, threshold):
    smooth = ndimage.gaussian_filter(image.astype(float), sigma_px)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=5)) & (smooth > threshold(smooth))
    return np.argwhere(peaks)


@pytest.mark.parametrize("contrast", ["bright", "dark"])
def test_a_peak_at_every_true_column(contrast):
    m = make_movie(n_frames=3, dose_per_frame=20000.0, contrast=contrast, rotation_deg_per_frame=0.01, seed=2)
    for f in range(3):
        image = m.frames[f] if contrast == "bright" else -m.frames[f]
        peaks = _local_maxima(image, 1.5, lambda s: s.mean() + 2 * s.std())
        true = m.truth.positions.query("frame == @f")[["y", "x"]].to_numpy()
        d, _ = cKDTree(peaks).query(true)
        assert d.max() <= 1.0, d.max()


def test_dark_contrast_has_dark_columns():
    bright = make_movie(n_frames=2, seed=4)
    dark = make_movie(n_frames=2, seed=4, contrast="dark")
    p = dark.truth.positions.query("frame == 0")
    iy, ix = np.round(p["y"]).astype(int), np.round(p["x"]).astype(int)
    assert dark.frames[0][iy, ix].mean() < 0.6 * np.median(dark.frames[0])
    assert bright.frames[0][iy, ix].mean() > 3 * np.median(bright.frames[0])


def test_rotation_moves_columns_rigidly():
    still = make_movie(n_frames=10, seed=1)
    turning = make_movie(n_frames=10, seed=1, rotation_deg_per_frame=0.03)
    np.testing.assert_allclose(turning.truth.rotation_deg[-1], 0.27)
    a = still.truth.positions.query("frame == 9")[["y", "x"]].to_numpy()
    b = turning.truth.positions.query("frame == 9")[["y", "x"]].to_numpy()
    assert 0.05 < np.abs(a - b).max() < 1.0  # turned a fraction of a pixel at the particle's rim
    dist = lambda yx: np.linalg.norm(yx[:, None] - yx[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(a), dist(b), atol=1e-9)


def test_part_of_the_surface():
    m = make_movie(n_frames=5, n_adatom_sites=12, seed=0)
    assert (m.truth.sites["kind"] == "surface").sum() == 12
    with pytest.raises(ValueError, match="n_adatom_sites must be between 1 and"):
        make_movie(n_frames=2, n_adatom_sites=10_000)


@pytest.mark.parametrize("bad", [{"contrast": "grey"}, {"n_frames": 0}, {"sampling": 0.0}, {"coverage": 1.5}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        make_movie(**bad)


def test_save_load_round_trip(movie, tmp_path):
    path = tmp_path / "movie.h5"
    save_movie(movie, path)
    back = load_movie(path)
    assert back.frames.dtype == np.float32
    np.testing.assert_array_equal(back.frames, movie.frames)
    assert back.sampling == movie.sampling
    assert back.params == movie.params
    _assert_truth_equal(back.truth, movie.truth)
    # readable as a plain HDF5 stack
    with h5py.File(path, "r") as f:
        ds = f["frames"]
        assert ds.shape == movie.frames.shape and ds.chunks == (1, 256, 256)
        assert ds.attrs["sampling"] == pytest.approx(0.2) and ds.attrs["fps"] == 25.0
        np.testing.assert_array_equal(ds[7], movie.frames[7])


def test_frames_are_taken_at_the_frame_rate():
    m = make_movie(n_frames=5, shape=(64, 64), particle_radius_A=4.0, fps=200.0, seed=1)
    np.testing.assert_allclose(m.times, np.arange(5) / 200.0)
    with pytest.raises(ValueError, match="fps"):
        make_movie(n_frames=2, fps=0.0)


def test_round_trip_without_events(tmp_path):
    m = make_movie(n_frames=1, seed=9)
    assert len(m.truth.hops) == 0 and len(m.truth.exchanges) == 0
    save_movie(m, tmp_path / "one.h5")
    _assert_truth_equal(load_movie(tmp_path / "one.h5").truth, m.truth)


def test_load_rejects_other_files(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["frames"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="not a toy movie"):
        load_movie(tmp_path / "plain.h5")
