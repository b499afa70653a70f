"""The unit of data that flows through the pipeline: one frame (or focal series) with its header."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Column names of a columns table (trackpy's convention plus class and probability).
COLUMN_FIELDS = ("frame", "y", "x", "cls", "prob")


@dataclass(slots=True)
class Frame:
    """One acquired frame.

    Parameters
    ----------
    image
        ``[H, W]`` or ``[F, H, W]`` (a focal series of F images) array, any of the wire dtypes.
    frame
        Acquisition index.
    sampling
        Pixel size [Å/px]; ``None`` where unknown.
    seq
        Message sequence number of the stream (for gap detection); equals ``frame`` for files.
    t
        Acquisition time [s] where known.
    defocus
        Defocus per focal image [Å] where known.
    dose
        Electron dose [e/Å²] where known.
    meta
        Free-form metadata (stream id, source file …).
    received
        ``time.perf_counter()`` when the frame entered the pipeline (for latency).
    """

    image: np.ndarray
    frame: int
    sampling: float | None = None
    seq: int | None = None
    t: float | None = None
    defocus: tuple[float, ...] | None = None
    dose: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    received: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """The image's ``(H, W)``."""
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]

    @property
    def n_focal(self) -> int:
        """Number of images in the focal series (1 for a single image)."""
        return 1 if self.image.ndim == 2 else int(self.image.shape[0])
