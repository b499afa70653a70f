"""Column location on probability maps with known sub-pixel column positions."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import cKDTree

from etem.tracker.errors import ConfigError
from etem.tracker.locate import LocateConfig, locate, max_filter, suppress_close

from _images import lattice, render


def probs_from(*class_maps):
    """``[1, K, H, W]`` float32 from foreground maps of the column classes."""
    fg = np.clip(np.stack(class_maps), 0, 1)
    bg = np.clip(1 - fg.sum(0), 0, 1)
    return torch.tensor(np.concatenate([bg[None], fg])[None], dtype=torch.float32)


def match(found, truth, tol=1.5):
    """(number matched, RMS distance of the matches) for nearest-neighbour matching."""
    d, _ = cKDTree(truth).query(found, distance_upper_bound=tol)
    ok = np.isfinite(d)
    return int(ok.sum()), float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else np.nan


def yx_of(df: pd.DataFrame) -> np.ndarray:
    return df[["y", "x"]].to_numpy()


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5, 4.0])
def test_peaks_recover_subpixel_positions(sigma):
    shape = (160, 160)
    truth = lattice(shape, spacing=max(10.0, 5 * sigma), margin=8, seed=1)
    (df,) = locate(probs_from(render(truth, shape, sigma)))
    assert list(df.columns) == ["y", "x", "cls", "prob"]
    n, rms = match(yx_of(df), truth)
    assert n == len(truth) == len(df)
    assert rms < 0.05
    assert (df["cls"] == 0).all() and (df["prob"] > 0.75).all()  # value at the peak pixel


def test_quadratic_refinement_beats_centre_of_mass():
    shape = (160, 160)
    truth = lattice(shape, spacing=12.0, margin=8, seed=2)
    probs = probs_from(render(truth, shape, 2.0))
    rms = {m: match(yx_of(locate(probs, LocateConfig(refine=m))[0]), truth)[1] for m in ("quadratic", "com")}
    print(f"\nRMS on ideal Gaussian maps (sigma 2 px): {rms}")
    assert rms["quadratic"] < 0.01 < rms["com"]


def test_max_filter_matches_max_pool():
    x = torch.rand(2, 37, 41)
    for radius in (1, 2, 3, 5):
        k = 2 * radius + 1
        ref = torch.nn.functional.max_pool2d(x[:, None], k, 1, radius)[:, 0]
        assert torch.equal(max_filter(x, radius), ref)


def test_plateau_gives_one_peak_at_its_centre():
    shape = (64, 64)
    fg = np.clip(2.5 * render(np.array([[30.0, 33.5]]), shape, 3.0), 0, 1)  # flat top, radius ~4 px
    (df,) = locate(probs_from(fg))
    assert len(df) == 1
    assert np.hypot(df.y[0] - 30.0, df.x[0] - 33.5) < 0.1


def test_plateau_larger_than_the_window_gives_one_peak():
    fg = np.full((64, 64), 0.2)
    fg[20:40, 20] = fg[20:40, 32] = fg[39, 20:33] = 1.0  # a U, arms 12 px apart
    (df,) = locate(probs_from(fg), LocateConfig(min_distance_px=3))
    assert len(df) == 1


def test_equal_peaks_closer_than_min_distance_merge():
    fg = np.zeros((40, 40))
    fg[20, 18] = fg[20, 21] = 0.9
    (df,) = locate(probs_from(fg), LocateConfig(min_distance_px=3))
    assert len(df) == 1 and abs(df.x[0] - 19.5) < 1e-9
    (df,) = locate(probs_from(fg), LocateConfig(min_distance_px=2))
    assert len(df) == 2


def test_columns_near_the_edges():
    shape = (64, 64)
    truth = np.array([[3.3, 30.2], [30.4, 60.6], [0.8, 10.0], [40.0, 63.2], [32.0, 32.0]])
    probs = probs_from(render(truth, shape, 1.5))
    (df,) = locate(probs)  # edge_px = 2: the ones at y = 0.8 and x = 63.2 are ignored
    n, rms = match(yx_of(df), truth[[0, 1, 4]])
    assert n == len(df) == 3 and rms < 0.05
    (df,) = locate(probs, LocateConfig(edge_px=0))
    assert len(df) == 5


def test_empty_maps_give_empty_tables():
    probs = torch.zeros(3, 2, 32, 48)
    probs[:, 0] = 1.0
    for method in ("peaks", "watershed"):
        tables = locate(probs, LocateConfig(method=method))
        assert len(tables) == 3
        for df in tables:
            assert len(df) == 0 and list(df.columns) == ["y", "x", "cls", "prob"]
            assert df.dtypes.to_dict() == {"y": np.float64, "x": np.float64, "cls": np.int64, "prob": np.float64}


def test_batch_items_are_kept_apart():
    shape = (96, 96)
    truths = [lattice(shape, 12.0, 8, seed=s) for s in (3, 4)] + [np.zeros((0, 2))]
    probs = torch.cat([probs_from(render(t, shape, 1.5)) for t in truths])
    tables = locate(probs)
    assert len(tables) == 3
    for df, truth in zip(tables[:2], truths[:2]):
        n, rms = match(yx_of(df), truth)
        assert n == len(truth) == len(df) and rms < 0.05
    assert len(tables[2]) == 0


@pytest.mark.parametrize("method", ["peaks", "watershed"])
def test_class_assignment_with_three_classes(method):
    shape = (96, 96)
    truth = lattice(shape, 8.0, 4, seed=5)
    is_b = np.random.default_rng(5).random(len(truth)) < 0.4
    probs = probs_from(render(truth[~is_b], shape, 2.0), render(truth[is_b], shape, 2.0))
    (df,) = locate(probs, LocateConfig(method=method, discard_t=0.3))
    d, i = cKDTree(truth).query(yx_of(df))
    assert (d < 0.3).all() and len(set(i)) == len(truth)
    np.testing.assert_array_equal(df["cls"].to_numpy(), is_b[i].astype(int))


@pytest.mark.parametrize("spacing, t, tol", [
    (12.0, 0.1, 0.05),  # well separated; segments of 144 px^2 need a small t
    (7.5, 0.5, 0.5),    # dense: Madsen's t = 0.5 keeps all; neighbours' tails pull the centres of mass
])
def test_watershed_agrees_with_peaks(spacing, t, tol):
    shape = (int(12 * spacing),) * 2  # a whole number of cells: border segments as big as the rest
    truth = lattice(shape, spacing, spacing / 2, seed=6)
    probs = probs_from(render(truth, shape, 2.0))
    (peaks,) = locate(probs)
    (ws,) = locate(probs, LocateConfig(method="watershed", discard_t=t))
    assert len(ws) == len(peaks) == len(truth)
    d, i = cKDTree(yx_of(peaks)).query(yx_of(ws))
    assert len(set(i)) == len(ws) and d.max() < tol
    assert np.abs(ws["prob"].to_numpy() - peaks["prob"].to_numpy()[i]).max() < 0.05


def test_watershed_discards_faint_segments():
    shape = (96, 96)
    truth = lattice(shape, 8.0, 4, seed=7)
    amp = np.ones(len(truth))
    faint = 40
    amp[faint] = 0.2  # foreground sum ~ 0.2 * 2 pi 2^2 = 5 against ~59 of background
    probs = probs_from(render(truth, shape, 2.0, amp))
    (kept,) = locate(probs, LocateConfig(method="watershed", discard_t=0.05))
    (strict,) = locate(probs, LocateConfig(method="watershed", discard_t=0.3))
    assert len(kept) == len(truth)
    assert len(strict) == len(truth) - 1
    assert cKDTree(yx_of(strict)).query(truth[faint])[0] > 4


@pytest.mark.parametrize("kw", [
    {"method": "blob"}, {"refine": "gauss"}, {"threshold": 0.0}, {"threshold": 1.5},
    {"min_distance_px": 0}, {"min_distance_px": 2.5}, {"refine_radius_px": 0},
    {"edge_px": -1}, {"discard_t": -0.1}, {"background_max": 0}, {"min_separation_A": -1.0},
])
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        LocateConfig(**kw)


def test_bad_method_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'peaks', 'watershed'"):
        LocateConfig(method="blob")


def test_probs_need_a_class_channel():
    with pytest.raises(ConfigError, match="K >= 2"):
        locate(torch.ones(1, 1, 8, 8))


def test_timing_large_batch():
    shape = (1024, 1024)
    truth = lattice(shape, 10.0, 6, seed=8)
    probs = probs_from(render(truth, shape, 2.0)).repeat(4, 1, 1, 1)
    for method, batch, repeats in (("peaks", probs, 3), ("watershed", probs[:1], 1)):
        cfg = LocateConfig(method=method, discard_t=0.1)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            tables = locate(batch, cfg)
            times.append(time.perf_counter() - t)
        n = sum(len(df) for df in tables)
        print(f"\nlocate({method}) on {list(batch.shape)} {batch.device}: "
              f"best of {repeats}: {min(times) * 1e3:.0f} ms for {n} columns")


def test_suppress_close_keeps_the_strongest_and_is_greedy():
    # a chain: B is within reach of A and C, A and C are not; A is strongest, then B
    df = pd.DataFrame({"y": [0.0, 0.0, 0.0, 30.0], "x": [0.0, 8.0, 16.0, 0.0], "cls": 1,
                       "prob": [0.9, 0.8, 0.7, 0.5]})
    df.attrs["quality"] = {"snr": 1.0}
    out = suppress_close(df, 10.0)
    # B goes (A is stronger); C stays, since the only column near it (B) is gone
    assert out["x"].tolist() == [0.0, 16.0, 0.0] and out["prob"].tolist() == [0.9, 0.7, 0.5]
    assert out.attrs["quality"] == {"snr": 1.0}
    # the order of rows does not change which survive
    back = suppress_close(df.iloc[::-1].reset_index(drop=True), 10.0)
    assert sorted(back["prob"].tolist()) == [0.5, 0.7, 0.9]
    assert suppress_close(df, 5.0) is df  # none close: the same table
    assert len(suppress_close(df.iloc[:0], 10.0)) == 0


@pytest.mark.parametrize("sep, n", [(None, 2), (1.0, 1), (0.5, 2)])
def test_columns_closer_than_min_separation_are_one(sep, n):
    """A column and a weaker second peak 0.9 Å away on its flank, at 0.1 Å/px: with a 1 Å
    separation one column is found, the stronger; without one (the default), or a smaller
    one, two."""
    from etem.tracker import find
    from etem.tracker.config import PipelineConfig

    yy, xx = np.mgrid[:96, :96]
    img = (np.exp(-((yy - 48) ** 2 + (xx - 40) ** 2) / (2 * 1.5**2))
           + 0.8 * np.exp(-((yy - 48) ** 2 + (xx - 49) ** 2) / (2 * 1.5**2)))
    cfg = PipelineConfig(locate=LocateConfig(min_separation_A=sep))
    found = find(img.astype(np.float32), sampling=0.1, classical=True, config=cfg)
    assert len(found) == n
    assert abs(found.sort_values("prob")["x"].iloc[-1] - 40) < 1.5


@pytest.mark.parametrize("fraction, pairs", [(LocateConfig().min_separation_nn, 0), (None, 4)])
def test_two_peaks_on_one_blob_are_one_column_by_default(fraction, pairs):
    """A lattice of columns 1.8 Å apart, four of them with a weaker second peak 1.0 Å off on
    their flank (an elongated blob: an adatom, contamination): the weaker goes, with no pixel
    size needed, since it lies closer than 0.65 of the frame's spacing to a stronger one."""
    from scipy.spatial import cKDTree

    from etem.tracker import find
    from etem.tracker.config import PipelineConfig

    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160))
    centres = [(y, x) for y in range(17, 150, 18) for x in range(17, 150, 18)]
    for y, x in centres:
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.8**2))
    for y, x in centres[10:50:10]:
        img += 0.8 * np.exp(-((yy - y - 7) ** 2 + (xx - x - 7) ** 2) / (2 * 1.8**2))  # (9.9 px off)
    cfg = PipelineConfig(locate=LocateConfig(min_separation_nn=fraction))
    found = find(img.astype(np.float32), classical=True, config=cfg)
    yx = found[["y", "x"]].to_numpy()
    assert len(cKDTree(yx).query_pairs(11.0)) == pairs
    assert len(found) == len(centres) + pairs


def test_min_separation_nn_is_a_fraction():
    for bad in (-0.1, 1.0, "0.7", True):
        with pytest.raises(ConfigError, match="min_separation_nn"):
            LocateConfig(min_separation_nn=bad)


@pytest.mark.parametrize("dark", [False, True])
def test_refine_on_image_moves_columns_to_the_image_peaks(dark):
    """Columns found 1 px off (as a network's coarse maps may put them) go to the image's
    peaks, bright or dark columns alike; each image of a batch by its own contrast."""
    from etem.tracker.locate import refine_on_image

    shape = (96, 96)
    truth = [lattice(shape, spacing=12.0, margin=8, seed=s) for s in (3, 4)]
    images = np.stack([render(t, shape, 1.5) for t in truth]).astype(np.float32)
    if dark:
        images[1] = 1.0 - images[1]  # the second image of the batch has dark columns
    rng = np.random.default_rng(5)
    tables = [pd.DataFrame({"y": t[:, 0] + rng.uniform(-1, 1, len(t)), "x": t[:, 1] + rng.uniform(-1, 1, len(t)),
                            "cls": 0, "prob": 0.9}) for t in truth]
    before = [match(yx_of(df), t)[1] for df, t in zip(tables, truth)]
    refine_on_image(tables, torch.from_numpy(images), sigma_px=1.5, radius_px=2)
    for df, t, b in zip(tables, truth, before):
        n, rms = match(yx_of(df), t)
        assert n == len(t) and rms < 0.05 < b
    refine_on_image([pd.DataFrame(columns=["y", "x", "cls", "prob"])], torch.from_numpy(images[:1]),
                    sigma_px=1.5, radius_px=2)  # nothing to move


def test_where_positions_are_read_follows_the_config():
    from etem.tracker.detect import image_refinement

    class Engine:
        card = {"inputs": [-100.0, 0.0, 100.0]}

    assert image_refinement(Engine(), LocateConfig()) == ()  # the maps, by default
    assert image_refinement(Engine(), LocateConfig(refine_on="image", image_sigma_A=0.4)) == (1, 0.4, 0.4)
    assert image_refinement(object(), LocateConfig(refine_on="image")) == (0, 0.3, 0.4)  # no card: one image
    with pytest.raises(ConfigError, match="refine_on"):
        LocateConfig(refine_on="pixels")


@pytest.mark.parametrize("classical", [False, True])
def test_real_mos2_has_no_two_columns_on_one_blob(classical):
    """The Se-implanted MoS2 ADF image: 14 pairs of columns closer than 1.2 Å (13 with the
    classical locator), 6 (7) closer than 1.1 Å, each on one elongated blob, where the closest
    Mo-S spacing is 1.8 Å; now 8 (3) closer than 1.2 Å, none closer than 1.1 Å."""
    from test_files import realdata

    from etem.tracker import find

    found = find(realdata() / "example_Se_implanted_MoS2.dm3", classical=classical)
    yx = found[["y", "x"]].to_numpy()
    assert len(cKDTree(yx).query_pairs(1.1 / 0.127)) == 0  # (0.127 Å/px as the file says)
    assert len(found) > (2700 if classical else 4200)
