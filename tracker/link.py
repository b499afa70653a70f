"""Link: trackpy's streaming linker on drift-corrected coordinates.

Drift is estimated frame to frame from the columns themselves (no image needed, so it works
when only column tables come back from the GPU): the new frame's columns are shifted by the
predicted drift, paired with the previous frame's drift-corrected columns by nearest
neighbour, and the median residual updates the drift (a few iterations). Linking then runs in
the reference frame of frame 0, where columns stand still apart from real hops.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

log = logging.getLogger("etem.link")


@dataclass(frozen=True)
class LinkConfig:
    """Linking options.

    search_range_A
        Largest distance a column moves between frames after drift correction [Å].
    memory
        Frames a column may vanish (blink) and still keep its track.
    drift
        Estimate and correct frame-to-frame drift.
    max_drift_A
        Largest drift between two consecutive frames that the estimator looks for [Å].
    """

    search_range_A: float = 1.0
    memory: int = 3
    drift: bool = True
    max_drift_A: float = 1.5
    link_strategy: str = "auto"


def estimate_shift(
    ref_yx: np.ndarray, yx: np.ndarray, guess: np.ndarray, radius: float, *, iterations: int = 4
) -> tuple[np.ndarray, int]:
    """Shift ``d`` such that ``yx - d`` lands on ``ref_yx``; returns (d, number of pairs used).

    Robust to columns appearing and vanishing: only mutual nearest neighbours within
    ``radius`` vote, through their median residual. Falls back to ``guess`` with too few pairs.
    """
    d = np.asarray(guess, dtype=float).copy()
    if len(ref_yx) < 3 or len(yx) < 3:
        return d, 0
    tree = cKDTree(ref_yx)
    n = 0
    r = radius
    for _ in range(iterations):
        dist, idx = tree.query(yx - d, distance_upper_bound=r)
        ok = np.isfinite(dist)
        n = int(ok.sum())
        if n < 3:
            return np.asarray(guess, dtype=float), 0
        d = d + np.median((yx - d)[ok] - ref_yx[idx[ok]], axis=0)
        r = max(radius / 2, 0.5)  # tighten once roughly aligned
    return d, n


class StreamLinker:
    """Frame-by-frame linking with drift correction (trackpy's ``Linker`` underneath).

    ``update(frame, columns)`` takes one frame's columns (``y, x`` in px) and returns them
    with ``particle``, ``y_ref``, ``x_ref`` (drift-corrected px) added, and records the
    frame's cumulative drift ``(dy, dx)`` in ``self.drift``.
    """

    def __init__(self, cfg: LinkConfig, sampling: float | None) -> None:
        import trackpy

        self.cfg = cfg
        self.sampling = sampling
        px = 1.0 if sampling is None else 1.0 / sampling  # px per Å
        if sampling is None:
            log.warning("sampling unknown: search_range_A and max_drift_A are taken as px")
        self.search_range_px = cfg.search_range_A * px
        self.max_drift_px = cfg.max_drift_A * px
        self._linker = trackpy.linking.Linker(
            self.search_range_px, memory=cfg.memory, link_strategy=cfg.link_strategy
        )
        self._started = False
        self._prev_ref: np.ndarray | None = None
        self._velocity = np.zeros(2)
        self.drift = np.zeros(2)
        self.drift_pairs = 0

    def update(self, frame: int, columns: pd.DataFrame) -> pd.DataFrame:
        yx = columns[["y", "x"]].to_numpy(dtype=float)
        if self.cfg.drift and self._prev_ref is not None:
            guess = self.drift + self._velocity
            new, self.drift_pairs = estimate_shift(self._prev_ref, yx, guess, self.max_drift_px)
            if self.drift_pairs:
                self._velocity = 0.5 * self._velocity + 0.5 * (new - self.drift)
            self.drift = new
        ref = yx - self.drift
        if not self._started:
            self._linker.init_level(ref, frame)
            self._started = True
        else:
            self._linker.next_level(ref, frame)
        if len(ref):
            self._prev_ref = ref
        out = columns.copy()
        out["particle"] = np.asarray(self._linker.particle_ids, dtype=np.int64)
        out["y_ref"] = ref[:, 0]
        out["x_ref"] = ref[:, 1]
        return out

