"""A classical column finder behind the engine protocol: no network, no training.

The scale-normalized Laplacian of Gaussian at the column width is the classic detector of
Gaussian-like blobs: its response peaks on columns and ignores slow background changes. Its response is turned into a pseudo-probability per image, so the
same :func:`~etem.tracker.locate.locate` (and its threshold) serves trained and classical
engines alike:

    foreground = clip(response / reference, 0, 1),   background = 1 - foreground

where ``reference`` is a high quantile (default 0.99) of the heights of the response's
positive local maxima, i.e. the height of the strongest columns of that image. A column
therefore passes ``threshold`` when its response is at least ``threshold`` times the strong
columns'.

``DEFAULT_THRESHOLD = 0.35`` is the baseline. On Poisson-noise lattices (columns 10 px apart)
0.3 gives F1 >= 0.99 for bright columns of 200-500 counts over 2-10 counts/px and for dark
columns taking 300-500 counts out of 40 counts/px, and it is unaffected by vacuum around a
particle. It assumes columns of similar strength: a column a third as strong as the strongest
sits at the threshold, so for mixed elements lower it (0.15 found both species of a 300/100
count mixture). On the demo's simulated nanoparticle movies 0.35 found every column (F1 1.000
over 40 frames, two seeds) where 0.3 let a few noise maxima through, and on a real SrTiO3 ADF
image both 0.3 and 0.35 find both sublattices while 0.5 finds only the brighter one. An image
with no columns at all still yields its strongest noise maxima.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .errors import ConfigError, choice_error
from .locate import LocateConfig, locate
from .preprocess import gaussian_kernel1d, separable_filter

Contrast = Literal["bright", "dark"]
_CONTRAST = ("bright", "dark")

#: The baseline threshold of :func:`find_columns_classical` (see the module docstring).
DEFAULT_THRESHOLD = 0.35


def log_response(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Scale-normalized negative Laplacian of Gaussian ``-sigma^2 (G_yy + G_xx) * I``.

    Bright blobs of width ``sigma_px`` give positive peaks. ``images`` is ``[..., H, W]``;
    boundaries are symmetric.
    """
    g0 = gaussian_kernel1d(sigma_px, 0, device=images.device)
    g2 = gaussian_kernel1d(sigma_px, 2, device=images.device)
    x = images.float()
    lap = separable_filter(x, g2, g0) + separable_filter(x, g0, g2)
    return -(sigma_px**2) * lap


def otsu_split(values: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of a 1-D tensor (exact, over its sorted values): the value that splits
    it into two groups of largest between-group variance; returned in the input's units."""
    v, _ = torch.sort(values.double())
    n = v.numel()
    c = torch.cumsum(v, 0)[:-1]
    i = torch.arange(1, n, device=v.device, dtype=v.dtype)
    mu0 = c / i
    mu1 = (v.sum() - c) / (n - i)
    between = (i / n) * (1 - i / n) * (mu0 - mu1) ** 2
    j = int(torch.argmax(between))
    return v[j + 1].to(values.dtype)


class ClassicalEngine:
    """Laplacian-of-Gaussian column detector with the :class:`~etem.tracker.engines.base.Engine` API.

    Parameters
    ----------
    column_sigma_px
        Gaussian width of a column in the image [px] (the detector's scale).
    contrast
        ``"bright"`` columns (HAADF-STEM, or HRTEM at a bright-atom defocus) or ``"dark"``.
    reference_quantile
        Quantile of the column maxima's heights that maps to probability 1 (see ``_reference``).
    device
        Where ``predict`` runs and returns (default CPU).

    ``predict`` uses the first channel of the batch (the first image of a focal series) and
    returns ``[B, 2, H, W]``: background and the one class ``"column"``.
    """

    name = "classical"
    n_inputs = 1
    class_names = ("column",)
    sampling = None
    #: The ``LocateConfig.threshold`` this engine's maps are calibrated for.
    suggested_threshold = DEFAULT_THRESHOLD
    #: The preprocessing normalization this engine expects (the LoG removes smooth background).
    normalization = "global"

    def __init__(
        self,
        column_sigma_px: float = 2.0,
        contrast: Contrast = "bright",
        *,
        reference_quantile: float = 0.99,
        device: torch.device | str | None = None,
    ) -> None:
        if contrast not in _CONTRAST:
            raise choice_error("contrast", contrast, _CONTRAST)
        if not column_sigma_px > 0:
            raise ConfigError(f"column_sigma_px must be positive [px]; got {column_sigma_px!r}.")
        if not 0 < reference_quantile <= 1:
            raise ConfigError(f"reference_quantile must be in (0, 1]; got {reference_quantile!r}.")
        self.column_sigma_px = float(column_sigma_px)
        self.contrast = contrast
        self.reference_quantile = float(reference_quantile)
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return (f"ClassicalEngine(column_sigma_px={self.column_sigma_px}, "
                f"contrast={self.contrast!r}, device={str(self.device)!r})")

    def _reference(self, resp: torch.Tensor) -> torch.Tensor:
        """Per image: the ``reference_quantile`` of the column maxima's heights.

        The positive local maxima are split in two by Otsu's criterion on their heights
        (noise maxima below, columns above) and the quantile is taken over the upper group.
        Without the split, an image with few columns in a large field of noise (a small
        particle in a wide view) would be scaled to its noise maxima, which would then pass.
        """
        k = 2 * max(1, int(round(self.column_sigma_px))) + 1
        pooled = F.max_pool2d(resp.unsqueeze(1), k, stride=1, padding=k // 2).squeeze(1)
        is_max = (resp == pooled) & (resp > 0)
        refs = []
        for r, m in zip(resp, is_max):  # per image: the number of maxima differs
            heights = r[m]
            if heights.numel() == 0:
                refs.append(torch.ones((), device=resp.device))
                continue
            upper = heights[heights >= otsu_split(heights)] if heights.numel() > 2 else heights
            refs.append(torch.quantile(upper, self.reference_quantile))
        return torch.stack(refs).clamp_min(torch.finfo(torch.float32).tiny)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` images -> ``[B, 2, H, W]`` (background, column) on ``device``."""
        if batch.ndim != 4:
            raise ConfigError(f"batch must be [B, C, H, W]; got shape {tuple(batch.shape)}.")
        x = batch[:, 0].to(self.device, dtype=torch.float32)
        if self.contrast == "dark":
            x = -x
        resp = log_response(x, self.column_sigma_px)
        fg = (resp / self._reference(resp)[:, None, None]).clamp_(0.0, 1.0)
        return torch.stack([1.0 - fg, fg], 1)


def find_columns_classical(
    image: np.ndarray,
    *,
    column_sigma_px: float = 2.0,
    contrast: Contrast = "bright",
    threshold: float = DEFAULT_THRESHOLD,
    min_distance_px: int = 3,
) -> pd.DataFrame:
    """Columns of one image by the classical detector: ``y, x, cls, prob``.

    Parameters
    ----------
    image
        ``[H, W]`` (or ``[F, H, W]``: the first image is used), any real dtype.
    column_sigma_px
        Gaussian width of a column [px].
    contrast
        ``"bright"`` or ``"dark"`` columns.
    threshold
        Minimum pseudo-probability of a column (see the module docstring).
    min_distance_px
        Minimum distance between columns [px]; keep it below the column spacing.
    """
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2:
        raise ConfigError(f"image must be [H, W] or [F, H, W]; got shape {np.shape(image)}.")
    if a.dtype.kind not in "uif":
        raise ValueError(f"image dtype {a.dtype} is not a real number type.")
    if not np.isfinite(a).all():
        raise ValueError("image contains NaN or infinite pixels.")
    engine = ClassicalEngine(column_sigma_px, contrast)
    probs = engine.predict(torch.from_numpy(a.astype(np.float32))[None, None])
    cfg = LocateConfig(threshold=threshold, min_distance_px=min_distance_px)
    return locate(probs, cfg)[0]
