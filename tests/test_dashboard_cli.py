"""The dashboard on the command line: `etem replay --dashboard-port` serving while it runs, and a
resumed run serving the dashboard it was started with (`--no-dashboard`: none)."""
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from etem.simulate.toy import make_movie, save_movie
from etem.tracker.cli import main
from test_dashboard import _get, _json, movie  # noqa: F401 (movie: a fixture)


def test_cli_replay_serves_the_dashboard_while_it_runs(movie, tmp_path, capsys):
    save_movie(movie, tmp_path / "movie.h5")
    assert main(["replay", str(tmp_path / "movie.h5"), "--quiet"]) == 0
    assert "dashboard" not in capsys.readouterr().err  # off by default
    out: dict = {}
    run = threading.Thread(target=lambda: out.update(rc=main(["replay", str(tmp_path / "movie.h5"), "--pace", "1",
                                                              "--fps", "8", "--quiet", "--dashboard-port", "0"])))
    run.start()
    err, url, processed = "", None, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.is_alive():
        err += capsys.readouterr().err
        m = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", err)
        if m:
            url = m.group(1)
            processed = _json(url + "api/status").get("processed") or 0
            if processed:
                break
        time.sleep(0.1)
    run.join(60)
    assert out["rc"] == 0 and url is not None and processed > 0
    assert "metrics: " + url + "metrics" in err
    with pytest.raises(OSError):  # stopped with the run
        urllib.request.urlopen(url + "api/status", timeout=2)


class _Etem:
    """``etem ARGS`` as a process of its own, its stderr read line by line as it comes."""

    def __init__(self, *args: str):
        import os
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "etem.tracker.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.err: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def dashboard(self, timeout: float = 120) -> str | None:
        """The dashboard URL it printed (None: it began tracking without one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err):
                if line.startswith("dashboard: "):
                    return line.split()[1]
            assert self.proc.poll() is None, "".join(self.err)
            time.sleep(0.1)
        raise AssertionError("".join(self.err))

    def frames_written(self, run, more_than: int, timeout: float = 120) -> int:
        from etem.tracker.run import open_run

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.err)
            try:
                with open_run(run) as r:
                    if len(r.frames) > more_than:
                        return len(r.frames)
            except Exception:  # noqa: BLE001 - (not written yet)
                pass
            time.sleep(0.2)
        raise AssertionError("".join(self.err))

    def resumed(self, run, k: int, timeout: float = 120) -> None:
        """Wait for this run to have taken the file (its ``k``-th resume) and written a frame of
        its own. (The file holds the frames of the run before, the status its counters.)"""
        from etem.tracker.run import open_run

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.err)
            try:
                with open_run(run) as r:
                    resumes = r.resumes
            except Exception:  # noqa: BLE001 - (being reopened)
                resumes = []
            if len(resumes) == k:
                after = resumes[-1]["after_frame"]  # (None: no snapshot, the file cut to no frames)
                self.frames_written(run, (-1 if after is None else after) + 1, timeout=deadline - time.monotonic())
                return
            time.sleep(0.2)
        raise AssertionError("".join(self.err))

    def end(self, stop: bool) -> int:
        """Its exit status, after a SIGTERM (a stop, as a service manager's) where ``stop``."""
        import signal

        if stop:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(30)
            self._reader.join(10)
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.proc.returncode


def test_a_resumed_run_serves_the_dashboard_it_had(tmp_path, capsys):
    """`etem replay … --dashboard-port P -o run.h5`, stopped; `--resume run.h5` serves the
    dashboard again on P (while P is taken: on a free port, said so), `--no-dashboard` not."""
    from etem.tracker.run import open_run

    # 200 frames at 5 frames/s: no paced run below reaches the end before its stop, however slow
    # the machine (a run stopped in its close after the last frame leaves the last resume nothing)
    n_frames = 200
    save_movie(make_movie(n_frames=n_frames, shape=(96, 96), particle_radius_A=6.0, seed=7), tmp_path / "movie.h5")
    run, movie_file = tmp_path / "run.h5", str(tmp_path / "movie.h5")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = _Etem("replay", movie_file, "--pace", "1", "--fps", "5", "-o", str(run), "--quiet",
                  "--dashboard-port", str(port))
    try:
        assert first.dashboard() == f"http://127.0.0.1:{port}/"
        first.frames_written(run, 0)
    finally:
        assert first.end(stop=True) != 0
    with open_run(run) as r:
        assert r.status == "interrupted"

    with socket.socket() as taken:  # the run's port, taken meanwhile
        taken.bind(("127.0.0.1", port))
        taken.listen()
        again = _Etem("replay", movie_file, "--pace", "1", "--resume", str(run), "--quiet")
        try:
            url = again.dashboard()
            assert f"etem replay: the run's dashboard port {port} is taken; serving it on port " in "".join(again.err)
            assert url != f"http://127.0.0.1:{port}/" and _json(url + "api/status")["state"] in ("waiting", "running")
            again.resumed(run, 1)
        finally:
            assert again.end(stop=True) != 0

    again = _Etem("replay", movie_file, "--pace", "1", "--resume", str(run), "--quiet")  # P free again
    try:
        url = again.dashboard()
        assert url == f"http://127.0.0.1:{port}/"
        again.resumed(run, 2)
        assert _json(url + "api/status")["processed"] > 0
    finally:
        assert again.end(stop=True) != 0

    assert main(["replay", movie_file, "--resume", str(run), "--quiet", "--no-dashboard"]) == 0
    assert "dashboard" not in capsys.readouterr().err
    with open_run(run) as r:
        assert r.status == "complete" and len(r.frames) == n_frames and len(r.resumes) == 3, r.resumes


def test_no_dashboard_goes_with_no_other_dashboard_option(movie, tmp_path, capsys):
    save_movie(movie, tmp_path / "movie.h5")
    assert main(["replay", str(tmp_path / "movie.h5"), "--no-dashboard", "--dashboard-port", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("etem replay: error: --no-dashboard goes with no other dashboard "
                                               "option; leave out --dashboard-port")
