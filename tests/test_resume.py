"""`etem track --resume`: a run whose tracker was killed goes on in the same file, as the same run.

The kill is a real SIGKILL of a real `etem` process; the run files are real HDF5 files; the
reference is an uninterrupted run over the same input.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from _procs import (  # noqa: F401 - fixtures
    Camera, accounted, etem, free_port, movie, movie_file, one_torch_thread, wait_for_frames,
)

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import BatchConfig, Pipeline, PipelineConfig, track
from etem.tracker.cli import main
from etem.tracker.errors import ConfigError, FileFormatError
from etem.tracker.resume import STATE_ARRAYS, STATE_LOGS
from etem.tracker.sites import SitesConfig
from etem.tracker.h5io import clear_write_flags
from etem.tracker.runfile import RunWriter, open_run
from etem.tracker.sources import iter_array

# one frame at a time, so that an interrupted run and an uninterrupted one compute the same
# floating-point numbers (the engine's results depend on the batch size in their last bits)
ONE = PipelineConfig(batch=BatchConfig(max_batch=1), default_sampling=0.2)


@pytest.fixture(scope="module")
def stack():
    """A movie with hops and vacancies: tracks that end, start and blink."""
    return np.asarray(make_movie(n_frames=36, shape=(96, 96), particle_radius_A=6.0, seed=11).frames, np.float32)


@pytest.fixture(scope="module")
def reference(stack, tmp_path_factory):
    """The uninterrupted run over ``stack``."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    track(stack, config=ONE, run_path=path)
    return open_run(path)


def _compare(run, ref, *, exact_from: int = 0) -> None:
    """``run`` holds what the uninterrupted ``ref`` holds: every frame once, the same columns."""
    f = run.frames["frame"].to_numpy()
    assert sorted(f) == list(range(len(ref.frames))) and len(f) == len(set(f))  # every frame exactly once
    cols, ref_cols = run.columns, ref.columns
    assert not cols.duplicated(["frame", "particle"]).any()
    before = cols[cols["frame"] < exact_from].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, ref_cols[ref_cols["frame"] < exact_from].reset_index(drop=True))
    assert len(run.sites) == pytest.approx(len(ref.sites), rel=0.05)
    assert run.sites["occupancy"].mean() == pytest.approx(ref.sites["occupancy"].mean(), abs=0.02)


# ------------------------------------------------------------------------------ in-process
def _stopped_after_15_frames(pipe, source, last: int = 14):
    """Run ``pipe`` over ``source`` and stop it after frame ``last``; the stopped run file's counters."""
    it = pipe.run_iter(source)
    for res in it:
        if res.frame == last:
            break
    it.close()
    first = open_run(pipe.run_path)
    assert first.status == "stopped" and len(first.frames) == last + 1
    counters = first.counters
    first.close()  # (HDF5 opens a file for writing only where this process has it open nowhere else)
    return counters


def test_a_stopped_run_resumes_into_the_uninterrupted_run(stack, reference, tmp_path):
    """Stop after 15 frames (frames in the queues are dropped), resume: the file is the
    uninterrupted run's, column for column, and the site statistics agree exactly."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    first = _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    assert first["dropped/stopped"] > 0  # frames read ahead were in the queues
    res = track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete"
    _compare(run, reference, exact_from=len(stack))  # identical throughout
    pd.testing.assert_frame_equal(run.sites, reference.sites)
    for name in ("flips", "hops", "residence", "class_changes"):
        pd.testing.assert_frame_equal(run.stats[name], reference.stats[name])
    np.testing.assert_array_equal(run.maps["occupancy"], reference.maps["occupancy"])
    # the frames dropped at the stop were read again: counted once, as in the uninterrupted run
    assert run.counters["received"] == run.counters["processed"] == len(stack)
    assert run.counters["dropped"] == 0
    assert all(v == 0 for k, v in run.counters.items() if k.startswith("dropped/"))  # (the stop's too)
    [entry] = run.resumes
    assert entry["after_frame"] == 14 and entry["from_frame"] == 15 and entry["lost_frames"] == 0
    assert entry["previous"]["status"] == "stopped"
    # the result of the resumed call covers the whole run (read from the file)
    assert len(res.frames) == len(stack) and len(res.columns) == len(reference.columns)


def test_a_stop_while_a_hop_awaits_its_partner_resumes_exactly(stack, reference, tmp_path):
    """Stopped after frame 18, the snapshot holds a site's emptying that awaits a filling near
    it within ``hop_window`` frames; resumed, the hops are the uninterrupted run's."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2), last=18)
    with open_run(path) as stopped:
        assert len(stopped.resume_state()["arrays"]["hops_lone"]) == 1
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete"
    for name in ("flips", "hops"):
        pd.testing.assert_frame_equal(run.stats[name], reference.stats[name])


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_a_run_whose_column_width_was_measured_resumes_with_it(stack, tmp_path, detection):
    """Frames of unknown pixel size: the classical locator's column width, measured on the first
    frame, is in the snapshot, and the resumed run keeps it (measured again on the first frame
    after the stop, it would differ, and the columns with it)."""
    cfg = dataclasses.replace(ONE, default_sampling=None, detection=detection)
    ref_path = tmp_path / "ref.h5"
    ref = track(stack, config=cfg, run_path=ref_path)
    assert 2.0 < ref.column_sigma_px < 3.0  # the toy's columns: 0.45 Å at 0.2 Å/px, 2.25 px
    path = tmp_path / "run.h5"
    pipe = Pipeline(cfg, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters))
    res = track(stack, resume=path)
    assert res.column_sigma_px == ref.column_sigma_px
    with open_run(path) as run, open_run(ref_path) as reference:
        assert run.status == "complete"
        _compare(run, reference, exact_from=len(stack))


def test_a_run_file_written_before_column_intensities_resumes(stack, reference, tmp_path):
    """A file whose columns table has no ``intensity`` (as before it was measured) goes on: its
    earlier columns get NaN, the new ones their intensities, the rest as in the uninterrupted run."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    with h5py.File(path, "r+") as f:
        del f["columns/intensity"]
        f["columns"].attrs["columns"] = [c for c in f["columns"].attrs["columns"] if c != "intensity"]
    with open_run(path) as old:
        assert "intensity" not in old.columns and len(old.frames) == 15
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete"
    early = run.columns["frame"] < 15
    assert run.columns["intensity"][early].isna().all() and run.columns["intensity"][~early].notna().all()
    pd.testing.assert_frame_equal(run.columns.drop(columns="intensity"), reference.columns.drop(columns="intensity"))


def _drop_snapshot_arrays(path, names) -> None:
    """Make the run file's snapshots look written before ``names`` were kept."""
    with h5py.File(path, "r+") as f:
        for slot in ("slot0", "slot1"):
            g = f[f"state/{slot}"]
            for name in names:
                del g[name]
            if len(g["meta"]):  # the snapshot's document names its arrays
                meta = json.loads(bytes(g["meta"][()]).decode())
                for name in names:
                    del meta["shapes"][name]
                doc = np.frombuffer(json.dumps(meta).encode(), np.uint8)
                g["meta"].resize((len(doc),))
                g["meta"][:] = doc


def test_a_run_file_written_before_a_counter_was_added_resumes(stack, reference, tmp_path):
    """A file whose counters lack one added since (the 'unreadable' rejection of a folder's
    file) resumes: the new counter starts at 0, the others keep their counts."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    with h5py.File(path, "r+") as f:
        names = [str(n) for n in f["counters"].attrs["names"]]
        keep = [i for i, n in enumerate(names) if n != "rejected/unreadable"]
        assert len(keep) == len(names) - 1
        values = f["counters"][()][keep]
        del f["counters"]
        f.create_dataset("counters", data=values).attrs["names"] = [names[i] for i in keep]
    track(stack, resume=path)
    with open_run(path) as run:
        assert run.status == "complete" and run.counters["rejected/unreadable"] == 0
        assert run.counters["received"] == run.counters["processed"] == len(stack)


def test_a_snapshot_written_before_the_class_detection_rates_resumes(stack, reference, tmp_path):
    """A snapshot without the per-class detection counts of the sites (kept since they were
    added) resumes with them zero: the one-class run goes on as the uninterrupted one."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    _drop_snapshot_arrays(path, ("sites_w_occ_cls", "sites_w_det_cls"))
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete" and "sites_w_occ_cls" in run.resume_state()["arrays"]
    pd.testing.assert_frame_equal(run.sites, reference.sites)


def test_a_snapshot_written_when_sites_kept_eight_classes_resumes(stack, reference, tmp_path):
    """Sites keep 16 classes (a height model has 10); a snapshot written when they kept 8 (its
    per-class arrays 8 wide, its confusion 8 x 8) resumes into the uninterrupted run."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    with h5py.File(path, "r+") as f:
        for slot in ("slot0", "slot1"):
            g = f[f"state/{slot}"]
            if not len(g["meta"]):
                continue
            meta = json.loads(bytes(g["meta"][()]).decode())
            for name in ("sites_cls_votes", "sites_w_occ_cls", "sites_w_det_cls", "sites_cls_post"):
                shape = meta["shapes"][name]
                assert shape[1] == 16
                narrow = g[name][()].reshape(shape)[:, :8]
                del g[name]
                g.create_dataset(name, data=narrow.reshape(-1), maxshape=(None,))
                meta["shapes"][name] = [shape[0], 8]
            meta["sites"]["conf_counts"] = [r[:8] for r in meta["sites"]["conf_counts"][:8]]
            doc = np.frombuffer(json.dumps(meta).encode(), np.uint8)
            g["meta"].resize((len(doc),))
            g["meta"][:] = doc
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete"
    pd.testing.assert_frame_equal(run.sites, reference.sites)


def test_a_snapshot_written_before_the_image_evidence_resumes(stack, reference, tmp_path):
    """A snapshot without the image's values at the sites (the intensity model's sums and the
    pending frames' values), and without the emptyings and fillings awaiting a hop partner,
    resumes: the model starts again from nothing, so the run goes on close to the uninterrupted
    one, every frame once; its own snapshots keep them."""
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    _drop_snapshot_arrays(path, ("sites_int_stats", "pending_z", "pending_z_lens", "hops_lone"))
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete" and "sites_int_stats" in run.resume_state()["arrays"]
    _compare(run, reference, exact_from=len(stack))  # (the columns do not depend on the sites)


def test_an_occupancy_that_weighs_detections_by_probability_resumes_exactly(stack, tmp_path):
    """With ``confidence_bins`` the "hmm" occupancy's probability histograms (pooled and per
    site) and the pending frames' probability bins are in the snapshot: the resumed run's
    sites and events are the uninterrupted run's."""
    cfg = dataclasses.replace(ONE, sites=SitesConfig(confidence_bins=10))
    ref_path = tmp_path / "ref.h5"
    track(stack, config=cfg, run_path=ref_path)
    ref = open_run(ref_path)
    path = tmp_path / "run.h5"
    pipe = Pipeline(cfg, run_path=path)
    _stopped_after_15_frames(pipe, iter_array(stack, counters=pipe.counters, sampling=0.2))
    track(stack, resume=path)
    run = open_run(path)
    assert run.status == "complete"
    pd.testing.assert_frame_equal(run.sites, ref.sites)
    pd.testing.assert_frame_equal(run.stats["flips"], ref.stats["flips"])


def test_a_folder_being_written_resumes_where_the_run_stopped(stack, reference, tmp_path):
    """A run over a folder of frame files (one frame, or a stack, per file) stops after 15
    frames; resumed, the folder is read again in the same order, the frames the run holds are
    passed over, and the file is the uninterrupted run's."""
    import tifffile

    from etem.tracker.sources import open_source

    folder = tmp_path / "acq"
    folder.mkdir()
    bounds = [0, 1, 2, 7, 13, 14, 20, 27, 36]  # files of 1 to 9 frames; the stop falls inside one
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        tifffile.imwrite(folder / f"frame_{k}.tif", stack[a:b] if b - a > 1 else stack[a])
    path = tmp_path / "run.h5"
    pipe = Pipeline(ONE, run_path=path, attrs={"source": str(folder.resolve()),
                                               "source_options": {"focal": 1, "fps": 40.0}})
    _stopped_after_15_frames(pipe, open_source(folder, counters=pipe.counters, stop=pipe.stop, sampling=0.2,
                                               fps=40.0, idle_timeout_s=1.0))
    track(folder, resume=path, idle_timeout_s=1.0)
    run = open_run(path)
    assert run.status == "complete"
    _compare(run, reference, exact_from=len(stack))
    pd.testing.assert_frame_equal(run.sites, reference.sites)
    # the frame rate the run was started with holds after the resume
    np.testing.assert_allclose(run.frames.sort_values("frame")["t"], np.arange(len(stack)) / 40.0)
    [entry] = run.resumes
    assert entry["from_frame"] == 15


def test_killed_writer_file_reopens_for_appending(tmp_path):
    """A writer killed in SWMR mode leaves "open for writing" marks that HDF5 refuses to open
    for writing; the writer clears them (checksum verified) and goes on where its snapshot was."""
    path = tmp_path / "run.h5"
    ctx = mp.get_context("fork")
    child = ctx.Process(target=_write_and_die, args=(str(path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r+", locking=False).close()
    run = open_run(path)  # readable as it is
    assert run.status == "running" and len(run.frames) == 7  # frames 5 and 6 came after the snapshot
    state = run.resume_state()
    assert state["meta"]["rows"] == {"frames": 5, "columns": 50} and state["meta"]["step"] == 5
    run.close()
    w = RunWriter(path, attrs={}, counter_names=["received", "processed"], overwrite=True,
                  state_arrays=STATE_ARRAYS, state_logs=STATE_LOGS)
    meta = w.reopen({"note": "test"})
    assert meta["step"] == 5
    w.append("frames", {"frame": np.array([5])})
    w.close()
    run = open_run(path)
    assert run.status == "complete" and run.frames["frame"].tolist() == [0, 1, 2, 3, 4, 5]
    assert len(run.columns) == 50 and run.resumes[0]["note"] == "test"
    assert run.resumes[0]["previous"]["status"] == "running"
    assert not clear_write_flags(path)  # closed cleanly: nothing to clear


def _write_and_die(path: str) -> None:
    arrays = {k: np.zeros(0) for k in STATE_ARRAYS}
    w = RunWriter(path, attrs={}, counter_names=["received", "processed"], state_arrays=STATE_ARRAYS,
                  state_logs=STATE_LOGS, flush_interval_s=0)
    w.begin((8, 8), 0.1)
    for i in range(7):
        w.append("frames", {"frame": np.array([i])})
        w.append("columns", {"frame": np.full(10, i)})
        if i == 4:
            w.set_state({"step": 5}, arrays, {"flips": np.ones((3, 3))})
        w.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------ what cannot be resumed
@pytest.fixture(scope="module")
def finished(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "run.h5"
    track(stack[:6], config=ONE, run_path=path)
    return path


def _copy(src, dst, **attrs):
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+", locking=False) as f:
        for k, v in attrs.items():
            if v is None:
                del f[k]
            else:
                f.attrs[k] = json.dumps(v)
    return dst


def test_a_finished_run_needs_force(stack, finished, tmp_path):
    path = _copy(finished, tmp_path / "run.h5")
    with pytest.raises(ConfigError, match="finished already .*status 'complete'.*--force"):
        track(stack, resume=path)
    track(stack[:10], resume=path, force=True)  # four more frames
    run = open_run(path)
    assert run.frames["frame"].tolist() == list(range(10)) and run.status == "complete"
    assert run.counters["processed"] == 10 and run.resumes[0]["previous"]["status"] == "complete"


def test_a_run_killed_after_its_last_frame_is_closed_by_resume(stack, finished, tmp_path):
    """Nothing left to track: the resume still writes the statistics and marks the run finished."""
    path = _copy(finished, tmp_path / "run.h5", status="running")
    with h5py.File(path, "r+", locking=False) as f:
        del f["stats"]["flips"]
    track(stack[:6], resume=path)
    run = open_run(path)
    assert run.status == "complete" and len(run.frames) == 6 and "flips" in run.stats
    [entry] = run.resumes
    assert entry["after_frame"] == 5 and entry["from_frame"] is None


def test_what_cannot_be_resumed_is_a_clear_error(stack, finished, tmp_path, capsys):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["frames"] = np.zeros((3, 8, 8))
    cases = {
        "not a run file": (other, "not an etem run file"),
        "not HDF5": (_npy(tmp_path, stack), "not a readable HDF5 file"),
        "missing": (tmp_path / "nowhere.h5", "does not exist"),
        "format version": (_copy(finished, tmp_path / "v9.h5", format_version=9), "format version 9"),
        "etem version": (_copy(finished, tmp_path / "old.h5", status="running",
                               versions={"etem-tracker": "0.0.1"}), "written by etem-tracker 0.0.1"),
        "no state": (_copy(finished, tmp_path / "nostate.h5", status="running", state=None), "no resume state"),
    }
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        cases["live writer"] = (_copy(finished, tmp_path / "live.h5", status="running",
                                      writer={"pid": sleeper.pid, "host": socket.gethostname()}),
                                f"still being written by process {sleeper.pid}")
        for name, (path, message) in cases.items():
            rc = main(["replay", str(tmp_path / "movie.npy"), "--resume", str(path), "--quiet"])
            err = capsys.readouterr().err
            assert rc == 2 and message in err and "Traceback" not in err, (name, err)
    finally:
        sleeper.kill()
        sleeper.wait()
    # options that shape a run cannot change on the way
    running = _copy(finished, tmp_path / "running.h5", status="running")
    rc = main(["replay", str(tmp_path / "movie.npy"), "--resume", str(running), "--classical", "--max-batch", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "leave out --classical, --max-batch" in err, err
    with pytest.raises(ConfigError, match="leave out model"):
        track(stack, resume=running, model="x")
    with pytest.raises(FileFormatError):
        track(stack, resume=other)


def _npy(folder, stack):
    np.save(folder / "movie.npy", stack)
    return folder / "movie.npy"


# ------------------------------------------------------------------------------ SIGKILL, real processes
class Progress:
    """Reads an `etem replay` status line off its stderr: (time, frames done) as they are shown."""

    def __init__(self, proc, total):
        self.proc, self.total = proc, total
        self.seen: list[tuple[float, int]] = []
        self.text: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        pattern = re.compile(rf"(\d+)/{self.total}\b")
        fd = self.proc.stderr.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            text = chunk.decode(errors="replace")
            self.text.append(text)
            now = time.monotonic()
            self.seen.extend((now, int(n)) for n in pattern.findall(text))

    def close(self) -> None:
        self._thread.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def done(self) -> int:
        return max((n for _, n in self.seen), default=0)

    def rate(self, seconds: float) -> float:
        """Frames/s shown over the last ``seconds``."""
        t_end = self.seen[-1][0]
        window = [(t, n) for t, n in self.seen if t >= t_end - seconds]
        return (window[-1][1] - window[0][1]) / max(window[-1][0] - window[0][0], 1e-3)


def test_sigkill_mid_replay_then_resume(tmp_path, capsys):
    """SIGKILL `etem replay` mid-run: the file opens and has lost at most a second of frames;
    `--resume` goes on from there, and the finished file is the uninterrupted run's."""
    # Paced frames that fall behind (a slow start on a loaded machine) are sent in a burst to
    # catch up; 12 s of movie keeps the replay running well past the kill whatever the start.
    n, fps = 240, 20
    movie = make_movie(n_frames=n, shape=(96, 96), particle_radius_A=6.0, seed=12)
    save_movie(movie, tmp_path / "movie.h5")
    run, ref = tmp_path / "run.h5", tmp_path / "ref.h5"
    proc = etem("replay", str(tmp_path / "movie.h5"), "--pace", "1", "--fps", str(fps), "--max-batch", "1",
                "-o", str(run))
    progress = Progress(proc, n)
    try:
        wait_for_frames(run, 30, proc, timeout=120)
        time.sleep(1.3)
        shown, rate = progress.done(), max(progress.rate(1.0), progress.rate(2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        progress.close()
    assert proc.returncode == -signal.SIGKILL
    killed = open_run(run)
    saved = len(killed.frames)
    assert killed.status == "running" and saved > 0
    lost = shown - saved
    print(f"SIGKILL after {shown} frames shown at {rate:.1f} frames/s: {saved} in the file, {lost} lost")
    assert lost <= rate * 1.0 + 3  # a flush at least every second (+ the status line's own lag)
    killed.close()

    assert main(["replay", str(tmp_path / "movie.h5"), "--resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and f"{n} processed" in out.out, out
    assert "dashboard" not in out.err  # (started without one, as files from before runs kept it are)
    track(tmp_path / "movie.h5", config=PipelineConfig(batch=BatchConfig(max_batch=1)), run_path=ref)
    r, reference = open_run(run), open_run(ref)
    assert r.status == "complete"
    [entry] = r.resumes
    snapshot = entry["frames_before"]
    assert entry["after_frame"] == snapshot - 1 and entry["from_frame"] == snapshot
    _compare(r, reference, exact_from=snapshot)
    cols = r.columns
    before, after = cols[cols["frame"] < snapshot], cols[cols["frame"] >= snapshot]
    new_tracks = set(after["particle"]) - set(before["particle"])
    assert min(new_tracks, default=np.inf) > before["particle"].max()  # ids never collide
    c = r.counters
    accounted(c)
    assert c["received"] == c["processed"] == n


@pytest.mark.slow
def test_sigkill_mid_stream_then_resume_counts_the_gap(movie_file, tmp_path):
    """SIGKILL `etem track` on a live PUB/SUB stream; `etem track --resume RUN.h5` reconnects
    by itself, and what the camera sent meanwhile is recorded as a gap (missing, and in the
    run's `resumes`)."""
    run, stop = tmp_path / "run.h5", tmp_path / "stop"
    address = f"tcp://127.0.0.1:{free_port()}"
    cam = Camera(frames=str(movie_file), mode="pub", address=address, fps=20, sampling=0.2, end_after=1.0,
                 wait_s=300, stop_file=str(stop))
    proc = etem("track", "--listen", address, "-o", str(run), "--quiet")
    again = None
    try:
        wait_for_frames(run, 40, proc, timeout=300)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        killed = open_run(run)
        assert killed.status == "running"
        saved = int(killed.frames["seq"].iloc[-1])
        n_saved = len(killed.frames)
        killed.close()
        time.sleep(2.0)  # the camera goes on sending to nobody
        again = etem("track", "--resume", str(run), "--quiet")
        wait_for_frames(run, n_saved + 40, again, timeout=300)
        stop.touch()  # the camera stops, and ends its stream
        out, err = again.communicate(timeout=120)
        sent = cam.result()["sent"]
    finally:
        cam.kill()
        for p in (proc, again):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate(timeout=30)
    assert again.returncode == 0 and "Traceback" not in err, err
    r = open_run(run)
    assert r.status == "complete"
    seqs = r.frames["seq"].to_numpy()
    assert (np.diff(seqs) > 0).all()  # every frame once, in order
    [entry] = r.resumes  # the camera numbers its frames as its seqs
    assert entry["after_frame"] <= saved < entry["from_frame"]
    assert entry["from_frame"] in seqs and entry["after_frame"] in seqs
    assert not ((seqs > entry["after_frame"]) & (seqs < entry["from_frame"])).any()
    assert entry["lost_frames"] == entry["from_frame"] - entry["after_frame"] - 1 > 20  # 2 s at 20 frames/s
    first_after = entry["from_frame"]
    c = r.counters
    accounted(c)
    assert c["received"] + c["missing"] == sent  # every frame sent: tracked, counted, or in a gap
    assert c["missing"] >= entry["lost_frames"]
    cols = r.columns
    assert not cols.duplicated(["frame", "particle"]).any()
    late = cols[cols["frame"] >= first_after]
    assert (late["site"] >= 0).all() and late["site"].max() < len(r.sites)
    print(f"live resume: sent {sent}, lost {entry['lost_frames']} while down; "
          f"{dict((k, v) for k, v in c.items() if v)}")
