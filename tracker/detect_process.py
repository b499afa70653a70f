"""The detector in a process of its own (``PipelineConfig.detection = "process"``).

In one process the pipeline's compute thread (preprocessing, engine launches, peak finding:
Python between the kernels) and its host thread (linking, sites, the run file: Python
throughout) take turns holding one interpreter lock, so each waits for the other and the
frame rate is set by the sum of their Python time, not by the slower of the two. Here the
detector runs in a child process with its own interpreter (and, on a GPU, its own CUDA
context), and the parent keeps ingest, linking, sites, the run file and the accounting.

Frames travel through a ring of shared-memory slots, each one frame's bytes: the parent
copies an image in, the child reads it in place and hands the slot back with the batch's
column tables, so a 4096² frame is copied once, not pickled through a pipe. A frame that does
not fit a slot (another dtype than the run's first frame) travels pickled; where the shared
memory cannot hold the ring (a small ``/dev/shm`` in a container), every frame does, with a
warning.

The child is started with ``spawn`` (CUDA cannot be used in a forked child) as soon as the
run starts, so its imports overlap with waiting for the first frame; it builds its engine at
the first batch, from the run's config (an engine object cannot cross the process boundary).
What it reports back per batch: the tables, each frame's ``None`` where the GPU ran out of
memory even for that frame alone, the out-of-memory retries, stage times, and, once, what
the engine is (name, device, model card), for the run file and the dashboard.

If the child dies (killed, a crash in a native library), the pipeline stops with an error
naming its exit code; the frames it held are counted as dropped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import queue
import sys
import threading
import time
import traceback
import types
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from .engines import engine_label
from .frames import Frame

log = logging.getLogger("etem.detect_process")

_SHM_DIR = "/dev/shm"


@dataclasses.dataclass
class EngineInfo:
    """What the parent knows of the child's engine (the fields the run file and dashboard read)."""

    name: str
    device: Any  # torch.device
    card: dict | None = None
    class_names: tuple[str, ...] = ()
    int8: bool = False  # an int8 graph (the onnxruntime engine's)
    #: the child's CUDA memory (``etem.tracker.metrics.gpu_memory``), as of its last batch
    gpu_memory_snapshot: dict = dataclasses.field(default_factory=dict)


class DetectionProcessError(RuntimeError):
    """The detection process failed: an error it raised that could not be sent back as is, or its end."""


# -- the child ----------------------------------------------------------------------------------
def _child_main(req, res, engine_cfg, preprocess_cfg, locate_cfg, batch_size, average, threads) -> None:
    """The child's loop: batches in, column tables out, until ``("stop",)`` or the pipe closes."""
    import signal

    # Ctrl-C in a terminal and a service manager's SIGTERM reach the whole process group; they
    # are the parent's to handle (it closes the run file cleanly, then stops the child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from multiprocessing import shared_memory

    import torch

    if threads:
        torch.set_num_threads(threads)  # as many CPU threads as the parent was given

    from .average import FrameAverager
    from .detect import Detector, detect_averaged
    from .metrics import gpu_memory

    det = Detector(engine_cfg, preprocess_cfg, locate_cfg, batch_size=batch_size)
    averager = None if average is None else FrameAverager(average[0], register=average[1], max_drift_A=average[2])
    shm = None
    told_engine = False
    try:
        while True:
            try:
                msg = req.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if msg[0] == "stop":
                return
            if msg[0] == "engine":  # the engine chosen at the first frame (Detector.choose)
                det.choose(msg[1])
                continue
            if msg[0] == "ring":
                if shm is not None:
                    shm.close()
                # (a spawned child shares the parent's resource tracker: the segment stays
                # registered once, and the parent's unlink is what removes it)
                shm = shared_memory.SharedMemory(name=msg[1])
                continue
            _, bid, metas, payloads = msg  # ("batch", id, frame fields, slot index or pickled image)
            try:
                frames = []
                for meta, (slot, shape, dtype, offset, inline) in zip(metas, payloads):
                    if inline is not None:
                        image = inline
                    else:
                        image = np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=offset)
                        if averager is not None:
                            image = image.copy()  # the average's window outlives the slot
                    frames.append(Frame(image=image, **meta))
                stage0 = dict(det.stage_s)
                retries0 = det.oom_retries
                cols, average_s = detect_averaged(det, averager, frames)
                del frames
                stages = {k: det.stage_s[k] - stage0.get(k, 0.0) for k in det.stage_s}
                if averager is not None:
                    stages["average"] = average_s
                info = None
                if not told_engine and det.engine is not None:
                    e = det.engine
                    info = {"name": e.name, "device": str(e.device), "card": getattr(e, "card", None),
                            "class_names": [str(n) for n in getattr(e, "class_names", ()) or ()],
                            "measured_sigma_px": det.measured_sigma_px, "trust_note": det.trust_note,
                            "int8": bool(getattr(e, "int8", False))}
                    told_engine = True
                gpu = gpu_memory(det.engine)
                res.send(("batch", bid, cols, det.oom_retries - retries0, stages, info, gpu, time.process_time()))
            except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
                res.send(("error", bid, _picklable(exc), traceback.format_exc()))
    finally:
        if shm is not None:
            shm.close()


@contextlib.contextmanager
def _main_left_out():
    """Start a spawned child without running the parent's main script again.

    ``spawn`` re-imports the parent's ``__main__`` in the child so that a target defined there
    can be found. The child's target here lives in this module, and a script that runs a
    pipeline at its top level (no ``if __name__ == "__main__"`` guard) would start the run
    over in the child. While the child is launched, ``__main__`` is a blank module.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return DetectionProcessError(f"{type(exc).__name__}: {exc}")


# -- the parent ---------------------------------------------------------------------------------
class DetectorProcess:
    """The detector in a child process, fed batch by batch; results come back through ``deliver``.

    Parameters
    ----------
    engine_cfg, preprocess_cfg, locate_cfg
        As for :class:`~etem.tracker.detect.Detector`.
    batch_size
        The pipeline's largest micro-batch (sizes the ring: three batches of slots).
    average
        ``(frames, register, max_drift_A)`` of the frame averager, or None.
    deliver
        Called from the collector thread, in submission order, with ``(frames, columns)`` for
        each batch (``columns[i]`` None: out of GPU memory even alone), or ``(frames, exc)``
        when the child raised or died (the frames of every batch it still held).

    ``submit`` blocks while every slot is in use (the child is behind); it returns False,
    having sent nothing, once ``stop`` is set or the child has died.
    """

    def __init__(self, engine_cfg, preprocess_cfg, locate_cfg, *, batch_size: int,
                 average: tuple[int, bool, float] | None, deliver: Callable[[list[Frame], Any], None],
                 stop: threading.Event) -> None:
        self.engine: EngineInfo | None = None
        #: the classical locator's column width, where the child measured it (Detector.measured_sigma_px)
        self.measured_sigma_px: float | None = None
        self.trust_note = ""  #: Detector.trust_note, as the child said it
        self.stage_s: dict[str, float] = {"preprocess": 0.0, "engine": 0.0, "locate": 0.0, "quality": 0.0}
        if average is not None:
            self.stage_s["average"] = 0.0
        self.oom_retries = 0
        self.n_slots = max(4, 3 * int(batch_size))
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        self._args = (engine_cfg, preprocess_cfg, locate_cfg, batch_size, average, threads)
        self._deliver = deliver
        self._stop = stop
        self._proc = None
        self._req = self._res = None
        self._shm = None
        self._slot_bytes = 0
        self._free: queue.Queue[int] = queue.Queue()
        self._inflight: deque[tuple[int, list[Frame], list[int]]] = deque()  # (batch id, frames, slots)
        self._lock = threading.Lock()
        self._next_id = 0
        self._dead: BaseException | None = None
        self._closing = False
        self._collector: threading.Thread | None = None
        self.inline_frames = 0  #: frames sent pickled (no slot fitted them)
        self.cpu_s = 0.0  #: the child's CPU time [s] (all its threads) as of its last batch

    @property
    def engine_cfg(self):
        """The engine config the child runs with."""
        return self._args[0]

    def choose(self, engine_cfg) -> None:
        """Run with ``engine_cfg`` instead; before the first batch is submitted."""
        self._args = (engine_cfg, *self._args[1:])
        if self._req is not None:
            try:
                self._req.send(("engine", engine_cfg))
            except (OSError, ValueError):
                pass  # the child died: the collector reports it

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        ctx = mp.get_context("spawn")
        req_r, req_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child_main, args=(req_r, res_w, *self._args), name="etem-detect",
                                 daemon=True)
        with _main_left_out():
            self._proc.start()
        req_r.close()
        res_w.close()
        self._req, self._res = req_w, res_r
        self._collector = threading.Thread(target=self._collect, name="etem-detect-collector", daemon=True)
        self._collector.start()

    @property
    def alive(self) -> bool:
        return self._dead is None and self._proc is not None and self._proc.is_alive()

    @property
    def engine_label(self) -> str | None:
        """Detector.engine_label, of the engine the child said it built."""
        return engine_label(self.engine)

    @property
    def frames_in_flight(self) -> int:
        """Frames sent and not yet delivered."""
        with self._lock:
            return sum(len(frames) for _, frames, _ in self._inflight)

    def close(self, timeout: float = 5.0) -> list[Frame]:
        """Stop the child (it finishes the batch in hand) and free the ring; returns the frames
        it still held (to be accounted for by the caller)."""
        self._closing = True
        if self._proc is not None:
            try:
                self._req.send(("stop",))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout)
            if self._proc.is_alive():  # stuck (in a native library): it ignores SIGTERM
                self._proc.kill()
                self._proc.join(2)
        if self._collector is not None:
            self._collector.join(timeout)
        for conn in (self._req, self._res):
            if conn is not None:
                conn.close()
        with self._lock:
            left = [f for _, frames, _ in self._inflight for f in frames]
            self._inflight.clear()
        if self._shm is not None:
            self._shm.close()
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self._shm = None
        return left

    # -- frames in ------------------------------------------------------------------------------
    def _make_ring(self, frame: Frame) -> None:
        from multiprocessing import shared_memory

        need = int(frame.image.nbytes)
        total = need * self.n_slots
        self._slot_bytes = need
        try:
            if os.path.isdir(_SHM_DIR):
                fs = os.statvfs(_SHM_DIR)
                free = fs.f_bavail * fs.f_frsize
            else:
                free = None
            if free is not None and free < total + (64 << 20):
                raise OSError(f"{free / 2**20:.0f} MiB free in {_SHM_DIR}, {total / 2**20:.0f} MiB needed")
            self._shm = shared_memory.SharedMemory(create=True, size=total)
        except OSError as exc:
            log.warning("no shared memory for the detection process's frames (%s): frames travel pickled, "
                        "which costs a copy or two more per frame", exc)
            self._slot_bytes = -1
            return
        for i in range(self.n_slots):
            self._free.put(i)
        try:
            self._req.send(("ring", self._shm.name))
        except (OSError, ValueError):
            pass  # the child is gone: the collector reports it

    def _slot(self) -> int | None:
        while True:
            if self._stop.is_set() or not self.alive:
                return None
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue

    def submit(self, frames: Sequence[Frame]) -> bool:
        """Send a batch to the child; False (nothing sent) when stopping or the child is gone."""
        if self._slot_bytes == 0:
            self._make_ring(frames[0])
        metas, payloads, slots = [], [], []
        for f in frames:
            image = np.ascontiguousarray(f.image)
            if self._slot_bytes > 0 and image.nbytes <= self._slot_bytes:
                slot = self._slot()
                if slot is None:
                    self._release(slots)
                    return False
                offset = slot * self._slot_bytes
                np.copyto(np.ndarray(image.shape, image.dtype, buffer=self._shm.buf, offset=offset), image)
                payloads.append((slot, image.shape, image.dtype.str, offset, None))
                slots.append(slot)
            else:
                payloads.append((None, None, None, None, image))
                self.inline_frames += 1
            metas.append({k: getattr(f, k) for k in ("frame", "sampling", "seq", "t", "defocus", "dose", "meta",
                                                     "received", "finite")})
        with self._lock:
            bid = self._next_id
            self._next_id += 1
            self._inflight.append((bid, list(frames), slots))
        try:
            self._req.send(("batch", bid, metas, payloads))
        except (OSError, ValueError):
            pass  # the child died: the collector reports it, with these frames among those it held
        return True

    def _release(self, slots: list[int]) -> None:
        for s in slots:
            self._free.put(s)

    # -- results out ----------------------------------------------------------------------------
    def _collect(self) -> None:
        import torch

        while True:
            try:
                msg = self._res.recv()
            except (EOFError, OSError):
                if not self._closing:
                    code = self._proc.exitcode if self._proc is not None else None
                    if self._proc is not None and code is None:
                        self._proc.join(1)
                        code = self._proc.exitcode
                    self._fail(DetectionProcessError(f"the detection process ended unexpectedly (exit code {code})"))
                return
            kind, bid = msg[0], msg[1]
            with self._lock:
                if not self._inflight or self._inflight[0][0] != bid:
                    continue  # a batch given up on already
                _, frames, slots = self._inflight.popleft()
            self._release(slots)
            if kind == "error":
                exc, tb = msg[2], msg[3]
                log.error("the detection process raised:\n%s", tb)
                self._fail(exc, frames)
                return
            _, _, cols, retries, stages, info, gpu, self.cpu_s = msg
            if info is not None:
                self.engine = EngineInfo(info["name"], torch.device(info["device"]), info["card"],
                                         tuple(info.get("class_names", ())), bool(info.get("int8")))
                self.measured_sigma_px = self.measured_sigma_px or info.get("measured_sigma_px")
                self.trust_note = info.get("trust_note", "")
            if self.engine is not None:
                self.engine.gpu_memory_snapshot = gpu
            self.oom_retries += retries
            for k, v in stages.items():
                self.stage_s[k] = self.stage_s.get(k, 0.0) + v
            self._deliver(frames, cols)

    def _fail(self, exc: BaseException, frames: list[Frame] | None = None) -> None:
        """Report the child's failure once, with every frame it held."""
        with self._lock:
            held = list(frames or []) + [f for _, fs, _ in self._inflight for f in fs]
            self._inflight.clear()
        self._dead = exc
        self._deliver(held, exc)
