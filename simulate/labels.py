"""Training labels: one Gaussian map per column class plus a background channel.

Following Madsen et al. (2018), every atomic column is marked by a Gaussian of peak 1 and
standard deviation ``sigma_A`` (1 Å in the paper) in the map of its class. Where Gaussians of
one class overlap, their sum is clipped to 1. The background channel is ``1 - sum`` of the
class maps, clipped to [0, 1]. Channel 0 is the background and channel ``c + 1`` holds class
``c``, as everywhere in this project (``etem.train.networks``, ``etem.tracker.locate``).

Coordinates
-----------
Positions are ``(row, col)`` pixel coordinates with pixel centres at integers, the tracker's
``y, x`` convention. A columns table in Å (``y_A, x_A``) converts with ``row = y_A / sampling``
and ``col = x_A / sampling``: the pixel with index ``i`` is centred at ``i * sampling``, as on
abTEM's grids.

Batches of columns travel as padded tensors: ``points`` ``[B, P, 2]`` and ``classes`` ``[B, P]``
(int64), where a class of -1 (or a non-finite position) marks padding. :func:`pad_columns`
builds them from tables and :func:`positions_table` turns them back into one table.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["label_maps", "render_gaussians", "render_labels", "pad_columns", "positions_table"]

#: A Gaussian width [px]: one number, a ``[B]`` tensor (one per sample), or (row, col) numbers.
Sigma = float | torch.Tensor | tuple[float, float]


def _sigmas(sigma_px: Sigma, batch: int, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) widths as ``[B, 1, 1]`` tensors on ``ref``'s device and dtype, checked positive."""
    if isinstance(sigma_px, tuple):
        if len(sigma_px) != 2:
            raise ValueError(f"sigma_px as a tuple must be (row, col) [px]; got {sigma_px!r}.")
        pair = [torch.as_tensor(float(v), dtype=ref.dtype, device=ref.device).expand(batch) for v in sigma_px]
    else:
        s = torch.as_tensor(sigma_px, dtype=ref.dtype, device=ref.device)
        if s.ndim == 0:
            s = s.expand(batch)
        if s.shape != (batch,):
            raise ValueError(
                f"sigma_px must be a number, (row, col) or a [B] tensor with B = {batch}; got shape {tuple(s.shape)}."
            )
        pair = [s, s]
    if not all(bool(torch.all(p > 0)) for p in pair):
        raise ValueError("sigma_px must be positive.")
    return pair[0][:, None, None], pair[1][:, None, None]


def render_gaussians(
    points: torch.Tensor,
    weights: torch.Tensor,
    *,
    shape: tuple[int, int],
    sigma_px: Sigma,
) -> torch.Tensor:
    """Sums of Gaussians of peak ``weights`` at ``points``, one map per weight channel.

    Parameters
    ----------
    points
        ``[B, P, 2]`` (row, col) positions [px]; rows with a non-finite position are ignored.
    weights
        ``[B, P, K]`` peak value of each point's Gaussian in each of the K output maps.
    shape
        Output size (H, W) [px].
    sigma_px
        Standard deviation of the Gaussians [px]: a number, a ``[B]`` tensor (one per sample)
        or (row, col) for non-square pixels.

    Returns
    -------
    torch.Tensor
        ``[B, K, H, W]`` on the points' device, in the points' floating dtype (float32 for
        integer points).

    Notes
    -----
    The maps are separable sums, ``map[k] = sum_p w[p, k] gy[p] gx[p]^T``: one batched matrix
    product of cost ``B K P H W`` and no per-point Python loop.
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be [B, P, 2] (row, col) [px]; got shape {tuple(points.shape)}.")
    if weights.ndim != 3 or weights.shape[:2] != points.shape[:2]:
        raise ValueError(
            f"weights must be [B, P, K] with [B, P] = {tuple(points.shape[:2])}; got shape {tuple(weights.shape)}."
        )
    if not points.is_floating_point():
        points = points.float()
    h, w = (int(v) for v in shape)
    s_row, s_col = _sigmas(sigma_px, points.shape[0], points)
    ok = torch.isfinite(points).all(-1, keepdim=True)
    pts = torch.where(ok, points, torch.zeros_like(points))
    wts = weights.to(device=points.device, dtype=points.dtype) * ok
    rows = torch.arange(h, device=points.device, dtype=points.dtype)
    cols = torch.arange(w, device=points.device, dtype=points.dtype)
    gy = _gaussian_1d(rows, pts[..., :1], s_row)  # [B, P, H]
    gx = _gaussian_1d(cols, pts[..., 1:], s_col)  # [B, P, W]
    # [B, K, H, P] @ [B, 1, P, W] -> [B, K, H, W]
    return torch.matmul(wts.transpose(1, 2)[:, :, None, :] * gy.transpose(1, 2)[:, None], gx[:, None])


def render_labels(
    points: torch.Tensor,
    classes: torch.Tensor,
    *,
    shape: tuple[int, int],
    n_classes: int,
    sigma_px: Sigma,
) -> torch.Tensor:
    """Label maps of a batch: background channel 0, then one Gaussian map per class.

    Parameters
    ----------
    points
        ``[B, P, 2]`` (row, col) column positions [px].
    classes
        ``[B, P]`` integer class of each column, ``0 .. n_classes - 1``; -1 marks padding.
    shape
        Output size (H, W) [px].
    n_classes
        Number of column classes K (not counting the background).
    sigma_px
        Standard deviation of the label Gaussians [px] (``sigma_A / sampling``): a number, a
        ``[B]`` tensor or (row, col).

    Returns
    -------
    torch.Tensor
        ``[B, K + 1, H, W]`` float32 on the points' device. Class maps are clipped to <= 1; the
        background is ``1 - sum`` of them, clipped to [0, 1].
    """
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
        raise ValueError(
            f"n_classes must be an integer >= 1 (column classes, without the background); got {n_classes!r}."
        )
    if classes.shape != points.shape[:2]:
        raise ValueError(f"classes must be [B, P] = {tuple(points.shape[:2])}; got shape {tuple(classes.shape)}.")
    classes = classes.to(points.device).long()
    if classes.numel() and (bool(torch.any(classes >= n_classes)) or bool(torch.any(classes < -1))):
        raise ValueError(
            f"classes must lie in 0 .. {n_classes - 1} (or -1 for padding); got values from "
            f"{int(classes.min())} to {int(classes.max())}. Raise n_classes or renumber the classes."
        )
    # Group the points by class, so that each map sums only over its own columns: cost
    # B * P * H * W whatever the number of classes.
    pts = points.float()
    b, p = classes.shape
    key = torch.where((classes >= 0) & torch.isfinite(pts).all(-1), classes, torch.full_like(classes, n_classes))
    member = key[..., None] == torch.arange(n_classes, device=pts.device)  # [B, P, K]
    rank = torch.gather(member.long().cumsum(1) - 1, 2, key.clamp(max=n_classes - 1)[..., None])[..., 0]
    q = int(member.sum(1).max()) if member.numel() else 0
    grouped = torch.full((b, n_classes, q, 2), math.nan, device=pts.device)
    use = key < n_classes
    b_idx = torch.arange(b, device=pts.device)[:, None].expand(b, p)
    grouped[b_idx[use], key[use], rank[use]] = pts[use]
    maps = _sum_gaussians(grouped, shape=shape, sigma_px=sigma_px).clamp_(max=1.0)
    background = (1.0 - maps.sum(1, keepdim=True)).clamp_(0.0, 1.0)
    return torch.cat([background, maps], dim=1)


def _sum_gaussians(points: torch.Tensor, *, shape: tuple[int, int], sigma_px: Sigma) -> torch.Tensor:
    """``[B, G, H, W]`` sums of unit-peak Gaussians at ``[B, G, Q, 2]`` points (NaN rows skipped)."""
    h, w = (int(v) for v in shape)
    s_row, s_col = _sigmas(sigma_px, points.shape[0], points)
    s_row, s_col = s_row[..., None], s_col[..., None]  # [B, 1, 1, 1]
    ok = torch.isfinite(points).all(-1, keepdim=True)
    pts = torch.where(ok, points, torch.zeros_like(points))
    rows = torch.arange(h, device=points.device, dtype=points.dtype)
    cols = torch.arange(w, device=points.device, dtype=points.dtype)
    gy = _gaussian_1d(rows, pts[..., :1], s_row).mul_(ok)  # [B, G, Q, H]
    gx = _gaussian_1d(cols, pts[..., 1:], s_col)  # [B, G, Q, W]
    return torch.matmul(gy.transpose(-1, -2), gx)


def _gaussian_1d(grid: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``exp(-(grid - centre)^2 / (2 sigma^2))``, in place on one temporary (memory-bound)."""
    g = (grid - centres).mul_(1 / (math.sqrt(2) * sigma))
    return g.square_().neg_().exp_()


def _pair(value: float | tuple[float, float], name: str = "sampling_A") -> tuple[float, float]:
    """A positive (row, col) pair from one number or two."""
    if np.ndim(value) == 0:
        pair = (float(value), float(value))  # type: ignore[arg-type]
    else:
        vals = tuple(float(v) for v in value)  # type: ignore[union-attr]
        if len(vals) != 2:
            raise ValueError(f"{name} must be a number or a (row, col) pair [Å/px]; got {value!r}.")
        pair = (vals[0], vals[1])
    if not (pair[0] > 0 and pair[1] > 0 and np.isfinite(pair).all()):
        raise ValueError(f"{name} must be positive and finite [Å/px]; got {value!r}.")
    return pair


def pad_columns(
    tables: Sequence[pd.DataFrame],
    *,
    sampling_A: float | tuple[float, float],
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``points`` ``[B, P, 2]`` [px] and ``classes`` ``[B, P]`` from B tables in Å.

    Parameters
    ----------
    tables
        One table per sample with columns ``x_A, y_A`` [Å] and integer ``cls``.
    sampling_A
        Pixel size [Å/px]: one number, or (row, col).
    device
        Where the tensors go (default: CPU).

    Returns
    -------
    points, classes
        float32 (row, col) [px] and int64 classes; padding rows are NaN and -1.
    """
    s_row, s_col = _pair(sampling_A)
    need = ("x_A", "y_A", "cls")
    for t in tables:
        missing = [c for c in need if c not in t.columns]
        if missing:
            raise ValueError(
                f"a columns table lacks {', '.join(missing)}; it needs x_A, y_A (positions in Å) "
                f"and cls (integer class); it has {', '.join(map(str, t.columns)) or 'no columns'}."
            )
    p = max((len(t) for t in tables), default=0)
    points = np.full((len(tables), p, 2), np.nan, np.float32)
    classes = np.full((len(tables), p), -1, np.int64)
    for i, t in enumerate(tables):
        points[i, : len(t), 0] = t["y_A"].to_numpy(float) / s_row
        points[i, : len(t), 1] = t["x_A"].to_numpy(float) / s_col
        classes[i, : len(t)] = t["cls"].to_numpy(np.int64)
    return torch.from_numpy(points).to(device), torch.from_numpy(classes).to(device)


def positions_table(points: torch.Tensor, classes: torch.Tensor) -> pd.DataFrame:
    """One table ``frame, y, x, cls`` [px] of a padded batch; ``frame`` is the sample index."""
    pts = points.detach().to("cpu", torch.float64).numpy()
    cls = classes.detach().cpu().numpy().astype(np.int64)
    frame, idx = np.nonzero((cls >= 0) & np.isfinite(pts).all(-1))
    return pd.DataFrame({
        "frame": frame.astype(np.int64), "y": pts[frame, idx, 0], "x": pts[frame, idx, 1],
        "cls": cls[frame, idx],
    })


def label_maps(
    columns: pd.DataFrame,
    *,
    shape: tuple[int, int],
    sampling_A: float | tuple[float, float],
    n_classes: int,
    sigma_A: float = 1.0,
) -> np.ndarray:
    """Label maps of one image from a columns table in Å.

    Parameters
    ----------
    columns
        Columns with ``x_A, y_A`` [Å] (``row = y_A / sampling``, ``col = x_A / sampling``) and
        integer ``cls`` in ``0 .. n_classes - 1``.
    shape
        Image size (H, W) [px].
    sampling_A
        Pixel size [Å/px]: one number, or (row, col) for non-square pixels.
    n_classes
        Number of column classes K (not counting the background).
    sigma_A
        Standard deviation of the label Gaussians [Å] (Madsen et al.: 1 Å).

    Returns
    -------
    np.ndarray
        ``[K + 1, H, W]`` float32: channel 0 the background ``1 - sum`` (clipped to [0, 1]),
        channel ``c + 1`` the Gaussians of class ``c`` (peak 1, clipped to <= 1 where they overlap).
    """
    s_row, s_col = _pair(sampling_A)
    if not sigma_A > 0:
        raise ValueError(f"sigma_A must be positive [Å]; got {sigma_A!r}.")
    points, classes = pad_columns([columns], sampling_A=(s_row, s_col))
    maps = render_labels(points, classes, shape=shape, n_classes=n_classes,
                         sigma_px=(sigma_A / s_row, sigma_A / s_col))
    return maps[0].numpy()
