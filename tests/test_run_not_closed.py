"""A run file that was not closed (being written, or left by a killed tracker), and a resumed run
that got no frame: their statistics, status and rate are told as they are."""
from __future__ import annotations

import json
import shutil
import signal
import time

import h5py
import pandas as pd
import pytest
from _procs import etem, free_port, movie, movie_file  # noqa: F401 - fixtures

from etem.simulate.toy import make_movie
from etem.tracker import Pipeline, PipelineConfig, track
from etem.tracker.export import export_run
from etem.tracker.report import figure_lines, render_report, run_statistics
from etem.tracker.resume import STATE_ARRAYS, STATE_LOGS
from etem.tracker.runfile import RunWriter, open_run
from etem.tracker.sources import iter_array

from test_resume import ONE, stack  # noqa: F401 (stack: the resume tests' movie, a fixture)

TABLES = ("flips", "hops", "class_changes", "residence")


@pytest.fixture(scope="module")
def finished(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "run.h5"
    track(stack, config=ONE, run_path=path)
    return path


def _as_killed(src, dst):
    """``src`` as its tracker, killed after its last flush, leaves it: status running, no stats."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+", locking=False) as f:
        f.attrs["status"] = json.dumps("running")
        f.attrs["writer"] = json.dumps({"pid": 0, "host": "gone"})  # (its writer is no more)
        for name in list(f["stats"]):
            del f["stats"][name]
    return dst


def test_a_run_not_closed_gives_its_statistics_as_of_its_last_snapshot(finished, tmp_path):
    """Exported mid-run (or after a kill -9) a run said "0 flips, 0 hops" and run.stats was {}:
    now its statistics are those of its latest resume snapshot, said to be as of its frame."""
    killed = open_run(_as_killed(finished, tmp_path / "killed.h5"))
    ref = open_run(finished)
    assert ref.stats_as_of is None
    assert killed.stats_as_of == {"last_frame": 35, "frames": 36, "why": pytest.approx(killed.stats_as_of["why"])}
    assert "not closed" in killed.stats_as_of["why"]
    for name in TABLES:  # what the run's close would have written
        pd.testing.assert_frame_equal(killed.stats[name], ref.stats[name])
    assert len(killed.stats["flips"]) > 0

    _, summ = run_statistics(killed)
    _, ref_summ = run_statistics(ref)
    assert summ["flips_per_frame"] == ref_summ["flips_per_frame"] > 0
    assert summ["hops_per_frame"] == ref_summ["hops_per_frame"] > 0
    assert summ["stats_as_of_frame"] == 35 and "as of frame 35" in summ["stats_note"]
    assert any("as of frame 35" in line for line in figure_lines(summ))
    tables, _ = run_statistics(killed)
    assert "statistics as of frame 35" in render_report(killed, tables, summ)._suptitle.get_text()
    export_run(killed.path, tmp_path / "out", formats=("report",), progress=False)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["flips_per_frame"] > 0 and written["run_status"] == "running"


def test_a_run_with_no_snapshot_yet_says_what_to_do(tmp_path):
    path = tmp_path / "early.h5"
    w = RunWriter(path, attrs={}, counter_names=["received"], state_arrays=STATE_ARRAYS, state_logs=STATE_LOGS)
    w.begin((8, 8), 0.1)
    w.close(status="failed")
    run = open_run(path)
    assert run.stats_as_of is None and "flips" not in run.stats
    with pytest.raises(KeyError, match="no resume snapshot so far.*once the run is closed"):
        run.stats["flips"]


def test_a_resumed_stream_stopped_before_any_frame_is_closed_with_its_statistics(finished, tmp_path):
    """`etem track --resume RUN.h5` on a stream that sent nothing, stopped by SIGTERM, said
    "nothing was written yet" and left the file 'running': it is closed, interrupted, with its
    statistics, and the message says so."""
    path = _as_killed(finished, tmp_path / "run.h5")
    proc = etem("track", "--listen", f"tcp://127.0.0.1:{free_port()}", "--mode", "pull", "--bind",
                "--resume", str(path), "--quiet")
    try:
        time.sleep(8.0)  # (started, listening)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert "Traceback" not in err and "nothing was written" not in err and f"saved in {path}" in err, err
    run, ref = open_run(path), open_run(finished)
    assert run.status == "interrupted" and run.stats_as_of is None and len(run.frames) == 36
    for name in TABLES:
        pd.testing.assert_frame_equal(run.stats[name], ref.stats[name])


def test_the_rate_of_a_resumed_run_counts_only_its_own_frames(stack, tmp_path):
    """A resumed run's status line read 61.7 frames/s (the earlier frames over this process's
    time): the rate is of this process's frames."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    it = pipe.run_iter(iter_array(stack, counters=pipe.counters, sampling=0.2))
    for res in it:
        if res.frame == 24:
            break
    it.close()
    again = Pipeline.resume(path)
    assert again.counters.processed == 25
    it = again.run_iter(iter_array(stack, counters=again.counters, sampling=0.2, start=25))
    for res in it:
        elapsed = time.perf_counter() - again.t_start
        fps = again.status()["fps"]
        assert fps * elapsed < 2  # one frame of this process over its time (before: 26 frames)
        break
    it.close()


def test_groups_fixed_on_the_first_frame_leave_the_first_frames_alone_quietly(tmp_path, caplog):
    """Intensity groups learned from the first frame alone (a large image): no warning "the first
    frames keep their provisional classes (No objects to concatenate)"."""
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker.config import config_from_dict

    movie = mos2_movie(n_frames=2, shape=(256, 256), seed=0, mode="stem", dose_per_frame=1000.0)
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem", "imaging": "stem"}},
                           PipelineConfig())
    pipe = Pipeline(cfg, run_path=tmp_path / "run.h5")
    pipe.intensity_classes.learn_columns = 50  # (fixed on frame 0)
    with caplog.at_level("WARNING", logger="etem.pipeline"):
        results = list(pipe.run_iter(iter_array(movie.frames, counters=pipe.counters, sampling=movie.sampling)))
    assert len(results) == 2 and pipe.intensity_classes.fixed
    assert not [r for r in caplog.records if "provisional" in r.getMessage()], caplog.text
    with open_run(tmp_path / "run.h5") as run:
        assert len(run.columns) == sum(len(r.columns) for r in results)


def test_a_run_being_written_is_summed_up_over_the_frames_of_its_snapshot(tmp_path):
    """Exported while written, a run's tables read first and its snapshot read later (a flush
    or more in between) gave rates over fewer frames than the events were counted on."""
    from etem.simulate.toy import save_movie

    from _procs import wait_for_frames

    save_movie(make_movie(n_frames=200, shape=(96, 96), particle_radius_A=6.0, seed=12), tmp_path / "movie.h5")
    path = tmp_path / "run.h5"
    proc = etem("replay", str(tmp_path / "movie.h5"), "--pace", "1", "--fps", "20", "--max-batch", "1",
                "-o", str(path), "--quiet")
    try:
        wait_for_frames(path, 20, proc, timeout=120)
        with open_run(path) as run:
            early = len(run.frames)  # (read now: the writer goes on)
            time.sleep(1.5)
            _, summ = run_statistics(run)
            as_of = run.stats_as_of
            assert run.live and as_of is not None and as_of["frames"] > early
            assert summ["frames"] == as_of["frames"] == len(run.frames)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_frames_tracked_before_a_pause_reach_the_file(movie_file, tmp_path):
    """A camera sends a burst, tracked faster than the flush interval, then pauses: the burst's
    frames are flushed once the interval has passed, without waiting for a next frame, so a
    reader (``etem export`` mid-run) sees them and a killed tracker keeps them."""
    from _procs import Camera

    run, n = tmp_path / "run.h5", 30
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = etem("track", "--listen", address, "--mode", "pull", "--bind", "-o", str(run), "--quiet")
    cam = Camera(frames=str(movie_file), mode="push", bind=False, address=address, fps=1000, n=n, sampling=0.2,
                 end_after=60)  # the pause: the end of the stream comes a minute later
    try:
        assert cam.result()["sent"] == n
        rows, deadline = 0, time.monotonic() + 30
        while rows < n and time.monotonic() < deadline:
            time.sleep(0.3)
            assert proc.poll() is None, proc.communicate()
            try:
                with open_run(run) as r:
                    rows = r.n_rows("frames")
            except Exception:  # (not there yet)
                pass
        assert rows == n, f"{rows} of the {n} frames tracked are in the file during the pause"
        with open_run(run) as r:
            assert r.status == "running" and r.counters["processed"] == n
    finally:
        cam.kill()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
