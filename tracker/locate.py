"""Locate: class probability maps in, one columns table per image out.

Two methods share one configuration:

``"peaks"`` (the default, all on the maps' device)
    Local maxima of the foreground ``1 - P(background)`` above ``threshold``, at least
    ``min_distance_px`` apart, refined to sub-pixel precision by a weighted least-squares fit
    of a 2-D quadratic to ``log(foreground)`` in a ``(2r+1)^2`` window (exact for a Gaussian
    peak; where it has no maximum near the peak, the plateau's centre or the window's centre
    of mass is used). The class is the argmax of the class channels averaged over the
    window. Only the final ``[N, 5]`` table is copied to the host.

``"watershed"`` (Madsen et al. 2018, on the host)
    Markers at the local minima of the background channel below ``background_max``; the
    background channel is split by a watershed from those markers, each segment is one
    candidate column whose class is the class channel with the largest sum over the segment
    and whose position is the centre of mass of the foreground in the segment. A segment is
    discarded when its summed foreground probability is less than ``discard_t`` times its
    summed background probability.

Tables have trackpy's columns ``y, x`` [px, float64, pixel centres at integers] plus ``cls``
(0-based index into the engine's ``class_names``, i.e. channel - 1) and ``prob`` (the
foreground probability at the column).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .errors import ConfigError, choice_error

Method = Literal["peaks", "watershed"]
Refine = Literal["quadratic", "com"]
RefineOn = Literal["maps", "image"]
_METHODS = ("peaks", "watershed")
_REFINE = ("quadratic", "com")
_REFINE_ON = ("maps", "image")
LATTICE_CLASSES = ("auto", "on", "off")  # [locate] lattice_classes (etem.tracker.lattice_classes)

#: Columns of a located table, in order.
TABLE_COLUMNS = ("y", "x", "cls", "prob")  # (and ``intensity``, added by the detector)


@dataclass(frozen=True)
class LocateConfig:
    """How columns are read off the probability maps.

    Parameters
    ----------
    method
        ``"peaks"`` (fast, on the device) or ``"watershed"`` (Madsen et al. 2018, on the host).
    threshold
        Minimum foreground probability at a peak (``"peaks"``). None (the default): the
        engine's ``suggested_threshold`` (0.35 for the classical locator), else its model
        card's ``threshold`` (chosen on validation images after training), else 0.5.
    min_distance_px
        Peaks closer than this (in either axis) are one column; also the half-width of the
        window in which a background minimum must be lowest to become a marker (``"watershed"``).
    refine_radius_px
        Half-width of the sub-pixel refinement and class-averaging window (``"peaks"``).
    refine
        ``"quadratic"`` (fit to the log of the foreground; the default, it is exact for Gaussian
        peaks) or ``"com"`` (centre of mass of the foreground in the window).
    background_max
        Markers are background minima below this value (``"watershed"``).
    discard_t
        Madsen's ``t``: a segment whose summed foreground probability is below ``t`` times its
        summed background probability is discarded (``"watershed"``). As every pixel of the
        image belongs to a segment, a column with integrated foreground ``S`` [px] survives
        only in a segment of area at most ``S * (1 + 1/t)``; e.g. a Gaussian label of width
        ``s`` px (``S = 2 pi s^2``) keeps segments up to ``6 pi s^2`` at ``t = 0.5``.
    edge_px
        Columns whose centre (after the sub-pixel refinement) lies less than this many pixels
        inside the border (``y < edge_px`` or ``y > H - 1 - edge_px``, likewise ``x``) are left
        out, by either method and on all four sides alike: a column cut by the edge has no
        measurable centre. (Until 2026-12-07 the peaks method judged the peak pixel, and kept
        columns whose refined centre lay 1.25 px inside on the real MoS2 ADF image while it
        dropped others 2.4 px inside.) 0: every column, even one whose refined centre lies
        just outside the image.
    min_separation_A
        Two columns closer than this [Å] are one: the one of lower probability is dropped
        (greedily, strongest first; :func:`suppress_close`). Applied where the frame's pixel
        size is known. None (the default): off. 1 Å is below the projected column spacings of
        crystals on a zone axis (graphene 1.42 Å, Au 1.67 Å along [111] and 2.5 Å along [110],
        MoS2 1.84 Å) and removes the second peak a network sometimes puts on the flank of a
        column; but a particle tilted off the zone axis projects atoms closer than that, and
        their peaks go too (measured in docs/guides/statistics.md).
    min_separation_nn
        Two columns closer than this fraction of the frame's spacing (the median distance from a
        column to its nearest neighbour; frames of 8 columns or more) are one: the one of lower
        probability is dropped (:func:`suppress_close_spacing`). It needs no pixel size, and
        follows the lattice in view: 0.65 (the default) of MoS2's 1.84 Å is 1.2 Å. On the real
        Se-implanted MoS2 ADF image (0.127 Å/px: ``min_distance_px`` is 0.4 Å there) the STEM
        finder put two columns closer than 1.2 Å on 14 elongated blobs (adatoms,
        contamination), the classical locator on 13; now 8 and 3, none closer than 1.1 Å. At
        0.7 all went, but a pair of real peaks 0.71 of the spacing apart was one column in
        some frames of a drifting movie and two in others (5 false flips in 12 frames).
        None or 0: off.
    refine_on
        Where a column's sub-pixel position is read: ``"maps"`` (the default: the probability
        maps, as above) or ``"image"`` (the peak of the frame's Laplacian-of-Gaussian response
        of width ``image_sigma_A`` within ``image_radius_A`` of the column found on the maps, by
        the same quadratic fit; bright or dark columns, read off each frame:
        :func:`refine_on_image`). The image is better where columns image as peaks at their
        positions, as in negative-Cs HRTEM (the ``au-hrtem`` of 2026-12-02 at the in-situ
        microscope: position RMS 0.15 to 0.055 Å at 3,000 e/Å²), worse where they do not: at Madsen's random
        defocus and aberrations the peaks move off the columns (docs/models.md).
    image_sigma_A, image_radius_A
        Width of the response and reach of the search for ``"image"`` [Å].
    intensity_radius_A
        Radius [Å] of the disk about each column over which its ``intensity`` (the mean of the
        frame as recorded; :mod:`etem.tracker.intensity`) is taken; 2.5 px where the pixel size
        is unknown. 0 or None: no ``intensity``. 0.5 Å keeps the disks of columns 1.4 Å apart
        (graphene's bonds, the closest spacing of the bundled materials) apart.
    intensity_classes
        Replace each column's ``cls`` by its sublattice and intensity group, learned on the run's
        first frames (:class:`etem.tracker.intensity.IntensityClasses`): classes for a locator
        that knows one (the STEM finder), so that sites follow S2 -> S and the like in annular
        dark-field movies. ``intensity_groups``: that many groups per sublattice (None: 1 to
        3, as the data say).
    lattice_classes
        ``"auto"``: with a model that classes the species of a honeycomb material (MoS2's Mo,
        S2, S), a column's sublattice decides metal or chalcogen and the network only S2 or S
        (:mod:`etem.tracker.lattice_classes`); ``"on"``: the same, refusing other models;
        ``"off"``: the network's classes as they are (to look for antisites).
    """

    method: Method = "peaks"
    threshold: float | None = None
    min_distance_px: int = 3
    refine_radius_px: int = 2
    refine: Refine = "quadratic"
    background_max: float = 0.995
    discard_t: float = 0.5
    edge_px: int = 2
    min_separation_A: float | None = None
    min_separation_nn: float | None = 0.65
    refine_on: RefineOn = "maps"
    image_sigma_A: float = 0.3
    image_radius_A: float = 0.4
    intensity_radius_A: float | None = 0.5
    intensity_classes: bool = False
    intensity_groups: int | None = None
    lattice_classes: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise choice_error("method", self.method, _METHODS)
        if self.refine_on not in _REFINE_ON:
            raise choice_error("refine_on", self.refine_on, _REFINE_ON)
        if not (self.image_sigma_A > 0 and self.image_radius_A > 0):
            raise ConfigError(f"image_sigma_A and image_radius_A must be positive [Å]; got "
                              f"{self.image_sigma_A!r} and {self.image_radius_A!r}.")
        if self.intensity_radius_A is not None and not self.intensity_radius_A >= 0:
            raise ConfigError(f"intensity_radius_A must be a radius in Å, or 0 or None (no intensity); got "
                              f"{self.intensity_radius_A!r}.")
        if self.intensity_classes and not self.intensity_radius_A:
            raise ConfigError("intensity_classes needs the intensities: set intensity_radius_A.")
        if self.intensity_groups is not None and not (isinstance(self.intensity_groups, (int, np.integer))
                                                      and 1 <= self.intensity_groups <= 8):
            raise ConfigError(f"intensity_groups must be 1 to 8, or None (as the data say); got {self.intensity_groups!r}.")
        if self.lattice_classes not in LATTICE_CLASSES:
            raise choice_error("lattice_classes", self.lattice_classes, LATTICE_CLASSES)
        if self.refine not in _REFINE:
            raise choice_error("refine", self.refine, _REFINE)
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold must be a probability in (0, 1]; got {self.threshold!r}.")
        if not 0 < self.background_max <= 1:
            raise ConfigError(f"background_max must be in (0, 1]; got {self.background_max!r}.")
        for name in ("min_distance_px", "refine_radius_px"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ConfigError(f"{name} must be an integer >= 1; got {v!r}. Round it up.")
        if not (isinstance(self.edge_px, (int, np.integer)) and self.edge_px >= 0):
            raise ConfigError(f"edge_px must be an integer >= 0; got {self.edge_px!r}.")
        if not self.discard_t >= 0:
            raise ConfigError(f"discard_t must be >= 0; got {self.discard_t!r}.")
        v = self.min_separation_nn
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1):
            raise ConfigError(f"min_separation_nn must be a fraction of the columns' spacing in [0, 1), or None; got {v!r}.")
        if self.min_separation_A is not None and not self.min_separation_A >= 0:
            raise ConfigError(f"min_separation_A must be a distance >= 0 in Å, or None; got {self.min_separation_A!r}.")


def empty_table() -> pd.DataFrame:
    """A columns table with no rows and the right dtypes."""
    return pd.DataFrame({
        "y": np.empty(0, np.float64), "x": np.empty(0, np.float64),
        "cls": np.empty(0, np.int64), "prob": np.empty(0, np.float64),
    })


def _table(y, x, cls, prob) -> pd.DataFrame:
    return pd.DataFrame({
        "y": np.asarray(y, np.float64), "x": np.asarray(x, np.float64),
        "cls": np.asarray(cls, np.int64), "prob": np.asarray(prob, np.float64),
    })


def inside_edge(y: np.ndarray, x: np.ndarray, shape: tuple[int, int], edge_px: float) -> np.ndarray:
    """Which centres ``y, x`` [px] lie at least ``edge_px`` inside an image of ``shape`` (pixel
    centres at integers: the border pixels' centres are 0 and ``H - 1``); NaN is outside."""
    h, w = shape
    with np.errstate(invalid="ignore"):
        return (y >= edge_px) & (y <= h - 1 - edge_px) & (x >= edge_px) & (x <= w - 1 - edge_px)


def suppress_close(df: pd.DataFrame, radius_px: float) -> pd.DataFrame:
    """``df`` without the columns that lie within ``radius_px`` of a column of higher ``prob``
    (greedy non-maximum suppression, strongest first; ties keep the earlier row). Row order
    is kept."""
    if len(df) < 2 or not radius_px > 0:
        return df
    from scipy.spatial import cKDTree

    yx = df[["y", "x"]].to_numpy(dtype=float)
    pairs = cKDTree(yx).query_pairs(radius_px, output_type="ndarray")
    if not len(pairs):
        return df
    order = np.argsort(-df["prob"].to_numpy(dtype=float), kind="stable")
    rank = np.empty(len(df), np.int64)
    rank[order] = np.arange(len(df))
    # each pair as (stronger, weaker); visit the stronger ends strongest first
    a, b = pairs[:, 0], pairs[:, 1]
    swap = rank[a] > rank[b]
    strong, weak = np.where(swap, b, a), np.where(swap, a, b)
    by = np.argsort(rank[strong], kind="stable")
    strong, weak = strong[by], weak[by]
    dropped = np.zeros(len(df), bool)
    for s, w in zip(strong.tolist(), weak.tolist()):
        if not dropped[s]:
            dropped[w] = True
    if not dropped.any():
        return df
    out = df[~dropped]
    out.attrs = dict(df.attrs)
    return out.reset_index(drop=True)


def suppress_close_spacing(df: pd.DataFrame, fraction: float, *, min_columns: int = 8) -> pd.DataFrame:
    """:func:`suppress_close` at ``fraction`` of the table's spacing, the median distance from a
    column to its nearest neighbour; ``df`` as it is where it has fewer than ``min_columns``
    columns (too few to say what the spacing is) or ``fraction`` is 0 or None."""
    if not fraction or len(df) < max(2, min_columns):
        return df
    from scipy.spatial import cKDTree

    yx = df[["y", "x"]].to_numpy(dtype=float)
    d, _ = cKDTree(yx).query(yx, k=2)
    return suppress_close(df, fraction * float(np.median(d[:, 1])))


def locate(probs: torch.Tensor, cfg: LocateConfig | None = None) -> list[pd.DataFrame]:
    """Columns of every image of a batch of class probability maps.

    Parameters
    ----------
    probs
        ``[B, K, H, W]`` probabilities (channel 0 background, ``1..K-1`` column classes) on
        any device, any float dtype.
    cfg
        The stage's configuration (defaults: ``LocateConfig()``).

    Returns
    -------
    One DataFrame per image with columns ``y, x, cls, prob``.
    """
    cfg = cfg or LocateConfig()
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ConfigError(
            f"probs must be [B, K, H, W] with K >= 2 (background + column classes); got {tuple(probs.shape)}."
        )
    with torch.no_grad():
        if cfg.method == "watershed":
            return _locate_watershed(probs, cfg)
        return _locate_peaks(probs, cfg)


# --------------------------------------------------------------------------- peaks

@functools.lru_cache(maxsize=32)
def _window_offsets(r: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offsets of the ``(2r+1)^2`` window's pixels (made once per radius and
    device: read only)."""
    d = torch.arange(-r, r + 1, device=device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return dy.reshape(-1), dx.reshape(-1)


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the ``(2 radius + 1)^2`` window around every pixel of ``[..., H, W]``.

    Outside the image counts as ``-inf``. Separable, and each axis by doubling (windows of
    1, 2, 4, ... then one last overlap), so the cost grows as ``log(radius)``.
    """
    k = 2 * radius + 1
    x = F.pad(x, (radius, radius, radius, radius), value=float("-inf"))
    for dim in (-1, -2):
        w = 1
        while 2 * w <= k:
            n = x.shape[dim] - w
            x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, w, n))
            w *= 2
        if w < k:
            s = k - w
            n = x.shape[dim] - s
            x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, s, n))
    return x


def _candidates(fg: torch.Tensor, cfg: LocateConfig) -> torch.Tensor:
    """``[N, 3]`` (b, y, x) of pixels that are the maximum of their window and above threshold."""
    threshold = 0.5 if cfg.threshold is None else cfg.threshold
    mask = (fg == max_filter(fg, cfg.min_distance_px)) & (fg >= threshold)
    # the refinement moves a column by at most a pixel from its peak pixel: candidates one pixel
    # nearer the border than ``edge_px`` may still have their centre inside it (judged after)
    e = cfg.edge_px - 1
    if e > 0:
        mask[:, :e] = False
        mask[:, -e:] = False
        mask[:, :, :e] = False
        mask[:, :, -e:] = False
    return mask.nonzero()


def _merge_clusters(cand: torch.Tensor, fg: torch.Tensor, md: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One (float) centre per cluster of candidates.

    Two candidates within ``md`` of each other (Chebyshev) are both maxima of each other's
    window, so they have the same value: a plateau, or equal peaks closer than the minimum
    distance. Clusters are the connected groups (label propagation on the candidate list);
    each is replaced by the mean position of its members. Returns ``[M, 3]`` float (b, y, x)
    and the number of members ``[M]``.
    """
    n = cand.shape[0]
    centres = cand.to(torch.float64)
    ones = torch.ones(n, dtype=torch.float64, device=fg.device)
    if n < 2:
        return centres, ones
    dev = fg.device
    B, H, W = fg.shape
    Hp, Wp = H + 2 * md, W + 2 * md
    # Candidate ids on a map with a border of -1, so that windows never leave it.
    idmap = torch.full((B * Hp * Wp,), -1, dtype=torch.int32, device=dev)
    lin = (cand[:, 0] * Hp + cand[:, 1] + md) * Wp + cand[:, 2] + md
    idmap[lin] = torch.arange(n, dtype=torch.int32, device=dev)
    dy, dx = _window_offsets(md, dev)
    keep = (dy != 0) | (dx != 0)
    nb = idmap[lin[:, None] + (dy[keep] * Wp + dx[keep])[None, :]]   # [N, w^2 - 1]
    valid = nb >= 0
    rows = valid.any(1)
    if not bool(rows.any()):
        return centres, ones
    # Only candidates with neighbours take part in the propagation.
    sub = rows.nonzero().squeeze(1)
    nb, valid = nb[sub].long(), valid[sub]
    label = torch.arange(n, device=dev)
    while True:
        nb_label = torch.where(valid, label[nb.clamp_min(0)], -1).amax(1)
        new = torch.maximum(label[sub], nb_label)
        if bool((new == label[sub]).all()):
            break
        label[sub] = new
    uniq, inv = torch.unique(label, return_inverse=True)
    m = uniq.numel()
    count = torch.zeros(m, dtype=torch.float64, device=dev).index_add_(0, inv, ones)
    sums = torch.zeros(m, 3, dtype=torch.float64, device=dev).index_add_(0, inv, centres)
    return sums / count[:, None], count


@functools.lru_cache(maxsize=32)
def _quadratic_design(r: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window's design matrix ``[P, 6]`` of a quadratic in (dy, dx), its outer products
    ``[P, 36]`` and a 6x6 identity (made once per radius and device: read only)."""
    dy, dx = _window_offsets(r, device)
    dy, dx = dy.float(), dx.float()
    A = torch.stack([torch.ones_like(dy), dy, dx, dy * dy, dy * dx, dx * dx], 1)
    return A, (A[:, :, None] * A[:, None, :]).reshape(-1, 36), torch.eye(6, device=device)


def _refine(win: torch.Tensor, r: int, method: str, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Sub-pixel offsets ``[N, 2]`` (dy, dx) of the peak in windows ``[N, (2r+1)^2]``.

    Where the quadratic has no maximum within one pixel of the window's centre, ``fallback``
    offsets are used where given (not NaN), else the window's centre of mass.
    """
    dy, dx = _window_offsets(r, win.device)
    w = win.clamp_min(0)
    total = w.sum(1).clamp_min(torch.finfo(w.dtype).tiny)
    com = torch.stack([(w * dy).sum(1), (w * dx).sum(1)], 1) / total[:, None]
    if fallback is not None:
        com = torch.where(torch.isnan(fallback), com, fallback.to(com.dtype))
    if method == "com":
        return com
    # Weighted least squares of log f = a + b dy + c dx + d dy^2 + e dy dx + g dx^2 with
    # weights f^2 (the variance of log f goes as 1/f^2): exact for a Gaussian peak.
    A, AA, eye = _quadratic_design(r, win.device)
    f = w.clamp_min(1e-6)
    wt = f * f
    lhs = (wt @ AA).reshape(-1, 6, 6)
    rhs = (wt * f.log()) @ A
    ridge = 1e-9 * lhs.diagonal(dim1=1, dim2=2).sum(1)
    lhs = lhs + ridge[:, None, None] * eye
    theta, _ = torch.linalg.solve_ex(lhs, rhs)
    gb, gc, hd, he, hg = theta[:, 1], theta[:, 2], theta[:, 3], theta[:, 4], theta[:, 5]
    # Vertex of the quadratic: H @ off = -grad with H = [[2d, e], [e, 2g]].
    det = 4 * hd * hg - he * he
    safe = torch.where(det.abs() > 0, det, torch.ones_like(det))
    oy = (-2 * hg * gb + he * gc) / safe
    ox = (he * gb - 2 * hd * gc) / safe
    quad = torch.stack([oy, ox], 1)
    ok = (hd < 0) & (det > 0) & (quad.abs() <= 1.0).all(1) & torch.isfinite(quad).all(1)
    return torch.where(ok[:, None], quad, com)


def _locate_peaks(probs: torch.Tensor, cfg: LocateConfig) -> list[pd.DataFrame]:
    B, K, H, W = probs.shape
    fg = 1.0 - probs[:, 0].float()
    cand = _candidates(fg, cfg)
    centres, members = _merge_clusters(cand, fg, cfg.min_distance_px)
    n = centres.shape[0]
    if n == 0:
        return [empty_table() for _ in range(B)]
    r = cfg.refine_radius_px
    b = centres[:, 0].long()
    cy, cx = centres[:, 1].round().long(), centres[:, 2].round().long()
    # A plateau's own centre is the best guess where its top is too flat to fit.
    plateau = torch.stack([centres[:, 1] - cy, centres[:, 2] - cx], 1)
    plateau = torch.where((members > 1)[:, None], plateau, torch.nan)
    dy, dx = _window_offsets(r, probs.device)
    pix = (cy[:, None] + dy).clamp(0, H - 1) * W + (cx[:, None] + dx).clamp(0, W - 1)  # [N, P]
    win = fg.view(B, H * W)[b[:, None], pix]                                          # [N, P]
    off = _refine(win, r, cfg.refine, plateau)
    ch = torch.arange(1, K, device=probs.device)
    cls_win = probs.reshape(B, K, H * W)[b[:, None, None], ch[None, :, None], pix[:, None, :]]
    cls = cls_win.float().mean(2).argmax(1)                                           # [N]
    prob = fg[b, cy, cx]
    table = torch.stack([
        centres[:, 0], cy.double() + off[:, 0].double(), cx.double() + off[:, 1].double(),
        cls.double(), prob.double(),
    ], 1).cpu().numpy()
    if cfg.edge_px > 0:
        table = table[inside_edge(table[:, 1], table[:, 2], (H, W), cfg.edge_px)]
    bounds = np.searchsorted(table[:, 0], np.arange(B + 1) - 0.5)
    out = []
    for i in range(B):
        t = table[bounds[i]:bounds[i + 1]]
        out.append(_table(t[:, 1], t[:, 2], t[:, 3], t[:, 4]))
    return out


def refine_on_image(tables: list[pd.DataFrame], images: torch.Tensor, *, sigma_px: float,
                    radius_px: int) -> None:
    """Move each column to the sub-pixel peak of its image's Laplacian-of-Gaussian response.

    ``tables[i]`` holds columns in the pixels of ``images[i]`` (``[B, H, W]``, any device);
    their ``y, x`` are replaced in place. Each column moves to the response's highest pixel
    within ``radius_px`` of its nearest pixel, then to the vertex of a quadratic fitted to the
    response in the ``(2 radius_px + 1)^2`` window there (as on the maps; where the fit has no
    maximum near the centre, the window's centre of mass). Whether the columns are bright or
    dark is read off each image (the sign of the median response at its columns), so HRTEM
    images of either contrast are refined on their columns.
    """
    from .classical import log_response

    counts = [len(t) for t in tables]
    if not sum(counts):
        return
    B, H, W = images.shape
    dev = images.device
    with torch.no_grad():
        resp = log_response(images.float(), sigma_px).reshape(B, H * W)
        yx = torch.as_tensor(np.concatenate([t[["y", "x"]].to_numpy(np.float64) for t in tables]), device=dev)
        b = torch.repeat_interleave(torch.arange(B, device=dev), torch.as_tensor(counts, device=dev))
        cy = yx[:, 0].round().long().clamp(0, H - 1)
        cx = yx[:, 1].round().long().clamp(0, W - 1)
        centre = resp[b, cy * W + cx]
        sign = torch.ones(B, device=dev)
        for i in range(B):
            here = centre[b == i]
            if here.numel() and float(here.median()) < 0:
                sign[i] = -1.0
        dy, dx = _window_offsets(radius_px, dev)

        def windows(cy, cx):
            pix = (cy[:, None] + dy).clamp(0, H - 1) * W + (cx[:, None] + dx).clamp(0, W - 1)
            return resp[b[:, None], pix] * sign[b][:, None]

        # to the response's highest pixel within reach, then the fit about it
        j = windows(cy, cx).argmax(1)
        cy, cx = (cy + dy[j]).clamp(0, H - 1), (cx + dx[j]).clamp(0, W - 1)
        win = windows(cy, cx)
        win = win - win.amin(1, keepdim=True)
        off = _refine(win, radius_px, "quadratic").double()
        new = torch.stack([cy + off[:, 0], cx + off[:, 1]], 1).cpu().numpy()
    start = 0
    for t, n in zip(tables, counts):
        if n:
            t["y"], t["x"] = new[start:start + n, 0], new[start:start + n, 1]
        start += n


# --------------------------------------------------------------------------- watershed

def _locate_watershed(probs: torch.Tensor, cfg: LocateConfig) -> list[pd.DataFrame]:
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    maps = probs.detach().float().cpu().numpy()
    B, K, H, W = maps.shape
    size = 2 * cfg.min_distance_px + 1
    out = []
    for i in range(B):
        bg = maps[i, 0]
        minima = (bg == ndi.minimum_filter(bg, size=size, mode="nearest")) & (bg < cfg.background_max)
        markers, n = ndi.label(minima, structure=np.ones((3, 3)))
        if n == 0:
            out.append(empty_table())
            continue
        seg = watershed(bg, markers).ravel()
        cls_sum = np.stack([np.bincount(seg, maps[i, k].ravel(), n + 1)[1:] for k in range(1, K)], 1)
        fg = 1.0 - bg.ravel()
        fg_sum = np.bincount(seg, fg, n + 1)[1:]
        bg_sum = np.bincount(seg, bg.ravel(), n + 1)[1:]
        yy, xx = np.divmod(np.arange(H * W), W)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.bincount(seg, fg * yy, n + 1)[1:] / fg_sum
            x = np.bincount(seg, fg * xx, n + 1)[1:] / fg_sum
        prob = 1.0 - ndi.minimum(bg, markers, np.arange(1, n + 1))
        keep = (fg_sum > 0) & (fg_sum >= cfg.discard_t * bg_sum)
        if cfg.edge_px > 0:
            keep &= inside_edge(y, x, (H, W), cfg.edge_px)
        out.append(_table(y[keep], x[keep], cls_sum.argmax(1)[keep], np.asarray(prob)[keep]))
    return out
