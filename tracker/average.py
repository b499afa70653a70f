"""Running average of the latest frames, registered to the newest, for low-dose movies.

At a few hundred e/Å² per frame a thin surface column is lost in the shot noise of one frame
much of the time (a column of 2–6 Au atoms in HRTEM: found in about half of the frames by the
bundled model at 300 e/Å², in 86 % at 1000 and in all at 3000; docs/guides/statistics.md). The
microscopist's remedy is to sum frames: ``n`` frames hold ``n`` times the dose. Here each frame
is replaced, for the detector only, by the mean of itself and the ``n - 1`` frames before it,
each shifted onto the newest by the drift measured between consecutive frames (cross-correlation
of whole frames, sub-pixel, within the largest drift the linker looks for). The frame keeps its index, the tracks and maps their
meaning; the price is time resolution: a column that arrives is seen at full strength only
``n - 1`` frames later (about ``(n - 1) / 2`` frames late on average), and visits shorter than
``n`` frames are blurred.

The window is causal (no frame waits for later ones) and starts empty: the first frames of a
run, and the first after a resume or a change of frame size, average fewer frames.
"""
from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .frames import Frame

__all__ = ["FrameAverager", "phase_shift"]


def _hann(h: int, w: int, device) -> torch.Tensor:
    return torch.outer(torch.hann_window(h, periodic=False, device=device, dtype=torch.float64),
                       torch.hann_window(w, periodic=False, device=device, dtype=torch.float64))


def _spectrum(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    a = image.to(torch.float64)
    return torch.fft.rfft2((a - a.mean()) * window)


def _parabola(m: float, c: float, p: float) -> float:
    """Offset of a parabola's vertex through (-1, m), (0, c), (1, p) from 0, within ±0.5."""
    d = m - 2 * c + p
    return 0.0 if d >= 0 else float(np.clip(0.5 * (m - p) / d, -0.5, 0.5))


#: Width of the Gaussian low-pass on the cross-power spectrum [cycles/px]
_LOWPASS = 0.1


def _peak_shift(spec_a: torch.Tensor, spec_b: torch.Tensor, shape: tuple[int, int], *,
                max_shift: float, around: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """(dy, dx) [px] that moves image ``b`` onto image ``a`` (``a(r) ≈ b(r - d)``), looked for
    within ``max_shift`` px of ``around``.

    The cross-correlation, low-passed and not whitened: whitening (phase correlation proper)
    gives the shot noise between a lattice's Bragg peaks as much weight as the peaks, and on
    a 300 e/Å² frame it locks onto noise. The search is bounded because a lattice correlates
    with itself shifted by any lattice vector: unbounded, noise picks one of those peaks."""
    h, w = shape
    cross = spec_a * spec_b.conj()
    ky = torch.fft.fftfreq(h, device=cross.device, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(w, device=cross.device, dtype=torch.float64)[None, :]
    corr = torch.fft.irfft2(cross * torch.exp(-(ky**2 + kx**2) / (2 * _LOWPASS**2)), s=(h, w)).cpu().numpy()
    r = int(np.ceil(max_shift))
    oy, ox = int(round(around[0])), int(round(around[1]))
    ys, xs = np.arange(oy - r, oy + r + 1), np.arange(ox - r, ox + r + 1)
    sub = corr[np.ix_(ys % h, xs % w)]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    y, x = int(ys[iy]), int(xs[ix])
    c = corr[y % h, x % w]
    dy = y + _parabola(corr[(y - 1) % h, x % w], c, corr[(y + 1) % h, x % w])
    dx = x + _parabola(corr[y % h, (x - 1) % w], c, corr[y % h, (x + 1) % w])
    return float(dy), float(dx)


def phase_shift(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *, max_shift: float = 8.0) -> tuple[float, float]:
    """Translation (dy, dx) [px] that moves image ``b`` onto image ``a``, at most ``max_shift``
    px in either axis: the peak of the low-passed cross-correlation of the Hann-windowed images,
    refined to sub-pixel by a parabola through its neighbours."""
    ta, tb = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    if ta.shape != tb.shape or ta.ndim != 2:
        raise ConfigError(f"phase_shift needs two [H, W] images of one shape; got {tuple(ta.shape)} and {tuple(tb.shape)}.")
    win = _hann(*ta.shape, device=ta.device)
    return _peak_shift(_spectrum(ta, win), _spectrum(tb, win), tuple(ta.shape), max_shift=max_shift)


def _translate(stack: torch.Tensor, dy: float, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``stack`` [C, H, W] moved by (dy, dx) px (bilinear), and where it has data (0/1 mask)."""
    c, h, w = stack.shape
    theta = torch.tensor([[[1.0, 0.0, -2.0 * dx / w], [0.0, 1.0, -2.0 * dy / h]]], dtype=torch.float32,
                         device=stack.device)
    grid = F.affine_grid(theta, [1, c + 1, h, w], align_corners=False)
    both = torch.cat([stack, torch.ones_like(stack[:1])])[None]
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:c], out[c:]


class FrameAverager:
    """The running registered mean of the latest ``n`` frames (see the module docstring).

    ``register``: measure and undo the drift between frames (cross-correlation of the first
    focal image, looked for within ``max_drift_A`` of the last drift, or ``max_drift_px``
    where the pixel size is unknown); without it frames are averaged where they lie, which is
    right only while the drift over ``n`` frames is well below a column's width.
    """

    def __init__(self, n: int, *, register: bool = True, max_drift_A: float = 1.5, max_drift_px: float = 8.0,
                 device: str | torch.device = "cpu") -> None:
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ConfigError(f"average_frames must be an integer >= 1; got {n!r}.")
        self.n = int(n)
        self.register = register
        self.max_drift_A = max_drift_A  # largest drift between frames looked for, where the pixel size is known
        self.max_drift_px = max_drift_px  # ... where it is not
        self.device = torch.device(device)
        self._window: deque[tuple[torch.Tensor, np.ndarray]] = deque()  # (images [C, H, W], offset [2])
        self._offset = np.zeros(2)
        self._spec: torch.Tensor | None = None
        self._hann: torch.Tensor | None = None
        #: measured shift between each frame and the one before it [px], newest last
        self.shifts: list[tuple[int, float, float]] = []

    def reset(self) -> None:
        self._window.clear()
        self._offset = np.zeros(2)
        self._spec = None

    def __call__(self, frame: Frame) -> Frame:
        """``frame`` with its image replaced by the registered mean of the window (a new Frame;
        ``meta["averaged_frames"]`` says how many went in; ``dose`` is summed where known)."""
        if self.n == 1:
            return frame
        img = torch.as_tensor(np.asarray(frame.image, dtype=np.float32), device=self.device)
        stack = img.reshape(-1, *img.shape[-2:])
        if self._window and self._window[-1][0].shape != stack.shape:
            self.reset()
        if self.register:
            h, w = stack.shape[-2:]
            if self._hann is None or self._hann.shape != (h, w):
                self._hann = _hann(h, w, self.device)
            spec = _spectrum(stack[0], self._hann)
            if self._spec is not None:
                reach = self.max_drift_A / frame.sampling if frame.sampling else self.max_drift_px
                last = self.shifts[-1][1:] if self.shifts else (0.0, 0.0)  # drift is smooth: look near the last
                dy, dx = _peak_shift(spec, self._spec, (h, w), max_shift=max(reach, 1.0), around=last)
                self._offset = self._offset + (dy, dx)
                self.shifts.append((frame.frame, dy, dx))
            self._spec = spec
        self._window.append((stack, self._offset.copy()))
        while len(self._window) > self.n:
            self._window.popleft()
        total = torch.zeros_like(stack)
        weight = torch.zeros_like(stack[:1])
        for old, off in self._window:
            d = self._offset - off
            if old is stack or not d.any():
                total += old
                weight += 1
            else:
                moved, mask = _translate(old, float(d[0]), float(d[1]))
                total += moved
                weight += mask
        mean = (total / weight.clamp_min(1e-6)).reshape(img.shape).cpu().numpy()
        k = len(self._window)
        meta = {**(frame.meta or {}), "averaged_frames": k}
        dose = None if frame.dose is None else frame.dose * k
        return dataclasses.replace(frame, image=mean, meta=meta, dose=dose)
