"""The units of data that flow through the pipeline: one frame (or focal series) with its header
in, and what the pipeline yields for it out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Column names of a columns table (trackpy's convention plus class, probability, intensity and
#: the image's floor about the column).
COLUMN_FIELDS = ("frame", "y", "x", "cls", "prob", "intensity", "background")


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
    finite
        Its pixels are known to be finite (whole numbers, or floats checked on arrival), so
        that later stages need not scan them again.
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
    finite: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """The image's ``(H, W)``."""
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]

    @property
    def n_focal(self) -> int:
        """Number of images in the focal series (1 for a single image)."""
        return 1 if self.image.ndim == 2 else int(self.image.shape[0])


def class_label(names: Sequence[str] | None, k: int) -> str:
    """The name of class ``k`` (a model's, or the intensity classes'), or ``class k`` where
    ``names`` has none for it."""
    k = int(k)
    return str(names[k]) if names and 0 <= k < len(names) else f"class {k}"


def column_values(table: pd.DataFrame, name: str) -> np.ndarray:
    """The values of ``table``'s (first) column ``name``, looked up by position: a table
    fresh from another process or from a constructor has no hash table of its column names
    yet, and ``table[name]`` builds one (about 60 µs in pandas 3, for strings) and a Series."""
    get = getattr(table, "_get_column_array", None)  # pandas' own, not public
    names = list(table.columns)
    if get is None or name not in names:
        return table[name].to_numpy()
    return np.asarray(get(names.index(name)))


@dataclass
class FrameResult:
    """What the pipeline yields per processed frame."""

    frame: int
    seq: int | None
    columns: pd.DataFrame  # frame, y, x, cls, prob, intensity, background, particle, site, y_ref, x_ref
    drift: tuple[float, float]
    latency_s: float
    sampling: float | None
