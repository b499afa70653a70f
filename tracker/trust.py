"""A trust flag per frame: is this frame inside what the locator was shown to handle?

A locator (a trained network or the classical one) is trustworthy only inside the range of
images its evaluation covered: Wei et al. show every atom finder collapses past a cut-off in
dose, pixel size, resolution or contrast, and fails silently there. :class:`TrustRanges` holds
those cut-offs as figures that can be measured on any frame (:mod:`etem.tracker.quality`), and
:func:`judge` compares a frame with them. An out-of-range frame is still processed and flagged,
never dropped.

Where the ranges come from: a model bundle's card (``card["trust"]``, written by the evaluation
sweep of :mod:`etem.train.sweep`), or, for the classical locator, the packaged result of the same
sweep (``data/classical_trust.json``). An engine without either has no flag (``in_range = -1``).
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["FLAGS", "BlankFrames", "TrustRanges", "TrustTally", "judge", "describe", "ranges_for", "tally"]

#: Bits of a frame's ``out_of_range`` mask, by the figure that is out of range.
FLAGS = {"sampling": 1, "snr": 2, "resolution": 4, "confidence": 8, "nowhere": 16, "contrast": 32}
#: Relative slack on the pixel-size range: a sweep passes at grid points (a model may pass at its
#: own pixel size only), and a file's calibration of 0.2 Å/px may read 0.19996.
SAMPLING_SLACK = 0.01


@dataclass(frozen=True)
class TrustRanges:
    """The figures inside which a locator met the cut-offs of its evaluation.

    Parameters
    ----------
    sampling_A
        ``(smallest, largest)`` pixel size [Å/px] of the frames as recorded (the two may be the
        same: a model that passed at its own pixel size only); judged with 1 % slack.
    snr_min
        Least signal-to-noise (:func:`etem.tracker.quality.measure`).
    resolution_max_A
        Coarsest measured resolution [Å].
    confidence_min
        Least mean column probability.
    cutoffs
        The evaluation's pass criteria (e.g. recall ≥ 0.9, precision ≥ 0.95, RMS ≤ 0.3 Å).
    source
        How the ranges were measured (for the card and the run file).
    passed_nowhere
        The locator met the cut-offs in none of the conditions it was evaluated in: every frame
        is out of range.
    note
        Said with a frame out of range (:func:`describe`): how these ranges were chosen, where
        that is worth knowing (the classical locator's strictest ranges, the kind of image unknown).
    """

    sampling_A: tuple[float, float] | None = None
    snr_min: float | None = None
    resolution_max_A: float | None = None
    confidence_min: float | None = None
    cutoffs: dict[str, float] = field(default_factory=dict)
    source: str = ""
    passed_nowhere: bool = False
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrustRanges:
        known = {k: d[k] for k in ("sampling_A", "snr_min", "resolution_max_A", "confidence_min", "cutoffs", "source",
                                   "passed_nowhere") if k in d}
        if known.get("sampling_A") is not None:
            known["sampling_A"] = tuple(float(v) for v in known["sampling_A"])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """The fields a card or the packaged file keeps (``note`` is said, not stored)."""
        d = asdict(self)
        d.pop("note")
        return d

    def text(self) -> str:
        """The ranges in words (``"SNR >= 3.1, resolution <= 1.2 Å, …"``)."""
        if self.passed_nowhere:
            return "none: the locator met the cut-offs nowhere in its evaluation"
        parts = []
        if self.snr_min is not None:
            parts.append(f"SNR >= {self.snr_min:.3g}")
        if self.resolution_max_A is not None:
            parts.append(f"resolution <= {self.resolution_max_A:.2f} Å")
        if self.sampling_A is not None:
            parts.append(f"pixel size {self.sampling_A[0]:g}–{self.sampling_A[1]:g} Å/px")
        if self.confidence_min is not None:
            parts.append(f"mean column probability >= {self.confidence_min:.2f}")
        return ", ".join(parts) or "unbounded"


def judge(snr: float, resolution_A: float, sampling: float | None, confidence: float,
          ranges: TrustRanges | None) -> int:
    """The frame's ``out_of_range`` mask (0: inside every range; -1: no ranges to judge by).

    A figure that could not be measured (NaN; the sampling of a frame that gives none) does not
    put the frame out of range; the resolution in Å and the SNR need the sampling (without it
    the SNR is per pixel, the ranges' per Å²: the same image read as up to 25 times noisier at
    0.2 Å/px), so a frame of unknown pixel size is judged by its confidence alone.
    """
    if ranges is None:
        return -1
    mask = FLAGS["nowhere"] if ranges.passed_nowhere else 0
    if ranges.sampling_A is not None and sampling is not None and np.isfinite(sampling):
        lo, hi = ranges.sampling_A
        if not lo * (1 - SAMPLING_SLACK) <= sampling <= hi * (1 + SAMPLING_SLACK):
            mask |= FLAGS["sampling"]
    if ranges.snr_min is not None and sampling is not None and np.isfinite(snr) and snr < ranges.snr_min:
        mask |= FLAGS["snr"]
    if (ranges.resolution_max_A is not None and sampling is not None and np.isfinite(resolution_A)
            and resolution_A > ranges.resolution_max_A):
        mask |= FLAGS["resolution"]
    if ranges.confidence_min is not None and np.isfinite(confidence) and confidence < ranges.confidence_min:
        mask |= FLAGS["confidence"]
    return mask


def describe(mask: int, ranges: TrustRanges | None = None) -> str:
    """Words for a mask: ``"in range"``, ``"no ranges"``, or what is out of range."""
    if mask < 0:
        return "no ranges"
    if mask == 0:
        return "in range"
    words = {
        "sampling": "pixel size" + (f" outside {ranges.sampling_A[0]:g}–{ranges.sampling_A[1]:g} Å/px"
                                    if ranges and ranges.sampling_A else ""),
        "snr": "SNR" + (f" below {ranges.snr_min:.3g}" if ranges and ranges.snr_min is not None else ""),
        "resolution": "resolution" + (f" coarser than {ranges.resolution_max_A:.2f} Å"
                                      if ranges and ranges.resolution_max_A is not None else ""),
        "confidence": "confidence" + (f" below {ranges.confidence_min:.2f}"
                                      if ranges and ranges.confidence_min is not None else ""),
        "nowhere": "the locator met the cut-offs nowhere in its evaluation",
        "contrast": "contrast (the columns look dark where bright ones are looked for, or bright where dark: "
                    "--dark)",
    }
    note = f" ({ranges.note})" if ranges and ranges.note else ""
    return "out of range: " + ", ".join(words[k] for k, bit in FLAGS.items() if mask & bit) + note


def tally(out_of_range: Any) -> str | None:
    """One line on a run's frames: how many were inside the ranges, and why the others were
    not (``"12 of 60 frames inside the locator's trust ranges; outside for SNR (48 frames),
    resolution (3 frames)"``);
    None where no frame was judged."""
    masks = np.asarray(out_of_range, dtype=np.int64)
    judged = masks[masks >= 0]
    if not judged.size:
        return None
    line = f"{int((judged == 0).sum())} of {judged.size} frames inside the locator's trust ranges"
    why = {"sampling": "pixel size", "snr": "SNR", "resolution": "resolution", "confidence": "confidence",
           "nowhere": "passed nowhere in its evaluation", "contrast": "contrast"}
    n = {k: int(((judged & bit) > 0).sum()) for k, bit in FLAGS.items()}
    counts = [f"{why[k]} ({v} frame{'s' if v != 1 else ''})" for k, v in n.items() if v]
    return line + (f"; outside for {', '.join(counts)}" if counts else "")


class TrustTally:
    """A run's trust flags as they come: over the whole run, and over the latest ``window`` judged
    frames, which is what a live view should go by. A frame at the edge of a range flips in and
    out with the noise; an alert is raised only while most of the latest frames are out of range
    (the data have left what the locator was shown to handle), and it clears when they come back.
    One thread adds; any may read :meth:`status` (it reads counters, never the window itself).
    """

    def __init__(self, window: int = 50, counts: tuple[int, int] | list[int] = (0, 0)) -> None:
        if window < 1:
            raise ValueError(f"window must be at least one frame, got {window}")
        self.counts = list(counts)  # frames judged [outside, inside] the ranges, whole run
        self._window: deque[int] = deque(maxlen=window)  # 1 inside, 0 outside; the latest judged frames
        self._recent = [0, 0]  # frames [outside, inside] among them
        self.last_out = ""  # why the latest frame out of range was (words of :func:`describe`)

    def add(self, in_range: int, why: str = "") -> None:
        """One frame's flag (``in_range`` 1, 0, or -1 for a frame that was not judged)."""
        if in_range < 0:
            return
        self.counts[in_range] += 1
        if len(self._window) == self._window.maxlen:
            self._recent[self._window[0]] -= 1  # the oldest leaves the window
        self._window.append(in_range)
        self._recent[in_range] += 1
        if in_range == 0:
            self.last_out = why

    @property
    def alert(self) -> bool:
        """More than half of the latest judged frames are out of range."""
        return self._recent[0] > self._recent[1]

    def status(self) -> dict[str, Any]:
        """The figures of :meth:`Pipeline.status` (whole run, latest window, alert, why)."""
        out, inside = self._recent
        return {"in_range": self.counts[1], "out_of_range": self.counts[0],
                "recent_in_range": inside, "recent_judged": out + inside,
                "trust_alert": out > inside, "trust_last_out": self.last_out}


def _packaged(name: str) -> dict[str, Any] | None:
    try:
        text = resources.files("etem.tracker").joinpath("data", name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return None
    return json.loads(text)


#: Why the classical locator's ranges are strict where the kind of image is not known.
UNKNOWN_KIND_NOTE = ("the kind of image unknown, the strictest of the classical locator's HRTEM and STEM "
                     "ranges; --imaging hrtem or stem (config.engine.imaging, [engine] imaging) takes that kind's")


def ranges_for(engine: Any, imaging: str | None = None) -> TrustRanges | None:
    """The trust ranges of an engine: its model card's, the classical locator's packaged ones, or None.

    The classical locator's are kept per contrast (``"bright"``, ``"dark"``: the strictest over
    every kind of image they were measured on) and per contrast and kind (``"bright:stem"``);
    ``imaging`` (``"hrtem"``, ``"stem"``) picks the latter where there is one.
    """
    card = getattr(engine, "card", None) or {}
    if isinstance(card, dict) and isinstance(card.get("trust"), dict):
        return TrustRanges.from_dict(card["trust"])
    if getattr(engine, "name", None) == "classical":
        contrast = getattr(engine, "contrast", "bright")
        data = _packaged("classical_trust.json") or {}
        key = f"{contrast}:{imaging}" if imaging and f"{contrast}:{imaging}" in data else contrast
        if key in data:
            ranges = TrustRanges.from_dict(data[key])
            if ":" not in key and any(k.startswith(f"{contrast}:") for k in data):
                ranges = replace(ranges, note=UNKNOWN_KIND_NOTE)
            return ranges
    return None


class BlankFrames:
    """Which frames hold no image (beam blanked, shutter closed), to be rejected rather than
    tracked: a constant frame, or one in which no spacing stands above the noise (its measured
    resolution is infinite) and whose SNR is under ``fraction`` of the median of the last
    ``history`` judged frames (once there are ``min_history``). ``fraction`` 0: none."""

    def __init__(self, fraction: float, history: int = 50, min_history: int = 5) -> None:
        self.fraction = fraction
        self.min_history = min_history
        self._snr: deque[float] = deque(maxlen=history)  # the SNR of the frames judged to hold an image

    def constant(self, image: np.ndarray) -> str | None:
        """Why ``image`` holds no image before it is measured (a constant frame), or None."""
        probe = image[..., ::7, ::7]  # a constant frame is constant everywhere; real frames hold noise
        return "it is constant" if self.fraction > 0 and probe.size and probe.min() == probe.max() else None

    def judge(self, quality: dict) -> str | None:
        """Why a frame of these measured figures (``snr``, ``resolution_A``) holds no image, or None
        (its SNR then joins the history)."""
        snr, resolution = quality.get("snr", np.nan), quality.get("resolution_A", np.nan)
        if not np.isfinite(snr) or self.fraction <= 0:
            return None
        if len(self._snr) >= self.min_history and resolution == np.inf:
            typical = float(np.median(self._snr))
            if snr < self.fraction * typical:
                return f"no spacing above the noise, SNR {snr:.3g} against the run's {typical:.3g}"
        self._snr.append(float(snr))
        return None
