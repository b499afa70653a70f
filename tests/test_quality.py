"""Per-frame image quality: SNR, dose and resolution from the power spectrum."""
import numpy as np
import pytest
import torch

from etem.simulate.toy import make_movie
from etem.tracker.quality import QUALITY_COLUMNS, measure


def _frames(**kw):
    kw.setdefault("shape", (192, 192))
    m = make_movie(n_frames=2, **kw)
    return m.frames, m.sampling


def test_snr_and_dose_follow_the_dose():
    figures = []
    for dose in (20, 200, 2000):
        frames, s = _frames(dose_per_frame=dose, seed=1)
        q = measure(frames, s)
        assert q.shape == (2, len(QUALITY_COLUMNS)) and np.isfinite(q).all()
        # for a counting image the estimate is the detected counts per Å²
        detected = frames.mean() / s ** 2
        assert q[:, 1].mean() == pytest.approx(detected, rel=0.15)
        figures.append(q.mean(axis=0))
    snr = [f[0] for f in figures]
    assert snr[0] < snr[1] < snr[2]
    assert snr[2] / snr[1] == pytest.approx(10, rel=0.35)  # noise variance falls as 1/dose


def test_resolution_follows_the_column_width():
    sharp = measure(*_frames(column_sigma_A=0.35, dose_per_frame=3000, seed=2))[:, 2].mean()
    blurred = measure(*_frames(column_sigma_A=1.0, dose_per_frame=3000, seed=2))[:, 2].mean()
    assert sharp < blurred
    assert 0.4 < sharp < 2.0  # Å


def test_snr_is_per_area_so_a_finer_pixel_is_not_a_noisier_image():
    a = measure(*_frames(sampling=0.1, shape=(192, 192), dose_per_frame=500, seed=3))[:, 0].mean()
    b = measure(*_frames(sampling=0.3, shape=(192, 192), dose_per_frame=500, seed=3))[:, 0].mean()
    assert a / b == pytest.approx(1, abs=0.6)  # per pixel they differ ninefold


def test_unknown_sampling_gives_pixel_units_and_tensor_input_matches_arrays():
    # (at pixels of 0.25 Å and coarser the signal band is the Nyquist circle, as without a sampling)
    frames, s = _frames(seed=4, sampling=0.3)
    q_px = measure(frames, None)
    q = measure(torch.from_numpy(frames), s)
    assert q_px[:, 0] / s ** 2 == pytest.approx(q[:, 0], rel=1e-6)
    assert q_px[:, 2] * s == pytest.approx(q[:, 2], rel=1e-6)
    assert measure(list(frames), [s, s]) == pytest.approx(q, rel=1e-6)


def test_weak_contrast_at_fine_pixels_is_measured_above_the_noise_estimate_s_error():
    # a weak-phase-like image (15 % modulation at 2 Å spacings) at 0.1 Å/px, 300 e/Å²: its SNR
    # per Å² is small, and must not drown in the error of the noise estimate, which outside
    # the signal band would be counted once per pixel
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:256, :256] * 0.1
    image = 1 + 0.15 * np.cos(2 * np.pi * x / 2.0) * np.cos(2 * np.pi * y / 2.0)
    per_px = 300 * 0.1 ** 2
    frames = (rng.poisson(image * per_px, (32, 256, 256)) / per_px).astype(np.float32)
    snr = measure(frames, 0.1)[:, 0]
    truth = np.var(image) / (1 / per_px) / 0.1 ** 2  # signal variance over the noise of 1 Å²
    assert np.median(snr) == pytest.approx(truth, rel=0.25)
    assert snr.std() < 0.45 * truth  # a 26 Å field at this dose holds no more


def test_a_flat_or_pure_noise_frame_does_not_break_it():
    q = measure(np.random.default_rng(0).poisson(50, (2, 128, 128)).astype(np.float32), 0.1)
    assert np.all(q[:, 0] < 10.0) and np.all(q[:, 2] > 2.0)  # lattice frames: ~100 and ~1 Å
    q = measure(np.zeros((1, 64, 64), np.float32), 0.1)
    assert np.isfinite(q[0, 0])


@pytest.mark.gpu
def test_the_same_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    frames, s = _frames(seed=5)
    assert measure(torch.from_numpy(frames).cuda(), s) == pytest.approx(measure(frames, s), rel=1e-3)


def test_a_batch_of_several_pixel_sizes_gives_each_frame_its_own_figures():
    """One pixel size per batch takes the batch's noise in one go; mixed ones each their own
    band: either way every frame gets what it gets alone."""
    frames, s = _frames(dose_per_frame=300, seed=5)
    both = measure(frames, [s, 2 * s])
    np.testing.assert_allclose(both[0], measure(frames[:1], s)[0], rtol=1e-6)
    np.testing.assert_allclose(both[1], measure(frames[1:], 2 * s)[0], rtol=1e-6)
    assert both[1, 2] != both[0, 2]  # resolution in Å follows the pixel size
    np.testing.assert_allclose(measure(frames, s), np.vstack([measure(f[None], s) for f in frames]), rtol=1e-6)
