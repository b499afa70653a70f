"""Stopping a run: SIGTERM and Ctrl-C at any moment (mid-frame, before the first frame, in the
per-frame callback, while the run file is closed, lost on the way) and a stop set from outside
leave a whole run file that says how the run ended.

Cameras are separate processes (see _procs.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _procs import ENV, Camera, etem, free_port, movie, movie_file, wait_for_frames  # noqa: F401 - fixtures

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import track
from etem.tracker.runfile import open_run


# ------------------------------------------------------------------------------ SIGTERM
@pytest.mark.parametrize("command", [pytest.param("replay", marks=pytest.mark.slow), "track"])
def test_sigterm_closes_the_run_file_cleanly(movie_file, tmp_path, command):
    run = tmp_path / "run.h5"
    cam = None
    if command == "replay":  # 200 frames at 20 frames/s: still running when the signal comes
        save_movie(make_movie(n_frames=200, shape=(128, 128), particle_radius_A=8.0, seed=4), tmp_path / "movie.h5")
        args = ["replay", str(tmp_path / "movie.h5"), "--pace", "1", "--fps", "20"]
    else:
        address = f"tcp://127.0.0.1:{free_port()}"
        args = ["track", "--listen", address, "--mode", "pull", "--bind"]
        cam = Camera(frames=str(movie_file), mode="push", bind=False, address=address, fps=20, n=10**6,
                     sampling=0.2)
    proc = etem(*args, "-o", str(run), "--quiet")
    try:
        wait_for_frames(run, 2, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if cam is not None:
            cam.kill()
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err and "terminated" in err, err
    r = open_run(run)
    assert r.status == "interrupted"
    c = r.counters
    print(f"SIGTERM ({command}): {dict((k, v) for k, v in c.items() if v)}")
    assert c["processed"] == len(r.frames) >= 2
    assert c["received"] == c["processed"] + c["rejected"] + c["dropped"]
    assert len(r.sites) > 0 and "hops" in r.stats


def test_sigterm_to_the_process_group_with_a_detection_process(tmp_path):
    """A service manager signals every process of the service: the detection process leaves it
    to the tracker, which closes the run file as for its own SIGTERM."""
    run = tmp_path / "run.h5"
    save_movie(make_movie(n_frames=200, shape=(128, 128), particle_radius_A=8.0, seed=4), tmp_path / "movie.h5")
    proc = subprocess.Popen([sys.executable, "-m", "etem.tracker.cli", "replay", str(tmp_path / "movie.h5"),
                             "--pace", "1", "--fps", "20", "--detection", "process", "-o", str(run), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    wait_for_frames(run, 2, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err and "ended unexpectedly" not in err, err
    r = open_run(run)
    assert r.status == "interrupted" and r.attrs["config"]["detection"] == "process"
    c = r.counters
    assert c["processed"] == len(r.frames) >= 2
    assert c["received"] == c["processed"] + c["rejected"] + c["dropped"]


@pytest.mark.parametrize("kind", ["SIGTERM", "SIGINT"])
def test_a_lost_stop_is_raised_again_by_the_pipeline(movie, tmp_path, kind):
    """The signal handler's exception can be swallowed (raised inside a C extension's
    deallocator: "Exception ignored"); the request it recorded still stops the run cleanly, as
    the stop it was, and is forgotten when the run has ended."""
    from etem.tracker import interrupt
    from etem.tracker.runfile import open_run

    stop = interrupt.Terminated if kind == "SIGTERM" else KeyboardInterrupt

    def on_frame(res, pipe):
        if res.frame == 2:  # as if the handler had run here and its exception had been lost
            interrupt.request(stop)

    try:
        with pytest.raises(KeyboardInterrupt) as info:
            track(np.asarray(movie.frames, np.float32), sampling=0.2, run_path=tmp_path / "run.h5",
                  on_frame=on_frame)
        assert type(info.value) is stop
        track(np.asarray(movie.frames[:3], np.float32), sampling=0.2)  # the next run goes on as usual
    finally:
        interrupt.reset()
    r = open_run(tmp_path / "run.h5")
    assert r.status == "interrupted" and 3 <= r.counters["processed"] < len(movie.frames)


def test_a_second_stop_lost_in_a_deallocator_is_kept_not_printed(capsys):
    """A second Ctrl-C raised inside a C extension's deallocator (a ZeroMQ message freed) was
    lost, and Python printed "Exception ignored" and its traceback on the terminal; now it is
    kept for the pipeline's check to raise, and nothing is printed."""
    import gc

    from etem.tracker import interrupt

    class Freed:
        def __del__(self):
            raise KeyboardInterrupt  # (where the signal handler's exception cannot go on)

    try:
        with interrupt.ctrl_c_held():
            interrupt.request(KeyboardInterrupt)  # the first Ctrl-C ...
            interrupt.delivered()  # ... arrived and is being handled
            Freed()
            gc.collect()
            with pytest.raises(KeyboardInterrupt):
                interrupt.check()
            interrupt.check()  # (raised once)
    finally:
        interrupt.reset()
    assert "Exception ignored" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ a live stream's stop
@pytest.mark.parametrize("how", ["once", "twice", "at once by config"])
def test_a_stop_first_tracks_what_the_stream_delivered(tmp_path, how):
    """A PUSH camera hands its frames over faster than the tracker goes: they wait in the
    tracker's queue and ZeroMQ's. A first Ctrl-C ends the stream and tracks them before the run
    closes (they cannot be sent again); a second Ctrl-C, or ``finish_on_stop_s = 0``, stops at
    once and counts them dropped/stopped."""
    # "once": all of them fit in the tracker's queue and ZeroMQ's; else more than it tracks in the
    # time the test takes to stop it
    run, n = tmp_path / "run.h5", 150 if how == "once" else 400
    frames = tmp_path / "movie.npy"  # 256² frames: a few seconds' work for the tracker
    np.save(frames, np.asarray(make_movie(n_frames=10, shape=(256, 256), particle_radius_A=12.0, seed=4).frames,
                               np.float32))
    address = f"tcp://127.0.0.1:{free_port()}"
    args = ["track", "--listen", address, "--mode", "pull", "--bind", "-o", str(run), "--quiet"]
    if how == "at once by config":
        (tmp_path / "t.toml").write_text("finish_on_stop_s = 0\n")
        args += ["--config", str(tmp_path / "t.toml")]
    proc = etem(*args)
    cam = Camera(frames=str(frames), mode="push", bind=False, address=address, fps=1000, n=n, sampling=0.2,
                 end_after=60)  # all sent at once; the end of the stream comes long after the stop
    try:
        assert cam.result()["sent"] == n
        wait_for_frames(run, 2, proc)
        proc.send_signal(signal.SIGINT)
        if how == "twice":
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        cam.kill()
        if proc.poll() is None:
            proc.kill()
    # (a second SIGINT that finds Python shutting down, its handlers reset, ends the process
    # by the signal: a shell reports both as 130)
    assert proc.returncode == 130 or (how == "twice" and proc.returncode == -signal.SIGINT), err
    assert "Traceback" not in err and "interrupted" in err, err
    r = open_run(run)
    c = r.counters
    print(f"{how}: {dict((k, v) for k, v in c.items() if v)}")
    assert r.status == "interrupted"
    assert c["received"] == c["processed"] + c["rejected"] + c["dropped"]
    if how == "once":
        assert "tracking the frames already received" in err, err
        assert c["received"] == c["processed"] == len(r.frames) == n and c["dropped"] == 0
    else:
        assert c["dropped/stopped"] > 0 and c["processed"] == len(r.frames) < n


# ------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_inside_a_frames_host_work_waits_for_the_frame(movie, tmp_path, monkeypatch):
    """A Ctrl-C that lands while a frame's sites are being updated stops the run after that
    frame, not in its middle (a half-updated site map in the run file); a second Ctrl-C while
    the first waits goes through at once."""
    from etem.tracker import interrupt
    from etem.tracker.sites import SiteMap

    update = SiteMap.update

    def update_and_ctrl_c(self, frame, *args, **kwargs):
        if frame == 5:
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, in the main thread
        return update(self, frame, *args, **kwargs)

    monkeypatch.setattr(SiteMap, "update", update_and_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            track(np.asarray(movie.frames, np.float32), sampling=0.2, run_path=tmp_path / "run.h5")
        with interrupt.ctrl_c_held(), pytest.raises(KeyboardInterrupt), interrupt.held():  # the second: not held
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        interrupt.reset()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    r = open_run(tmp_path / "run.h5")
    assert r.status == "interrupted"
    assert r.counters["processed"] == len(r.frames) == 6  # frames 0-5: the sixth finished
    assert len(r.sites) > 0


def test_ctrl_c_while_the_run_file_is_closed_waits_for_it(movie, tmp_path, monkeypatch):
    """A Ctrl-C (say the second of two) that lands while the run is being wound down (the
    site map flushed, the run file closed) is raised after the file is closed: the file is
    whole and says how the run ended."""
    from etem.tracker.sites import SiteMap

    flush = SiteMap.flush

    def ctrl_c_then_flush(self):
        os.kill(os.getpid(), signal.SIGINT)
        return flush(self)

    monkeypatch.setattr(SiteMap, "flush", ctrl_c_then_flush)
    with pytest.raises(KeyboardInterrupt):
        track(np.asarray(movie.frames, np.float32), sampling=0.2, run_path=tmp_path / "run.h5")
    r = open_run(tmp_path / "run.h5")
    assert r.status == "complete" and len(r.frames) == len(movie.frames) and "hops" in r.stats


def test_ctrl_c_in_the_per_frame_callback_marks_the_run_interrupted(movie, tmp_path):
    """A stop that lands in ``on_frame`` (the status line, the dashboard) ends the run as one
    in the pipeline does: the run file says "interrupted" (not "stopped", a program's close)."""
    def on_frame(res, pipe):
        if res.frame == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track(np.asarray(movie.frames, np.float32), sampling=0.2, run_path=tmp_path / "run.h5", on_frame=on_frame)
    r = open_run(tmp_path / "run.h5")
    assert r.status == "interrupted" and r.counters["processed"] == len(r.frames) == 5


def test_ctrl_c_before_the_first_frame_stops_the_pipelines_threads(movie, monkeypatch):
    """A Ctrl-C while the pipeline starts (trackpy's solver compiling, the engine being built)
    stops its threads before the call returns: a thread left inside torch's C++ code as the
    interpreter exits can abort the process ("terminate called without an active exception")."""
    from etem.tracker import pipeline

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "warm_up", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        track(np.asarray(movie.frames, np.float32), sampling=0.2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("etem-")]


def test_a_stop_set_from_outside_ends_the_run(movie, tmp_path):
    """``pipe.stop`` set by someone else (a dashboard, a test) ends the run: every stage lets
    go, the frames still queued are counted as dropped, and the run file says "stopped"."""
    out: dict = {}

    def on_frame(res, pipe):
        if res.frame == 4:
            pipe.stop.set()

    def run():
        out["result"] = track(np.asarray(movie.frames, np.float32), sampling=0.2, on_frame=on_frame,
                              run_path=tmp_path / "run.h5")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the run did not end after its stop was set"
    c = out["result"].counters
    assert 5 <= c["processed"] < len(movie.frames)
    assert c["received"] == c["processed"] + c["dropped"]
    assert open_run(tmp_path / "run.h5").status == "stopped"


def test_ctrl_c_while_the_libraries_load_is_a_clean_stop(movie_file, tmp_path):
    """A Ctrl-C in the first seconds, while torch loads: the command says it was interrupted
    and exits 130, with no traceback (the libraries load inside the command, where its Ctrl-C
    handling is; the package used to load them before, as ``import etem.tracker``)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc to see when torch's library is loaded")
    proc = etem("replay", str(movie_file), "-o", str(tmp_path / "run.h5"))
    deadline = time.monotonic() + 60
    maps = f"/proc/{proc.pid}/maps"
    while time.monotonic() < deadline and proc.poll() is None:
        with open(maps) as f:
            if "libtorch" in f.read():
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # torch's library is mapped: torch is being imported
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "etem replay: interrupted; nothing was written yet" in err


def test_the_command_starts_without_the_heavy_libraries():
    """What ``etem`` loads before its command runs (the package, the parser of every command)
    holds no torch, pandas or trackpy: ``etem --help`` is quick, and a Ctrl-C while they load is
    inside the command's Ctrl-C handling (the test above)."""
    code = ("import sys; from etem.tracker.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'trackpy', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_stopped_training_says_where_its_checkpoint_is(tmp_path):
    """``etem train -o NAME`` writes NAME.json, NAME.safetensors and its checkpoint NAME.ckpt.*:
    a stop after a checkpoint says where it is and that --resume goes on from it, not that
    nothing was written."""
    import argparse

    from etem.tracker.cli import _what_was_saved

    started = time.time()
    args = argparse.Namespace(output=tmp_path / "tiny", resume=None)
    assert _what_was_saved(args, started) == "; nothing was written yet"
    for suffix in (".ckpt.json", ".ckpt.safetensors"):
        (tmp_path / f"tiny{suffix}").write_text("{}")
    said = _what_was_saved(args, started)
    assert "tiny.ckpt.json" in said and "--resume goes on from it" in said
