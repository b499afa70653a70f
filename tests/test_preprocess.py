"""Preprocessing: wire dtypes, resampling with its coordinate map, Madsen's local normalization."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from etem.tracker import preprocess
from etem.tracker.errors import ConfigError
from etem.tracker.locate import locate
from etem.tracker.preprocess import (
    PreprocessConfig, Preprocessor, coords_to_input, gaussian_filter, global_normalize,
    local_normalize, resample, stack_focal,
)

from _images import lattice, render


# --------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("scale", [0.5, 0.37, 1.6])
def test_resample_then_coords_to_input_round_trip(scale):
    shape = (256, 256)
    truth = lattice(shape, 16.0, 12, seed=1)
    fg = torch.tensor(render(truth, shape, 3.0), dtype=torch.float32)[None, None]
    small = resample(fg, scale)
    assert small.shape[-2:] == (int(256 * scale),) * 2
    (df,) = locate(torch.cat([1 - small, small], 1))
    found = coords_to_input(df, scale)[["y", "x"]].to_numpy()
    d = np.linalg.norm(found[:, None] - truth[None], axis=-1).min(1)
    assert len(found) == len(truth)
    assert d.max() < 0.1


def test_coords_to_input_pixel_centres():
    # Shrinking by 2: output pixel 0 covers input pixels 0 and 1, so its centre is at 0.5.
    np.testing.assert_allclose(coords_to_input(np.array([0.0, 1.0]), 0.5), [0.5, 2.5])
    t = coords_to_input(torch.tensor([[0.0, 3.0]]), 2.0)
    torch.testing.assert_close(t, torch.tensor([[-0.25, 1.25]]))
    df = pd.DataFrame({"y": [0.0], "x": [1.0], "cls": [1], "prob": [0.9]})
    out = coords_to_input(df, 0.5)
    assert out.y[0] == 0.5 and out.x[0] == 2.5 and out.cls[0] == 1 and df.y[0] == 0.0


@pytest.mark.parametrize("scale, white", [(0.5, True), (0.25, True), (0.37, False), (0.8, False)])
def test_shrinking_integrates_pixel_areas_so_noise_stays_white(scale, white):
    """A frame taken with pixels finer than the model's is shrunk as a camera with the model's
    pixels would have recorded it: each output pixel the mean over its area. White noise stays
    white (whole-number factors) and loses variance as a mean of 1/scale² pixels; an
    antialiased bilinear shrink correlated neighbours by 0.3, which the networks read as columns."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 512, 512, generator=g)
    y = resample(x, scale)
    assert y.shape[-2:] == (int(512 * scale),) * 2
    d = y - y.mean()
    corr = float((d[..., 1:] * d[..., :-1]).mean() / (d * d).mean())
    corr_y = float((d[..., 1:, :] * d[..., :-1, :]).mean() / (d * d).mean())
    if white:
        assert abs(corr) < 0.02 and abs(corr_y) < 0.02
        assert float(y.var()) == pytest.approx(scale**2, rel=0.05)
    else:  # an input pixel split between two output pixels correlates them a little
        assert corr < 0.2 and corr_y < 0.2
    # a ramp (each pixel's value its own x) comes out as each output pixel's centre, in input
    # pixels: (i + 0.5) / scale - 0.5, within the pixelation of a split input pixel
    ramp = torch.arange(512, dtype=torch.float32).expand(1, 1, 8, 512)
    out = resample(ramp, scale)[0, 0, 0]
    centres = (torch.arange(out.numel()) + 0.5) / scale - 0.5
    torch.testing.assert_close(out, centres, atol=0.0 if white else 0.13, rtol=1e-6)


def test_resample_identity_and_bad_scale():
    x = torch.rand(1, 1, 8, 8)
    assert resample(x, 1.0) is x
    for bad in (0.0, -1.0, 0.01):
        with pytest.raises(ConfigError):
            resample(x, bad)


# --------------------------------------------------------------------------- filtering

@pytest.mark.parametrize("method", ["conv", "conv-torch", "fft"])
@pytest.mark.parametrize("sigma", [0.8, 3.0, 40.0])  # 40: the kernel is longer than the image
def test_gaussian_filter_matches_scipy_reflect(method, sigma, monkeypatch):
    """"conv" on a CPU is scipy's own correlate1d; "conv-torch" is the GPU's way (torch's
    convolution after mirroring), checked here on the CPU."""
    if method == "conv-torch":
        monkeypatch.setattr(preprocess, "SCIPY_ON_CPU", False)
        method = "conv"
    img = np.random.default_rng(2).normal(size=(2, 37, 53))
    ref = np.stack([ndi.gaussian_filter(i, sigma, mode="reflect", truncate=4.0) for i in img])
    out = gaussian_filter(torch.tensor(img, dtype=torch.float32), sigma, method=method)
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-6)


@pytest.mark.parametrize("method", ["conv", "fft"])
def test_local_normalize_matches_madsen_eqs_2_3(method):
    img = 50 + 10 * np.random.default_rng(3).normal(size=(64, 80))
    sigma = 6.0
    d = img - ndi.gaussian_filter(img, sigma, mode="reflect")
    ref = d / np.sqrt(ndi.gaussian_filter(d * d, sigma, mode="reflect") + 1e-3 * img.var())
    out = local_normalize(torch.tensor(img, dtype=torch.float32)[None], sigma, method=method)[0]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(512, 512), (300, 220), (37, 500)])  # whole blocks, not, kernel > image
@pytest.mark.parametrize("sigma", [15.0, 40.0, 60.0, 200.0])
def test_wide_gaussian_on_a_coarse_grid_matches_scipy(shape, sigma):
    """method="auto" blurs wide Gaussians (the local normalization's) on block means: it stays
    within 3e-4 of the image's range of scipy's full-resolution filter, edges included."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 100 + 30 * np.cos(yy / 2.3) * np.cos(xx / 2.1) + 20 * (xx > 150) + rng.normal(0, 5, shape)
    ref = ndi.gaussian_filter(img, sigma, mode="reflect", truncate=4.0)
    out = gaussian_filter(torch.tensor(img, dtype=torch.float32)[None], sigma)[0].numpy()
    assert np.abs(out - ref).max() < 3e-4 * np.ptp(img)
    exact = local_normalize(torch.tensor(img, dtype=torch.float32)[None], sigma, method="fft")
    fast = local_normalize(torch.tensor(img, dtype=torch.float32)[None], sigma)
    assert float((fast - exact).abs().max()) < 5e-3  # the output has unit variance


def test_local_normalize_flat_region_has_zero_mean_unit_variance():
    img = np.random.default_rng(4).normal(1000.0, 30.0, size=(256, 256))
    out = local_normalize(torch.tensor(img, dtype=torch.float32)[None, None], 8.0).numpy()
    assert abs(out.mean()) < 0.02
    assert 0.95 < out.var() < 1.05
    assert np.all(local_normalize(torch.full((1, 16, 16), 7.0), 3.0).numpy() == 0)


@pytest.mark.parametrize("method", ["conv", "fft"])
def test_local_normalize_is_shift_equivariant_and_affine_invariant(method):
    rng = np.random.default_rng(5)
    img = ndi.gaussian_filter(rng.normal(size=(160, 160)), 4) + 0.1 * rng.normal(size=(160, 160))
    x = torch.tensor(img, dtype=torch.float32)
    sigma, margin = 3.0, 2 * 13  # two kernel radii: the mean, then the variance filter
    full = local_normalize(x[None], sigma, method=method)[0]
    a, b, h, w = 17, 29, 100, 110
    crop = local_normalize(x[None, a:a + h, b:b + w], sigma, method=method)[0]
    torch.testing.assert_close(
        crop[margin:-margin, margin:-margin],
        full[a + margin:a + h - margin, b + margin:b + w - margin], atol=1e-4, rtol=1e-4,
    )
    scaled = local_normalize(3.5 * x[None] - 20, sigma, method=method)[0]
    torch.testing.assert_close(scaled, full, atol=1e-4, rtol=1e-4)


def test_global_normalize():
    x = 5 + 2 * torch.randn(2, 3, 32, 32)
    out = global_normalize(x)
    torch.testing.assert_close(out.mean((-2, -1)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var((-2, -1), correction=0), torch.ones(2, 3), atol=2e-3, rtol=0)


# --------------------------------------------------------------------------- batching

def test_stack_focal():
    single = [np.zeros((8, 9)), np.ones((8, 9))]
    assert stack_focal(single).shape == (2, 1, 8, 9)
    series = [np.zeros((3, 8, 9))] * 4
    assert stack_focal(series).shape == (4, 3, 8, 9)
    with pytest.raises(ConfigError, match="same F, H and W"):
        stack_focal([np.zeros((3, 8, 9)), np.zeros((2, 8, 9))])
    with pytest.raises(ConfigError):
        stack_focal([])


WIRE = {
    "uint8": [0, 7, 255],
    "uint16": [0, 40000, 65535],
    "int16": [-32768, -5, 32767],
    "uint32": [0, 70000, 4_000_000_000],
    "float32": [-1.5, 0.0, 3.25],
}


@pytest.mark.parametrize("dtype", sorted(WIRE))
def test_every_wire_dtype_is_accepted(dtype):
    values = np.array(WIRE[dtype], dtype=dtype)
    img = np.resize(values, (12, 16)).astype(dtype)
    batch, scales = Preprocessor(PreprocessConfig(normalize="none"))([img, img[None]], [0.1, None])
    assert batch.dtype == torch.float32 and batch.shape == (2, 1, 12, 16) and scales == [1.0, 1.0]
    np.testing.assert_array_equal(batch[0, 0].numpy(), img.astype(np.float32))
    out, _ = Preprocessor()([img], [0.1])  # local normalization, the default
    assert torch.isfinite(out).all()


def test_big_endian_input():
    img = np.arange(12 * 16, dtype=">u2").reshape(12, 16)
    batch, _ = Preprocessor(PreprocessConfig(normalize="none"))([img])
    np.testing.assert_array_equal(batch[0, 0].numpy(), img.astype(np.float32))


def test_nan_raises_a_clear_error():
    img = np.ones((16, 16), np.float32)
    img[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Preprocessor()([np.zeros((16, 16), np.float32), img], [0.1, 0.1])
    # frames the caller has already checked (the pipeline, on arrival) are not scanned again
    batch, _ = Preprocessor(PreprocessConfig(normalize="none"))([img], [0.1], finite=True)
    assert torch.isnan(batch).sum() == 1


def test_resampling_to_the_target_sampling():
    pre = Preprocessor(PreprocessConfig(target_sampling=0.1))
    batch, scales = pre([np.random.rand(200, 240).astype(np.float32)] * 2, [0.05, 0.05])
    assert batch.shape == (2, 1, 100, 120) and scales == [0.5, 0.5]
    with pytest.raises(ConfigError, match="same shape|same F, H and W"):
        pre([np.zeros((200, 200), np.float32)] * 2, [0.05, 0.08])
    with pytest.raises(ConfigError, match="sampling"):
        pre([np.zeros((200, 200), np.float32)], [None])


def test_frames_within_the_as_is_range_go_in_as_they_are(caplog):
    """Resampling by a small factor, or enlarging, smooths the noise, which some networks read as
    columns: within ``as_is`` (a card's ``inference.as_is_ratio``) frames go in as they are;
    elsewhere, and without it, they are resampled."""
    img = np.random.rand(200, 240).astype(np.float32)
    pre = Preprocessor(PreprocessConfig(target_sampling=0.2, as_is=(0.9, 2.0)))
    for sampling, shape in ((0.21, (200, 240)), (0.19, (200, 240)), (0.24, (200, 240)), (0.1, (100, 120)),
                            (0.5, (500, 600))):
        batch, scales = pre([img], [sampling])
        assert batch.shape[-2:] == shape, sampling
    assert "coarser" not in caplog.text  # (up to 1.2x: as they are, nothing to say)
    pre([img], [0.4])  # 2x coarser: as it is, and said once, with what it costs and how to enlarge
    batch, _ = pre([img], [0.3])
    assert batch.shape[-2:] == (200, 240) and caplog.text.count("2.0x coarser than the model's 0.2 Å/px") == 1
    assert "coarser" in caplog.text and "1.5x coarser" not in caplog.text and "as_is = [1, 1]" in caplog.text
    enlarged = Preprocessor(PreprocessConfig(target_sampling=0.2, as_is=(1.0, 1.0)))
    assert enlarged([img], [0.3])[0].shape[-1] > 350  # enlarged 1.5x: what the warning's advice does
    plain = Preprocessor(PreprocessConfig(target_sampling=0.2))
    assert plain([img], [0.21])[0].shape[-2:] != (200, 240)  # (no as_is: resampled, as before)
    with pytest.raises(ConfigError, match="as_is"):
        PreprocessConfig(as_is=(1.2, 2.0))


def test_shape_mismatch_and_unknown_sampling():
    with pytest.raises(ConfigError):
        Preprocessor()([np.zeros((16, 16)), np.zeros((16, 18))], [0.1, 0.1])
    with pytest.raises(ConfigError, match="normalize='global'"):
        Preprocessor()([np.zeros((16, 16))], [None])
    batch, _ = Preprocessor(PreprocessConfig(normalize="global"))([np.random.rand(16, 16)], [None])
    assert batch.shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="not a real number type"):
        Preprocessor()([np.zeros((4, 4), bool)], [0.1])


@pytest.mark.parametrize("kw", [{"normalize": "loc"}, {"target_sampling": 0}, {"sigma_A": -1}, {"eps": -1}])
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kw)


def test_a_batch_mixing_dtypes_and_pixel_sizes_is_each_frame_alone():
    """Frames of one shape, dtype and pixel size are sent and normalized together; a batch that
    mixes them gives every frame what it gets alone, in the batch's order."""
    rng = np.random.default_rng(3)
    imgs = [(rng.random((64, 80)) * 3000).astype(dt) for dt in (np.uint16, np.float32, np.uint16, ">f8")]
    sampling = [0.1, 0.1, 0.1, 0.1]
    pre = Preprocessor(PreprocessConfig(target_sampling=0.1))
    batch, scales = pre(imgs, sampling)
    assert batch.shape == (4, 1, 64, 80) and scales == [1.0] * 4 and pre.raw is None  # three groups
    for i, img in enumerate(imgs):
        alone, _ = pre([img], [sampling[i]])
        torch.testing.assert_close(batch[i], alone[0], rtol=0, atol=0)
        np.testing.assert_array_equal(pre.raw[0].numpy(), img.astype(np.float32))  # as sent
    one, _ = pre(imgs[:1] * 3, [0.1] * 3)
    assert pre.raw.shape == (3, 64, 80)  # one group: the frames as sent are kept for the quality figures


def test_local_normalization_of_a_batch_is_that_of_each_image():
    """What a GPU runs (the whole batch in one call) equals the frames one by one (the CPU's way)."""
    x = torch.tensor(np.random.default_rng(4).random((3, 2, 70, 90)), dtype=torch.float32) * 100
    whole = local_normalize(x, 20.0)
    for i in range(3):
        torch.testing.assert_close(whole[i:i + 1], local_normalize(x[i:i + 1], 20.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(global_normalize(x)[1:2], global_normalize(x[1:2]), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", sorted(WIRE) + [">u2", "float64", "uint64"])
def test_frames_sent_to_the_gpu_arrive_as_on_the_cpu(dtype):
    """The GPU path gathers a batch into one pinned buffer in the wire dtype and converts on the
    device: the same floats as the CPU path's conversion."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    values = np.array(WIRE.get(dtype, [0, 40000, 65535]), dtype=np.dtype(dtype).newbyteorder("="))
    imgs = [np.resize(values, (12, 16)).astype(dtype), np.resize(values[::-1], (12, 16)).astype(dtype)]
    cfg = PreprocessConfig(normalize="none")
    gpu, _ = Preprocessor(cfg, device="cuda")(imgs)
    cpu, _ = Preprocessor(cfg)(imgs)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)
    out, _ = Preprocessor(PreprocessConfig(), device="cuda")(imgs, [0.1, 0.1])
    ref, _ = Preprocessor(PreprocessConfig())(imgs, [0.1, 0.1])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
