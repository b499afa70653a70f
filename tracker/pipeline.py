"""The streaming pipeline: source -> preprocess -> batch -> engine -> locate -> link -> sites -> sink.

Three stages run concurrently with bounded queues:

1. *ingest* (a thread) pulls frames from the source; with ``overflow="drop"`` (live SUB
   streams) a full queue drops the frame and counts it, with ``"block"`` (PULL, files) it
   waits, which pushes back on the sender;
2. *compute* (a thread) forms micro-batches (at most ``max_batch`` frames, waiting at most
   ``max_wait_s`` after the first), preprocesses them, runs the engine and extracts columns
   on the engine's device, so only column tables come back to the host; with
   ``detection="process"`` the thread hands the batches to a child process that does that
   (:mod:`~etem.tracker.detect_process`), so that detection and the host stage do not share
   one interpreter lock;
3. *host* (the caller's thread, in :meth:`Pipeline.run_iter`) links, builds sites and maps,
   writes the run file and yields one :class:`FrameResult` per frame.

Every message is accounted for in :class:`~etem.tracker.accounting.Counters`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from . import interrupt
from .accounting import Counters
from .config import BatchConfig, PipelineConfig  # noqa: F401 (BatchConfig: re-exported)
from .errors import ConfigError
from .frames import Frame, FrameResult, column_values  # noqa: F401 (FrameResult: re-exported)
from .fastlink import warm_up
from .link import StreamLinker
from .detect import Detector, EngineConfig, detect_averaged, view_margin_px
from .average import FrameAverager
from .intensity import IntensityClasses
from .site_counts import counts_so_far
from .sites import SiteMap
from .trust import BlankFrames, TrustTally
from .wire import REJECT_REASONS
from .pipeline_checks import FrameChecks
from .pipeline_host import HostStage
from .rows import CompactRows
from .pipeline_run import RunFileStage

log = logging.getLogger("etem.pipeline")


class _Batch:
    __slots__ = ("frames", "columns", "error")

    def __init__(self, frames, columns=None, error=None):
        self.frames, self.columns, self.error = frames, columns, error


_DONE = object()
#: how long a stop waits for the compute thread to finish the batch in hand
_COMPUTE_JOIN_S = 30.0


class Pipeline(FrameChecks, HostStage, RunFileStage):
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
        ["received", "processed", "missing", "restarts", "oom_retries", "rejected", "dropped"]
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
        keep_all_columns: bool = True,
    ) -> None:
        self.cfg = cfg or PipelineConfig()
        self.counters = counters if counters is not None else Counters()
        self.stop = threading.Event()
        self.run_path = Path(run_path) if run_path is not None else None
        if self.run_path is not None and self.run_path.exists() and not overwrite:
            # fail before the first frame is taken off a stream, not after
            raise ConfigError(f"run file {self.run_path} already exists; choose another path or "
                              "overwrite it (--overwrite, overwrite=True)")
        if self.run_path is not None:
            from .h5io import make_folder_for

            make_folder_for(self.run_path)
        self.overwrite = overwrite
        self.attrs = dict(attrs or {})
        self.linker: StreamLinker | None = None
        self.sites: SiteMap | None = None
        self.shape: tuple[int, int] | None = None
        self.n_focal = 1
        self.sampling: float | None = None
        self.sampling_estimate = None  # a lattice estimate (etem.tracker.lattice), when made
        self.trust = TrustTally()  # frames judged inside / outside the locator's trust ranges
        self.oversize_subnets = 0  # clumps too dense to link, whose columns started new tracks
        self.filled_nonfinite = 0  # frames whose few NaN or infinite pixels were filled ([preprocess] fill_nonfinite)
        self.latencies: deque[float] = deque(maxlen=2000)
        self.blank = BlankFrames(self.cfg.blank_snr_fraction)  # frames that hold no image
        # the run's tables in memory: every frame without a run file, else the latest few; a run
        # that wants no tables back (keep_all_columns=False: a live run watched without a run
        # file) keeps the latest few frames' columns, the large table, without one too
        keep = None if self.run_path is None else self.cfg.keep_in_memory_frames
        # (every frame's row, without a run file: in arrays, not dicts, about 100 bytes a frame)
        self.frames_rows: deque[dict] | CompactRows = CompactRows() if keep is None else deque(maxlen=keep)
        self.columns_parts: deque[pd.DataFrame] = deque(
            maxlen=keep if keep_all_columns else self.cfg.keep_in_memory_frames)
        self._evicted = False  # frames left the in-memory tables (the run file, where there is one, has them all)
        self.writer = None
        self._resume = None  # the ResumePoint of a resumed run (etem.tracker.resume)
        self._mismatches_said: set[str] = set()  # frame sizes and pixel sizes not the run's, warned of
        loc = self.cfg.locate
        #: classes from column intensities ([locate] intensity_classes), learned on the first frames
        self.intensity_classes = IntensityClasses(groups=loc.intensity_groups) if loc.intensity_classes else None
        # the last processed frame (for resume snapshots), and the next free particle id
        self._last_index: int | None = None
        self._drops_said: float | None = None  # when frames dropped for a full queue were last said
        self._last_seq: int | None = None
        self._last_received = float("-inf")
        self._next_particle = 0
        from .resume import STATE_LOGS

        self._logged = dict.fromkeys(STATE_LOGS, 0)  # site records already in the file
        # frames rejected or dropped that arrived after the last processed frame:
        # (received, "rejected"|"dropped", reason); a resume snapshot leaves them out
        self._ahead: list[tuple[float, str, str]] = []
        self._acct_lock = threading.Lock()
        self.t_start = time.perf_counter()
        self._processed_before = 0  # frames processed before run_iter (a resumed run's): not in its rate
        pre = self.cfg.preprocess
        average = (pre.average_frames, pre.average_register, self.cfg.link.max_drift_A) if pre.average_frames > 1 else None
        self.averager: FrameAverager | None = None
        if self.cfg.detection == "process":
            if engine is not None:
                raise ConfigError("detection = \"process\" builds its engine in the detection process from the "
                                  "config (engine kind, model, device); an engine object cannot be passed to it")
            from .detect_process import DetectorProcess

            self.detector = DetectorProcess(self.cfg.engine, pre, self.cfg.locate, batch_size=self.cfg.batch.max_batch,
                                            average=average, deliver=self._delivered, stop=self.stop)
            self._oom_counted = 0
        else:
            self.detector = Detector(self.cfg.engine, pre, self.cfg.locate, engine=engine,
                                     batch_size=self.cfg.batch.max_batch)
            if average is not None:
                self.averager = FrameAverager(average[0], register=average[1], max_drift_A=average[2])
        self.stage_s: dict[str, float] = {"link": 0.0, "sites": 0.0, "write": 0.0}
        if self.averager is not None:
            self.stage_s["average"] = 0.0  # (in the detection process, the detector's)
        self._ingest_q: queue.Queue = queue.Queue(maxsize=self.cfg.queue_frames)
        self._ending = threading.Event()  # a live stream's first stop: it ends, what it received is tracked
        self._host_q: queue.Queue = queue.Queue(maxsize=4)
        self.last_frame: Frame | None = None
        self.error: str | None = None  # what stopped the run, when something did
        #: where no model was chosen: the engine config for the first frame's ``meta`` (how a
        #: stream's frames say they were taken) and images per frame, applied before it is
        #: detected (:func:`track`)
        self.choose_engine: Callable[[dict, int], EngineConfig] | None = None

    @classmethod
    def resume(cls, point, *, config: PipelineConfig | None = None, engine=None,
               counters: Counters | None = None, force: bool = False) -> Pipeline:
        """Go on with the run in a run file whose tracker was killed (or stopped).

        Parameters
        ----------
        point
            The run file's path, or the :class:`~etem.tracker.resume.ResumePoint` that
            :func:`etem.tracker.resume.load` read from it.
        config
            The config to go on with; default: the one the run was started with.
        force
            Go on with a run that finished, or that another version of etem-tracker wrote.

        The pipeline starts where the run file's last snapshot left it (counters, linker, sites,
        next particle id); the file is reopened at the first frame. Feed it the frames after
        ``point.last_frame`` (a replay) or whatever a stream sends now.
        """
        from .resume import ResumePoint, load, restore_head

        if not isinstance(point, ResumePoint):
            point = load(point, force=force)
        pipe = cls(config or point.config, engine=engine, run_path=point.path, counters=counters, overwrite=True)
        pipe._resume = point
        restore_head(pipe, point)
        return pipe

    # -- stage 1: ingest ----------------------------------------------------------------------
    def _ingest(self, source: Iterable[Frame]) -> None:
        q, drop = self._ingest_q, self.cfg.overflow == "drop"
        try:
            for frame in source:
                if self.stop.is_set():
                    self._account("dropped", "stopped", [frame])
                    break
                if drop and not self._ending.is_set():  # (what an ended stream still had waits its turn)
                    try:
                        q.put_nowait(frame)
                    except queue.Full:
                        self._account("dropped", "queue_full", [frame])
                        self._say_drops()
                else:
                    while not self.stop.is_set():
                        try:
                            q.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    else:  # stopped while waiting for room: the frame in hand is dropped
                        self._account("dropped", "stopped", [frame])
                        break
        except BaseException as exc:  # noqa: BLE001 - reported to the host thread
            self._put(q, exc)
            return
        self._put(q, _DONE)

    def _say_drops(self) -> None:
        """Frames dropped for a full queue are said as they happen (where no status line shows
        them: a service's journal), at most once a minute."""
        now = time.monotonic()
        if self._drops_said is not None and now - self._drops_said < 60.0:
            return
        self._drops_said = now
        log.warning("frames dropped: the queue of %d frames is full, the tracker is slower than the camera "
                    "(%d dropped so far, dropped/queue_full)", self.cfg.queue_frames,
                    self.counters.dropped.get("queue_full", 0))

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
        while True:
            try:
                first = q.get(timeout=0.1)
                break
            except queue.Empty:
                if self.stop.is_set():  # the host stopped (it accounts for what is still queued)
                    return [], _DONE
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

    def _account(self, kind: str, reason: str, frames: list[Frame]) -> None:
        """Count frames rejected or dropped by the pipeline (remembered for resume snapshots)."""
        with self._acct_lock:
            self.counters.add(kind, len(frames), reason=reason)
            if self.run_path is not None:
                self._ahead.extend((f.received, kind, reason) for f in frames)
                if len(self._ahead) > 100_000:  # no frame processed for long: keep the newest
                    del self._ahead[:50_000]

    def _compute(self) -> None:
        frames: list[Frame] = []
        try:
            while True:
                frames, terminal = self._next_batch()
                frames = [f for f in frames if self._accept(f)]
                if frames:
                    batch = self._process_batch(frames)
                    frames = []
                    self._put(self._host_q, batch)
                    if self.stop.is_set():  # stopped (by the host, or from outside): no more batches
                        self._put(self._host_q, _DONE)
                        return
                if terminal is not None:
                    self._put(self._host_q, terminal)
                    return
        except BaseException as exc:  # noqa: BLE001
            if frames:  # the batch that failed: the run stops on the error
                self._account("dropped", "stopped", frames)
            self._put(self._host_q, exc)

    def _process_batch(self, frames: list[Frame]) -> _Batch:
        """Detect the columns of a batch; a frame the engine cannot take even alone for want of
        GPU memory is rejected (``rejected/oom``), the rest go on."""
        retries = self.detector.oom_retries
        cols, average_s = detect_averaged(self.detector, self.averager, frames)
        if self.averager is not None:
            self.stage_s["average"] += average_s
        if self.detector.oom_retries > retries:
            self.counters.add("oom_retries", self.detector.oom_retries - retries)
        return self._batch(frames, cols)

    def _batch(self, frames: list[Frame], cols: list) -> _Batch:
        """The batch for the host stage: a frame without a table (out of GPU memory even alone)
        is rejected and counted (``rejected/oom``)."""
        failed = [f for f, c in zip(frames, cols) if c is None]
        if not failed:
            return _Batch(frames, cols)
        self._account("rejected", "oom", failed)
        kept = [(f, c) for f, c in zip(frames, cols) if c is not None]
        return _Batch([f for f, _ in kept], [c for _, c in kept])

    def _dispatch(self) -> None:
        """Stage 2 with the detector in a child process: batches go out here, results come
        back through :meth:`_delivered` (the detection process's collector thread)."""
        det = self.detector
        frames: list[Frame] = []
        try:
            while True:
                frames, terminal = self._next_batch()
                frames = [f for f in frames if self._accept(f)]
                if frames and not det.submit(frames):
                    # stopping, or the child is gone (its error reaches the host thread)
                    self._account("dropped", "stopped", frames)
                    return
                frames = []  # sent: the detection process accounts for them from now on
                if terminal is not None:
                    while det.frames_in_flight and det.alive and not self.stop.is_set():
                        time.sleep(0.001)  # the last batches' results go first
                    self._put(self._host_q, terminal)
                    return
        except BaseException as exc:  # noqa: BLE001
            if frames:
                self._account("dropped", "stopped", frames)
            self._put(self._host_q, exc)

    def _delivered(self, frames: list[Frame], cols) -> None:
        """A batch's results from the detection process (or its error, with the frames it held)."""
        if isinstance(cols, BaseException):
            if frames:
                self._account("dropped", "stopped", frames)
            self._put(self._host_q, cols)
            return
        retries = self.detector.oom_retries - self._oom_counted
        if retries:
            self.counters.add("oom_retries", retries)
            self._oom_counted += retries
        batch = self._batch(frames, cols)
        if batch.frames:
            self._put(self._host_q, batch)

    # -- stage 3: host ------------------------------------------------------------------------
    def run_iter(self, source: Iterable[Frame]) -> Iterator[FrameResult]:
        """Run over ``source``, yielding a result per processed frame as soon as it is ready."""
        self.t_start = time.perf_counter()
        self._processed_before = self.counters.processed
        in_process = self.cfg.detection == "process"
        if in_process:
            self.detector.start()  # its imports overlap with the wait for the first frame
        ingest = threading.Thread(target=self._ingest, args=(source,), name="etem-ingest", daemon=True)
        compute = threading.Thread(target=self._dispatch if in_process else self._compute, name="etem-compute",
                                   daemon=True)
        status = "complete"
        pending: list = []  # (frame, columns) of the batch in hand not yet done
        base = 0  # the processed count before the first of them
        in_host = False  # inside a frame's host work (a stop there cannot finish the stream)
        ending: KeyboardInterrupt | None = None  # the stop being finished (:meth:`_finish_stream`)
        deadline = 0.0
        ingest.start()
        compute.start()
        try:
            try:
                # While the engine is built at the first frame: trackpy's subnet solver compiles
                # now, not on the stream's second frame.
                warm_up(self.cfg.link.link_strategy)
            except KeyboardInterrupt as exc:
                ending, deadline = self._finish_stream(exc, source)
            while True:
                try:
                    if ending is not None and time.perf_counter() > deadline:
                        log.warning("stopping: %.0f s passed; the frames not yet tracked are dropped "
                                    "(dropped/stopped)", self.cfg.finish_on_stop_s)
                        raise ending
                    if not pending:
                        try:
                            item = self._host_q.get(timeout=0.5 if ending is None else 0.1)
                        except queue.Empty:
                            interrupt.check()
                            with interrupt.held():
                                self._flush_idle()
                            continue
                        if item is _DONE:
                            if ending is not None:  # the stream's frames are all tracked: the stop goes on
                                raise ending
                            if self.stop.is_set():  # set from outside (a program's stop): the source was left unread
                                status = "stopped"
                            break
                        if isinstance(item, BaseException):
                            status = "failed"
                            raise item
                        pending = list(zip(item.frames, item.columns))
                    frame, cols = pending[0]
                    base = self.counters.processed
                    why = self.blank.judge(cols.attrs.get("quality", {}))
                    if why:
                        self._reject_blank(frame, why)
                        pending.pop(0)
                        continue
                    in_host = True
                    with interrupt.held():  # a Ctrl-C here waits for the frame to be done
                        res = self._host(frame, cols)
                        pending.pop(0)
                        base, in_host = self.counters.processed, False
                    yield res
                    interrupt.check()
                except KeyboardInterrupt as exc:
                    if ending is not None or in_host:
                        raise
                    ending, deadline = self._finish_stream(exc, source)
        except GeneratorExit:
            status = "stopped"
            raise
        except KeyboardInterrupt:
            interrupt.delivered()
            status = "interrupted"
            raise
        except Exception as exc:
            status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            # the run file is closed undisturbed by a second Ctrl-C (a third goes through)
            with interrupt.held():
                self._wind_down(status, [f for f, _ in pending], base, (ingest, compute), in_process)

    def _finish_stream(self, stop: KeyboardInterrupt, source) -> tuple[KeyboardInterrupt, float]:
        """A first stop (Ctrl-C, SIGTERM) of a live stream: end the stream, and track what it
        had received before stopping (``finish_on_stop_s`` at most); the stop goes on then.
        Other sources (files, folders, arrays: read again on resume) stop at once."""
        end = getattr(source, "end", None)
        if self.cfg.finish_on_stop_s <= 0 or not isinstance(end, threading.Event):
            raise stop
        interrupt.delivered()
        end.set()
        self._ending.set()
        log.warning("stopping: tracking the frames already received (%d queued) for up to %.0f s; "
                    "Ctrl-C again stops at once", self._ingest_q.qsize(), self.cfg.finish_on_stop_s)
        return stop, time.perf_counter() + self.cfg.finish_on_stop_s

    def _wind_down(self, status: str, in_hand: list[Frame], base: int, threads, in_process: bool) -> None:
        """End a run: stop the stages, account for the frames they still held (``in_hand``:
        those of the batch the host stopped in not yet done, ``base`` the processed count before
        the first of them), close the run."""
        self.stop.set()
        if self.writer is not None:  # stopped between a frame's row and its count: the row decides
            unseen = self.writer.n_rows("frames") - self.counters.processed
            if unseen > 0:
                self.counters.add("processed", unseen)
        left = in_hand[max(self.counters.processed - base, 0):]
        if left:
            self._account("dropped", "stopped", left)
        # Unblock the producers, then account for what they still held.
        for q in (self._host_q, self._ingest_q):
            self._drain(q)
        ingest, compute = threads
        ingest.join(timeout=2)
        # the batch in hand is finished (the first one builds the engine): a thread left in
        # torch's or a library's C++ code as the interpreter exits can abort it
        compute.join(timeout=_COMPUTE_JOIN_S)
        if in_process:  # the frames the child still held were not processed
            held = self.detector.close()
            if held:
                self._account("dropped", "stopped", held)
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
            self._account("dropped", "stopped", [item])
        elif isinstance(item, _Batch) and item.frames:
            self._account("dropped", "stopped", item.frames)

    def _new_sites(self) -> SiteMap:
        # a column closer to the frame's edge than the detector looks is not seen: out of view
        return SiteMap(self.cfg.sites, self._settings_sampling(), frames_per_detection=self.cfg.preprocess.average_frames,
                       view_margin_px=view_margin_px(self.detector.engine, self.cfg.preprocess, self.cfg.locate.edge_px,
                                                     self.sampling))

    def statistics(self) -> dict[str, pd.DataFrame]:
        """Diffusion statistics so far (:meth:`SiteMap.statistics`)."""
        return {} if self.sites is None else self.sites.statistics(self._last_index)

    def status(self) -> dict[str, Any]:
        """Live figures for the status line and dashboards."""
        lat = np.asarray(self.latencies) * 1e3
        elapsed = time.perf_counter() - self.t_start
        c = self.counters.as_dict()
        return {
            **c,
            "fps": (c["processed"] - self._processed_before) / elapsed if elapsed > 0 else 0.0,
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "queue_ingest": self._ingest_q.qsize(),
            "queue_host": self._host_q.qsize(),
            "sites": 0 if self.sites is None else self.sites.n_occupied_sites,  # (as the report counts them)
            "class_changes": counts_so_far(self.sites)[0],  # (of frames whose sites are final, as "sites")
            **self.trust.status(),
            "oversize_subnets": self.oversize_subnets,
            "filled_nonfinite": self.filled_nonfinite,
            "view_jumps": 0 if self.linker is None else self.linker.jumps,
        }

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Depth and capacity of each stage queue now: ``{"ingest": (n, max), "host": (n, max)}``.

        Safe to call from any thread (dashboards, metrics endpoints). With the detector in a
        process of its own, ``"detect"`` is the frames it holds and its frame ring's slots.
        """
        depths = {"ingest": (self._ingest_q.qsize(), self._ingest_q.maxsize),
                  "host": (self._host_q.qsize(), self._host_q.maxsize)}
        if self.cfg.detection == "process":
            depths["detect"] = (self.detector.frames_in_flight, self.detector.n_slots)
        return depths

    @property
    def tables_complete(self) -> bool:
        """Whether :meth:`frames_table` and :meth:`columns_table` hold every frame of the run
        (else the run file does: frames left memory, or the run was resumed)."""
        return not self._evicted and self._resume is None

    def frames_table(self) -> pd.DataFrame:
        """Per-frame rows in memory (see :attr:`tables_complete`)."""
        if isinstance(self.frames_rows, CompactRows):
            return self.frames_rows.table()
        return pd.DataFrame(list(self.frames_rows))

    def columns_table(self) -> pd.DataFrame:
        """Linked columns in memory (see :attr:`tables_complete`)."""
        return pd.concat(self.columns_parts, ignore_index=True) if self.columns_parts else pd.DataFrame(
            columns=["frame", "y", "x", "cls", "prob", "intensity", "background", "particle", "y_ref", "x_ref", "site"])
