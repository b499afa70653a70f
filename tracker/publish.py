"""Publish a recorded or simulated sequence the way a camera would (`etem publish`)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import zmq

from .errors import ConfigError, choice_error
from .files import ACQUISITION_KEYS
from .frames import Frame
from .wire import encode

log = logging.getLogger("etem.publish")


@dataclass
class PublishStats:
    sent: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("nan")


class Publisher:
    """A camera-like sender of frames in wire format v1.

    Parameters
    ----------
    address
        Endpoint to bind (or connect, with ``bind=False``).
    mode
        ``"pub"``: a PUB socket (slow subscribers drop; the live camera default) — an XPUB
        underneath so that ``wait_for_subscribers`` can see them join; ``"push"``: lossless
        with backpressure.
    sndhwm
        Send high-water mark in messages.
    """

    def __init__(
        self,
        address: str,
        *,
        mode: Literal["pub", "push"] = "pub",
        bind: bool = True,
        sndhwm: int = 1000,
        context: zmq.Context | None = None,
        curve_keys: str | Path | None = None,
    ) -> None:
        if mode not in ("pub", "push"):
            raise choice_error("mode", mode, ("pub", "push"))
        self.mode = mode
        ctx = context or zmq.Context.instance()
        self.sock = ctx.socket(zmq.XPUB if mode == "pub" else zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        # lossless (push): what is queued at close is delivered, for up to 30 s; and a connecting
        # PUSH queues nothing before the tracker is there (IMMEDIATE: a send waits for it), so
        # that frames sent before the tracker bound are not lost with the socket
        self.sock.setsockopt(zmq.LINGER, 30_000 if mode == "push" else 2000)
        if mode == "push" and not bind:
            self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if curve_keys is not None:
            from .security import secure_socket

            try:
                secure_socket(self.sock, curve_keys, server=bind, context=ctx)
            except ConfigError:
                self.sock.close(linger=0)
                raise
        if bind:
            from .security import warn_if_exposed

            warn_if_exposed(address, curve_keys is not None)
        try:
            if bind:
                if address.endswith(":0") or address.endswith(":*"):
                    port = self.sock.bind_to_random_port(address.rsplit(":", 1)[0])
                    address = f"{address.rsplit(':', 1)[0]}:{port}"
                else:
                    self.sock.bind(address)
            else:
                self.sock.connect(address)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            raise ConfigError(f"cannot {'bind' if bind else 'connect'} {address}: {exc}") from None
        self.address = address
        self.seq = 0
        self.subscribers = 0

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 10.0) -> bool:
        """PUB mode: block until ``n`` subscribers joined (True) or the timeout passed (False)."""
        if self.mode != "pub":
            return True
        deadline = time.monotonic() + timeout_s
        while self.subscribers < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000), zmq.POLLIN):
                return False
            msg = self.sock.recv()
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers -= 1
        return True

    def send(self, image: np.ndarray, *, frame: int | None = None, sampling: float | None = None, **optional) -> None:
        parts = encode(image, seq=self.seq, frame=self.seq if frame is None else frame, sampling=sampling, **optional)
        self.sock.send_multipart(parts, copy=False)
        self.seq += 1

    def send_raw(self, parts: list[bytes]) -> None:
        """Send arbitrary parts (tests and fuzzing of receivers)."""
        self.sock.send_multipart(parts)

    def end(self) -> None:
        self.sock.send_multipart(encode(None, seq=self.seq, frame=self.seq, sampling=None, end=True))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def publish_frames(
    frames: Iterable[Frame | np.ndarray],
    publisher: Publisher,
    *,
    fps: float | None = None,
    sampling: float | None = None,
    times: Sequence[float] | None = None,
    end: bool = True,
    progress: bool = False,
) -> PublishStats:
    """Send frames at ``fps`` (None: as fast as the socket takes them), then an end marker.

    A :class:`Frame` carries its own acquisition time; a bare array's is ``times[i]`` [s], or
    none (the receiver's statistics are then per frame). The sending rate is not an acquisition
    time: a recording replayed ten times faster than it was taken has the same diffusion.
    """
    from tqdm import tqdm

    stats = PublishStats()
    t0 = time.perf_counter()
    it = tqdm(frames, desc="publish", unit="frame", disable=not progress)
    for i, f in enumerate(it):
        if fps:
            delay = t0 + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if isinstance(f, Frame):
            # what the file says of how it was taken travels with the frame (wire "meta")
            meta = {k: f.meta[k] for k in ACQUISITION_KEYS if f.meta.get(k)} or None
            publisher.send(f.image, frame=f.frame, sampling=f.sampling if sampling is None else sampling,
                           t=f.t, dose=f.dose, defocus=list(f.defocus) if f.defocus else None, meta=meta)
        else:
            publisher.send(f, sampling=sampling, t=None if times is None else float(times[i]))
        stats.sent += 1
    if end:
        publisher.end()
    stats.seconds = time.perf_counter() - t0
    return stats
