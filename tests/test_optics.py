"""Optics and the augmentation chain: agreement with abTEM, contrast transfer of a weak phase
object, detector MTF and blur, shot noise, geometry shared by images and labels, focal series,
seeds, devices."""
import math

import numpy as np
import pytest
import torch

from etem.simulate.augment import (
    AugmentConfig, detector_response, mtf, poisson_noise, sample_geometry, training_batch,
    transform_points, warp,
)
from etem.simulate.labels import positions_table, render_gaussians, render_labels
from etem.simulate.optics import (
    PRESETS, OpticsParams, OpticsRanges, ctf, haadf_object, image_from_waves, probe_intensity,
    stem_image, wavelength_A,
)
from etem.tracker.errors import ConfigError

abtem = pytest.importorskip("abtem")
ase = pytest.importorskip("ase")

E = 300e3


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------------------------
# Agreement with abTEM


@pytest.fixture(scope="module")
def exit_wave():
    """A real exit wave: three Au atoms in a periodic 8 x 9 Å cell, 300 kV, 0.05 Å sampling."""
    abtem.config.set({"diagnostics.progress_bar": False})
    atoms = ase.Atoms("Au3", positions=[(3.0, 3.0, 2.0), (5.5, 4.0, 2.0), (4.0, 6.5, 2.0)], cell=[8.0, 9.0, 4.0])
    potential = abtem.Potential(atoms, sampling=0.05, slice_thickness=1, parametrization="lobato")
    return abtem.PlaneWave(energy=E).multislice(potential).compute()


@pytest.mark.parametrize("energy", [80e3, 200e3, 300e3])
def test_wavelength_matches_abtem(energy):
    from abtem.core.energy import energy2wavelength
    assert wavelength_A(energy) == pytest.approx(energy2wavelength(energy), rel=1e-7)


CASES = {
    "coherence+astigmatism": dict(defocus=50.0, Cs=-1e5, astigmatism=30.0, astigmatism_angle=0.7, focal_spread=30.0),
    "with C5": dict(defocus=-120.0, Cs=1.5e5, C5=3e7, astigmatism=80.0, astigmatism_angle=2.1, focal_spread=25.0),
    "soft aperture": dict(defocus=-120.0, Cs=1.5e5, C5=3e7, astigmatism=80.0, astigmatism_angle=2.1,
                          focal_spread=25.0, semiangle_cutoff=25.0),
    "hard aperture": dict(defocus=90.0, Cs=-5e4, C5=1e7, astigmatism=10.0, astigmatism_angle=-1.0,
                          focal_spread=40.0, semiangle_cutoff=20.0, soft=False),
}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("case", list(CASES))
def test_image_agrees_with_abtem_apply_ctf(exit_wave, case, dtype):
    kw = CASES[case]
    reference = exit_wave.apply_ctf(abtem.CTF(**kw)).intensity().compute().array
    params = OpticsParams.constant(
        1, defocus_A=kw["defocus"], Cs_A=kw["Cs"], C5_A=kw.get("C5", 0.0), astigmatism_A=kw["astigmatism"],
        astigmatism_angle_rad=kw["astigmatism_angle"], focal_spread_A=kw["focal_spread"],
    )
    ours = image_from_waves(
        torch.from_numpy(exit_wave.array).to(dtype)[None], sampling_A=exit_wave.sampling, energy_eV=E,
        params=params, semiangle_cutoff_mrad=kw.get("semiangle_cutoff", math.inf), soft_aperture=kw.get("soft", True),
    )[0, 0].numpy()
    assert ours.shape == reference.shape
    err = _relerr(ours, reference)
    print(f"{case} ({dtype}): relative error vs abTEM {err:.2e}; "
          f"relative to the contrast {np.linalg.norm(ours - reference) / np.linalg.norm(reference - reference.mean()):.2e}")
    assert err < 1e-4
    # The contrast, not just the vacuum level, must agree.
    assert np.linalg.norm(ours - reference) < 1e-3 * np.linalg.norm(reference - reference.mean())


def test_probe_agrees_with_abtem_probe():
    kw = dict(defocus=20.0, Cs=3e4, astigmatism=5.0, astigmatism_angle=0.4)
    probe = abtem.Probe(semiangle_cutoff=25, energy=E, gpts=(128, 96), sampling=0.05, **kw)
    reference = probe.build(scan=(0.0, 0.0)).compute().intensity().array
    reference = reference / reference.sum()
    params = OpticsParams.constant(1, defocus_A=20.0, Cs_A=3e4, astigmatism_A=5.0, astigmatism_angle_rad=0.4,
                                   probe_semiangle_mrad=25.0)
    ours = probe_intensity((128, 96), sampling_A=0.05, energy_eV=E, params=params)[0, 0].numpy()
    assert _relerr(ours, reference) < 1e-4


# --------------------------------------------------------------------------------------------
# Contrast transfer of a weak phase object


def _chi(k0: float, k1: float, *, defocus, Cs, C5, astig, astig_angle, energy=E) -> float:
    """Closed-form aberration phase at one frequency [1/Å], written independently of the module."""
    lam = wavelength_A(energy)
    k, phi = math.hypot(k0, k1), math.atan2(k1, k0)
    a = lam * k
    return 2 * math.pi / lam * (a**2 / 2 * (-defocus + astig * math.cos(2 * (phi - astig_angle)))
                                + a**4 / 4 * Cs + a**6 / 6 * C5)


# Both signs of sin(chi); (10, 10) / (10, -10) tell the astigmatism angle's sense apart and
# (15, 0) / (0, 15) the axes.
@pytest.mark.parametrize("m0, m1", [(3, 0), (0, 5), (4, 7), (9, -2), (10, 10), (10, -10), (5, -14), (15, 0), (0, 15)])
def test_weak_phase_object_transfers_sin_chi(m0, m1):
    n, s, sigma = 128, 0.1, 1e-3
    ab = dict(defocus=-60.0, Cs=-2e5, C5=4e7, astig=40.0, astig_angle=0.9)
    spread = 25.0
    k0, k1 = m0 / (n * s), m1 / (n * s)  # exactly on the FFT grid
    r0 = torch.arange(n, dtype=torch.float64)[:, None] * s
    r1 = torch.arange(n, dtype=torch.float64)[None, :] * s
    phase = sigma * torch.cos(2 * math.pi * (k0 * r0 + k1 * r1))
    waves = torch.polar(torch.ones_like(phase), phase)[None]
    params = OpticsParams.constant(1, defocus_A=ab["defocus"], Cs_A=ab["Cs"], C5_A=ab["C5"],
                                   astigmatism_A=ab["astig"], astigmatism_angle_rad=ab["astig_angle"],
                                   focal_spread_A=spread)
    image = image_from_waves(waves, sampling_A=s, energy_eV=E, params=params)[0, 0]
    measured = torch.fft.fft2(image)[m0 % n, m1 % n].real.item() / n**2
    lam = wavelength_A(E)
    envelope = math.exp(-((0.5 * math.pi * lam * spread * (k0**2 + k1**2)) ** 2))
    expected = sigma * math.sin(_chi(k0, k1, **ab)) * envelope
    assert abs(expected) > 0.03 * sigma  # the case is informative
    assert abs(measured - expected) < 0.01 * sigma


def test_positive_defocus_is_underfocus():
    params = OpticsParams.constant(1, defocus_A=100.0)
    kernel = ctf((64, 64), sampling_A=0.1, energy_eV=E, params=params)
    lam = wavelength_A(E)
    k = 1 / 6.4  # grid frequency (1, 0)
    assert torch.angle(kernel[0, 0, 1, 0]).item() == pytest.approx(math.pi * lam * 100.0 * k**2, rel=1e-5)


def test_image_shift_is_a_periodic_translation():
    g = torch.Generator().manual_seed(2)
    waves = torch.polar(torch.ones(2, 40, 48), 0.3 * torch.rand((2, 40, 48), generator=g))
    params = OpticsRanges().sample(2, g)
    shift = torch.tensor([[[0.0, 0.0], [0.3, -0.5]], [[0.0, 0.0], [-1.2, 0.7]]])  # [B, F, 2] Å at 0.1 Å/px
    args = dict(sampling_A=0.1, energy_eV=E, params=params, focal_offsets_A=(0.0, 0.0))
    plain = image_from_waves(waves, **args)
    moved = image_from_waves(waves, image_shift_A=shift, **args)
    assert torch.equal(moved[:, 0], plain[:, 0])
    for b in range(2):
        expected = torch.roll(plain[b, 1], [round(v) for v in (shift[b, 1] / 0.1).tolist()], (0, 1))
        assert torch.allclose(moved[b, 1], expected, atol=1e-5)
    with pytest.raises(ValueError, match="image_shift_A must be"):
        image_from_waves(waves, image_shift_A=shift[:, :1], **args)


# --------------------------------------------------------------------------------------------
# Detector and noise


def test_mtf_formula_values():
    q = torch.tensor([0.0, 0.5, 1.0, 1e6])
    got = mtf(q, c1=0.1, c2=0.5, c3=2.0)
    np.testing.assert_allclose(got.numpy(), [1.0, 0.9 / 1.25 + 0.1, 0.55, 0.1], rtol=1e-6)
    assert mtf(torch.tensor(2 * 0.45), c1=0.05, c2=0.45, c3=2.7).item() == pytest.approx(0.525)


def _cosine_image(n=64, f=(0, 8)):
    r = torch.arange(n, dtype=torch.float32)
    return 1 + 0.2 * torch.cos(2 * math.pi * (f[0] * r[:, None] + f[1] * r[None, :]) / n)


def test_detector_response_scales_a_cosine_by_mtf_and_blur():
    n, f = 64, (0, 8)  # 1/8 cycles/px: q = 0.25 Nyquist
    img = _cosine_image(n, f)[None, None]
    params = OpticsParams.constant(1, mtf_c1=0.05, mtf_c2=0.45, mtf_c3=2.5, blur_A=0.3)
    out = detector_response(img, pixel_size_A=0.2, params=params)[0, 0]
    amp = torch.fft.fft2(out)[0, 8].abs().item() / (n**2 / 2)
    fq = 8 / n
    expected = 0.2 * mtf(torch.tensor(2 * fq), c1=0.05, c2=0.45, c3=2.5).item()
    expected *= math.exp(-2 * math.pi**2 * (0.3 / 0.2) ** 2 * fq**2)
    assert amp == pytest.approx(expected, rel=1e-4)
    assert out.mean().item() == pytest.approx(1.0, abs=1e-5)


def test_poisson_noise_mean_and_variance_match_the_dose():
    g = torch.Generator().manual_seed(1)
    img = torch.full((4, 1, 256, 256), 0.7)
    dose, px = 50.0, 0.2  # 1.4 electrons per pixel on average
    out = poisson_noise(img, dose_e_per_A2=torch.full((4,), dose), pixel_size_A=px, generator=g)
    counts = out * dose * px**2
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    n = out.numel()
    assert abs(out.mean().item() - 0.7) < 4 * math.sqrt(0.7 / (dose * px**2) / n)
    assert out.var().item() == pytest.approx(0.7 / (dose * px**2), rel=0.03)
    clean = poisson_noise(img, dose_e_per_A2=torch.full((4,), math.inf), pixel_size_A=px, generator=g)
    assert torch.equal(clean, img)


# --------------------------------------------------------------------------------------------
# Geometry: images and labels together


def _columns_scene(b=4, n=96, seed=0):
    """Gaussian columns of two classes (sigma 1 Å at 0.1 Å/px) as a [B, 1, H, W] 'intensity'."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand((b, 12, 2), generator=g) * n
    cls = torch.randint(0, 2, (b, 12), generator=g)
    # Periodic, like an exit wave: render the nearest periodic images too.
    images = torch.tensor([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=torch.float32) * n
    all_pts = (pts[:, None] + images[None, :, None]).reshape(b, -1, 2)
    scene = render_labels(all_pts, cls.repeat(1, 9), shape=(n, n), n_classes=2, sigma_px=10.0)
    return scene, pts, cls


def _onehot(cls: torch.Tensor, k: int = 2) -> torch.Tensor:
    return (cls[..., None] == torch.arange(k)).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometry_keeps_columns_on_their_labels(seed):
    n, s_src, s_out, out = 96, 0.1, 0.12, (80, 72)
    scene, pts, cls = _columns_scene(n=n, seed=seed)
    cfg = AugmentConfig(out_shape=out, out_sampling_A=s_out, zoom=(0.8, 1.25), n_classes=2)
    g = torch.Generator().manual_seed(100 + seed)
    geo = sample_geometry(4, src_shape=(n, n), src_sampling_A=s_src, config=cfg, generator=g)
    p, c = transform_points(pts, cls, geo, src_shape=(n, n), src_sampling_A=s_src, out_shape=out,
                            out_sampling_A=s_out, margin_px=40)
    sigma_out = 1.0 / (s_out * geo.zoom)  # 1 Å
    # Unclipped Gaussian sums: the warped source matches the sums rendered at the mapped points
    # everywhere, up to bilinear interpolation.
    images = torch.tensor([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=torch.float32) * n
    periodic = (pts[:, None] + images[None, :, None]).reshape(4, -1, 2)
    source = render_gaussians(periodic, _onehot(cls.repeat(1, 9)), shape=(n, n), sigma_px=10.0)
    warped = warp(source, geo, src_sampling_A=s_src, out_shape=out, out_sampling_A=s_out)
    rendered = render_gaussians(p, _onehot(c), shape=out, sigma_px=sigma_out)
    assert (warped - rendered).abs().max().item() < 0.005
    # Label maps (clipped) warp like the image too, and every column in view sits on its label's peak.
    labels = render_labels(p, c, shape=out, n_classes=2, sigma_px=sigma_out)
    warped_labels = warp(scene, geo, src_sampling_A=s_src, out_shape=out, out_sampling_A=s_out)
    assert (warped_labels - labels).abs().max().item() < 0.05
    for b in range(4):
        inside = (c[b] >= 0) & (p[b, :, 0] > 5) & (p[b, :, 0] < out[0] - 6) & (p[b, :, 1] > 5) & (p[b, :, 1] < out[1] - 6)
        assert inside.any()
        for (r, q), k in zip(p[b][inside].round().long().tolist(), c[b][inside].tolist()):
            assert labels[b, k + 1, r, q].item() > 0.99 and warped[b, k, r, q].item() > 0.95


def test_warp_at_equal_sampling_copies_pixels():
    g = torch.Generator().manual_seed(3)
    img = torch.rand((6, 1, 32, 32), generator=g)
    cfg = AugmentConfig(out_shape=(32, 32), zoom=(1.0, 1.0))
    geo = sample_geometry(6, src_shape=(32, 32), src_sampling_A=0.1, config=cfg, generator=g)
    out = warp(img, geo, src_sampling_A=0.1, out_shape=(32, 32), out_sampling_A=0.1)
    for b in range(6):
        np.testing.assert_allclose(np.sort(out[b].ravel().numpy()), np.sort(img[b].ravel().numpy()), atol=1e-5)


def _centroid(img: torch.Tensor) -> torch.Tensor:
    w = (1 - img).clamp(min=0)
    r = torch.arange(img.shape[0], dtype=torch.float32)[:, None]
    c = torch.arange(img.shape[1], dtype=torch.float32)[None, :]
    return torch.stack([(w * r).sum() / w.sum(), (w * c).sum() / w.sum()])


#: A perfect microscope: the image is |psi|^2 of the exit wave, resampled.
PERFECT = OpticsRanges(defocus_A=(0, 0), Cs_A=(0, 0), C5_A=(0, 0), astigmatism_A=(0, 0), focal_spread_A=(0, 0),
                       blur_A=(0, 0), mtf_c1=(1, 1))


def test_focal_series_shares_the_geometry_and_misalignment_is_against_image_0():
    n = 96
    pts = torch.tensor([[[50.3, 44.6]], [[46.0, 51.2]]])
    cls = torch.zeros(2, 1, dtype=torch.long)
    column = render_labels(pts, cls, shape=(n, n), n_classes=1, sigma_px=4.0)[:, 1]
    waves = torch.sqrt(1 - 0.5 * column).to(torch.complex64)  # a dark amplitude column
    base = dict(out_shape=(64, 64), out_sampling_A=0.1, zoom=(0.9, 1.1), random_crop=False, n_classes=1, noise=False, sigma_A=0.3,
                focal_offsets_A=(0.0, 0.0, 0.0))
    args = dict(sampling_A=0.1, energy_eV=E, ranges=PERFECT)
    same = training_batch(waves, pts, cls, generator=torch.Generator().manual_seed(7), config=AugmentConfig(**base), **args)
    assert torch.equal(same.images[:, 0], same.images[:, 1]) and torch.equal(same.images[:, 0], same.images[:, 2])
    moved = training_batch(waves, pts, cls, generator=torch.Generator().manual_seed(7),
                           config=AugmentConfig(**base, focal_misalign_A=0.5), **args)
    assert torch.equal(moved.images[:, 0], same.images[:, 0]) and torch.equal(moved.labels, same.labels)
    mis = moved.geometry.misalign_A / 0.1  # source px
    assert mis[:, 0].abs().max() == 0 and mis[:, 1:].abs().max() > 2
    a_inv = torch.linalg.inv(moved.geometry.matrix(src_sampling_A=0.1, out_sampling_A=0.1))
    for b in range(2):
        p0 = _centroid(moved.images[b, 0])
        # Image 0 and the labels agree on where the column is ...
        assert torch.allclose(p0, moved.points[b, 0], atol=0.05)
        assert torch.allclose(_centroid(1 - moved.labels[b, 1]), moved.points[b, 0], atol=0.05)
        # ... and image f shows it displaced by A^-1 misalign[f] detector pixels.
        for f in (1, 2):
            expected = p0 + a_inv[b] @ mis[b, f]
            assert torch.allclose(_centroid(moved.images[b, f]), expected, atol=0.05)


# --------------------------------------------------------------------------------------------
# The whole chain


def _waves_and_columns(b=3, n=64, seed=0):
    scene, pts, cls = _columns_scene(b=b, n=n, seed=seed)
    return torch.polar(torch.ones(b, n, n), 0.3 * scene[:, 1:].sum(1)), pts, cls


def test_training_batch_is_reproducible_with_a_seed():
    waves, pts, cls = _waves_and_columns()
    cfg = AugmentConfig(out_shape=(48, 48), out_sampling_A=0.12, n_classes=2, focal_offsets_A=(-50.0, 0.0, 50.0),
                        focal_misalign_A=0.2)
    run = [training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, config=cfg,
                          generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert run[0].images.shape == (3, 3, 48, 48) and run[0].images.dtype == torch.float32
    assert run[0].labels.shape == (3, 3, 48, 48)
    assert torch.equal(run[0].images, run[1].images) and torch.equal(run[0].labels, run[1].labels)
    assert not torch.equal(run[0].images, run[2].images)
    lab = run[0].labels
    assert lab.min() >= 0 and lab.max() <= 1
    assert torch.allclose(lab[:, 0], (1 - lab[:, 1:].sum(1)).clamp(0, 1), atol=1e-6)
    table = run[0].positions_table()
    assert list(table.columns) == ["frame", "y", "x", "cls"] and len(table) > 0
    assert table["y"].between(-0.5, 47.5).all() and table["x"].between(-0.5, 47.5).all()


def test_the_dose_draws_only_the_noise_so_later_batches_do_not_depend_on_it():
    """Poisson sampling takes a varying number of random draws; it must not shift the stream,
    or the next batch (another wave of a held-out set) would get another microscope and crop
    at each dose and on each thread count."""
    waves, pts, cls = _waves_and_columns()

    def two_batches(dose, noise=True):
        cfg = AugmentConfig(out_shape=(48, 48), out_sampling_A=0.12, n_classes=2, noise=noise)
        ranges = OpticsRanges.from_dict({"dose_e_per_A2": [dose, dose]})
        g = torch.Generator().manual_seed(3)
        return [training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, config=cfg, ranges=ranges,
                               generator=g) for _ in range(2)]

    clean = two_batches(1e2, noise=False)  # noise=False: the images the noise is drawn about
    err = {}
    for dose in (1e2, 1e4):
        noisy = two_batches(dose)
        for got, ref in zip(noisy, clean):
            torch.testing.assert_close(got.points, ref.points, rtol=0, atol=0, equal_nan=True)  # NaN: padding
            assert torch.equal(got.labels, ref.labels)
            assert torch.equal(got.params.defocus_A, ref.params.defocus_A)
            assert torch.equal(got.geometry.shift_px, ref.geometry.shift_px)
            assert not torch.equal(got.images, ref.images)
            err[dose] = float((got.images - ref.images).abs().mean() / ref.images.abs().mean())
    # shot noise about the same images: 1.4 and 144 counts per pixel (mean |error| ~ 0.8/sqrt(counts))
    assert err[1e4] < 0.1 and err[1e2] > 5 * err[1e4], err


def test_haadf_mode_puts_bright_columns_on_the_labels():
    n = 96
    _, pts, cls = _columns_scene(b=2, n=n)
    obj = haadf_object(pts, torch.full(cls.shape, 79.0**1.7), shape=(n, n), sampling_A=0.1)
    cfg = AugmentConfig(out_shape=(64, 64), out_sampling_A=0.1, n_classes=1, noise=False, zoom=(1.0, 1.0))
    batch = training_batch(obj, pts, torch.zeros_like(cls), sampling_A=0.1, energy_eV=E, mode="haadf",
                           ranges=OpticsRanges.from_dict({"preset": "haadf", "blur_A": 0}),
                           config=cfg, generator=torch.Generator().manual_seed(0))
    img, lab = batch.images[:, 0], batch.labels[:, 1]
    assert img.max() <= 1.0 + 0.3 + 1e-5  # the brightest column is 1, plus the flat background
    for b in range(2):
        bright = img[b] > 0.5 * img[b].max()
        assert lab[b][bright].min() > 0.3  # bright pixels sit under a label Gaussian


def test_haadf_background_is_a_flat_level_under_the_noise():
    n = 96
    _, pts, cls = _columns_scene(b=2, n=n)
    obj = haadf_object(pts, torch.full(cls.shape, 79.0**1.7), shape=(n, n), sampling_A=0.1)
    ranges = OpticsRanges.from_dict({"preset": "haadf", "blur_A": 0})

    def images(bg, noise=False):
        cfg = AugmentConfig(out_shape=(64, 64), out_sampling_A=0.1, n_classes=1, noise=noise, zoom=(1.0, 1.0),
                            haadf_background=bg)
        return training_batch(obj, pts, torch.zeros_like(cls), sampling_A=0.1, energy_eV=E, mode="haadf",
                              ranges=ranges, config=cfg, generator=torch.Generator().manual_seed(0)).images[:, 0]

    dark, lifted = images((0.0, 0.0)), images((0.2, 0.2))
    torch.testing.assert_close(lifted - dark, torch.full_like(dark, 0.2))
    assert float(dark.amin()) < 0.05  # without it the vacuum is dark
    noisy = images((0.2, 0.2), noise=True)
    assert float(noisy[dark < 1e-3].std()) > 0  # and with it, noise reaches the vacuum
    with pytest.raises(ConfigError, match="haadf_background"):
        AugmentConfig(haadf_background=(0.3, 0.1))
    with pytest.raises(ConfigError, match="coarse_fraction"):
        AugmentConfig(coarse_fraction=1.5)
    with pytest.raises(ConfigError, match="coarse_factor"):
        AugmentConfig(coarse_factor=(0.5, 2.0))


def _local_centroids(img: torch.Tensor, pts: torch.Tensor, half: int = 3) -> torch.Tensor:
    """Intensity centroids [px] of ``img`` [H, W] in windows around ``pts`` [N, 2] (rows, cols)."""
    out = []
    for r, c in pts.round().long().tolist():
        win = img[r - half:r + half + 1, c - half:c + half + 1].clamp(min=0)
        yy, xx = torch.meshgrid(torch.arange(-half, half + 1.0), torch.arange(-half, half + 1.0), indexing="ij")
        out.append([r + float((win * yy).sum() / win.sum()), c + float((win * xx).sum() / win.sum())])
    return torch.tensor(out)


@pytest.mark.parametrize("k", [2.0, 1.7])
def test_a_coarser_camera_resampled_puts_columns_where_the_labels_are(k):
    """Taken at k times the pixel size and enlarged as the tracker enlarges frames, the image
    shows each column where the nominal image does and where its label is (a grid centred
    without the crop shift is (n_c k - n) / 2 px off: 2 px at k = 2, 1.2 px at 1.7)."""
    n = 128
    g = torch.Generator().manual_seed(1)
    pts = 20 + torch.rand((2, 10, 2), generator=g) * (n - 40)
    cls = torch.zeros((2, 10), dtype=torch.long)
    obj = haadf_object(pts, torch.full(cls.shape, 79.0**1.7), shape=(n, n), sampling_A=0.05)
    ranges = OpticsRanges.from_dict({"preset": "haadf", "blur_A": 0})

    def batch(fraction):
        cfg = AugmentConfig(out_shape=(64, 64), out_sampling_A=0.1, n_classes=1, noise=False, zoom=(0.9, 1.1),
                            haadf_background=(0.0, 0.0), coarse_fraction=fraction, coarse_factor=(k, k))
        return training_batch(obj, pts, cls, sampling_A=0.05, energy_eV=E, mode="haadf", ranges=ranges,
                              config=cfg, generator=torch.Generator().manual_seed(7))

    nominal, coarse = batch(0.0), batch(1.0)
    assert coarse.images.shape == nominal.images.shape == (2, 1, 64, 64)
    assert torch.equal(coarse.labels, nominal.labels) and torch.equal(coarse.geometry.zoom, nominal.geometry.zoom)
    assert not torch.allclose(coarse.images, nominal.images, atol=1e-3)  # it did take coarser pixels
    table = nominal.positions_table()
    inner = table[table["y"].between(6, 57) & table["x"].between(6, 57)]
    assert len(inner) >= 6
    for f, rows in inner.groupby("frame"):
        true = torch.tensor(rows[["y", "x"]].to_numpy(), dtype=torch.float32)
        seen = _local_centroids(nominal.images[f, 0], true)
        assert (seen - true).abs().mean() < 0.3  # the centroids' own bias (windows, neighbours)
        moved = _local_centroids(coarse.images[f, 0], true) - seen
        assert moved.abs().max() < 0.05, moved


def test_a_coarser_camera_interpolates_its_shot_noise():
    """In vacuum the noise of nominal pixels is independent; taken with pixels twice as large
    and enlarged, neighbours share their coarse pixels, and each coarse pixel catches four
    times the electrons."""
    waves = torch.ones((1, 96, 96), dtype=torch.complex64)
    pts, cls = torch.zeros((1, 1, 2)), torch.full((1, 1), -1)
    ranges = OpticsRanges.from_dict({"dose_e_per_A2": [400, 400], "blur_A": 0})

    def noise(fraction):
        cfg = AugmentConfig(out_shape=(64, 64), out_sampling_A=0.1, zoom=(1.0, 1.0), coarse_fraction=fraction,
                            coarse_factor=(2.0, 2.0))
        img = training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, config=cfg, ranges=ranges,
                             generator=torch.Generator().manual_seed(3)).images[0, 0]
        d = img - img.mean()
        return float(d.var()), float((d[:, 1:] * d[:, :-1]).mean() / d.var())

    (var_n, corr_n), (var_c, corr_c) = noise(0.0), noise(1.0)
    assert abs(var_n - 1 / (400 * 0.1**2)) < 0.05 / 4  # 4 electrons a pixel: variance 1/4
    assert abs(corr_n) < 0.1 and corr_c > 0.5, (corr_n, corr_c)
    assert var_c < var_n / 4  # a quarter at the coarse pixels, less again after interpolation


def test_stem_image_of_a_point_is_the_probe_there():
    params = OpticsParams.constant(2, defocus_A=10.0, Cs_A=1e4)
    obj = torch.zeros(2, 64, 64)
    obj[:, 20, 30] = 1.0
    img = stem_image(obj, sampling_A=0.05, energy_eV=E, params=params)
    probe = probe_intensity((64, 64), sampling_A=0.05, energy_eV=E, params=params)
    assert torch.allclose(img, torch.roll(probe, (20, 30), (-2, -1)), atol=1e-6)
    assert probe.sum((-2, -1)).sub(1).abs().max() < 1e-5


def test_one_wave_under_several_microscopes_is_transformed_once_and_imaged_alike():
    """A batch that repeats one wave (expanded, as training draws several samples per wave)
    gives the images of the same batch written out in full."""
    g = torch.Generator().manual_seed(4)
    params = OpticsRanges().sample(3, g)
    wave = torch.exp(1j * 0.3 * torch.rand(1, 48, 40, generator=g)).to(torch.complex64)
    kw = dict(sampling_A=0.05, energy_eV=E, params=params, focal_offsets_A=(0.0, 50.0))
    shared = image_from_waves(wave.expand(3, -1, -1), **kw)
    assert torch.allclose(shared, image_from_waves(wave.repeat(3, 1, 1), **kw), atol=1e-5)
    assert not torch.allclose(shared[0], shared[1])  # each its own microscope
    obj = torch.rand(1, 48, 40, generator=g)
    kw = dict(sampling_A=0.05, energy_eV=E, params=params)
    assert torch.allclose(stem_image(obj.expand(3, -1, -1), **kw), stem_image(obj.repeat(3, 1, 1), **kw), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Ranges and inputs


def test_default_ranges_are_madsen_table_1():
    r = OpticsRanges()
    assert r.defocus_A == (-200.0, 200.0) and r.Cs_A == (-2e5, 2e5) and r.C5_A == (0.0, 5e7)
    assert r.astigmatism_A == (0.0, 100.0) and r.focal_spread_A == (20.0, 40.0)
    assert r.dose_e_per_A2 == (10.0, 1e4)
    assert (r.mtf_c1, r.mtf_c2, r.mtf_c3) == ((0.0, 0.1), (0.4, 0.6), (2.0, 3.0))


def test_sample_stays_in_range_and_dose_is_log_uniform():
    r = OpticsRanges()
    p = r.sample(20000, torch.Generator().manual_seed(0))
    for name in ("defocus_A", "Cs_A", "C5_A", "astigmatism_A", "focal_spread_A", "blur_A", "mtf_c2"):
        lo, hi = getattr(r, name)
        v = getattr(p, name)
        assert v.min() >= lo - 1e-3 * abs(lo) and v.max() <= hi + 1e-3 * abs(hi)
    assert p.dose_e_per_A2.median().item() == pytest.approx(math.sqrt(10 * 1e4), rel=0.1)
    a = r.sample(5, np.random.default_rng(3))
    b = r.sample(5, np.random.default_rng(3))
    assert torch.equal(a.defocus_A, b.defocus_A) and len(a) == 5


def test_ranges_from_toml_dict_and_presets():
    r = OpticsRanges.from_dict({"preset": "au", "defocus_A": [-50, 50], "C5_A": 0})
    assert r.defocus_A == (-50.0, 50.0) and r.C5_A == (0.0, 0.0)
    assert r.dose_e_per_A2 == PRESETS["au"]["dose_e_per_A2"]
    for name in PRESETS:
        OpticsRanges.preset(name)
    with pytest.raises(ConfigError, match="valid keys"):
        OpticsRanges.from_dict({"defocus": [0, 1]})
    with pytest.raises(ConfigError, match="preset must be one of"):
        OpticsRanges.from_dict({"preset": "copper"})
    with pytest.raises(ConfigError, match="Swap them"):
        OpticsRanges(defocus_A=(10.0, -10.0))
    with pytest.raises(ConfigError, match="positive"):
        OpticsRanges(dose_e_per_A2=(0.0, 10.0))
    with pytest.raises(ConfigError, match="valid"):
        AugmentConfig.from_dict({"zoom_range": [1, 2]})
    assert AugmentConfig.from_dict({"zoom": [0.95, 1.05], "focal_offsets_A": [-40, 0, 40]}).focal_offsets_A == (-40.0, 0.0, 40.0)


def test_bad_inputs_say_how_to_fix_them():
    waves = torch.ones(2, 16, 16, dtype=torch.complex64)
    with pytest.raises(ValueError, match="one per sample"):
        image_from_waves(waves, sampling_A=0.1, energy_eV=E, params=OpticsParams.constant(3))
    with pytest.raises(ValueError, match="complex"):
        image_from_waves(waves.real, sampling_A=0.1, energy_eV=E, params=OpticsParams.constant(2))
    with pytest.raises(ValueError, match="sampling_A"):
        image_from_waves(waves, sampling_A=-1, energy_eV=E, params=OpticsParams.constant(2))
    pts, cls = torch.zeros(2, 1, 2), torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(TypeError, match="torch.Generator"):
        training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, generator=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="mode must be one of"):
        training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, generator=torch.Generator(), mode="tem")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.Generator"):
            training_batch(waves, pts, cls, sampling_A=0.1, energy_eV=E, generator=torch.Generator("cuda"))


# --------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_and_is_reproducible():
    waves, pts, cls = _waves_and_columns(b=4, n=64)
    params = OpticsRanges().sample(4, torch.Generator().manual_seed(0))
    cpu = image_from_waves(waves, sampling_A=0.1, energy_eV=E, params=params, focal_offsets_A=(-40.0, 0.0, 40.0))
    gpu = image_from_waves(waves.cuda(), sampling_A=0.1, energy_eV=E, params=params.to("cuda"),
                           focal_offsets_A=(-40.0, 0.0, 40.0))
    assert _relerr(gpu.cpu().numpy(), cpu.numpy()) < 1e-5
    cfg = AugmentConfig(out_shape=(48, 48), n_classes=2, focal_offsets_A=(-40.0, 0.0, 40.0), focal_misalign_A=0.2)
    a, b = (training_batch(waves.cuda(), pts.cuda(), cls.cuda(), sampling_A=0.1, energy_eV=E, config=cfg,
                           generator=torch.Generator("cuda").manual_seed(1)) for _ in range(2))
    assert a.images.is_cuda and a.labels.is_cuda
    assert torch.allclose(a.images, b.images, atol=1e-6) and torch.allclose(a.labels, b.labels, atol=1e-6)
    # The geometry drawn on the GPU maps the columns as it does on the CPU.
    geo = a.geometry
    cpu_geo = type(geo)(**{k: getattr(geo, k).cpu() for k in ("zoom", "quarter_turns", "mirror", "shift_px", "misalign_A")})
    p_cpu, c_cpu = transform_points(pts, cls, cpu_geo, src_shape=(64, 64), src_sampling_A=0.1, out_shape=(48, 48),
                                    out_sampling_A=0.1)
    table_cpu = positions_table(p_cpu, c_cpu).sort_values(["frame", "y", "x"]).reset_index(drop=True)
    table_gpu = a.positions_table().sort_values(["frame", "y", "x"]).reset_index(drop=True)
    np.testing.assert_allclose(table_gpu[["y", "x"]].to_numpy(), table_cpu[["y", "x"]].to_numpy(), atol=1e-3)
