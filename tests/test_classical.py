"""The classical (Laplacian-of-Gaussian) engine on noisy synthetic lattices with known positions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from etem.tracker.classical import (
    DEFAULT_THRESHOLD,
    ClassicalEngine,
    _log_kernel_energy,
    column_width_px,
    find_columns_classical,
    log_response,
    white_noise_variance,
)
from etem.tracker.engines.base import Engine
from etem.tracker.errors import ConfigError
from etem.tracker.locate import LocateConfig, locate
from etem.tracker.preprocess import PreprocessConfig, Preprocessor, coords_to_input

from _images import lattice, render

SHAPE = (256, 256)


def counts_image(contrast, *, counts, background, sigma, seed, shape=SHAPE, spacing=10.0):
    """Poisson image of a lattice whose columns hold ``counts`` electrons more (bright) or
    fewer (dark) than the ``background`` [counts/px]; returns (image, true positions)."""
    truth = lattice(shape, spacing, 8, seed)
    col = render(truth, shape, sigma, counts / (2 * np.pi * sigma**2))
    lam = background + col if contrast == "bright" else np.clip(background - col, 0, None)
    return np.random.default_rng(seed).poisson(lam).astype(np.uint16), truth


def scores(found, truth, tol=2.0):
    """(F1, RMS [px]) with one-to-one nearest-neighbour matching within ``tol``."""
    if len(found) == 0:
        return 0.0, np.nan
    d, i = cKDTree(truth).query(found, distance_upper_bound=tol)
    ok = np.isfinite(d)
    tp = len(set(i[ok]))
    f1 = 2 * tp / (len(found) + len(truth))
    return f1, float(np.sqrt(np.mean(d[ok] ** 2)))


def test_is_an_engine():
    engine = ClassicalEngine()
    assert isinstance(engine, Engine)
    assert (engine.name, engine.n_inputs, engine.class_names, engine.sampling) == ("classical", 1, ("column",), None)
    assert engine.device == torch.device("cpu")


@pytest.mark.parametrize("contrast, counts, background, sigma", [
    ("bright", 300, 2.0, 1.5),   # HAADF-like: 300 e- per column over 2 e-/px
    ("bright", 500, 10.0, 2.0),
    ("dark", 500, 40.0, 1.5),    # columns that take 500 e- out of a 40 e-/px beam
])
def test_finds_columns_in_poisson_noise(contrast, counts, background, sigma):
    img, truth = counts_image(contrast, counts=counts, background=background, sigma=sigma, seed=1)
    df = find_columns_classical(img, column_sigma_px=sigma, contrast=contrast)
    f1, rms = scores(df[["y", "x"]].to_numpy(), truth)
    print(f"\n{contrast} {counts} e- over {background} e-/px, sigma {sigma} px: "
          f"{len(df)}/{len(truth)} found, F1 {f1:.4f}, RMS {rms:.3f} px")
    assert f1 >= 0.98
    assert rms < 0.3
    assert list(df.columns) == ["y", "x", "cls", "prob"] and (df["cls"] == 0).all()
    assert df["prob"].between(DEFAULT_THRESHOLD, 1).all()


def test_wrong_contrast_finds_the_gaps_not_the_columns():
    img, truth = counts_image("bright", counts=500, background=2.0, sigma=1.5, seed=2)
    df = find_columns_classical(img, column_sigma_px=1.5, contrast="dark")
    d, _ = cKDTree(truth).query(df[["y", "x"]].to_numpy())
    assert np.median(d) > 3


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "float32"])
def test_every_wire_dtype(dtype):
    img, truth = counts_image("bright", counts=300, background=2.0, sigma=1.5, seed=3, shape=(96, 96))
    ref = find_columns_classical(img.astype(np.float32), column_sigma_px=1.5)
    df = find_columns_classical(img.astype(dtype), column_sigma_px=1.5)
    np.testing.assert_allclose(df[["y", "x"]].to_numpy(), ref[["y", "x"]].to_numpy(), atol=1e-6)


def test_predict_is_a_probability_map_from_the_first_focal_image():
    img, _ = counts_image("bright", counts=300, background=2.0, sigma=1.5, seed=4, shape=(64, 80))
    engine = ClassicalEngine(1.5)
    x = torch.tensor(img, dtype=torch.float32)[None, None]
    probs = engine.predict(x)
    assert probs.shape == (1, 2, 64, 80) and probs.dtype == torch.float32
    assert probs.min() >= 0 and probs.max() <= 1
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 80))
    series = torch.cat([x, torch.rand(1, 2, 64, 80)], 1)  # a focal series: only the first counts
    torch.testing.assert_close(engine.predict(series), probs)
    # Offset and gain do not change the map (the kernel is zero-sum, the scaling relative).
    torch.testing.assert_close(engine.predict(3 * x + 100), probs, atol=1e-4, rtol=0)


def test_blank_image_gives_no_columns():
    assert len(find_columns_classical(np.full((32, 32), 5, np.uint16))) == 0


def test_with_preprocessing_and_resampling():
    # 0.05 Å/px frames run at 0.1 Å/px: columns come back in the input's pixels.
    img, truth = counts_image("bright", counts=1000, background=2.0, sigma=3.0, seed=5, spacing=20.0)
    pre = Preprocessor(PreprocessConfig(target_sampling=0.1, sigma_A=2.0))
    batch, (scale,) = pre([img], [0.05])
    probs = ClassicalEngine(1.5).predict(batch)
    (df,) = locate(probs, LocateConfig(threshold=DEFAULT_THRESHOLD))
    f1, rms = scores(coords_to_input(df, scale)[["y", "x"]].to_numpy(), truth)
    assert f1 >= 0.98 and rms < 0.3


def test_bad_arguments():
    with pytest.raises(ConfigError, match="'bright', 'dark'"):
        ClassicalEngine(contrast="grey")
    with pytest.raises(ConfigError):
        ClassicalEngine(column_sigma_px=0)
    with pytest.raises(ValueError, match="NaN"):
        find_columns_classical(np.full((8, 8), np.nan))


def test_few_columns_in_a_wide_noisy_field_are_not_swamped_by_noise_maxima():
    """Regression: a small particle in a large view, through the whole detection stage
    (local normalization lifted the vacuum's noise to the columns' level: 8,000+ false columns)."""
    from etem.tracker import find

    rng = np.random.default_rng(7)
    size, sigma = 1024, 2.25
    yy, xx = np.mgrid[:size, :size]
    centres = np.stack(np.meshgrid(np.arange(450, 560, 14.0), np.arange(450, 560, 14.0)), -1).reshape(-1, 2)
    img = np.zeros((size, size))
    for cy, cx in centres:
        img += 240.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    img = rng.poisson(img + 70.0).astype(np.float32)
    found = find(img, sampling=0.2)
    assert len(centres) == 64
    assert abs(len(found) - len(centres)) <= 2, len(found)


def test_faint_columns_beside_strong_ones_are_found_when_they_stand_out_of_the_noise():
    # half the columns ten times weaker than the others (thin surface columns beside thick ones)
    shape = (128, 128)
    truth = lattice(shape, 10.0, 8, 11)
    rng = np.random.default_rng(11)
    weak = rng.random(len(truth)) < 0.5
    amp = np.where(weak, 200.0, 2000.0) / (2 * np.pi * 1.5**2)
    lam = 2.0 + sum(render(truth[i:i + 1], shape, 1.5, a) for i, a in enumerate(amp))
    img = rng.poisson(lam).astype(np.float32)
    df = find_columns_classical(img, column_sigma_px=1.5)
    f1, rms = scores(df[["y", "x"]].to_numpy(), truth)
    assert f1 >= 0.95 and rms < 0.3
    # without the noise criterion only the strong half passes
    engine = ClassicalEngine(1.5, noise_sigmas=None)
    (old,) = locate(engine.predict(torch.from_numpy(img)[None, None]), LocateConfig(threshold=DEFAULT_THRESHOLD))
    assert len(old) < 0.7 * len(truth)


def test_noise_alone_does_not_pass_the_noise_criterion():
    img = np.random.default_rng(12).poisson(20.0, (128, 128)).astype(np.float32)
    engine = ClassicalEngine(1.5)
    resp = log_response(torch.from_numpy(img)[None], 1.5)
    scale = engine._scale(torch.from_numpy(img)[None], resp, engine._reference(resp))
    # the strongest noise maximum stays below 6 noise deviations: only the relative criterion
    # (the strongest maxima of an empty image, as before) can pass anything
    noise = (white_noise_variance(torch.from_numpy(img)[None]) * _log_kernel_energy(1.5, torch.device("cpu"))).sqrt()
    assert resp.max() < 6 * noise
    assert float(scale) == pytest.approx(float(engine._reference(resp)), rel=1e-6)


def test_white_noise_variance_is_measured():
    img = torch.from_numpy(np.random.default_rng(13).normal(5.0, 3.0, (1, 256, 256)).astype(np.float32))
    assert float(white_noise_variance(img)) == pytest.approx(9.0, rel=0.1)


@pytest.mark.parametrize("sigma, counts", [(1.5, 300), (4.0, 300), (8.0, 2000)])
def test_column_width_is_measured_on_the_image(sigma, counts):
    """Frames of unknown pixel size: the width comes from the image's autocorrelation, at any
    dose (shot noise adds to the zero lag only), within a fifth of the true width (the locator
    finds the columns within a third of it)."""
    for spacing in (4.5, 6.0):  # times the width (Au [110]: 4.5)
        img, _ = counts_image("bright", counts=counts, background=1.0, sigma=sigma, seed=3, spacing=spacing * sigma)
        assert 0.8 * sigma < column_width_px(img) < 1.25 * sigma
        # the same at a tenth of the dose (0.1 e- per px of background) and with dark columns
        faint, _ = counts_image("bright", counts=counts / 10, background=0.1, sigma=sigma, seed=4,
                                spacing=spacing * sigma)
        assert 0.8 * sigma < column_width_px(faint) < 1.25 * sigma
        dark, _ = counts_image("dark", counts=counts, background=counts / sigma**2, sigma=sigma, seed=5,
                               spacing=spacing * sigma)
        assert 0.8 * sigma < column_width_px(dark) < 1.25 * sigma


def test_column_width_is_none_where_the_image_shows_no_lattice():
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert column_width_px(rng.normal(size=(128, 128))) is None   # white noise
        assert column_width_px(rng.poisson(0.3, (256, 300))) is None  # counts, no columns
    assert column_width_px(np.full((64, 64), 7.0)) is None               # blank
    yy, xx = np.mgrid[:128, :128]
    assert column_width_px(yy + 0.5 * xx) is None                        # a ramp: no minimum
    assert column_width_px(np.zeros((8, 8))) is None                     # too small to measure


def test_find_measures_the_width_where_it_is_not_given():
    """Columns 6 px wide (0.075 Å/px): the 2 px filter of old found each column's noise
    bumps several times over; the measured width finds each column once."""
    img, truth = counts_image("bright", counts=3000, background=2.0, sigma=6.0, seed=6, spacing=27.0)
    found = find_columns_classical(img)
    f1, rms = scores(found[["y", "x"]].to_numpy(), truth)
    assert f1 >= 0.98 and rms < 0.5
    old = find_columns_classical(img, column_sigma_px=2.0)
    assert len(old) > 1.5 * len(truth)
