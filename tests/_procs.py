"""Helpers for the tests that run trackers and cameras as real processes over real sockets
(test_faults.py, test_overload.py, test_resume.py).

A camera is a separate process (a few lines of numpy + pyzmq that speak wire format v1), so
that it can be killed and restarted, and the tracker's memory is its own.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from etem.simulate.toy import make_movie
from etem.tracker.runfile import open_run
from etem.tracker.wire import REJECT_REASONS

# Subprocesses run torch with one thread: on two shared cores, more threads only fight.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=40, shape=(128, 128), particle_radius_A=8.0, seed=5)


@pytest.fixture(scope="module")
def movie_file(movie, tmp_path_factory):
    path = tmp_path_factory.mktemp("movie") / "movie.npy"
    np.save(path, np.asarray(movie.frames, np.float32))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss() -> int:
    """Resident memory of this process [bytes]."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def accounted(c: dict) -> None:
    assert c["received"] == c["processed"] + c["rejected"] + c["dropped"], c
    assert set(k.split("/", 1)[1] for k in c if k.startswith("rejected/")) <= set(REJECT_REASONS)


def etem(*args: str) -> subprocess.Popen:
    """``etem ARGS`` as a process of its own (stdout and stderr piped, as text)."""
    return subprocess.Popen([sys.executable, "-m", "etem.tracker.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_frames(run, n, proc, timeout=60):
    """Wait until the run file ``run`` that ``proc`` writes holds ``n`` frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        assert proc.poll() is None, (proc.returncode, proc.communicate())
        try:
            with open_run(run) as r:
                if r.n_rows("frames") >= n:
                    return
        except Exception:
            pass
    raise AssertionError("no frames written")


# ------------------------------------------------------------------------------ the camera
CAMERA = r"""
import json, os, sys, time
import numpy as np, zmq
cfg = json.loads(sys.argv[1])
frames = np.load(cfg["frames"], mmap_mode="r")
ctx = zmq.Context()
sock = ctx.socket(zmq.XPUB if cfg["mode"] == "pub" else zmq.PUSH)
sock.setsockopt(zmq.SNDHWM, cfg.get("sndhwm", 1000))
if cfg.get("sndbuf"):
    sock.setsockopt(zmq.SNDBUF, cfg["sndbuf"])
sock.setsockopt(zmq.LINGER, 10000)
(sock.bind if cfg.get("bind", True) else sock.connect)(cfg["address"])
if cfg["mode"] == "pub" and cfg.get("wait", True):
    if not sock.poll(int(1000 * cfg.get("wait_s", 20))):
        sys.exit("no subscriber")
    sock.recv()
print("ready", flush=True)
seq, frame0, fps = cfg.get("seq0", 0), cfg.get("frame0", 0), cfg["fps"]
sent, t0 = 0, time.perf_counter()
stop_file = cfg.get("stop_file")
while sent < cfg.get("n", 10**9) and time.perf_counter() - t0 < cfg.get("seconds", 1e9):
    if stop_file and sent % 10 == 0 and os.path.exists(stop_file):  # told to stop by the test
        break
    delay = t0 + sent / fps - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    img = np.ascontiguousarray(frames[sent % len(frames)], "<f4")
    header = {"protocol": "etem-frame/1", "seq": seq, "frame": frame0 + sent, "shape": list(img.shape),
              "dtype": "float32", "sampling": cfg["sampling"], "t": time.time()}
    sock.send_multipart([json.dumps(header).encode(), img])
    seq += 1
    sent += 1
seconds = time.perf_counter() - t0
print(json.dumps({"sent": sent, "seconds": seconds, "next_seq": seq}), flush=True)
if cfg.get("hang"):  # a camera that stops sending without saying so (and is killed later)
    time.sleep(3600)
time.sleep(cfg.get("end_after", 0.0))
sock.send_multipart([json.dumps({"protocol": "etem-frame/1", "seq": seq, "frame": frame0 + sent,
                                 "end": True}).encode()])
sock.close()
ctx.term()
"""


class Camera:
    """A camera process sending frames of an .npy stack in wire format v1."""

    def __init__(self, **cfg):
        self.proc = subprocess.Popen([sys.executable, "-c", CAMERA, json.dumps(cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_for(self, predicate, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(line) for line in self.lines):
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"camera: {self.lines}")

    def result(self, timeout=60.0) -> dict:
        self.wait_for(lambda line: line.startswith("{"), timeout)
        return json.loads(next(line for line in self.lines if line.startswith("{")))

    def finish(self, timeout=30.0) -> None:
        try:
            self.proc.wait(timeout)
            assert self.proc.returncode == 0, self.proc.stderr.read()
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

