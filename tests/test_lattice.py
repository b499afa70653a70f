"""The sampling from the lattice's Fourier peaks."""
import os
from pathlib import Path

import numpy as np
import pytest

from etem.tracker.errors import ConfigError
from etem.tracker.lattice import MATERIALS, estimate_sampling, material, materials, reflections


def lattice_image(name, sampling, *, shape=(256, 256), angle=0.3, sigma_A=0.45, dose=200.0, seed=0):
    """Gaussian columns on the material's projected lattice (weights ~ Z^1.7), with shot noise."""
    rng = np.random.default_rng(seed)
    m = material(name)
    cell = np.asarray(m.cell_A)
    cols = np.asarray(m.columns)
    h, w = shape
    n = int(np.hypot(h, w) * sampling / np.linalg.norm(cell, axis=1).min()) + 2
    u, v = (a.ravel() for a in np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1)))
    pts = np.vstack([(u + cu)[:, None] * cell[0] + (v + cv)[:, None] * cell[1] for cu, cv, _ in cols])
    wts = np.concatenate([np.full(len(u), cw) for _, _, cw in cols]) / cols[:, 2].max()
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, -s], [s, c]]).T + np.array([w, h]) * sampling / 2 + rng.uniform(0, 2, 2)
    x, y = pts[:, 0] / sampling, pts[:, 1] / sampling
    keep = (x > -8) & (x < w + 8) & (y > -8) & (y < h + 8)
    yy, xx = np.indices(shape)
    img = np.full(shape, 0.1)
    sp = sigma_A / sampling
    r = int(4 * sp) + 1
    for xi, yi, wi in zip(x[keep], y[keep], wts[keep]):
        y0, x0 = int(yi), int(xi)
        sl = (slice(max(y0 - r, 0), max(min(y0 + r + 1, h), 0)), slice(max(x0 - r, 0), max(min(x0 + r + 1, w), 0)))
        img[sl] += wi * np.exp(-((yy[sl] - yi) ** 2 + (xx[sl] - xi) ** 2) / (2 * sp ** 2))
    counts = dose * sampling ** 2
    return rng.poisson(counts * img) / counts


@pytest.mark.parametrize("name", sorted(MATERIALS))
@pytest.mark.parametrize("sampling", [0.06, 0.1, 0.18])
@pytest.mark.parametrize("angle", [0.0, 0.45, 1.2])
def test_sampling_within_2_percent_at_any_rotation(name, sampling, angle):
    shape = (512, 512) if sampling < 0.08 else (256, 256)
    img = lattice_image(name, sampling, shape=shape, angle=angle, seed=int(angle * 10))
    est = estimate_sampling(img, name)
    assert est.sampling == pytest.approx(sampling, rel=0.02)
    assert est.material == name
    # the stated uncertainty is honest: the error is within a few standard errors (or 0.5 %)
    assert abs(est.sampling - sampling) < max(4 * est.uncertainty, 0.005 * sampling)


def test_dark_columns_give_the_same_sampling():
    img = lattice_image("graphene", 0.1, angle=0.7, seed=3)
    assert estimate_sampling(-img, "graphene").sampling == pytest.approx(estimate_sampling(img, "graphene").sampling,
                                                                         rel=1e-9)


def test_a_name_without_zone_axis_picks_the_zone_that_fits():
    for zone in ("au110", "au111"):
        est = estimate_sampling(lattice_image(zone, 0.1, angle=0.2), "au")
        assert est.material == zone and est.sampling == pytest.approx(0.1, rel=0.02)
    assert [m.name for m in materials("SrTiO3")] == ["srtio3001", "srtio3110"]
    assert material("Au-110").name == "au110"


def test_reflections_follow_from_the_projected_cell():
    # graphene: the {100} ring at a*sqrt(3)/2 is weaker than {110} at a/2 (two atoms per cell)
    fam = reflections("graphene")
    assert fam[0, 0] == pytest.approx(2.46 * np.sqrt(3) / 2, rel=1e-6)
    assert fam[1, 0] == pytest.approx(2.46 / 2, rel=1e-6)
    assert fam[0, 1] < fam[1, 1] == 1.0
    # fcc [110]: {111} 2.355 Å and {200} 2.04 Å come first; the (100)-type spacing is extinct
    au = reflections("au110")
    np.testing.assert_allclose(au[:2, 0], [4.08 / np.sqrt(3), 4.08 / 2], rtol=1e-6)
    assert not np.any(np.isclose(au[:, 0], 4.08))


@pytest.mark.parametrize("image, message", [
    (np.random.default_rng(0).normal(size=(128, 128)), "no lattice"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.zeros((4, 64, 64)), "2-D"),
])
def test_no_lattice_is_a_clear_error(image, message):
    with pytest.raises(ConfigError, match=message):
        estimate_sampling(image, "graphene")


def test_unknown_material_lists_the_known_ones():
    with pytest.raises(ConfigError, match="graphene"):
        estimate_sampling(np.zeros((64, 64)), "unobtainium")


def test_a_lattice_of_another_material_is_not_forced_to_fit():
    # a square SrTiO3 [001] lattice is no graphene: either no fit, or a clearly worse one
    img = lattice_image("srtio3001", 0.1, angle=0.3)
    right = estimate_sampling(img, "srtio3001")
    try:
        wrong = estimate_sampling(img, "graphene")
    except ConfigError:
        return
    assert wrong.score < right.score


def _realdata() -> Path:
    folder = Path(os.environ.get("ETEM_REALDATA") or Path(__file__).parents[2] / "shared" / "realdata")
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not present (set ETEM_REALDATA to use it)")
    return folder


@pytest.mark.parametrize("name", ["test_ADF_cropped.hdf5", "test_ABF_cropped.hdf5"])
def test_real_srtio3_image(name):
    from etem.tracker.files import open_recording

    img = next(iter(open_recording(_realdata() / name).iter_frames())).image.astype(float)
    est = estimate_sampling(img, "srtio3")
    # the crop is SrTiO3 seen along [110] (a rectangular a/sqrt2 x a cell); 0.0933 Å/px known
    assert est.zone == "[110]"
    assert est.sampling == pytest.approx(0.0933, rel=0.01)


# -- used by find, track and the command line --------------------------------------------------

def test_find_takes_the_sampling_from_the_lattice_where_the_data_give_none():
    from etem.tracker import find

    img = lattice_image("mos2", 0.11, angle=0.5)
    cols = find(img, material="mos2", classical=True)
    est = cols.attrs["sampling_estimate"]
    assert est["used"] and est["sampling"] == pytest.approx(0.11, rel=0.02)
    assert np.allclose(cols["x_A"], cols["x"] * est["sampling"])
    # with a sampling given, that one is used and the lattice's is only reported
    cols = find(img, sampling=0.2, material="mos2", classical=True)
    assert not cols.attrs["sampling_estimate"]["used"]
    assert np.allclose(cols["x_A"], cols["x"] * 0.2)
    # 'auto' uses the lattice's over the given one
    assert find(img, sampling="auto", material="mos2", classical=True).attrs["sampling_estimate"]["used"]
    with pytest.raises(ConfigError, match="--material"):
        find(img, sampling="auto", classical=True)


def test_track_estimates_once_and_records_it_in_the_run_file(tmp_path):
    from etem.tracker import track
    from etem.tracker.runfile import open_run

    stack = np.stack([lattice_image("graphene", 0.09, angle=0.2, seed=s) for s in range(3)])
    res = track(stack, material="graphene", classical=True, run_path=tmp_path / "run.h5")
    assert res.sampling == pytest.approx(0.09, rel=0.02)
    est = open_run(tmp_path / "run.h5").attrs["sampling_estimate"]
    assert est["material"] == "graphene" and est["sampling"] == pytest.approx(res.sampling)


def test_find_command_reports_the_lattice_sampling(tmp_path, capsys):
    from etem.tracker.cli import main

    np.save(tmp_path / "img.npy", lattice_image("au110", 0.08, angle=0.9).astype(np.float32))
    assert main(["find", str(tmp_path / "img.npy"), "--classical", "--sampling", "auto", "--material", "au"]) == 0
    out, err = capsys.readouterr()
    assert "au110 [110] lattice" in err
    assert out.splitlines()[0].startswith("file,frame,y,x")  # the table alone on standard output
    assert main(["find", str(tmp_path / "img.npy"), "--sampling", "auto"]) == 2
    assert "--material" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["find", str(tmp_path / "img.npy"), "--sampling", "fine"])


def test_a_focal_series_is_measured_on_its_image_that_shows_the_lattice(caplog):
    """The sampling of a focal series comes from the image whose spectrum shows the most of the
    lattice's peaks, not from its first image: an image that shows none (far from focus, or
    blank) neither fails the estimate nor, where the data give a sampling, warns of a mismatch."""
    import logging

    from etem.tracker.lattice import resolve_sampling

    lattice = lattice_image("graphene", 0.1)
    noise = np.random.default_rng(1).poisson(200.0, lattice.shape).astype(np.float32)
    series = np.stack([noise, lattice, noise])
    with pytest.raises(ConfigError):
        estimate_sampling(noise, "graphene")
    sampling, est = resolve_sampling(series, given=None, material="graphene")
    assert sampling == pytest.approx(0.1, rel=0.02) and est.n_peaks >= 6
    with caplog.at_level(logging.WARNING, logger="etem.lattice"):
        assert resolve_sampling(series, given=0.1, material="graphene")[0] == 0.1
        assert "lattice measures" not in caplog.text
        resolve_sampling(series, given=0.15, material="graphene")
    assert "lattice measures" in caplog.text


@pytest.mark.parametrize("name, wrong", [("test_ADF_cropped.hdf5", "mos2"), ("test_ADF_cropped.hdf5", "graphene"),
                                         ("test_ADF_cropped.hdf5", "au"), ("test_ABF_cropped.hdf5", "mos2"),
                                         ("example_Se_implanted_MoS2.dm3", "srtio3")])
def test_a_lattice_of_another_material_is_refused(name, wrong):
    """Any lattice fits a few of an image's weaker Fourier peaks at some pixel size: SrTiO3
    [110] (0.0933 Å/px) as mos2 gave 0.1143 ± 0.0005 Å/px from 8 peaks, as graphene 0.0885, as
    au 0.0970; MoS2 as srtio3 0.3413. The image's strongest peaks are none of those materials'
    reflections there: no estimate, and a warning where the data give the sampling."""
    from etem.tracker.files import open_recording
    from etem.tracker.lattice import resolve_sampling

    img = next(iter(open_recording(_realdata() / name).iter_frames())).image.astype(float)
    with pytest.raises(ConfigError, match="does not look like"):
        estimate_sampling(img, wrong)
    with pytest.raises(ConfigError, match="does not look like"):
        resolve_sampling(img, given=None, material=wrong)
    assert resolve_sampling(img, given=0.1, material=wrong) == (0.1, None)


def test_the_real_mos2_image_fits_mos2():
    from etem.tracker.files import open_recording

    img = next(iter(open_recording(_realdata() / "example_Se_implanted_MoS2.dm3").iter_frames())).image.astype(float)
    est = estimate_sampling(img, "mos2")
    assert est.sampling == pytest.approx(0.135, rel=0.02) and est.n_peaks >= 12
