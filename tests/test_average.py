"""Registered running average of frames (low-dose movies)."""
import numpy as np
import pytest
import torch
from scipy.ndimage import shift as nd_shift

from etem.simulate.toy import make_movie
from etem.tracker import track
from etem.tracker.average import FrameAverager, phase_shift
from etem.tracker.config import PipelineConfig
from etem.tracker.errors import ConfigError
from etem.tracker.evaluate import score_columns
from etem.tracker.frames import Frame
from etem.tracker.preprocess import PreprocessConfig


def lattice_image(shape=(128, 128), spacing=12.0, sigma=2.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    for cy in np.arange(10, shape[0] - 10, spacing):
        for cx in np.arange(10, shape[1] - 10, spacing):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return img


@pytest.mark.parametrize("d", [(0.3, -0.7), (2.5, 4.25), (-6.6, 1.1)])
def test_phase_shift_recovers_shifts_through_shot_noise(d):
    rng = np.random.default_rng(1)
    clean = 2 + lattice_image()
    a = rng.poisson(20 * nd_shift(clean, d, order=3, mode="nearest"))  # ~40-60 counts per px
    b = rng.poisson(20 * clean)
    dy, dx = phase_shift(a, b)
    assert abs(dy - d[0]) < 0.2 and abs(dx - d[1]) < 0.2


def test_phase_shift_needs_two_images_of_one_shape():
    with pytest.raises(ConfigError, match="one shape"):
        phase_shift(np.zeros((8, 8)), np.zeros((8, 9)))


def test_averager_aligns_onto_the_newest_frame_and_lowers_the_noise():
    rng = np.random.default_rng(2)
    clean = 2 + lattice_image()
    av = FrameAverager(4)
    drift = np.array([0.6, -0.4])  # px per frame
    outs, cleans = [], []
    for i in range(6):
        c = nd_shift(clean, drift * i, order=3, mode="nearest")
        cleans.append(c)
        outs.append(av(Frame(image=rng.poisson(10 * c).astype(np.float32) / 10, frame=i, sampling=0.1, dose=50.0)))
    assert [o.meta["averaged_frames"] for o in outs] == [1, 2, 3, 4, 4, 4]
    assert outs[-1].dose == 200.0 and outs[-1].frame == 5
    inner = (slice(16, -16), slice(16, -16))
    err1 = np.std((outs[0].image - cleans[0])[inner])
    err4 = np.std((outs[-1].image - cleans[-1])[inner])  # against the newest frame's clean image
    assert err4 < 0.65 * err1  # four frames: half the noise, if they are aligned
    est = np.array([s[1:] for s in av.shifts])  # 20-30 counts per pixel: a fraction of a pixel off
    assert np.abs(est - drift).max() < 0.25 and np.abs(est - drift).mean() < 0.12


def test_averager_one_frame_is_the_identity_and_shape_changes_restart_it():
    f = Frame(image=np.ones((16, 16), np.float32), frame=0)
    assert FrameAverager(1)(f) is f
    av = FrameAverager(3)
    av(f)
    out = av(Frame(image=np.ones((2, 16, 16), np.float32), frame=1))  # now a focal series
    assert out.meta["averaged_frames"] == 1 and out.image.shape == (2, 16, 16)
    with pytest.raises(ConfigError, match="average_frames"):
        FrameAverager(0)
    with pytest.raises(ConfigError, match="average_frames"):
        PreprocessConfig(average_frames=2.5)


def test_tracking_a_low_dose_drifting_movie_on_averaged_frames():
    """20 e/Å² per frame and 0.3-0.45 Å drift per frame: one frame alone gives F1 ~0.7; four
    registered frames ~0.98; four frames not registered are smeared by the drift."""
    m = make_movie(n_frames=20, shape=(128, 128), particle_radius_A=8, dose_per_frame=20,
                   drift_A_per_frame=(0.3, 0.45), hop_rate=0.0, exchange_rate=0.0, seed=2)
    truth = m.truth.positions[m.truth.positions["frame"] >= 3]

    def f1(n, register=True):
        cfg = PipelineConfig(preprocess=PreprocessConfig(average_frames=n, average_register=register))
        res = track(m.frames, sampling=m.sampling, classical=True, config=cfg)
        cols = res.columns[res.columns["frame"] >= 3]
        return score_columns(cols, truth, radius_px=1 / m.sampling, sampling=m.sampling)["f1"]

    one, four, smeared = f1(1), f1(4), f1(4, register=False)
    assert four > 0.95 and four > one + 0.15
    assert smeared < one


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_averager_on_the_gpu_agrees_with_the_cpu():
    rng = np.random.default_rng(5)
    clean = 2 + lattice_image()
    frames = [rng.poisson(10 * nd_shift(clean, (0.4 * i, -0.3 * i), order=3, mode="nearest")).astype(np.float32)
              for i in range(5)]
    outs = {}
    for device in ("cpu", "cuda"):
        av = FrameAverager(3, device=device)
        outs[device] = [av(Frame(image=f, frame=i, sampling=0.1)).image for i, f in enumerate(frames)]
    for a, b in zip(outs["cpu"], outs["cuda"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
