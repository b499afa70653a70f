"""The run file's layout: one HDF5 file per run (written by :mod:`etem.tracker.runfile`, read by
:mod:`etem.tracker.run`).

Layout (every table is a group with one 1-D dataset per column and a ``columns`` attribute
giving their order)::

    /                   attributes, each a JSON string: format, format_version, status,
                        frame_shape, sampling, created, finished, plus the run's own
                        (config, model card, versions …)
    /frames/<column>    one row per processed frame           (schema FRAMES)
    /columns/<column>   one row per located atomic column     (schema COLUMNS)
    /sites/<column>     one row per site, replaced as a whole (schema SITES)
    /rows               int64 [3]: rows committed in frames, columns, sites
    /maps/occupancy     float32 [H, W], NaN where no site
    /maps/events        float32 [H, W]
    /counters           int64 [n], attribute ``names``
    /stats/<name>/...   tables of any columns, written when the run is closed
    /state/...          what a resumed run needs to go on (see below)

The ``state`` group lets a run that was killed go on in the same file (``etem track --resume``).
Its writer's caller hands over a snapshot of everything it holds between frames (a JSON
document and named arrays) plus append-only records (``logs``), and the snapshot is written
with the next flush into the slot not in use::

    /state/active             int64 [2]: the slot of the latest snapshot (0 or 1; -1: none yet), its number
    /state/slot0, slot1/      ``meta`` (uint8: the JSON document) and one 1-D dataset per state array
    /state/logs/<name>        int64 [n, width], append-only

``active`` is written after everything it points to, so a writer killed in the middle of a flush
leaves the previous snapshot whole. The snapshot records how many rows of ``frames`` and
``columns`` (and of each log) it covers: rows past that are dropped when the run is resumed.

The names below are importable from :mod:`etem.tracker.runfile` too.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "FRAMES", "COLUMNS", "SITES", "TABLES", "MAPS", "RESERVED_ATTRS",
           "check_attr_keys"]

FORMAT = "etem-run"
FORMAT_VERSION = 1
#: HDF5 file-format bounds: v110 is the oldest with SWMR; keeping it as the low bound lets older
#: HDF5 libraries read the file.
LIBVER = ("v110", "latest")
#: Chunk of the resume state's arrays [elements]: they are small (a few per site).
STATE_CHUNK = 256

#: One row per processed frame. ``received`` [s since run start], ``drift_*`` [px],
#: ``sampling`` [Å/px], ``dose`` [e/Å²] (as sent), image quality measured on the frame
#: (``snr``, ``dose_est`` [e/Å²], ``resolution_A``; see etem.tracker.quality), ``confidence``
#: (mean column probability), ``in_range``: 1/0 inside the locator's trust ranges or not, -1 no
#: ranges; ``out_of_range``: bit mask of the figures outside (etem.tracker.trust.FLAGS).
FRAMES: dict[str, np.dtype] = {
    "frame": np.dtype("int64"), "seq": np.dtype("int64"), "t": np.dtype("float64"),
    "received": np.dtype("float64"), "latency_ms": np.dtype("float64"),
    "n_columns": np.dtype("int32"), "drift_y": np.dtype("float64"),
    "drift_x": np.dtype("float64"), "sampling": np.dtype("float64"),
    "dose": np.dtype("float64"), "snr": np.dtype("float64"), "dose_est": np.dtype("float64"),
    "resolution_A": np.dtype("float64"), "confidence": np.dtype("float64"),
    "in_range": np.dtype("int8"), "out_of_range": np.dtype("int16"),
}
#: One row per located column. ``y, x`` [px] in the frame; ``y_ref, x_ref`` [px] drift-corrected;
#: ``intensity``: the frame's mean about the column, ``background``: the frame's floor about it
#: (etem.tracker.intensity; NaN where not measured, as in files written before they were).
COLUMNS: dict[str, np.dtype] = {
    "frame": np.dtype("int64"), "y": np.dtype("float32"), "x": np.dtype("float32"),
    "cls": np.dtype("int16"), "prob": np.dtype("float32"), "particle": np.dtype("int64"),
    "site": np.dtype("int64"), "y_ref": np.dtype("float32"), "x_ref": np.dtype("float32"),
    "intensity": np.dtype("float32"), "background": np.dtype("float32"),
}
#: One row per site. ``y, x`` [px] in reference coordinates; counts since the run started.
SITES: dict[str, np.dtype] = {
    "site": np.dtype("int64"), "y": np.dtype("float64"), "x": np.dtype("float64"),
    "cls": np.dtype("int16"), "n_obs": np.dtype("int64"), "n_occupied": np.dtype("int64"),
    "n_events": np.dtype("int64"), "occupancy": np.dtype("float64"),
    "event_rate": np.dtype("float64"), "first_frame": np.dtype("int64"),
    "last_frame": np.dtype("int64"),
}
TABLES: dict[str, dict[str, np.dtype]] = {"frames": FRAMES, "columns": COLUMNS, "sites": SITES}
MAPS = ("occupancy", "events")

#: Root attributes the file manages itself; the run's own attrs may not use these names.
RESERVED_ATTRS = frozenset(
    {"format", "format_version", "status", "frame_shape", "sampling", "created", "finished", "writer",
     "resumes"})


def check_attr_keys(attrs: Mapping[str, Any]) -> dict[str, str]:
    """A run's own root attributes as JSON strings; a name the file manages itself is refused."""
    from .h5io import _to_json

    bad = sorted(set(attrs) & RESERVED_ATTRS)
    if bad:
        raise ValueError(f"run attributes {bad} are reserved by the run file; rename them.")
    return {str(k): _to_json(str(k), v) for k, v in attrs.items()}
