"""Frame sources: ZeroMQ SUB/PULL streams, recorded files, folders, in-memory arrays.

A source is an iterable of :class:`Frame`. Sources that decode messages count what they
receive and reject in the run's :class:`Counters`; a malformed message never stops the run.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np
import zmq

from .accounting import Counters
from .errors import ConfigError, WireError, choice_error
from .frames import Frame
from .wire import SeqTracker, decode, decode_header, header_seq

log = logging.getLogger("etem.source")

SocketMode = Literal["sub", "pull"]


class ZmqSource:
    """Frames from a ZeroMQ stream in wire format v1.

    Parameters
    ----------
    address
        ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.
    mode
        ``"sub"`` connects to a camera's PUB socket (the live default: a slow consumer drops,
        and the gaps show in ``seq``); ``"pull"`` receives from a PUSH socket losslessly, with
        backpressure.
    bind
        Bind instead of connect (PULL only makes sense to bind when publishers connect to us).
    stop_on_end
        Stop at an end-of-stream message.
    idle_timeout_s
        Stop when nothing arrived for this long (None: wait forever, until ``stop`` is set).
    rcvhwm
        Receive high-water mark in messages (ZeroMQ's own queue; bounded memory).
    rcvbuf
        The kernel's receive buffer for the socket [bytes]; None: the system's default, which
        on Linux grows with the traffic (up to ``net.ipv4.tcp_rmem``'s maximum, 6-32 MB), so
        that a PUSH camera feels the backpressure of a slow pipeline only after that much is
        queued in the kernel. Set it to bound that.
    nonfinite_ok
        Pass frames with NaN or infinite pixels on (unchecked) for the pipeline to fill or
        reject (``[preprocess] fill_nonfinite``), instead of rejecting them here (rejected/nan).
    """

    def __init__(
        self,
        address: str,
        *,
        mode: SocketMode = "sub",
        bind: bool = False,
        counters: Counters | None = None,
        stop: threading.Event | None = None,
        stop_on_end: bool = True,
        idle_timeout_s: float | None = None,
        rcvhwm: int = 100,
        rcvbuf: int | None = None,
        context: zmq.Context | None = None,
        curve_keys: str | Path | None = None,
        nonfinite_ok: bool = False,
    ) -> None:
        if mode not in ("sub", "pull"):
            raise choice_error("mode", mode, ("sub", "pull"))
        if "://" not in address:
            raise ConfigError(f"the address (--listen, source=) must look like tcp://HOST:PORT, got {address!r}")
        _check_address(address, bind)
        self.address = address
        self.mode = mode
        self.bind = bind
        self.counters = counters if counters is not None else Counters()
        self.stop = stop if stop is not None else threading.Event()
        self.stop_on_end = stop_on_end
        self.idle_timeout_s = idle_timeout_s
        self.rcvhwm = rcvhwm
        self.rcvbuf = rcvbuf
        self.nonfinite_ok = nonfinite_ok
        self.seq = SeqTracker()
        self._highest: int | None = None  # the highest frame number given to the run
        self._recent: collections.deque = collections.deque(maxlen=_RECENT_FRAMES)  # the latest given ...
        self._used: set = set()  # ... and the same as a set: a repeat of one of them is numbered on
        self._frame_offset = 0  # added to the camera's frame numbers (after it counted again)
        self._stream: object = _UNSET  # the ``stream`` id the run follows (None: the camera sends none)
        self._other: tuple = (_UNSET, [])  # another stream id heard, and the seqs of its messages in a row
        self._said: set = set()  # the faults said once (each further one is only counted)
        self._gaps_said = 0
        self._ctx = context or zmq.Context.instance()
        self.ended = False
        #: set to end the stream (a pipeline's first stop): what ZeroMQ already received is
        #: read (:meth:`_drain`), then the iteration ends
        self.end = threading.Event()
        self.curve_keys = curve_keys

    def _socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB if self.mode == "sub" else zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        if self.rcvbuf is not None:
            sock.setsockopt(zmq.RCVBUF, int(self.rcvbuf))
        sock.setsockopt(zmq.LINGER, 0)
        if self.mode == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if self.curve_keys is not None:
            from .security import secure_socket

            try:
                secure_socket(sock, self.curve_keys, server=self.bind, context=self._ctx)
            except ConfigError:
                sock.close()
                raise
        if self.bind:
            from .security import warn_if_exposed

            warn_if_exposed(self.address, self.curve_keys is not None)
        try:
            (sock.bind if self.bind else sock.connect)(self.address)
        except zmq.ZMQError as exc:
            sock.close()
            hint = (" (is another tracker or camera bound to it? --bind, bind=True binds; without it the "
                    "tracker connects to a camera that binds)" if self.bind and exc.errno == zmq.EADDRINUSE else "")
            raise ConfigError(f"cannot {'bind' if self.bind else 'connect'} {self.address}: {exc}{hint}") from None
        return sock

    def __iter__(self) -> Iterator[Frame]:
        sock = self._socket()
        # Connection events tell a publisher that came back (a restart, with seq from 0 or
        # wherever its slow-joining subscribers first hear it) from repeated messages.
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        last = time.monotonic()
        connections = 0
        heard = False  # any message yet
        try:
            while not self.stop.is_set():
                if self.end.is_set():
                    yield from self._drain(sock)
                    return
                ready = dict(poller.poll(50))
                if not heard and time.monotonic() - last > _QUIET_S:
                    heard = True  # (said once)
                    log.warning("no message from %s after %.0f s: is the camera sending %s? (%s)", self.address,
                                _QUIET_S, "here" if self.bind else "from there",
                                "both sides need the same CURVE keys" if self.curve_keys is not None else
                                "a PUB camera needs --mode sub (mode='sub'), a PUSH one --mode pull "
                                "(mode='pull'); --bind (bind=True) when the camera connects")
                if monitor in ready:
                    while monitor.poll(0):
                        monitor.recv_multipart()
                        connections += 1
                        if connections > 1:
                            log.info("%s: connected anew (publisher restarted?)", self.address)
                            self.seq.reconnected()
                if sock not in ready:
                    if self.idle_timeout_s is not None and time.monotonic() - last > self.idle_timeout_s:
                        log.info("no message for %.1f s; stopping", self.idle_timeout_s)
                        return
                    continue
                parts = sock.recv_multipart(copy=False)
                now = time.perf_counter()
                last = time.monotonic()
                heard = True
                frame = self._accept([p.buffer for p in parts], now)
                if frame is _END:
                    self.ended = True
                    if self.stop_on_end:
                        return
                elif frame is not None:
                    yield frame
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    def _drain(self, sock: zmq.Socket) -> Iterator[Frame]:
        """The frames ZeroMQ received before the stream was asked to end (in its queue of
        ``rcvhwm`` messages and the kernel's buffer), read until none comes for 20 ms; at most
        twice ``rcvhwm`` messages, so that a camera still sending cannot keep the stream open."""
        n = 0
        while n < 2 * max(self.rcvhwm, 1) and not self.stop.is_set() and sock.poll(20):
            parts = sock.recv_multipart(copy=False)
            n += 1
            frame = self._accept([p.buffer for p in parts], time.perf_counter())
            if frame is _END:
                self.ended = True
                break
            if frame is not None:
                yield frame
        log.info("stream ended on request: %d message(s) read from ZeroMQ's queue", n)

    def _accept(self, parts: Sequence[memoryview], received: float):
        """Decode one message: a Frame, _END, or None when rejected (and counted)."""
        try:
            frame = decode(parts, received=received, nonfinite_ok=self.nonfinite_ok)
        except WireError as exc:
            seq = header_seq(parts[0]) if parts else None
            self._reject(exc, seq)
            self._seen(seq)  # (a rejected message is none missing)
            return None
        header = decode_header(parts[0])
        seq = header["seq"]
        if not self._follows(header.get("stream"), seq):
            exc = WireError("stream", f"stream {header.get('stream')!r} is not the run's ({self._stream!r})", "stream")
            self._reject(exc, seq)
            return None
        if frame is None:  # end of stream: a control message, not a frame; its seq tells what went missing
            try:
                gap = self.seq.end(seq)
            except WireError as exc:  # a repeated or stale end: the stream goes on
                self._reject(exc, seq)
                return None
            if gap:
                self.counters.add("missing", gap)
                log.warning("seq gap: %d message(s) missing before the end of the stream", gap)
            return _END
        self.counters.add("received")
        restarts = self.seq.restarts
        try:
            self._seen(frame.seq, strict=True)
        except WireError as exc:
            self.counters.add("rejected", reason=exc.reason)
            self._say(exc, frame.seq)
            return None
        self._renumber(frame, restarted=self.seq.restarts > restarts)
        return frame

    def _reject(self, exc: WireError, seq: int | None) -> None:
        self.counters.add("received")
        self.counters.add("rejected", reason=exc.reason)
        self._say(exc, seq)

    def _say(self, exc: WireError, seq: int | None) -> None:
        """Say a rejection, the first of its kind (its reason and the field at fault) only: a
        camera that sends every message wrong is told once what is wrong, not at its frame rate."""
        key = (exc.reason, exc.field)
        if key in self._said:
            log.debug("rejected message: %s", exc)
            return
        self._said.add(key)
        hint = _HINTS.get(exc.reason, "")
        log.warning("rejected a message%s (rejected/%s): %s%s. Further ones like it are counted, not said again.",
                    "" if seq is None else f", seq {seq}", exc.reason, exc, hint)

    def _follows(self, stream, seq: int) -> bool:
        """Whether a message of ``stream`` (its header's id, None for none) is the run's. The run
        follows the first stream it hears. Messages of another id are rejected (rejected/stream:
        a second camera sending to the same address, or a corrupt id), until that id has sent
        :data:`_SWITCH_AFTER` messages in a row with none of the run's between: then it is taken
        as the camera started again under a new id (its seq may start again), and followed. A
        stray id among the run's messages, or a second camera whose messages mix with the run's,
        never takes the run over."""
        if not isinstance(stream, (str, int, float, type(None))):
            stream = repr(stream)  # (an id of another JSON type: compared as written)
        if self._stream is _UNSET or stream == self._stream:
            self._stream = stream
            self._other = (_UNSET, [])
            return True
        other, seqs = self._other
        seqs = [*seqs, seq] if stream == other else [seq]
        self._other = (stream, seqs)
        n = len(seqs)
        if n < _SWITCH_AFTER:
            self._seen(seq)  # (a rejected message is none missing)
            if ("stream", "stream") not in self._said:
                self._said.add(("stream", "stream"))  # (this says it: the rejections are counted only)
                log.warning("a message of stream %r at seq %d, where this run follows %r: rejected (rejected/stream), "
                            "as are further ones unless %d come in a row with none of %r between (then taken as the "
                            "camera started again under a new id). Two cameras on one address, or two copies of the "
                            "acquisition software? Give each camera its own address, or stop one.",
                            stream, seq, self._stream, _SWITCH_AFTER, self._stream)
            return False
        log.warning("the stream id went from %r to %r at seq %d (%d messages of it in a row): taken as the camera "
                    "started again", self._stream, stream, seq, n)
        self._stream, self._other = stream, (_UNSET, [])
        self.seq.reconnected()  # (its seq may start again: its first messages, rejected, are none missing)
        for q in seqs[:-1]:
            try:
                self._seen(q, strict=True)
            except WireError:  # (noted already: ahead of the old stream's)
                pass
        return True

    def _seen(self, seq: int | None, strict: bool = False) -> None:
        """Note a message's ``seq``: gaps before it are missing messages, a publisher restart is
        counted, a repeat raises WireError. Not ``strict`` (a message rejected for its pixels or
        its header's fields), a seq ahead of the last is noted, one at or below it passed over."""
        if seq is None or (not strict and self.seq.last is not None and seq <= self.seq.last):
            return  # (a rejected message's seq only moves the stream on: it may be stale, or corrupt)
        try:
            gap = self.seq.check(seq)
        except WireError:
            if not strict:
                return
            if not self.seq.counts_again(seq):
                raise
            gap = self.seq.restart(seq)  # the camera counts again from where it began (1, its own first)
        if self.seq.restarts > self.counters.restarts:
            self.counters.add("restarts", self.seq.restarts - self.counters.restarts)
            log.warning("publisher restarted: seq went back to %d", seq)
        if gap:
            self.counters.add("missing", gap)
            self._gaps_said += 1
            if self._gaps_said <= _GAPS_SAID:
                log.warning("seq gap: %d message(s) missing before seq %d%s", gap, seq,
                            "; further gaps are counted (missing), not said each" if self._gaps_said == _GAPS_SAID
                            else "")

    def _renumber(self, frame: Frame, restarted: bool) -> None:
        """Keep the run's frame numbers its own, each once: a publisher that starts again (seq
        back to 0, or back on a new connection) and counts its frames again from below the run's
        highest has them numbered on from there; so has one whose frame number repeats one the run
        has had (a camera that sends no acquisition index of its own: frame 0 every time). A
        number that goes back to one the run has not had is kept (one odd number does not shift
        the rest of the run). The camera's own number is kept in ``meta['camera_frame']``."""
        n = frame.frame + self._frame_offset
        if self._highest is not None and ((restarted and n <= self._highest) or n in self._used):
            if restarted:
                log.warning("the restarted publisher's frame numbers begin at %d, which this run has had (up to %d): "
                            "its frames are numbered on from %d", frame.frame, self._highest, self._highest + 1)
            elif "frame" not in self._said:
                self._said.add("frame")
                log.warning("frame %d (seq %d) repeats one this run has had: the run numbers it, and any further "
                            "such, on from its highest (%d), and keeps the camera's number in meta['camera_frame']. "
                            "The header's frame is the acquisition index: +1 per frame", frame.frame, frame.seq,
                            self._highest)
            self._frame_offset = self._highest + 1 - frame.frame
        if self._frame_offset:
            frame.meta = {**(frame.meta or {}), "camera_frame": frame.frame}
            frame.frame += self._frame_offset
        self._highest = frame.frame if self._highest is None else max(self._highest, frame.frame)
        if len(self._recent) == self._recent.maxlen:
            self._used.discard(self._recent[0])
        self._recent.append(frame.frame)
        self._used.add(frame.frame)


_END = object()
_UNSET = object()
_GAPS_SAID = 3  # seq gaps said each; the further ones are counted only
_RECENT_FRAMES = 100_000  # frame numbers a repeat is looked for among (the run's latest; 8 MB at most)
_SWITCH_AFTER = 3  # messages of another stream id in a row that are taken as the camera started again
#: what a rejection's warning adds, by reason
_HINTS = {
    "seq_repeat": " (a camera that counts again from 0 or 1, or from where it began, is taken as started again; "
                  "repeated seqs are also what two cameras sending to one address give)",
    "bad_json": " (part 0 must be the header: UTF-8 JSON, one object)",
    "protocol": " (every header, the end marker's too, says \"protocol\": \"etem-frame/1\")",
}
_QUIET_S = 10.0  # a stream silent this long from its start is said to be (the camera? the address?)


def _check_address(address: str, bind: bool) -> None:
    """A TCP address's port must be one; a host name that does not resolve is said (ZeroMQ
    would keep trying to connect to it without a word)."""
    import socket

    scheme, _, rest = address.partition("://")
    if scheme != "tcp":
        return
    host, _, port = rest.rpartition(":")
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{address} (--listen, source=): the port must be 1 to 65535")
    host = host.strip("[]")
    if bind or host in ("*", "") or host.replace(".", "").isdigit() or ":" in host:
        return
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        log.warning("%s: the host name %r does not resolve (yet); waiting for it all the same", address, host)


def _seq_of(header: memoryview) -> int | None:
    """The ``seq`` of a message whose header is sound (its pixels may not be), else None."""
    try:
        return decode_header(header)["seq"]
    except WireError:
        return None


def iter_array(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    sampling: float | None = None,
    counters: Counters | None = None,
    fps: float | None = None,
    start: int = 0,
) -> Iterator[Frame]:
    """Frames from an in-memory stack ``[N, H, W]`` / ``[N, F, H, W]`` or a list of arrays.

    With ``fps``, frames are released at that rate (acquisition pace); ``start``: the first.
    """
    t0 = time.perf_counter()
    for i, image in enumerate(frames[start:] if start else frames, start):
        if fps:
            delay = t0 + (i - start) / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if counters is not None:
            counters.add("received")
        yield Frame(image=np.asarray(image), frame=i, seq=i, sampling=sampling, received=time.perf_counter())


def counted(frames: Iterable[Frame], counters: Counters) -> Iterator[Frame]:
    """Count frames of a source that does not count itself (files, folders)."""
    for f in frames:
        counters.add("received")
        f.received = time.perf_counter()
        yield f


def open_source(
    spec: str | Path | np.ndarray | Sequence[np.ndarray],
    *,
    counters: Counters,
    stop: threading.Event | None = None,
    mode: SocketMode = "sub",
    bind: bool = False,
    sampling: float | None = None,
    pace: float | None = None,
    fps: float | None = None,
    idle_timeout_s: float | None = None,
    focal: int = 1,
    curve_keys: str | Path | None = None,
    start: int = 0,
    pattern: str | None = None,
    nonfinite_ok: bool = False,
    dataset: str | None = None,
    default_sampling: float | None = None,
) -> Iterable[Frame]:
    """Resolve what a user passed (an address, a file, a folder, an array) into a source.

    ``start``: recordings, folders and arrays begin at this frame (a resumed run); streams ignore it.
    ``pattern``: folders only, the frame files to read (see :class:`~etem.tracker.watch.FolderWatcher`).
    ``nonfinite_ok``: streams only, see :class:`ZmqSource` (files' frames are checked by the pipeline).
    ``dataset``: files and folders, the dataset or signal of a file to read (see :func:`~etem.tracker.files.open_recording`).
    ``sampling`` is the frames' pixel size whatever they say; ``default_sampling`` that of frames
    that say none (given to the frames by the pipeline: here it only keeps the warning quiet).
    """
    if isinstance(spec, (str, Path)) and "://" in str(spec):
        return ZmqSource(str(spec), mode=mode, bind=bind, counters=counters, stop=stop,
                         idle_timeout_s=idle_timeout_s, curve_keys=curve_keys, nonfinite_ok=nonfinite_ok)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            from .files import watch_folder

            if pace is not None:
                raise ConfigError(f"{path} is a folder being written: its frames come at the pace they are "
                                  "written; drop --pace (pace=)")
            watcher = watch_folder(path, stop=stop, idle_timeout_s=idle_timeout_s or 5.0, sampling=sampling,
                                   focal=focal, fps=fps, start=start, pattern=pattern, counters=counters,
                                   dataset=dataset)
            return counted(watcher, counters)
        if pattern is not None:
            raise ConfigError(f"{path} is a file; a pattern chooses the files of a folder (--pattern, pattern=)")
        from .files import open_recording

        rec = open_recording(path, focal=focal, fps=fps, dataset=dataset)
        frames = rec.iter_frames(start, pace=pace)
        if sampling is not None:
            say_sampling_override(rec.sampling, sampling, path)
            frames = _override_sampling(frames, sampling)
        elif rec.sampling is None and default_sampling is None:
            log.warning("%s gives no pixel size; give it (--sampling, sampling=; Å/px)", path)
        return counted(frames, counters)
    return iter_array(spec, sampling=sampling, counters=counters, start=start)


def say_sampling_override(said: float | None, given: float, source) -> None:
    """Say where a pixel size given (--sampling) is far from the one the file records (a
    factor 10 is nm taken for Å); the given one is used."""
    if said and not 0.8 <= given / said <= 1.25:
        log.warning("%s records %.4g Å/px; --sampling %.4g (%.3gx that) is used%s (the pixel size given: "
                    "--sampling, sampling=)", source, said, given, given / said,
                    " (nm for Å?)" if math.isclose(max(given, said) / min(given, said), 10, rel_tol=0.05) else "")


def _override_sampling(frames: Iterable[Frame], sampling: float) -> Iterator[Frame]:
    for f in frames:
        f.sampling = sampling
        yield f
