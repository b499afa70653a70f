"""Resampling frames to a model's pixel size, and positions found on them back to the frame:
output pixel ``i`` covers input coordinates ``[i / scale, (i + 1) / scale)``, its centre at
``i``; ``y_out = (y_in + 0.5) * scale - 0.5`` (:func:`coords_to_input` inverts it). Shrinking
integrates each output pixel's area (the noise stays white), enlarging is bilinear."""
from __future__ import annotations

import functools
import math
from typing import TypeVar

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["resample", "coords_to_input"]


def resample(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Resample ``[B, C, H, W]`` images by ``scale`` (output pixels per input pixel).

    ``scale = sampling / target_sampling``: below 1 shrinks by integrating each output pixel's
    area (each output pixel is the mean of the input pixels under it, weighted by how much of
    each it covers: what a camera with larger pixels records, so the shot noise stays white, as
    in the images the networks learned from), above 1 enlarges (bilinear). The output is
    ``floor(H * scale) x floor(W * scale)`` and coordinates map exactly as
    ``y_out = (y_in + 0.5) * scale - 0.5`` (see :func:`coords_to_input`).

    (An antialiased bilinear shrink, a triangle filter twice as wide, correlates the noise into
    blobs the size of a column: the bundled Au model then found a false column for every true
    one in an in-situ movie taken at half its pixel size, F1 0.52 against 0.79; docs/models.md.)
    """
    if not scale > 0:
        raise ConfigError(f"scale must be positive; got {scale!r}.")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
        raise ConfigError(f"resampling a {h}x{w} image by {scale:g} leaves no pixels.")
    if scale < 1.0:
        return _area_axis(_area_axis(images, scale, -2), scale, -1)
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


def _area_axis(x: torch.Tensor, scale: float, dim: int) -> torch.Tensor:
    """Shrink one axis by ``scale`` < 1: output pixel ``i`` covers input coordinates
    ``[i / scale, (i + 1) / scale)`` (pixel edges), and is the mean of the input pixels there,
    each weighted by its overlap. A whole-number factor is a plain mean of each block."""
    n = x.shape[dim]
    m = math.floor(n * scale)
    k = 1.0 / scale
    if abs(k - round(k)) < 1e-9:  # blocks of whole pixels
        k = round(k)
        lead = x.shape[:dim] if dim == -1 else x.shape[:-2]
        if dim == -1:
            return x[..., :m * k].reshape(*lead, m, k).mean(-1)
        return x[..., :m * k, :].reshape(*lead, m, k, x.shape[-1]).mean(-2)
    out = None
    view = [1] * x.ndim
    view[dim] = m
    for idx, wgt in _area_taps(n, scale, x.device, x.dtype):
        term = x.index_select(dim, idx) * wgt.view(view)
        out = term if out is None else out + term
    return out


@functools.lru_cache(maxsize=32)
def _area_taps(n: int, scale: float, device: torch.device, dtype: torch.dtype):
    """The input pixels and weights of :func:`_area_axis` for an axis of ``n`` pixels, once per
    size, factor and device (a stream's frames share them): per tap ``t``, output pixel ``i``
    takes input pixel ``floor(i / scale) + t`` weighted by its overlap with ``[i / scale,
    (i + 1) / scale)`` over the output pixel's width."""
    m = math.floor(n * scale)
    k = 1.0 / scale
    edges = torch.arange(m + 1, dtype=torch.float64) * k  # output pixel edges, in input pixels
    start = edges[:-1].floor().long()
    taps = []
    for t in range(math.ceil(k) + 1):  # input pixels an output pixel can touch
        j = start + t  # input pixel [j, j + 1)
        overlap = (torch.minimum(edges[1:], (j + 1).double()) - torch.maximum(edges[:-1], j.double())).clamp_min(0)
        taps.append((j.clamp(max=n - 1).to(device), (overlap / k).to(dtype).to(device)))
    return tuple(taps)


_C = TypeVar("_C")


def coords_to_input(yx: _C, scale: float) -> _C:
    """Map coordinates found on an image resampled by ``scale`` back to input pixels.

    ``yx`` is an array or tensor (any shape; every value is a row or column coordinate) or a
    DataFrame whose ``y`` and ``x`` columns are mapped (a copy is returned).
    ``y_in = (y_out + 0.5) / scale - 0.5``.
    """
    if scale == 1.0:
        return yx
    if hasattr(yx, "columns"):  # a columns table
        out = yx.copy()
        out["y"] = (out["y"] + 0.5) / scale - 0.5
        out["x"] = (out["x"] + 0.5) / scale - 0.5
        return out
    return (yx + 0.5) / scale - 0.5
