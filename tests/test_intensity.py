"""Column intensities, honeycomb sublattices and intensity groups: on exact images, on a
simulated annular dark-field MoS2 movie with sulfur vacancies (S against S2 columns), through
the pipeline into run files, and on the command line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import cKDTree

from etem.simulate.insitu_mos2 import mos2_movie
from etem.simulate.toy import save_movie
from etem.tracker import track
from etem.tracker.api import find
from etem.tracker.cli import main
from etem.tracker.intensity import (
    column_intensity, group_classes, group_columns, honeycomb_sublattices, intensity_groups, net_intensity,
)
from etem.tracker.runfile import open_run


def _disk_mean(image, y, x, r):
    """The mean over a disk of radius r whose rim is a pixel wide: a pixel's weight falls from 1
    to 0 as its centre goes from r - 0.5 to r + 0.5 from the column; the nearest pixel counts
    in full."""
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    w = np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0, 1)
    ny, nx = round(y), round(x)
    if 0 <= ny < image.shape[0] and 0 <= nx < image.shape[1]:
        w[ny, nx] = 1.0
    return (image * w).sum() / w.sum() if w.sum() else np.nan


def test_column_intensity_is_the_frames_mean_over_a_disk():
    rng = np.random.default_rng(0)
    images = rng.random((2, 40, 50)).astype(np.float32)
    tables = [pd.DataFrame({"y": [10.3, 0.4, 20.0], "x": [12.7, 25.2, 49.6]}),  # (the last two at edges)
              pd.DataFrame({"y": [30.5, -9.0], "x": [5.5, 5.0]})]                # (the last off the frame)
    column_intensity(tables, torch.from_numpy(images), radius_px=2.55)
    for image, t in zip(images, tables):
        want = [_disk_mean(image, y, x, 2.55) for y, x in zip(t["y"], t["x"])]
        np.testing.assert_allclose(t["intensity"], want, rtol=1e-5)
    assert np.isnan(tables[1]["intensity"].iloc[1]) and np.isfinite(tables[0]["intensity"]).all()


def test_a_columns_intensity_follows_its_position_smoothly():
    """A column found a tenth of a pixel off (a network's peak moves so as the frame's crop
    moves) gives about the same mean: with pixels counted in or out as a whole the mean of a
    Gaussian column jumped by 2 % where a pixel crossed the rim."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    image = torch.from_numpy(np.exp(-((yy - 16.0) ** 2 + (xx - 16.2) ** 2) / (2 * 2.5 ** 2)))[None]
    shifts = np.linspace(-0.2, 0.2, 41)
    t = pd.DataFrame({"y": 16.0 + 0 * shifts, "x": 16.2 + shifts})
    column_intensity([t], image, radius_px=3.9)
    steps = np.abs(np.diff(t["intensity"].to_numpy()))
    assert steps.max() < 0.002 * t["intensity"].mean()  # (a hundredth of a pixel apart)


def _honeycomb(n: int = 14, a: float = 20.0, angle: float = 0.4, jitter: float = 0.3, seed: int = 0):
    """Points of a honeycomb (bond a / sqrt 3 px) with the sublattice each is on."""
    rng = np.random.default_rng(seed)
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    i, j = np.meshgrid(np.arange(n), np.arange(n))
    base = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = np.concatenate([base, base + (a1 + a2) / 3])
    sub = np.repeat([0, 1], len(base))
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, -s], [s, c]]).T + rng.normal(0, jitter, pts.shape)
    return pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}), sub


def test_a_honeycombs_two_sublattices_are_told_apart_the_brighter_first():
    table, truth = _honeycomb()
    table["intensity"] = np.where(truth == 1, 5.0, 2.0)  # sublattice 1 of the construction brighter
    sub = honeycomb_sublattices(table)
    decided = sub >= 0
    assert decided.mean() > 0.9  # all but a few at the edge, with 2 neighbours that disagree
    np.testing.assert_array_equal(sub[decided], 1 - truth[decided])  # the brighter is sublattice 0


@pytest.mark.parametrize("turn_deg", [60.0, 50.0], ids=["mirror-twin", "rotated-grain"])
def test_grains_of_other_orientations_have_their_metal_on_sublattice_0(turn_deg):
    """Two grains side by side, the right one turned: by 60° (a mirror twin, where the metal
    sits where the left grain's chalcogen would; psi_3 changes sign) or by 50°. The metal
    (brighter) columns are sublattice 0 in both, judged about each column."""
    left, sub_l = _honeycomb(n=24, angle=0.4, seed=1)
    right, sub_r = _honeycomb(n=24, angle=0.4 + np.deg2rad(turn_deg), seed=2)
    left, right = left - left.mean(), right - right.mean()  # both about the origin, where they meet
    left, sub_l = left[left["x"] < 0].reset_index(drop=True), sub_l[left["x"].to_numpy() < 0]
    right, sub_r = right[right["x"] > 3].reset_index(drop=True), sub_r[right["x"].to_numpy() > 3]
    table = pd.concat([left, right], ignore_index=True)
    metal = np.concatenate([sub_l, sub_r]) == 0
    table["intensity"] = np.where(metal, 5.0, 2.0) + np.random.default_rng(0).normal(0, 0.3, len(table))
    sub = honeycomb_sublattices(table)
    decided = sub >= 0
    assert decided.mean() > 0.9
    assert ((sub == 0) == metal)[decided].mean() > 0.99
    # one direction for the whole frame (the table without intensities) cannot do it
    plain = honeycomb_sublattices(table.drop(columns="intensity"))
    consistent = ((plain == 0) == metal)[plain >= 0].mean()  # 0 or 1 where one label held every metal
    assert 0.2 < consistent < 0.8 or (plain >= 0).mean() < 0.75, (consistent, (plain >= 0).mean())


def test_a_square_lattice_is_no_honeycomb():
    i, j = np.meshgrid(np.arange(20), np.arange(20))
    table = pd.DataFrame({"y": i.ravel() * 10.0, "x": j.ravel() * 10.0})
    assert (honeycomb_sublattices(table) >= 0).mean() < 0.2
    table["intensity"] = 1.0
    out, summary = group_columns(table.assign(frame=0))
    assert (out["sublattice"] == 0).all() and [s["columns"] for s in summary] == [400]


def test_intensity_groups_are_as_many_as_the_data_show():
    rng = np.random.default_rng(1)
    two = np.concatenate([rng.normal(10, 1, 300), rng.normal(16, 1, 60)])
    g, info = intensity_groups(two)
    assert info["counts"] == [int((g == 0).sum()), int((g == 1).sum())]
    assert (g[:300] == 0).mean() > 0.98 and (g[300:] == 1).mean() > 0.95
    np.testing.assert_allclose(info["means"], [10, 16], atol=0.3)
    one, info = intensity_groups(rng.normal(10, 1, 400))
    assert len(info["means"]) == 1 and (one == 0).all()
    three, info = intensity_groups(rng.normal(10, 1, 400), min_groups=3, max_groups=3)  # as asked
    assert len(info["means"]) == 3
    # a narrow group in a wide one of the same mean is one long-tailed group, not two kinds
    r2 = np.random.default_rng(2)
    tailed = np.concatenate([r2.normal(10, 1, 900), r2.normal(10.3, 3, 200)])
    assert len(intensity_groups(tailed)[1]["means"]) == 1
    assert len(intensity_groups(tailed, resolved_only=False)[1]["means"]) > 1
    nan = intensity_groups(np.array([1.0, np.nan, 1.1, 0.9]))[0]
    assert nan[1] == -1 and (nan[[0, 2, 3]] >= 0).all()



def test_groups_about_one_sd_apart_are_one():
    """A sublattice whose intensity rises across the field (scan drift) fits two overlapping
    Gaussians better than one: the real MoS2 image's Mo columns, 1.165e5 ± 9e3 and 1.267e5 ±
    1.3e4 (their means 1.1 of the narrower SD apart, 0.9 of the root-mean-square SD). Such
    groups are one; two groups that show two peaks stay two."""
    rng = np.random.default_rng(2)
    drifting = np.concatenate([rng.normal(1.165e5, 9e3, 1400), rng.normal(1.267e5, 1.3e4, 600)])
    assert len(intensity_groups(drifting, resolved_only=False)[1]["means"]) > 1  # (the fit prefers two)
    assert len(intensity_groups(drifting)[1]["means"]) == 1
    two = np.concatenate([rng.normal(10, 1, 500), rng.normal(13, 1, 500)])  # D = 3
    assert len(intensity_groups(two)[1]["means"]) == 2


def test_real_se_implanted_mos2_metal_is_one_group():
    from test_files import realdata

    table = find(realdata() / "example_Se_implanted_MoS2.dm3", material="mos2", sampling="auto")
    _, summary = group_columns(table)
    mo = next(x for x in summary if x["sublattice"] == 0)
    assert len(mo["counts"]) == 1, mo  # (was 1421, 621 and 48 by the scan drift)


def test_a_column_far_below_every_group_is_faint():
    """A square lattice of one kind of column with two places far fainter than any column (a
    false column in a hole, an empty site): they are faint, in no group, and the group is
    fitted without them (before, they were in it)."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:12, 0:12]
    table = pd.DataFrame({"y": 10.0 * yy.ravel(), "x": 10.0 * xx.ravel()})
    table["intensity"] = rng.normal(100.0, 5.0, len(table))
    table["background"] = 20.0
    table.loc[[30, 90], "intensity"] = [30.0, 25.0]  # (12 % and 6 % of the columns' 80 over the floor)
    out, summary = group_columns(table)
    assert out["faint"].tolist() == [i in (30, 90) for i in range(len(table))]
    assert (out.loc[out["faint"], "group"] == -1).all() and (out.loc[~out["faint"], "group"] == 0).all()
    assert summary[0]["faint"] == 2 and summary[0]["counts"] == [len(table) - 2]
    assert summary[0]["means"][0] == pytest.approx(80.0, abs=1.5)
    cls, names = group_classes(out)
    assert names == ["I", "faint"] and (cls[out["faint"].to_numpy()] == 1).all()


def test_real_mos2_false_column_in_the_hole_is_faint():
    from test_files import realdata

    table = find(realdata() / "example_Se_implanted_MoS2.dm3")
    out, _ = group_columns(table)
    faint = out[out["faint"]]
    assert 1 <= len(faint) <= 5  # (3: the column in the hole, 0.56, at 12 % of the S2 median)
    assert ((faint["y"] - 651.8).abs().lt(2) & (faint["x"] - 548.9).abs().lt(2)).any()


def test_a_brighter_column_is_never_in_a_fainter_group():
    """A wide faint group and a narrow bright one: the columns brighter than every bright one
    stay in the bright group, and those fainter than every faint one in the faint group (the
    most probable group of all would give both far tails to the wider one)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1.0, 300), rng.normal(4, 0.2, 300), [5.3, 5.5]])
    g, info = intensity_groups(x, max_groups=2)
    assert len(info["means"]) == 2 and (g[-2:] == 1).all()
    order = np.argsort(x)
    assert (np.diff(g[order]) >= 0).all()
    # a run's classes likewise: one frame's fit on a sublattice, then columns past its ends
    from etem.tracker.intensity import _ordered_labels
    w, mu, sd = np.array([0.2, 0.8]), np.array([-0.13, 0.02]), np.array([0.19, 0.07])
    lab = _ordered_labels(np.array([-0.6, 0.02, 0.26, np.nan]), w, mu, sd)
    assert lab.tolist() == [0, 1, 1, 0]
    # the brighter group the wider: its far faint side stays with the fainter group
    lab = _ordered_labels(np.array([-3.0, 0.0, 1.1, 6.0]), np.array([0.9, 0.1]), np.array([-0.1, 1.1]),
                          np.array([0.7, 2.3]))
    assert lab.tolist() == [0, 0, 0, 1]

@pytest.fixture(scope="module")
def mos2_stem():
    """An annular dark-field MoS2 frame with a fifth of its S2 columns left as single S."""
    return mos2_movie(n_frames=3, shape=(384, 384), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                      vacancy_fraction=0.2, flake_radius_A=15.0, seed=4)


def _truth_class(movie, table, frame=0):
    tr = movie.truth.positions[movie.truth.positions.frame == frame]
    d, j = cKDTree(tr[["y", "x"]].to_numpy()).query(table[["y", "x"]].to_numpy())
    assert (d < 0.5 / movie.sampling).mean() > 0.95  # the columns are found
    return tr["cls"].to_numpy()[j]


def test_the_stem_finder_with_intensity_groups_tells_s_from_s2(mos2_stem):
    """The network finds columns of one class; the groups tell Mo, S2 and S apart."""
    table = find(mos2_stem.frames[0], sampling=mos2_stem.sampling, model="haadf-stem")
    out, summary = group_columns(table)
    cls = _truth_class(mos2_stem, out)  # 0 Mo, 1 S2, 2 S
    assert ((out["sublattice"] == 0) == (cls == 0)).mean() > 0.95
    s_sites = (out["sublattice"] == 1).to_numpy()
    assert [s["sublattice"] for s in summary] == [0, 1] and len(summary[1]["counts"]) == 2
    cls_of_group, names = group_classes(out)  # one class per sublattice and group, as a run numbers them
    assert names[:3] == ["A", "B0", "B1"] and set(names[3:]) <= {"no sublattice"}
    assert ((cls_of_group == 0) == (cls == 0)).mean() > 0.95 and ((cls_of_group == 1) == (cls == 2)).mean() > 0.95
    # in the S sublattice: group 0 the single S atoms, group 1 the S2 columns
    assert ((out["group"].to_numpy()[s_sites] == 0) == (cls[s_sites] == 2)).mean() > 0.95
    assert ((cls == 2) & s_sites).sum() >= 5


def test_run_files_and_tracks_carry_the_intensity(mos2_stem, tmp_path):
    path = tmp_path / "run.h5"
    track(mos2_stem.frames, sampling=mos2_stem.sampling, model="haadf-stem", run_path=path)
    with open_run(path) as run:
        cols = run.columns
        assert run.class_names == ["column"]  # the model's own
    assert np.isfinite(cols["intensity"]).all() and np.isfinite(cols["background"]).all()
    first = find(mos2_stem.frames[0], sampling=mos2_stem.sampling, model="haadf-stem")
    for name in ("intensity", "background"):
        a = cols[cols.frame == 0].sort_values(["y", "x"])[name].to_numpy()
        np.testing.assert_allclose(a, first.sort_values(["y", "x"])[name], rtol=1e-4)
    # etem export: per site, the intensities seen there, and their map
    from etem.tracker.export import export_run

    written = {q.name for q in export_run(path, tmp_path / "out", formats=("csv", "png"), progress=False)}
    assert {"site_intensity.csv", "intensity.png"} <= written
    per_site = pd.read_csv(tmp_path / "out" / "site_intensity.csv").set_index("site")
    seen = cols.assign(net=cols["intensity"] - cols["background"])
    seen = seen[seen["site"] >= 0].groupby("site")["net"]  # the columns' own, less the floor
    np.testing.assert_allclose(per_site["intensity_mean"], seen.mean().loc[per_site.index], rtol=1e-5)
    assert (per_site["n"] == seen.size().loc[per_site.index]).all()
    # Mo columns are the brightest, in every frame
    cls = np.concatenate([_truth_class(mos2_stem, g, f) for f, g in cols.groupby("frame")])
    cols = pd.concat([g for _, g in cols.groupby("frame")])
    assert cols["intensity"][cls == 0].min() > cols["intensity"][cls == 2].max()


def test_the_background_is_the_floor_between_the_columns_bright_or_dark():
    """A lattice of Gaussian columns on a tilted plane: the background at each column is the
    plane there (not the column's own height), for bright and for dark columns."""
    yy, xx = np.mgrid[0:128, 0:160].astype(np.float32)
    plane = 100.0 + 0.1 * xx - 0.05 * yy  # 12 px, a lattice spacing: 1.2 and 0.6, 6 % and 3 % of a column
    centres = np.array([(y, x) for y in range(12, 120, 12) for x in range(12, 150, 12)], np.float32)
    cols = np.zeros_like(plane)
    for y, x in centres:
        cols += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    want = 100.0 + 0.1 * centres[:, 1] - 0.05 * centres[:, 0]
    for sign in (1.0, -1.0):
        table = pd.DataFrame({"y": centres[:, 0], "x": centres[:, 1]})
        column_intensity([table], torch.from_numpy(plane + sign * 20.0 * cols)[None], radius_px=1.5,
                         background=True, dark=sign < 0)
        # within 1.5 % of the columns' height of the plane (5 % where the square is cut by the
        # frame's edge); the minimum over the square alone fell short by the slope times the reach, 1.8
        inner = (centres.min(1) >= 24) & (centres[:, 0] <= 128 - 24) & (centres[:, 1] <= 160 - 24)
        np.testing.assert_allclose(table["background"][inner], want[inner], atol=0.3)
        np.testing.assert_allclose(table["background"], want, atol=1.0)
        alone = pd.DataFrame({"y": centres[:, 0], "x": centres[:, 1]})  # the columns with no floor at all
        column_intensity([alone], torch.from_numpy(sign * 20.0 * cols)[None], radius_px=1.5)
        np.testing.assert_allclose(table["intensity"] - table["background"], alone["intensity"], atol=1.0)
        np.testing.assert_allclose(net_intensity(table), abs(alone["intensity"]), atol=1.0)  # the column's own, > 0


def test_the_background_does_not_depend_on_where_the_frame_begins():
    """One specimen cut at different places (a field drifting by whole pixels): a column well
    inside every cut has the same floor in each. On blocks tied to the frame's corner the floor
    of one real MoS2 ADF column moved by up to 3 % of its net intensity, and its class with it."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float32)
    centres = np.array([(y + 3 * (x // 11 % 2), x) for y in range(6, 196, 11) for x in range(6, 196, 11)], np.float32)
    image = 50.0 + 10.0 * np.sin(yy / 37.0) * np.cos(xx / 23.0) + rng.normal(0, 1.0, yy.shape)
    for (y, x), h in zip(centres, rng.uniform(10, 20, len(centres))):
        image += h * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
    inner = (centres.min(1) >= 75) & (centres.max(1) <= 120)  # (more than three reaches from every edge)
    got = []
    for dy, dx in [(0, 0), (1, 2), (3, 3), (5, 1), (7, 6)]:
        crop = np.ascontiguousarray(image[dy:dy + 160, dx:dx + 160], np.float32)
        table = pd.DataFrame({"y": centres[inner, 0] - dy, "x": centres[inner, 1] - dx})
        column_intensity([table], torch.from_numpy(crop)[None], radius_px=1.5, background=True)
        got.append(table["background"].to_numpy())
    np.testing.assert_allclose(np.array(got), np.array(got[:1]).repeat(len(got), 0), rtol=1e-5)


def test_groups_hold_under_a_background_ramp(mos2_stem):
    """A background rising across the flake (a contamination layer, a thickness wedge) by more
    than S2 stands above S: the groups of the S sublattice still follow S and S2, by the
    columns' own intensity over the floor about them; the raw means mix them."""
    image = mos2_stem.frames[0].astype(np.float32)
    ramp = 5.0 + 4.0 * np.linspace(0, 1, image.shape[1], dtype=np.float32)[None, :]  # S2 - S: 1.6
    table = find(image + ramp, sampling=mos2_stem.sampling, model="haadf-stem")
    truth = _truth_class(mos2_stem, table)

    def s_sublattice_right(t):
        out, _ = group_columns(t)
        s = (out["sublattice"] == 1).to_numpy() & (truth > 0)
        right = ((out["group"] == 1) & (truth == 1)) | ((out["group"] == 0) & (truth == 2))
        return right.to_numpy()[s].mean()

    assert s_sublattice_right(table) > 0.98
    assert s_sublattice_right(table.drop(columns="background")) < 0.6  # the raw means: 0.28


def test_etem_find_intensity_groups(mos2_stem, tmp_path, capsys):
    movie = tmp_path / "stem.h5"
    save_movie(mos2_stem, movie)
    out = tmp_path / "cols.csv"
    png = tmp_path / "groups.png"
    assert main(["find", str(movie), "--intensity-groups", "-o", str(out), "--overlay", str(png)]) == 0
    assert png.stat().st_size > 10_000
    said = capsys.readouterr().out
    assert "located by model haadf-stem" in said and "sublattice 1 (" in said and "intensity groups, frame 2" in said
    table = pd.read_csv(out)
    assert {"intensity", "sublattice", "group"} <= set(table.columns) and set(table["frame"]) == {0, 1, 2}
    import shutil

    other = tmp_path / "other.h5"
    shutil.copy(movie, other)
    assert main(["find", str(movie), str(other), "--intensity-groups", "-o", str(out)]) == 0
    said = capsys.readouterr().out  # two files: their frames apart, named
    assert f"intensity groups, {movie} frame 2" in said and "and 3 more frames (" in said
    assert main(["find", str(movie), "--intensity-groups", "--groups", "1", "-o", str(out)]) == 0
    assert set(pd.read_csv(out)["group"]) <= {-1, 0}
    with pytest.raises(SystemExit) as info:
        main(["find", str(movie), "--intensity-groups", "--groups", "0"])
    assert info.value.code == 2 and "argument --groups: must be 1 to 8" in capsys.readouterr().err
    off = tmp_path / "off.toml"  # intensities turned off (TOML has no None: 0)
    off.write_text("[locate]\nintensity_radius_A = 0\n")
    assert main(["find", str(movie), "--config", str(off), "-o", str(out)]) == 0
    assert "intensity" not in pd.read_csv(out).columns
    assert main(["find", str(movie), "--intensity-groups", "--config", str(off)]) == 2
    assert "the table has no 'intensity'" in capsys.readouterr().err
    assert main(["replay", str(movie), "--intensity-classes", "--config", str(off), "--quiet"]) == 2
    assert "intensity_classes needs the intensities" in capsys.readouterr().err


# ------------------------------------------------------------------------------ classes in a run
def _intensity_config(**kw):
    from etem.tracker import PipelineConfig
    from etem.tracker.config import config_from_dict

    return config_from_dict({"locate": {"intensity_classes": True, **kw}, "engine": {"model": "haadf-stem"}},
                            PipelineConfig(default_sampling=0.1))


@pytest.fixture(scope="module")
def vacancy_movie():
    """40 frames of an ADF MoS2 flake whose S2 columns lose atoms (S2 -> S) and heal."""
    return mos2_movie(n_frames=40, shape=(384, 384), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                      flake_radius_A=15.0, sputter_rate=0.01, refill_rate=0.05, seed=7)


def test_a_run_classes_columns_by_intensity_and_follows_s2_to_s(vacancy_movie, tmp_path):
    from etem.tracker.evaluate import class_mapping, score_class_changes, true_class_changes
    from etem.tracker.sites import occupied_sites

    path = tmp_path / "run.h5"
    res = track(vacancy_movie.frames, sampling=0.1, config=_intensity_config(), run_path=path)
    truth = vacancy_movie.truth
    to_true = class_mapping(res.columns, truth.positions, radius_px=5)
    assert sorted(to_true.items()) == [(0, 0), (1, 2), (2, 1)]  # A: Mo, B0: S, B1: S2
    found = res.columns.assign(cls=res.columns["cls"].map(to_true))
    from etem.tracker.evaluate import score_columns

    assert score_columns(found, truth.positions, radius_px=5)["cls_accuracy"] > 0.99
    with open_run(path) as run:
        changes, sites = run.stats["class_changes"], run.sites
        assert run.class_names == ["A", "B0", "B1"]  # (the report's legend)
    changes = changes.assign(**{c: changes[c].map(to_true) for c in ("from_cls", "to_cls")})
    s = score_class_changes(occupied_sites(sites), changes, truth, radius_px=5, frame_tolerance=1)
    assert s["n_true"] == len(true_class_changes(truth)) >= 30
    assert s["recall"] > 0.5 and s["precision"] > 0.9, s  # (measured 0.60 and 0.98: the site class model's own limits)
    # an S2 -> S change beside an S -> S2 one is an S atom that hopped: found where both changes are
    from etem.tracker.evaluate import score_hops

    h = score_hops(occupied_sites(sites), res.hops, truth, radius_px=5, frame_tolerance=2)
    assert h["n_true"] >= 30 and h["recall"] > 0.1 and h["precision"] > 0.4, h  # (measured 0.18 and 0.53)
    # without it, the STEM finder's one class: no class changes at all
    plain = track(vacancy_movie.frames[:5], sampling=0.1, model="haadf-stem")
    assert set(plain.columns["cls"]) == {0}


def _classed_again(cols, learned):
    from etem.tracker.intensity import IntensityClasses

    classes = IntensityClasses()
    classes.restore(learned)
    return pd.concat([pd.Series(classes.classify(g), index=g.index) for _, g in cols.groupby("frame")]).sort_index()


def test_a_class_number_means_the_same_in_every_frame(tmp_path):
    # the first frames are classed while the groups are learned (frame 0 of this movie alone
    # split the S2 columns in two: 4 groups); once the groups are fixed, those frames are
    # classed again by them, in memory and in the run file; without that, frame 0 had a class 3
    # that no other frame has and that has no name
    from etem.tracker import Pipeline, PipelineConfig
    from etem.tracker.config import config_from_dict
    from etem.tracker.sources import iter_array

    movie = mos2_movie(n_frames=60, shape=(256, 256), seed=0, mode="stem", dose_per_frame=1000.0)  # etem demo's
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem", "imaging": "stem"}},
                           PipelineConfig())
    path = tmp_path / "run.h5"
    pipe = Pipeline(cfg, run_path=path)
    pipe.intensity_classes.learn_columns = 600  # (fixed at frame 3)
    provisional = {}
    for res in pipe.run_iter(iter_array(movie.frames[:6], counters=pipe.counters, sampling=movie.sampling)):
        if not pipe.intensity_classes.fixed:
            provisional[res.frame] = res.columns["cls"].to_numpy().copy()
    # (frame 0 alone no longer splits S2 in two since intensities are taken over a disk with a
    # soft rim, on the floor at each pixel, scaled by the metal alone: its classes are the run's)
    assert sorted(provisional) == [0, 1, 2] and set(provisional[0]) <= {0, 1, 2, 3}
    with open_run(path) as run:
        cols, learned, names = run.columns, run.resume_state()["meta"]["pipeline"]["intensity_classes"], run.class_names
    assert learned["fixed"] and names == ["A", "B0", "B1"]
    assert set(cols["cls"]) == {0, 1, 2} and (cols["cls"] == _classed_again(cols, learned)).all()
    pd.testing.assert_series_equal(pipe.columns_table()["cls"], cols["cls"], check_dtype=False, check_names=False)
    # a run that ends before the groups are fixed: all its frames by the last fit
    res = track(movie.frames[:3], sampling=movie.sampling, config=cfg, run_path=tmp_path / "short.h5")
    with open_run(tmp_path / "short.h5") as run:
        cols, learned = run.columns, run.resume_state()["meta"]["pipeline"]["intensity_classes"]
    assert not learned["fixed"] and set(cols["cls"]) == {0, 1, 2} and (cols["cls"] == _classed_again(cols, learned)).all()
    assert set(res.columns["cls"]) == {0, 1, 2}


def test_intensity_classes_survive_a_resume(vacancy_movie, tmp_path):
    from etem.tracker import Pipeline
    from etem.tracker.sources import iter_array

    frames = vacancy_movie.frames[:12]
    ref = track(frames, sampling=0.1, config=_intensity_config())
    path = tmp_path / "run.h5"
    pipe = Pipeline(_intensity_config(), run_path=path)
    it = pipe.run_iter(iter_array(frames, counters=pipe.counters, sampling=0.1))
    for res in it:
        if res.frame == 5:
            break
    it.close()
    learned = pipe.intensity_classes.state()
    assert learned["comps"] and not learned["fixed"]  # (still learning: the pooled intensities are kept too)
    with open_run(path) as run:  # class changes that await a hop partner are kept too
        assert len(run.resume_state()["arrays"]["class_changes_open"])
    track(frames, resume=path)
    with open_run(path) as run:
        pd.testing.assert_frame_equal(run.stats["hops"].reset_index(drop=True), ref.hops.reset_index(drop=True),
                                      check_dtype=False)
        cols = run.columns
        pooled = run.resume_state()["meta"]["pipeline"]["intensity_classes"]["pool"]
    # what the first 6 frames taught the classes was carried over: the pool holds all 12 frames'
    assert sum(len(v) for v in pooled.values()) > 0.9 * len(cols)  # (columns on no sublattice are not pooled)
    pd.testing.assert_series_equal(cols.sort_values(["frame", "y"])["cls"].reset_index(drop=True),
                                   ref.columns.sort_values(["frame", "y"])["cls"].reset_index(drop=True), check_dtype=False)


def test_intensity_classes_on_hrtem_frames_are_warned_of(caplog):
    import logging

    from etem.simulate.toy import make_movie
    from etem.tracker import PipelineConfig
    from etem.tracker.config import config_from_dict

    m = make_movie(n_frames=3, shape=(96, 96), seed=1)
    for imaging, contrast, warned in (("hrtem", "bright", True), ("stem", "bright", False), ("stem", "dark", True)):
        caplog.clear()
        cfg = config_from_dict({"locate": {"intensity_classes": True},
                                "engine": {"imaging": imaging, "contrast": contrast}},
                               PipelineConfig(default_sampling=m.sampling))
        with caplog.at_level(logging.WARNING, logger="etem.pipeline"):
            track(m.frames, config=cfg, classical=True)
        assert any("made for annular dark-field STEM" in r.getMessage() for r in caplog.records) == warned


def test_etem_replay_intensity_classes_and_evaluate(vacancy_movie, tmp_path, capsys):
    movie, run = tmp_path / "stem.h5", tmp_path / "run.h5"
    save_movie(vacancy_movie, movie)
    assert main(["replay", str(movie), "--intensity-classes", "--quiet", "-o", str(run)]) == 0
    said = capsys.readouterr().out
    assert "\nclass changes: " in said and "--intensity-classes classes them" not in said
    # without it, the STEM finder's one class: the run says what it missed, and how to follow it
    assert main(["replay", str(movie), "--quiet", "-o", str(tmp_path / "plain.h5")]) == 0
    said = capsys.readouterr().out
    assert "\nclass changes:" not in said and "\n  (the columns are of one class here: an S2 column losing" in said
    assert "--intensity-classes classes them" in said
    from etem.tracker.export import export_run

    written = {q.name for q in export_run(run, tmp_path / "out", formats=("csv", "png", "report"), progress=False)}
    assert "class_changes.png" in written and (tmp_path / "out" / "class_changes.png").stat().st_size > 10_000
    import json

    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    changes = pd.read_csv(tmp_path / "out" / "class_changes.csv")
    n_changes = len(changes)
    assert set(changes["from_name"]) | set(changes["to_name"]) <= {"A", "B0", "B1"}
    assert (changes["from_name"] == changes["from_cls"].map({0: "A", 1: "B0", 2: "B1"})).all()
    assert summ["class_changes"] == n_changes == sum(summ["class_changes_by_kind"].values())
    assert set(summ["class_changes_by_kind"]) <= {"B0 -> B1", "B1 -> B0", "A -> B0", "B0 -> A", "A -> B1", "B1 -> A"}
    assert list(pd.read_csv(tmp_path / "out" / "class_counts.csv").columns) == ["frame", "n_A", "n_B0", "n_B1"]
    written = {q.name for q in export_run(tmp_path / "plain.h5", tmp_path / "plain", formats=("png",), progress=False)}
    assert "class_changes.png" not in written and "events.png" in written
    assert main(["evaluate", str(run), str(movie)]) == 0
    out = capsys.readouterr().out
    assert "classes from intensities, scored as the true classes most of their columns are: 0 -> 0, 1 -> 2, 2 -> 1" in out
    assert "class changes:" in out
    assert main(["find", str(movie), "--intensity-groups", "-o", str(tmp_path / "cols.csv")]) == 0
    said = capsys.readouterr().out  # a stack: three frames' groups, then a line for the rest
    assert said.count("intensity groups, frame ") == 3 and "and 37 more frames (" in said
    assert main(["replay", str(movie), "--groups", "2", "--quiet"]) == 2
    assert "--groups goes with --intensity-classes" in capsys.readouterr().err
    assert main(["track", "--resume", str(run), "--intensity-classes"]) == 2
    assert "leave out --intensity-classes" in capsys.readouterr().err
