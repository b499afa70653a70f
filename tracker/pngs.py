"""Small PNG encoders for the dashboard: frames as greyscale or RGB, maps as palette images."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def downsample_factor(shape: Sequence[int], max_px: int) -> int:
    return max(1, -(-max(int(shape[0]), int(shape[1])) // max_px))


def downsample(img: np.ndarray, k: int) -> np.ndarray:
    """Block mean by ``k`` (the ragged edge cropped)."""
    if k == 1:
        return img
    h, w = (img.shape[0] // k) * k, (img.shape[1] // k) * k
    return img[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


#: Colour maps as 17 evenly spaced anchors (matplotlib's viridis and magma), interpolated to 255 colours.
_CMAPS = {
    "viridis": "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 28ae80 3fbc73 5ec962 "
               "84d44b addc30 d8e219 fde725",
    "magma": "000004 0a0822 1d1147 36106b 51127c 6a1c81 832681 9c2e7f b73779 d0416f e75263 f56b5c fc8961 "
             "fea772 fec488 fde2a3 fcfdbf",
}
_OFF_SITE = (24, 24, 28)


def _palette(cmap: str) -> list[int]:
    """A PNG palette: 255 colours of ``cmap``, then index 255 for off-site pixels."""
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _CMAPS[cmap].split()], float)
    t = np.linspace(0, 1, len(anchors))
    lut = np.stack([np.interp(np.linspace(0, 1, 255), t, anchors[:, k]) for k in range(3)], axis=1)
    return np.rint(lut).astype(np.uint8).ravel().tolist() + list(_OFF_SITE)


def map_png(values: np.ndarray, vmin: float, vmax: float, cmap: str) -> bytes:
    """A map as a palette PNG (one byte a pixel); NaN (off-site) dark grey."""
    from PIL import Image

    idx = np.full(values.shape, 255, np.uint8)
    on = ~np.isnan(values)
    idx[on] = np.clip((values[on] - vmin) * (254.0 / (vmax - vmin)), 0, 254).astype(np.uint8)
    img = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    img.putpalette(_palette(cmap))
    return _save_png(img)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    return _save_png(Image.fromarray(np.ascontiguousarray(pixels)))


def _save_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
