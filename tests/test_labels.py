"""Training labels: Gaussian class maps of the right width at the columns, background 1 - sum."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from etem.simulate.labels import label_maps, pad_columns, positions_table, render_gaussians, render_labels


def _table(rows):
    return pd.DataFrame(rows, columns=["x_A", "y_A", "cls"])


def test_shapes_channels_and_background_is_one_minus_sum():
    cols = _table([(3.0, 4.0, 0), (6.2, 4.1, 1), (9.0, 9.5, 2), (6.9, 4.4, 1)])
    maps = label_maps(cols, shape=(120, 100), sampling_A=0.1, n_classes=3)
    assert maps.shape == (4, 120, 100) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps[0], np.clip(1 - maps[1:].sum(0), 0, 1), atol=1e-6)
    # Far from every column the background is 1.
    assert maps[0, 119, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("y, x", [(10.0, 9.0), (10.03, 9.47), (12.77, 11.21)])
def test_peaks_sit_at_the_columns(y, x):
    s = 0.1
    maps = label_maps(_table([(x, y, 0)]), shape=(220, 200), sampling_A=s, n_classes=1)
    r, c = np.unravel_index(maps[1].argmax(), maps[1].shape)
    assert (r, c) == (round(y / s), round(x / s))
    # Sub-pixel: the centroid of the Gaussian (> 6 sigma from every edge) is the column.
    rr, cc = np.mgrid[:220, :200]
    w = maps[1]
    assert (w * rr).sum() / w.sum() == pytest.approx(y / s, abs=1e-3)
    assert (w * cc).sum() / w.sum() == pytest.approx(x / s, abs=1e-3)
    assert w.max() == pytest.approx(math.exp(-((r - y / s) ** 2 + (c - x / s) ** 2) / (2 * 10.0**2)), rel=1e-5)


@pytest.mark.parametrize("sigma_A, sampling", [(1.0, 0.1), (0.5, 0.05), (1.0, 0.25)])
def test_sigma_is_sigma_A(sigma_A, sampling):
    n = int(round(12 / sampling))
    maps = label_maps(_table([(6.0, 6.0, 0)]), shape=(n, n), sampling_A=sampling, n_classes=1, sigma_A=sigma_A)
    w = maps[1].astype(np.float64)
    rr = np.arange(n)[:, None] * sampling - 6.0
    var = (w * rr**2).sum() / w.sum()
    assert math.sqrt(var) == pytest.approx(sigma_A, rel=1e-3)
    # One sigma away along a row the map is exp(-1/2).
    k = sigma_A / sampling
    if float(k).is_integer():
        assert w[round(6 / sampling), round(6 / sampling) + int(k)] == pytest.approx(math.exp(-0.5), rel=1e-5)


def test_overlaps_clip_within_a_class_and_background_never_negative():
    same = label_maps(_table([(5.0, 5.0, 0), (5.4, 5.0, 0)]), shape=(100, 100), sampling_A=0.1, n_classes=2)
    assert same[1].max() == 1.0 and same[2].max() == 0.0
    mixed = label_maps(_table([(5.0, 5.0, 0), (5.2, 5.0, 1)]), shape=(100, 100), sampling_A=0.1, n_classes=2)
    assert mixed[1].max() < 1.0 + 1e-6 and mixed[2].max() < 1.0 + 1e-6
    assert mixed[0].min() == 0.0  # 1 - (~1 + ~1) clipped


def test_non_square_pixels_keep_gaussians_round_in_angstrom():
    maps = label_maps(_table([(6.0, 6.0, 0)]), shape=(120, 60), sampling_A=(0.1, 0.2), n_classes=1)
    w = maps[1].astype(np.float64)
    y = np.arange(120)[:, None] * 0.1 - 6.0
    x = np.arange(60)[None, :] * 0.2 - 6.0
    assert math.sqrt((w * y**2).sum() / w.sum()) == pytest.approx(1.0, rel=1e-3)
    assert math.sqrt((w * x**2).sum() / w.sum()) == pytest.approx(1.0, rel=2e-2)  # 5 px per sigma
    assert w[60, 30] == pytest.approx(1.0)


def test_batched_torch_labels_match_the_table_path_per_sample():
    tables = [_table([(3.0, 4.0, 0), (6.2, 4.1, 1)]), _table([(1.0, 1.0, 1)]), _table([])]
    points, classes = pad_columns(tables, sampling_A=0.1)
    assert points.shape == (3, 2, 2) and classes.tolist()[1] == [1, -1] and classes.tolist()[2] == [-1, -1]
    batch = render_labels(points, classes, shape=(80, 80), n_classes=2, sigma_px=10.0)
    for i, t in enumerate(tables):
        np.testing.assert_allclose(batch[i].numpy(), label_maps(t, shape=(80, 80), sampling_A=0.1, n_classes=2),
                                   atol=1e-6)
    assert torch.equal(batch[2, 0], torch.ones(80, 80))


def test_per_sample_sigma_and_weights():
    pts = torch.tensor([[[10.0, 10.0]], [[10.0, 10.0]]])
    maps = render_gaussians(pts, torch.tensor([[[2.0]], [[0.5]]]), shape=(21, 21), sigma_px=torch.tensor([2.0, 4.0]))
    assert maps[0, 0, 10, 10].item() == pytest.approx(2.0) and maps[1, 0, 10, 10].item() == pytest.approx(0.5)
    assert maps[0, 0, 10, 12].item() == pytest.approx(2.0 * math.exp(-0.5))
    assert maps[1, 0, 10, 14].item() == pytest.approx(0.5 * math.exp(-0.5))


def test_positions_table_round_trip():
    tables = [_table([(3.0, 4.0, 0), (6.2, 4.1, 1)]), _table([(1.0, 1.5, 1)])]
    points, classes = pad_columns(tables, sampling_A=0.5)
    table = positions_table(points, classes)
    assert list(table.columns) == ["frame", "y", "x", "cls"]
    assert table["frame"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(table[["y", "x"]].to_numpy(), [[8.0, 6.0], [8.2, 12.4], [3.0, 2.0]], rtol=1e-6)


def test_bad_input_says_how_to_fix_it():
    with pytest.raises(ValueError, match="lacks cls"):
        label_maps(pd.DataFrame({"x_A": [1.0], "y_A": [1.0]}), shape=(8, 8), sampling_A=0.1, n_classes=1)
    with pytest.raises(ValueError, match="Raise n_classes"):
        label_maps(_table([(1.0, 1.0, 3)]), shape=(8, 8), sampling_A=0.1, n_classes=2)
    with pytest.raises(ValueError, match="sampling_A"):
        label_maps(_table([(1.0, 1.0, 0)]), shape=(8, 8), sampling_A=0.0, n_classes=1)
    with pytest.raises(ValueError, match="sigma_A"):
        label_maps(_table([(1.0, 1.0, 0)]), shape=(8, 8), sampling_A=0.1, n_classes=1, sigma_A=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_labels_match_cpu():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand((8, 200, 2), generator=g) * 256
    cls = torch.randint(-1, 3, (8, 200), generator=g)
    cpu = render_labels(pts, cls, shape=(256, 256), n_classes=3, sigma_px=torch.linspace(5, 12, 8))
    gpu = render_labels(pts.cuda(), cls.cuda(), shape=(256, 256), n_classes=3, sigma_px=torch.linspace(5, 12, 8).cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)  # allows TF32 matmuls
