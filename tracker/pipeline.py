"""The streaming pipeline: source -> preprocess -> batch -> engine -> locate -> link -> sites -> sink.

Three stages run concurrently with bounded queues:

1. *ingest* (a thread) pulls frames from the source; with ``overflow="drop"`` (live SUB
   streams) a full queue drops the frame and counts it, with ``"block"`` (PULL, files) it
   waits, which pushes back on the sender;
2. *compute* (a thread) forms micro-batches (at most ``max_batch`` frames, waiting at most
   ``max_wait_s`` after the first), preprocesses them, runs the engine and extracts columns
   on the engine's device, so only column tables come back to the host;
3. *host* (the caller's thread, in :meth:`Pipeline.run_iter`) links, builds sites and maps,
   writes the run file and yields one :class:`FrameResult` per frame.

Every message is accounted for in :class:`~etem.tracker.accounting.Counters`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import pandas as pd

from .accounting import Counters
from .errors import ConfigError, choice_error
from .frames import Frame
from .link import LinkConfig, StreamLinker
from .detect import Detector, EngineConfig
from .locate import LocateConfig
from .preprocess import PreprocessConfig
from .sites import SiteMap, SitesConfig
from .wire import REJECT_REASONS

log = logging.getLogger("etem.pipeline")


@dataclass(frozen=True)
class BatchConfig:
    """Micro-batching: at most ``max_batch`` frames, waiting at most ``max_wait_s`` after the first."""

    max_batch: int = 4
    max_wait_s: float = 0.01


@dataclass(frozen=True)
class PipelineConfig:
    """Configuration of one run; one frozen dataclass per stage."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    sites: SitesConfig = field(default_factory=SitesConfig)
    queue_frames: int = 64
    overflow: Literal["block", "drop"] = "block"
    default_sampling: float | None = None  # used for frames that carry none
    #: the material in view (graphene, mos2, au, srtio3 …): where frames carry no sampling, it is
    #: estimated from the lattice on the first frame (see etem.tracker.lattice)
    material: str | None = None
    #: estimate the sampling from the lattice even where frames carry one (needs ``material``)
    sampling_from_lattice: bool = False

    def __post_init__(self) -> None:
        if self.sampling_from_lattice and not self.material:
            raise ConfigError("sampling_from_lattice needs the material in view (material = \"graphene\", …)")
        if self.overflow not in ("block", "drop"):
            raise choice_error("overflow", self.overflow, ("block", "drop"))
        if self.queue_frames < 1:
            raise ConfigError(f"queue_frames must be at least 1, got {self.queue_frames}")
        if self.batch.max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {self.batch.max_batch}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FrameResult:
    """What the pipeline yields per processed frame."""

    frame: int
    seq: int | None
    columns: pd.DataFrame  # frame, y, x, cls, prob, particle, site, y_ref, x_ref
    drift: tuple[float, float]
    latency_s: float
    sampling: float | None


class _Batch:
    __slots__ = ("frames", "columns", "error")

    def __init__(self, frames, columns=None, error=None):
        self.frames, self.columns, self.error = frames, columns, error


_DONE = object()


class Pipeline:
    """One tracking run over one source.

    Parameters
    ----------
    cfg
        The run's configuration.
    engine
        An engine instance; None builds one from ``cfg.engine`` at the first frame.
    run_path
        Where to write the run's HDF5 file; None writes none.
    counters
        Shared counters (a source that decodes messages counts into the same object).
    """

    COUNTER_NAMES = (
        ["received", "processed", "missing", "restarts", "rejected", "dropped"]
        + [f"rejected/{r}" for r in REJECT_REASONS]
        + ["dropped/queue_full", "dropped/stopped"]
    )

    def __init__(
        self,
        cfg: PipelineConfig | None = None,
        *,
        engine=None,
        run_path: str | Path | None = None,
        counters: Counters | None = None,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg or PipelineConfig()
        self.counters = counters if counters is not None else Counters()
        self.stop = threading.Event()
        self.run_path = Path(run_path) if run_path is not None else None
        if self.run_path is not None and self.run_path.exists() and not overwrite:
            # fail before the first frame is taken off a stream, not after
            raise ConfigError(f"run file {self.run_path} already exists; choose another path or "
                              "overwrite it (--overwrite, overwrite=True)")
        self.overwrite = overwrite
        self.attrs = dict(attrs or {})
        self.linker: StreamLinker | None = None
        self.sites: SiteMap | None = None
        self.shape: tuple[int, int] | None = None
        self.n_focal = 1
        self.sampling: float | None = None
        self.sampling_estimate = None  # a lattice estimate (etem.tracker.lattice), when made
        self.trust_counts = [0, 0]  # frames judged outside, inside the locator's trust ranges
        self.latencies: deque[float] = deque(maxlen=2000)
        self.frames_rows: list[dict] = []
        self.columns_parts: list[pd.DataFrame] = []
        self.writer = None
        self.t_start = time.perf_counter()
        self.detector = Detector(self.cfg.engine, self.cfg.preprocess, self.cfg.locate, engine=engine)
        self.stage_s: dict[str, float] = {"link": 0.0, "sites": 0.0, "write": 0.0}
        self._ingest_q: queue.Queue = queue.Queue(maxsize=self.cfg.queue_frames)
        self._host_q: queue.Queue = queue.Queue(maxsize=4)
        self.last_frame: Frame | None = None
        self._last_live = 0.0
        self.error: str | None = None  # what stopped the run, when something did

    # -- stage 1: ingest ----------------------------------------------------------------------
    def _ingest(self, source: Iterable[Frame]) -> None:
        q, drop = self._ingest_q, self.cfg.overflow == "drop"
        try:
            for frame in source:
                if self.stop.is_set():
                    self.counters.add("dropped", reason="stopped")
                    break
                if drop:
                    try:
                        q.put_nowait(frame)
                    except queue.Full:
                        self.counters.add("dropped", reason="queue_full")
                else:
                    while not self.stop.is_set():
                        try:
                            q.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    else:  # stopped while waiting for room: the frame in hand is dropped
                        self.counters.add("dropped", reason="stopped")
                        break
        except BaseException as exc:  # noqa: BLE001 - reported to the host thread
            self._put(q, exc)
            return
        self._put(q, _DONE)

    def _put(self, q: queue.Queue, item) -> None:
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    # make room: the consumer is gone or stopping (what is thrown out is counted)
                    try:
                        self._count_dropped(q.get_nowait())
                    except queue.Empty:
                        pass

    # -- stage 2: compute ---------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Frame], object | None]:
        """Collect a micro-batch; returns (frames, terminal item or None)."""
        q, b = self._ingest_q, self.cfg.batch
        first = q.get()
        if not isinstance(first, Frame):
            return [], first
        frames = [first]
        deadline = time.perf_counter() + b.max_wait_s
        while len(frames) < b.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = q.get(timeout=max(left, 0)) if left > 0 else q.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, Frame):
                return frames, item
            frames.append(item)
        return frames, None

    def _accept(self, f: Frame) -> bool:
        """Frame checks that need the run's state; reject (and count) what cannot be tracked."""
        if f.sampling is None and self.cfg.default_sampling is not None:
            f.sampling = self.cfg.default_sampling
        if self.shape is None and self.cfg.material:
            from .lattice import resolve_sampling

            f.sampling, est = resolve_sampling(f.image, given=f.sampling, material=self.cfg.material,
                                               auto=self.cfg.sampling_from_lattice)
            self.sampling_estimate = est
            if est is not None:
                self.attrs["sampling_estimate"] = est.as_dict()
        elif self.sampling_estimate is not None and (self.cfg.sampling_from_lattice or f.sampling is None):
            f.sampling = self.sampling_estimate.sampling
        if self.shape is None:
            self.shape = f.shape
            self.sampling = f.sampling
            self.n_focal = f.n_focal
        if f.shape != self.shape or f.n_focal != self.n_focal:
            log.warning("frame %d: shape %s differs from the run's %s; rejected", f.frame, f.image.shape, self.shape)
            self.counters.add("rejected", reason="preprocess")
            return False
        if self.sampling is not None:  # one pixel size per run: sites and maps are in its pixels
            if f.sampling is None:
                f.sampling = self.sampling
            elif not math.isclose(f.sampling, self.sampling, rel_tol=0.01):
                log.warning("frame %d: sampling %g Å/px differs from the run's %g; rejected",
                            f.frame, f.sampling, self.sampling)
                self.counters.add("rejected", reason="preprocess")
                return False
        if f.image.dtype.kind == "f" and not np.isfinite(f.image).all():
            self.counters.add("rejected", reason="nan")
            return False
        return True

    def _compute(self) -> None:
        try:
            while True:
                frames, terminal = self._next_batch()
                frames = [f for f in frames if self._accept(f)]
                if frames:
                    self._put(self._host_q, self._process_batch(frames))
                if terminal is not None:
                    self._put(self._host_q, terminal)
                    return
        except BaseException as exc:  # noqa: BLE001
            self._put(self._host_q, exc)

    def _process_batch(self, frames: list[Frame]) -> _Batch:
        return _Batch(frames, self.detector.detect(frames))

    # -- stage 3: host ------------------------------------------------------------------------
    def run_iter(self, source: Iterable[Frame]) -> Iterator[FrameResult]:
        """Run over ``source``, yielding a result per processed frame as soon as it is ready."""
        self.t_start = time.perf_counter()
        ingest = threading.Thread(target=self._ingest, args=(source,), name="etem-ingest", daemon=True)
        compute = threading.Thread(target=self._compute, name="etem-compute", daemon=True)
        ingest.start()
        compute.start()
        status = "complete"
        in_hand, base = 0, 0  # frames of the batch being linked, and the processed count before it
        try:
            while True:
                item = self._host_q.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    status = "failed"
                    raise item
                in_hand, base = len(item.frames), self.counters.processed
                for frame, cols in zip(item.frames, item.columns):
                    yield self._host(frame, cols)
                in_hand = 0
        except GeneratorExit:
            status = "stopped"
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except Exception as exc:
            status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.stop.set()
            if self.writer is not None:  # stopped between a frame's row and its count: the row decides
                unseen = self.writer.n_rows("frames") - self.counters.processed
                if unseen > 0:
                    self.counters.add("processed", unseen)
            left = in_hand - (self.counters.processed - base)  # a batch the host stopped in
            if left > 0:
                self.counters.add("dropped", left, reason="stopped")
            # Unblock the producers, then account for what they still held.
            for q in (self._host_q, self._ingest_q):
                self._drain(q)
            ingest.join(timeout=2)
            compute.join(timeout=2)
            for q in (self._host_q, self._ingest_q):
                self._drain(q)
            self.finish(status)

    def _drain(self, q: queue.Queue) -> None:
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            self._count_dropped(item)

    def _count_dropped(self, item) -> None:
        if isinstance(item, Frame):
            self.counters.add("dropped", reason="stopped")
        elif isinstance(item, _Batch):
            self.counters.add("dropped", len(item.frames), reason="stopped")

    def _host(self, frame: Frame, cols: pd.DataFrame) -> FrameResult:
        t0 = time.perf_counter()
        if self.linker is None:
            self.linker = StreamLinker(self.cfg.link, self.sampling)
            self.sites = SiteMap(self.cfg.sites, self.sampling)
            self._open_writer()
        quality = cols.attrs.get("quality", {})
        linked = self.linker.update(frame.frame, cols)
        t1 = time.perf_counter()
        linked["site"] = self.sites.update(frame.frame, linked[["y_ref", "x_ref"]].to_numpy(), linked["cls"].to_numpy())
        linked.insert(0, "frame", np.int64(frame.frame))
        t2 = time.perf_counter()
        latency = t2 - frame.received if frame.received else float("nan")
        self.latencies.append(latency)
        drift = (float(self.linker.drift[0]), float(self.linker.drift[1]))
        row = {
            "frame": frame.frame,
            "seq": -1 if frame.seq is None else frame.seq,
            "t": np.nan if frame.t is None else frame.t,
            "received": (frame.received - self.t_start) if frame.received else np.nan,
            "latency_ms": latency * 1e3,
            "n_columns": len(linked),
            "drift_y": drift[0],
            "drift_x": drift[1],
            "sampling": np.nan if frame.sampling is None else frame.sampling,
            "dose": np.nan if frame.dose is None else frame.dose,
            "snr": quality.get("snr", np.nan),
            "dose_est": quality.get("dose_est", np.nan),
            "resolution_A": quality.get("resolution_A", np.nan),
            "confidence": quality.get("confidence", np.nan),
            "in_range": quality.get("in_range", -1),
            "out_of_range": quality.get("out_of_range", -1),
        }
        self.frames_rows.append(row)
        if row["in_range"] >= 0:
            self.trust_counts[row["in_range"]] += 1
        self.columns_parts.append(linked)
        self.last_frame = frame
        if self.writer is not None:
            if t0 - self._last_live >= 1.0:
                self._write_live()
                self._last_live = t0
            self.writer.append("columns", linked)
            self.writer.append("frames", pd.DataFrame([row]))  # the frame's row in the run file is
        self.counters.add("processed")  # what counts it (run_iter squares the two after a stop)
        if self.writer is not None:
            self.writer.maybe_flush()  # may fail (a full disk): the frame was processed all the same
        t3 = time.perf_counter()
        self.stage_s["link"] += t1 - t0
        self.stage_s["sites"] += t2 - t1
        self.stage_s["write"] += t3 - t2
        return FrameResult(frame.frame, frame.seq, linked, drift, latency, frame.sampling)

    def _open_writer(self) -> None:
        if self.run_path is None:
            return
        from .runfile import RunWriter
        from .versions import versions

        attrs = {"config": self.cfg.to_dict(), "versions": versions(), **self.attrs}
        engine = self.detector.engine
        card = getattr(engine, "card", None)
        attrs["engine"] = {"kind": engine.name, "device": str(engine.device)}
        if card:
            attrs["model_card"] = card
        writer = RunWriter(self.run_path, attrs=attrs, counter_names=self.COUNTER_NAMES, overwrite=self.overwrite)
        writer.begin(self.shape, self.sampling)
        self.writer = writer

    def _write_live(self) -> None:
        self.writer.replace("sites", self.sites.table())
        self.writer.write_maps(*self.sites.maps(self.shape))
        self.writer.write_counters(self.counters.as_dict())

    # -- results ------------------------------------------------------------------------------
    def finish(self, status: str = "complete") -> None:
        """Final sites, maps, statistics and counters into the run file; closes it."""
        if self.sites is not None:
            self.sites.flush()
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            self.writer = writer
            self._write_live()
            tables = self.statistics()
        except BaseException as exc:
            # Whatever the run held is already in the file; mark it so a reader knows the
            # final tables are missing, and never leave it looking as if it were still running.
            writer.close(status="failed", extra_attrs={"error": f"{type(exc).__name__}: {exc}",
                                                        "counters": self.counters.as_dict()})
            raise
        finally:
            self.writer = None
        extra = {"counters": self.counters.as_dict()}
        if self.error is not None:
            extra["error"] = self.error
        writer.close(status=status, extra_tables=tables, extra_attrs=extra)

    def statistics(self) -> dict[str, pd.DataFrame]:
        """Diffusion statistics so far: flips, hops, residence times, counts over time."""
        if self.sites is None:
            return {}
        last = self.frames_rows[-1]["frame"] if self.frames_rows else None
        return {
            "flips": self.sites.flips_table(),
            "hops": self.sites.hops_table(),
            "residence": self.sites.residence_table(last),
        }

    def status(self) -> dict[str, Any]:
        """Live figures for the status line and dashboards."""
        lat = np.asarray(self.latencies) * 1e3
        elapsed = time.perf_counter() - self.t_start
        c = self.counters.as_dict()
        return {
            **c,
            "fps": c["processed"] / elapsed if elapsed > 0 else 0.0,
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "queue_ingest": self._ingest_q.qsize(),
            "queue_host": self._host_q.qsize(),
            "sites": 0 if self.sites is None else self.sites.n_sites,
            "in_range": self.trust_counts[1],
            "out_of_range": self.trust_counts[0],
        }

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Depth and capacity of each stage queue now: ``{"ingest": (n, max), "host": (n, max)}``.

        Safe to call from any thread (dashboards, metrics endpoints).
        """
        return {"ingest": (self._ingest_q.qsize(), self._ingest_q.maxsize),
                "host": (self._host_q.qsize(), self._host_q.maxsize)}

    def frames_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.frames_rows)

    def columns_table(self) -> pd.DataFrame:
        return pd.concat(self.columns_parts, ignore_index=True) if self.columns_parts else pd.DataFrame(
            columns=["frame", "y", "x", "cls", "prob", "particle", "y_ref", "x_ref", "site"])
