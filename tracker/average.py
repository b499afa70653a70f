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
run, and the first after a resume or a change of frame size, average fewer frames. It runs on
the engine's device (the pipeline sets it); the mean comes back to the host as the frame's
image.
"""
from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import torch

from .errors import ConfigError
from .frames import Frame

__all__ = ["FrameAverager", "phase_shift"]


def _hann(h: int, w: int, device) -> torch.Tensor:
    return torch.outer(torch.hann_window(h, periodic=False, device=device, dtype=torch.float32),
                       torch.hann_window(w, periodic=False, device=device, dtype=torch.float32))


def _lowpass(h: int, w: int, device) -> torch.Tensor:
    """The Gaussian low-pass on an ``rfft2`` spectrum of an [h, w] image."""
    ky = torch.fft.fftfreq(h, device=device)[:, None]
    kx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.exp(-(ky**2 + kx**2) / (2 * _LOWPASS**2))


def _spectrum(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    a = image.to(torch.float32)
    return torch.fft.rfft2((a - a.mean()) * window)


def _parabola(m: float, c: float, p: float) -> float:
    """Offset of a parabola's vertex through (-1, m), (0, c), (1, p) from 0, within ±0.5."""
    d = m - 2 * c + p
    return 0.0 if d >= 0 else float(np.clip(0.5 * (m - p) / d, -0.5, 0.5))


#: Width of the Gaussian low-pass on the cross-power spectrum [cycles/px]
_LOWPASS = 0.1


def _peak_shift(spec_a: torch.Tensor, spec_b: torch.Tensor, shape: tuple[int, int], *,
                max_shift: float, around: tuple[float, float] = (0.0, 0.0),
                lowpass: torch.Tensor | None = None) -> tuple[float, float]:
    """(dy, dx) [px] that moves image ``b`` onto image ``a`` (``a(r) ≈ b(r - d)``), looked for
    within ``max_shift`` px of ``around``.

    The cross-correlation, low-passed and not whitened: whitening (phase correlation proper)
    gives the shot noise between a lattice's Bragg peaks as much weight as the peaks, and on
    a 300 e/Å² frame it locks onto noise. The search is bounded because a lattice correlates
    with itself shifted by any lattice vector: unbounded, noise picks one of those peaks."""
    h, w = shape
    if lowpass is None:
        lowpass = _lowpass(h, w, spec_a.device)
    corr = torch.fft.irfft2(spec_a * spec_b.conj() * lowpass, s=(h, w))
    r = int(np.ceil(max_shift))
    oy, ox = int(round(around[0])), int(round(around[1]))
    # the search window and a one-pixel margin for the parabola, wrapped around the edges
    ys = torch.arange(oy - r - 1, oy + r + 2, device=corr.device) % h
    xs = torch.arange(ox - r - 1, ox + r + 2, device=corr.device) % w
    win = corr[ys][:, xs].double().cpu().numpy()
    iy, ix = np.unravel_index(int(np.argmax(win[1:-1, 1:-1])), (2 * r + 1, 2 * r + 1))
    iy, ix = iy + 1, ix + 1
    c = win[iy, ix]
    dy = oy - r - 1 + iy + _parabola(win[iy - 1, ix], c, win[iy + 1, ix])
    dx = ox - r - 1 + ix + _parabola(win[iy, ix - 1], c, win[iy, ix + 1])
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


def _shift_int(a: torch.Tensor, iy: int, ix: int) -> torch.Tensor:
    """``a`` [..., H, W] moved by whole pixels (``out[y, x] = a[y - iy, x - ix]``), zeros shifted in."""
    h, w = a.shape[-2:]
    out = torch.zeros_like(a)
    if abs(iy) < h and abs(ix) < w:
        out[..., max(iy, 0):h + min(iy, 0), max(ix, 0):w + min(ix, 0)] = \
            a[..., max(-iy, 0):h + min(-iy, 0), max(-ix, 0):w + min(-ix, 0)]
    return out


def _lerp_shift(a: torch.Tensor, t: float, dim: int) -> torch.Tensor:
    """``(1 - t) a + t a`` moved by one pixel along ``dim`` (zeros shifted in)."""
    if t == 0:
        return a
    n = a.shape[dim]
    out = a * (1 - t)
    out.narrow(dim, 1, n - 1).add_(a.narrow(dim, 0, n - 1), alpha=t)
    return out


def _coverage(n: int, shift: float, device) -> torch.Tensor:
    """How much of each of ``n`` pixels a row of ones moved by ``shift`` covers (bilinear)."""
    return _translate(torch.ones(1, n, 1, device=device), shift, 0.0, mask=False)[0][0, :, 0]


def _translate(stack: torch.Tensor, dy: float, dx: float, *, mask: bool = True):
    """``stack`` [C, H, W] moved by (dy, dx) px (bilinear; zeros shifted in) and, with
    ``mask``, how much of each output pixel it covers (0..1, [1, H, W])."""
    fy, fx = int(np.floor(dy)), int(np.floor(dx))
    out = _lerp_shift(_lerp_shift(_shift_int(stack, fy, fx), dy - fy, -2), dx - fx, -1)
    if not mask:
        return out, None
    h, w = stack.shape[-2:]
    cov = torch.outer(_coverage(h, dy, stack.device), _coverage(w, dx, stack.device))
    return out, cov[None]


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
        self._lowpass: torch.Tensor | None = None
        #: (frame, dy, dx): measured shift between each frame and the one before it [px], the
        #: latest 10,000, newest last (bounded: a live run goes on for days)
        self.shifts: deque[tuple[int, float, float]] = deque(maxlen=10_000)

    @property
    def started(self) -> bool:
        """Whether a frame has gone in since the start (or the last :meth:`reset`)."""
        return bool(self._window)

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
                self._lowpass = _lowpass(h, w, self.device)
            spec = _spectrum(stack[0], self._hann)
            if self._spec is not None:
                reach = self.max_drift_A / frame.sampling if frame.sampling else self.max_drift_px
                last = self.shifts[-1][1:] if self.shifts else (0.0, 0.0)  # drift is smooth: look near the last
                dy, dx = _peak_shift(spec, self._spec, (h, w), max_shift=max(reach, 1.0), around=last,
                                     lowpass=self._lowpass)
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
            if not d.any():  # the newest frame, or one that has not moved
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
