"""Resuming a run: what the pipeline holds between frames, as a snapshot in the run file, and back.

A run whose tracker was killed (``SIGKILL``, a power cut, a crash) leaves a run file that holds
everything up to its last flush, at most about a second before the end. ``etem track --resume
RUN.h5`` goes on with *the same run*: the same config (stored with the run), the linker and the
sites where they were, the counters, and the next particle id, so that ids never collide.

With every flush the pipeline hands the run file's writer a snapshot (:func:`capture`), which
stands for exactly the rows written up to then; :func:`load` reads the latest one back and
checks that the file can be resumed, and :func:`restore` puts it into a new pipeline. Replays
go on after the last saved frame (frames read after it are read again); a live stream goes on
with whatever arrives, and what it sent meanwhile counts as missing (a gap in ``seq``).

What is restored exactly: the sites (positions, class votes, occupancy and event counts, the
frames awaiting gap filling), the flips, hops and residence runs, the drift and its velocity,
the counters. The linker is rebuilt by linking the last ``memory + 1`` saved frames again and
giving every track the id it has in the file, so a column that blinked just before the kill
keeps its id too.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ConfigError, FileFormatError
from .eventlog import EventLog
from .trust import TrustTally

if TYPE_CHECKING:
    from .pipeline import Pipeline, PipelineConfig
    from .run import Run

log = logging.getLogger("etem.resume")

#: Version of the snapshot's layout; a file with another cannot be resumed.
STATE_VERSION = 3
#: Statuses a run can be resumed from without ``force`` ("running": its tracker died).
RESUMABLE = ("running", "interrupted", "stopped")

#: Arrays of a snapshot (1-D in the file; their shapes are in the snapshot's document).
STATE_ARRAYS: dict[str, str] = {
    "sites_pos": "float64", "sites_n_pos": "int64", "sites_cls_votes": "int64",
    "sites_n_occ": "int64", "sites_n_ev": "int64", "sites_first": "int64", "sites_last": "int64",
    "sites_state": "uint8", "sites_run_start": "int64", "sites_n_seen": "int64", "sites_out": "uint8",
    "sites_left": "uint8",
    "sites_alpha": "float64", "sites_n_det": "int64", "sites_w_occ": "float64", "sites_w_det_occ": "float64",
    "sites_w_switch": "float64", "sites_w_occ_cls": "float64", "sites_w_det_cls": "float64",
    "sites_prob_occ": "float64", "sites_cls_post": "float64",
    "sites_cls_state": "int64", "sites_cls_hist": "int64", "sites_cls_hist_frame": "int64",
    "pending_frames": "int64", "pending_lens": "int64", "pending_sites": "int64", "pending_bins": "int64",
    "sites_int_stats": "float64", "pending_z": "float64", "pending_z_lens": "int64", "hops_lone": "int64",
    "class_changes_open": "int64",
    "prev_ref": "float64",
}
#: Append-only records: (frame, site, +1/-1) flips, (frame, from, to) hops,
#: (site, start, frames, occupied, cut: 1 end not seen + 2 start not seen) residence runs.
STATE_LOGS: dict[str, tuple[str, int]] = {"flips": ("int64", 3), "hops": ("int64", 3), "runs": ("int64", 5),
                                          "class_changes": ("int64", 4)}
_SITE_ARRAYS = ("pos", "n_pos", "cls_votes", "n_occ", "n_ev", "first", "last", "state", "run_start", "n_seen", "out",
                "left",
                "alpha", "n_det", "w_occ", "w_det_occ", "w_switch", "w_occ_cls", "w_det_cls", "prob_occ", "cls_post",
                "cls_state", "cls_hist", "cls_hist_frame", "int_stats")


# ----------------------------------------------------------------------------------- snapshot

def counters_at_snapshot(counters: dict[str, int], ahead: list[tuple[float, str, str]]) -> dict[str, int]:
    """The counters as they stand for the frames up to the last processed one.

    Frames received but still in the queues, and frames rejected or dropped that arrived after
    the last processed one (``ahead``: ``(received, "rejected"|"dropped", reason)``), are taken
    back out: a replay reads them again, and for a live stream they fall in the gap that the
    resumed run counts as missing.
    """
    out = dict(counters)
    in_flight = counters["received"] - counters["processed"] - counters["rejected"] - counters["dropped"]
    for _, name, reason in ahead:
        out[name] -= 1
        out[f"{name}/{reason}"] -= 1
    out["received"] -= max(in_flight, 0) + len(ahead)
    return out


def capture(pipe: Pipeline, counters: dict[str, int], logged: dict[str, int]) -> tuple[dict, dict, dict]:
    """A snapshot of ``pipe`` after its last processed frame: (document, arrays, new log rows).

    ``logged`` holds how many flips, hops and runs earlier snapshots wrote; it is updated.
    """
    lk, sm = pipe.linker, pipe.sites
    n = sm.n_sites
    arrays: dict[str, np.ndarray] = {f"sites_{a}": getattr(sm, f"_{a}")[:n] for a in _SITE_ARRAYS}
    pending = list(sm._pending)
    arrays["pending_frames"] = np.array([f for f, _, _ in pending], np.int64)
    arrays["pending_lens"] = np.array([len(s) for _, s, _ in pending], np.int64)
    arrays["pending_sites"] = (np.concatenate([s for _, s, _ in pending]) if pending else np.zeros(0)).astype(np.int64)
    arrays["pending_bins"] = (np.concatenate([b for _, _, b in pending]) if pending else np.zeros(0)).astype(np.int64)
    values = [np.zeros(0) if z is None else z for z in sm._pending_z]  # (none taken: no values)
    arrays["pending_z_lens"] = np.array([len(z) for z in values], np.int64)
    arrays["pending_z"] = np.concatenate(values) if values else np.zeros(0)
    arrays["hops_lone"] = np.asarray(sm._lone, np.int64).reshape(-1, 3)  # emptyings and fillings awaiting a partner
    arrays["class_changes_open"] = np.asarray(sm._cc_open, np.int64).reshape(-1, 5)  # ... and class changes
    arrays["prev_ref"] = np.zeros((0, 2)) if lk._prev_ref is None else np.asarray(lk._prev_ref, float)
    logs = {}
    for name in STATE_LOGS:
        log_ = getattr(sm, name)  # (an EventLog: rows never change once logged, so a view will do)
        logs[name] = log_.rows(logged[name])
        logged[name] = len(log_)
    est = pipe.sampling_estimate
    meta = {
        "version": STATE_VERSION,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "pipeline": {
            "shape": list(pipe.shape), "n_focal": pipe.n_focal, "sampling": pipe.sampling,
            "sampling_estimate": None if est is None else est.as_dict(),
            "trust_counts": list(pipe.trust.counts), "last_frame": pipe._last_index,
            "last_seq": pipe._last_seq, "next_particle": pipe._next_particle, "counters": counters,
            "intensity_classes": None if pipe.intensity_classes is None else pipe.intensity_classes.state(),
            "column_sigma_px": pipe.detector.measured_sigma_px,
        },
        "linker": {"drift": [float(v) for v in lk.drift], "velocity": [float(v) for v in lk._velocity],
                   "drift_pairs": int(lk.drift_pairs), "started": bool(lk._started),
                   "has_prev_ref": lk._prev_ref is not None},
        "sites": {"n_sites": int(n), "n_frames": int(sm.n_frames), "first_frame": sm.first_frame,
                  "alpha_unseen": float(sm.alpha_unseen), "r_start": float(sm._r_start),
                  "conf_counts": sm.conf_counts.tolist(), "cls_counts": sm.cls_counts.tolist(),
                  "prob_hist": sm.prob_hist.tolist(),
                  "n_classes": int(sm.n_classes), "class_names": sm.class_names,
                  "pending_view": [None if v is None else list(v) for v in sm._pending_view],
                  "unseen_site_frames": int(sm.unseen_site_frames), "view_margin_px": float(sm.view_margin_px)},
    }
    return meta, arrays, logs


# ------------------------------------------------------------------------------------- loading

@dataclass
class ResumePoint:
    """What :func:`load` read from a run file to resume it."""

    path: Path
    attrs: dict[str, Any]          #: the run's root attributes
    config: PipelineConfig         #: the config the run was started with
    state: dict[str, Any] | None   #: :meth:`Run.resume_state`; None when no snapshot was written
    tail: pd.DataFrame             #: columns of the last ``memory + 1`` saved frames
    tail_frames: list[int]         #: their frame indices (frames without columns included)

    @property
    def meta(self) -> dict[str, Any] | None:
        return None if self.state is None else self.state["meta"]

    @property
    def last_frame(self) -> int | None:
        """Index of the last frame the snapshot holds (None: none)."""
        return None if self.meta is None else self.meta["pipeline"]["last_frame"]

    @property
    def next_frame(self) -> int:
        """The frame a replay goes on from."""
        return 0 if self.last_frame is None else int(self.last_frame) + 1

    @property
    def n_frames(self) -> int:
        return 0 if self.meta is None else int(self.meta["rows"]["frames"])


def load(path: str | Path, *, force: bool = False) -> ResumePoint:
    """Read the latest snapshot of a run file, checking that it can be resumed.

    Errors (:class:`FileFormatError`, :class:`ConfigError`) say why not: not a run file, from
    another version of etem-tracker, finished already (``force`` goes on all the same), still
    being written by a live process on this machine (``force`` too).
    """
    from .config import config_from_dict
    from .run import open_run
    from .versions import versions

    path = Path(path)
    with open_run(path) as run:
        attrs = dict(run.attrs)
        state = run.resume_state()
        status = run.status
        if attrs.get("format_version") != _format_version():
            raise FileFormatError(f"{path} has run-file format version {attrs.get('format_version')!r}; "
                                  f"this etem-tracker resumes only version {_format_version()}.")
        if state is not None and state["meta"].get("version") != STATE_VERSION:
            raise FileFormatError(f"{path} holds a resume state of version {state['meta'].get('version')!r}; "
                                  f"this etem-tracker reads version {STATE_VERSION}. Resume it with the "
                                  "version that wrote it.")
        counter_names = list(run.counters)
        tail, tail_frames = _tail(run, state)
    from .pipeline import Pipeline

    if not set(counter_names) <= set(Pipeline.COUNTER_NAMES):  # (a counter added since: it starts at 0)
        raise FileFormatError(f"{path} was written by another version of etem-tracker (its counters differ: "
                              f"{', '.join(sorted(set(counter_names) ^ set(Pipeline.COUNTER_NAMES)))}); it "
                              "cannot be resumed by this one.")
    if status not in RESUMABLE and not force:
        raise ConfigError(f"run file {path} is finished already (status {status!r}); pass --force "
                          "(force=True) to go on writing it all the same.")
    ours, theirs = versions().get("etem-tracker"), (attrs.get("versions") or {}).get("etem-tracker")
    if theirs != ours and not force:
        raise ConfigError(f"run file {path} was written by etem-tracker {theirs}, this is {ours}; the run "
                          "would go on with other code. Pass --force (force=True) to resume it all the same.")
    writer = attrs.get("writer") or {}
    if (status == "running" and not force and writer.get("host") == socket.gethostname()
            and writer.get("pid") != os.getpid() and _alive(writer.get("pid"))):
        raise ConfigError(f"run file {path} is still being written by process {writer.get('pid')}; stop it "
                          "first (or pass --force if that process is not an etem tracker).")
    try:
        config = config_from_dict(attrs.get("config") or {})
    except ConfigError as exc:
        raise FileFormatError(f"{path}: its config was written by another version of etem-tracker and "
                              f"does not fit this one ({exc}).") from None
    return ResumePoint(path=path, attrs=attrs, config=config, state=state, tail=tail, tail_frames=tail_frames)


def _format_version() -> int:
    from .runfile import FORMAT_VERSION

    return FORMAT_VERSION


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(run, state) -> tuple[pd.DataFrame, list[int]]:
    """The columns of the last ``memory + 1`` frames the snapshot holds, for relinking."""
    if state is None:
        return pd.DataFrame(columns=["frame", "y_ref", "x_ref", "particle"]), []
    memory = int(((run.attrs.get("config") or {}).get("link") or {}).get("memory", 0))
    n_frames, n_cols = int(state["meta"]["rows"]["frames"]), int(state["meta"]["rows"]["columns"])
    frames = run.read_table("frames", max(n_frames - memory - 1, 0), n_frames)
    k = int(frames["n_columns"].sum())
    cols = run.read_table("columns", n_cols - k, n_cols)
    return cols[["frame", "y_ref", "x_ref", "particle"]], [int(f) for f in frames["frame"]]


# ------------------------------------------------------------------------------------ restoring

def restore_head(pipe: Pipeline, point: ResumePoint) -> None:
    """What the pipeline needs before its first frame: counters, frame shape, pixel size."""
    meta = point.meta
    if meta is None:
        return
    p = meta["pipeline"]
    set_counters(pipe.counters, p["counters"])
    pipe.shape = tuple(p["shape"])
    pipe.n_focal = int(p["n_focal"])
    pipe.sampling = p["sampling"]
    pipe.trust = TrustTally(counts=p["trust_counts"])
    pipe._last_index, pipe._last_seq = p["last_frame"], p["last_seq"]
    pipe._next_particle = int(p["next_particle"])
    if p.get("column_sigma_px"):  # measured on the run's first frame: the resumed run keeps it
        det = pipe.detector
        det.choose(dataclasses.replace(det.engine_cfg, column_sigma_px=p["column_sigma_px"]))
        det.measured_sigma_px = p["column_sigma_px"]
    if pipe.intensity_classes is not None and p.get("intensity_classes"):
        pipe.intensity_classes.restore(p["intensity_classes"])
    if p.get("sampling_estimate"):
        from .lattice import SamplingEstimate

        d = p["sampling_estimate"]
        pipe.sampling_estimate = SamplingEstimate(
            sampling=d["sampling"], uncertainty=d["uncertainty"], material=d["material"], zone=d["zone"],
            n_peaks=d["n_peaks"], score=float("nan"), distortion=d["distortion"], peaks=np.zeros((0, 3)))


def set_counters(counters, flat: dict[str, int]) -> None:
    """Set a :class:`Counters` from its :meth:`~Counters.as_dict` form."""
    from collections import Counter

    with counters._lock:
        for key, value in flat.items():
            if "/" in key:
                kind, reason = key.split("/", 1)
                getattr(counters, kind)[reason] = int(value)
            elif key not in ("rejected", "dropped") and hasattr(counters, key):
                setattr(counters, key, int(value))
        for kind in ("rejected", "dropped"):
            setattr(counters, kind, Counter({k: v for k, v in getattr(counters, kind).items() if v}))


def restore(pipe: Pipeline, point: ResumePoint) -> None:
    """Put the snapshot's linker and sites into ``pipe`` (whose linker and sites are new)."""
    state = point.state
    if state is None:
        return
    meta, arrays, logs = state["meta"], state["arrays"], state["logs"]
    _restore_sites(pipe.sites, meta["sites"], arrays, logs)
    pipe._logged = {name: len(logs[name]) for name in STATE_LOGS}
    if pipe.linker is not None:
        _restore_linker(pipe.linker, meta["linker"], arrays, point, int(meta["pipeline"]["next_particle"]))


def _restore_sites(sm, meta: dict, arrays: dict, logs: dict) -> None:
    n = int(meta["n_sites"])
    sm._grow(n)
    for a in _SITE_ARRAYS:
        if f"sites_{a}" in arrays:  # (absent from snapshots written before it was kept: zeros)
            saved = arrays[f"sites_{a}"]
            # (per-class arrays of snapshots written when a site kept 8 classes fill the first 8)
            getattr(sm, f"_{a}")[(slice(0, n), *(slice(0, k) for k in saved.shape[1:]))] = saved
    sm.n_sites = n
    sm.n_frames = int(meta["n_frames"])
    sm.first_frame = meta["first_frame"]
    if "sites_n_seen" not in arrays:  # (older snapshots: every site in view, its first run begun at the start)
        sm._n_seen[:n] = sm.n_frames
        sm._left[:n] = sm._run_start[:n] == (sm.first_frame or 0)
    sm.unseen_site_frames = int(meta.get("unseen_site_frames", 0))
    sm.alpha_unseen = float(meta["alpha_unseen"])
    sm._r_start = float(meta["r_start"])
    conf = np.asarray(meta["conf_counts"], float)
    sm.conf_counts[:] = 0
    sm.conf_counts[:conf.shape[0], :conf.shape[1]] = conf
    sm.cls_counts = np.asarray(meta["cls_counts"], float)
    sm.prob_hist = np.asarray(meta["prob_hist"], float).reshape(2, -1)
    sm.n_classes = int(meta["n_classes"])
    sm.class_changes = EventLog(4, logs["class_changes"])
    ends = np.cumsum(arrays["pending_lens"])
    sites, bins = arrays["pending_sites"], arrays["pending_bins"]
    sm._pending = deque((int(f), sites[e - k:e].astype(np.int64), bins[e - k:e].astype(np.int64))
                        for f, k, e in zip(arrays["pending_frames"], arrays["pending_lens"], ends))
    lens = arrays.get("pending_z_lens", np.zeros(len(sm._pending), np.int64))  # (older snapshots: none)
    ends, z = np.cumsum(lens), arrays.get("pending_z", np.zeros(0))
    sm._pending_z = deque(z[e - k:e].astype(np.float64) if k else None for k, e in zip(lens, ends))
    views = meta.get("pending_view") or [None] * len(sm._pending)
    sm._pending_view = deque(None if v is None else tuple(float(x) for x in v) for v in views)
    sm.flips = EventLog(3, logs["flips"])
    sm.hops = EventLog(3, logs["hops"])
    lone = arrays.get("hops_lone", np.zeros((0, 3), np.int64))  # (older snapshots: none awaited a partner)
    sm._lone = [tuple(int(v) for v in r) for r in np.asarray(lone, np.int64).reshape(-1, 3)]
    cc_open = arrays.get("class_changes_open", np.zeros((0, 5), np.int64))
    sm._cc_open = [tuple(int(v) for v in r) for r in np.asarray(cc_open, np.int64).reshape(-1, 5)]
    sm.class_names = meta.get("class_names") or sm.class_names
    sm.runs = EventLog(5, logs["runs"])


def _restore_linker(lk, meta: dict, arrays: dict, point: ResumePoint, next_particle: int) -> None:
    lk.drift = np.asarray(meta["drift"], float)
    lk._velocity = np.asarray(meta["velocity"], float)
    lk.drift_pairs = int(meta["drift_pairs"])
    lk._prev_ref = np.asarray(arrays["prev_ref"], float).reshape(-1, 2) if meta["has_prev_ref"] else None
    if not meta["started"] or not point.tail_frames:
        return
    # Link the last frames again (drift-corrected, as saved), then name every track as the file does.
    tl = lk._linker
    tail = point.tail
    for i, frame in enumerate(point.tail_frames):
        rows = tail[tail["frame"] == frame]
        coords = rows[["y_ref", "x_ref"]].to_numpy(dtype=float).reshape(-1, 2)
        (tl.init_level if i == 0 else tl.next_level)(coords, frame)
        _name_tracks(tl, rows["particle"].to_numpy(dtype=np.int64))
    _set_next_id(tl, next_particle)
    lk._started = True


def _name_tracks(tl, ids: np.ndarray) -> None:
    """Give the current frame's tracks of a linker these ids."""
    if hasattr(tl, "_ids"):  # etem.tracker.fastlink.FastLinker: ids in an array
        tl._ids = ids.copy()
        return
    for p, pid in zip(tl.hash.points, ids):  # trackpy's Linker: one track object per track
        p.track.id = p.track.indx = int(pid)


def _set_next_id(tl, next_id: int) -> None:
    if hasattr(tl, "_next_id"):
        tl._next_id = int(next_id)
        return
    from trackpy.linking.utils import TrackUnstored

    points = getattr(getattr(tl, "hash", None), "points", None) or []
    track_cls = type(points[0].track) if points else TrackUnstored
    track_cls.reset_counter(int(next_id))


# ----------------------------------------------------------------------- statistics of a run not closed

def snapshot_statistics(run: Run) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
    """The statistics tables (flips, hops, class changes, residence) of a run file that was not
    closed (being written, or left by a killed tracker), as of its latest snapshot.

    The site map is restored from the snapshot as a resume restores it, its last frames settled
    as a run's close settles them, and its tables taken: what a resume that got no more frames
    would write. Returns ``(tables, as_of)``, ``as_of`` holding the snapshot's ``last_frame``
    and ``frames`` (rows of the frames table it stands for); None when no snapshot was written
    yet. Raises :class:`FileFormatError` where the file keeps no snapshot or one of another
    version.
    """
    from .config import config_from_dict
    from .sites import SiteMap

    state = run.resume_state()
    if state is None:
        return None
    meta, arrays, logs = state["meta"], state["arrays"], state["logs"]
    if meta.get("version") != STATE_VERSION:
        raise FileFormatError(f"{run.path} holds a resume snapshot of version {meta.get('version')!r}; this "
                              f"etem-tracker reads version {STATE_VERSION}.")
    try:
        config = config_from_dict(run.attrs.get("config") or {})
    except ConfigError as exc:
        raise FileFormatError(f"{run.path}: its config does not fit this etem-tracker ({exc}).") from None
    p = meta["pipeline"]
    settings = (run.attrs.get("settings_sampling") or {}).get("sampling")  # (Pipeline._settings_sampling)
    sm = SiteMap(config.sites, p.get("sampling") or settings, frames_per_detection=config.preprocess.average_frames,
                 view_margin_px=meta["sites"].get("view_margin_px", config.locate.edge_px + 1.0))
    _restore_sites(sm, meta["sites"], arrays, logs)
    sm.flush()
    last = p.get("last_frame")
    return sm.statistics(last), {"last_frame": last, "frames": int(meta["rows"]["frames"])}


def with_device(config: PipelineConfig, device: str | None) -> PipelineConfig:
    """``config`` with its engine moved to ``device`` (None: unchanged)."""
    if device is None:
        return config
    return dataclasses.replace(config, engine=dataclasses.replace(config.engine, device=device))
