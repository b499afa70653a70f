"""Synthetic lattice images shared by the locator, preprocessing and classical-engine tests."""
import numpy as np


def lattice(shape, spacing, margin, seed):
    """Square lattice, every site shifted by a random sub-pixel amount."""
    rng = np.random.default_rng(seed)
    ys = np.arange(margin, shape[0] - margin + 1e-9, spacing)
    xs = np.arange(margin, shape[1] - margin + 1e-9, spacing)
    yx = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    return yx + rng.uniform(-0.5, 0.5, yx.shape)


def render(yx, shape, sigma, amp=1.0):
    """Sum of point-sampled Gaussians (separable: one matrix product)."""
    amp = np.broadcast_to(np.asarray(amp, float), (len(yx),))
    gy = np.exp(-((np.arange(shape[0])[None] - yx[:, :1]) ** 2) / (2 * sigma**2))
    gx = np.exp(-((np.arange(shape[1])[None] - yx[:, 1:]) ** 2) / (2 * sigma**2))
    return (gy * amp[:, None]).T @ gx
