"""The `etem` command as a user runs it (in-process, plus one real subprocess)."""
import io
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from etem.simulate.toy import make_movie, save_movie
from etem.tracker.cli import main
from etem.tracker.runfile import open_run


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=12, shape=(128, 128), particle_radius_A=8.0, seed=3)


def test_find_on_npy_tiff_and_stack(movie, tmp_path, capsys):
    npy = tmp_path / "one.npy"
    np.save(npy, movie.frames[0])
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, movie.frames[:3], photometric="minisblack")
    out = tmp_path / "cols.csv"
    png = tmp_path / "overlay.png"
    rc = main(["find", str(npy), str(tif), "--sampling", str(movie.sampling), "-o", str(out), "--overlay", str(png)])
    assert rc == 0
    df = pd.read_csv(out)
    assert set(["file", "frame", "y", "x", "cls", "prob", "y_A", "x_A"]) <= set(df.columns)
    assert sorted(df[df.file == str(tif)]["frame"].unique()) == [0, 1, 2]
    n_true = (movie.truth.positions.frame == 0).sum()
    assert abs((df.file == str(npy)).sum() - n_true) <= 3
    assert png.stat().st_size > 10_000
    np.testing.assert_allclose(df["x_A"], df["x"] * movie.sampling)


def test_find_on_an_uncalibrated_image_measures_the_column_width(tmp_path, capsys):
    """A TIFF without a pixel size, at 0.07 Å/px (columns 6.4 px wide): the classical locator
    measures the width on the image and says so; the 2 px it took before (now set in a config
    file) finds the columns' shot-noise bumps: 412 columns for 19."""
    movie = make_movie(n_frames=1, shape=(256, 256), sampling=0.07, particle_radius_A=6.0, seed=4)
    tif = tmp_path / "plain.tif"
    tifffile.imwrite(tif, movie.frames[0], photometric="minisblack")
    out = tmp_path / "cols.csv"
    assert main(["find", str(tif), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    width = float(re.search(r"columns ([0-9.]+) px wide as measured on the first image", said).group(1))
    assert 5.5 < width < 8.0
    assert "resolution" in said and " px, confidence" in said  # (no Å without a pixel size)
    n_true = (movie.truth.positions.frame == 0).sum()
    assert abs(len(pd.read_csv(out)) - n_true) <= 2
    # a pixel size given: the width follows from it, and nothing is measured
    assert main(["find", str(tif), "--sampling", "0.07", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "measured" not in said and " Å, confidence" in said
    assert abs(len(pd.read_csv(out)) - n_true) <= 2
    # a network needs the pixel size: the error says so, with a guess from the columns' width
    assert main(["find", str(tif), "--imaging", "stem", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sampling is unknown" in err
    guess = float(re.search(r"that is ([0-9.]+) Å/px", err).group(1))
    assert 0.8 * 0.07 < guess < 1.2 * 0.07
    toml = tmp_path / "two.toml"
    toml.write_text("[engine]\ncolumn_sigma_px = 2.0\n")
    assert main(["find", str(tif), "--config", str(toml), "-o", str(out)]) == 0
    assert "measured" not in capsys.readouterr().out
    assert len(pd.read_csv(out)) > 10 * n_true


def test_replay_of_an_uncalibrated_stack_tracks_as_the_calibrated_one(tmp_path, capsys):
    """Without a pixel size the settings in Å (the linker's search range, the site radius) are
    taken at the pixel size the measured column width gives (here 0.074 Å/px for 0.08), not as
    px: the same sites, flips and hops as with ``--sampling``. Taken as px they were 12 times
    too small: 89 sites for 21 columns, and 122 flips."""
    movie = make_movie(n_frames=30, shape=(256, 256), sampling=0.08, particle_radius_A=7.0, seed=3)
    tif = tmp_path / "plain.tif"
    tifffile.imwrite(tif, movie.frames, photometric="minisblack")
    runs = {}
    for name, extra in (("plain", []), ("given", ["--sampling", "0.08"])):
        assert main(["replay", str(tif), "-o", str(tmp_path / f"{name}.h5"), "--quiet", *extra]) == 0
        runs[name] = open_run(tmp_path / f"{name}.h5")
    capsys.readouterr()
    plain, given = runs["plain"], runs["given"]
    n_true = (movie.truth.positions.frame == 0).sum()
    from etem.tracker.sites import occupied_sites

    assert abs(len(occupied_sites(plain.sites)) - n_true) <= 2
    assert len(plain.sites) == len(given.sites)
    np.testing.assert_allclose(plain.sites[["y", "x"]], given.sites[["y", "x"]], atol=1.0)  # (0.08 Å)
    for name in ("flips", "hops"):
        assert len(plain.stats[name]) == len(given.stats[name])
    said = plain.attrs["settings_sampling"]  # the run file says how its Å settings were taken
    assert said["measured"] and said["sampling"] == pytest.approx(0.45 / said["column_sigma_px"])
    assert 0.06 < said["sampling"] < 0.1 and "settings_sampling" not in given.attrs


def test_find_skips_a_frame_with_nan_pixels_and_locates_the_rest(movie, tmp_path, capsys):
    """A stack whose first frame has a dead (NaN) patch: that frame is skipped and said, the
    others located, and the overlay drawn on the first frame located; a file of NaN frames
    only is an error that writes nothing."""
    stack = movie.frames[:3].astype(np.float32).copy()
    stack[0, 40:50, 40:50] = np.nan
    tif = tmp_path / "nan.tif"
    tifffile.imwrite(tif, stack, photometric="minisblack")
    out, png = tmp_path / "cols.csv", tmp_path / "overlay.png"
    assert main(["find", str(tif), "--sampling", str(movie.sampling), "-o", str(out), "--overlay", str(png)]) == 0
    said = capsys.readouterr().out
    assert "frame 0 skipped: 100 of 16384 pixels (0.61 %) NaN or infinite; [preprocess] fill_nonfinite = 0.007" in said and "overlay: " in said and "(frame 1)" in said
    df = pd.read_csv(out)
    assert sorted(df["frame"].unique()) == [1, 2]
    n_true = (movie.truth.positions.frame == 1).sum()
    assert abs((df.frame == 1).sum() - n_true) <= 3 and png.stat().st_size > 10_000
    stack[:] = np.nan
    tifffile.imwrite(tif, stack[:1], photometric="minisblack")
    assert main(["find", str(tif), "-o", str(tmp_path / "none.csv")]) == 1
    assert "no frame could be located" in capsys.readouterr().err and not (tmp_path / "none.csv").exists()


def test_dead_pixels_reject_frames_unless_a_few_may_be_filled(movie, tmp_path, capsys, caplog):
    """Every frame of a stack has a dead (NaN) pixel patch of 0.6 %: by default each frame is
    rejected and the first rejection says how to fill instead; with ``[preprocess]
    fill_nonfinite = 0.01`` every frame is tracked (and found as the clean stack is), the
    fills counted; a limit below the patch still rejects. ``etem find`` does the same."""
    import logging

    stack = movie.frames[:4].astype(np.float32).copy()
    stack[:, 60:70, 60:70] = np.nan  # 100 of 16384 pixels
    tif = tmp_path / "dead.tif"
    tifffile.imwrite(tif, stack, photometric="minisblack")
    args = ["replay", str(tif), "--quiet", "--classical", "--sampling", str(movie.sampling)]
    with caplog.at_level(logging.WARNING, logger="etem.pipeline"):
        assert main(args + ["-o", str(tmp_path / "a.h5")]) == 1
    assert "4 rejected" in capsys.readouterr().out
    assert "100 of 16384 pixels (0.61 %) NaN or infinite" in caplog.text and "fill_nonfinite = 0.007" in caplog.text
    for limit, rc in ((0.01, 0), (0.005, 1)):
        cfg = tmp_path / f"fill{limit}.toml"
        cfg.write_text(f"[preprocess]\nfill_nonfinite = {limit}\n")
        assert main(args + ["-o", str(tmp_path / f"b{limit}.h5"), "--config", str(cfg)]) == rc
        out = capsys.readouterr().out
        assert ("4 processed, 0 rejected" in out) == (rc == 0), out
        assert ("4 frame(s) with NaN or infinite pixels filled" in out) == (rc == 0), out
    from etem.tracker import find
    from etem.tracker.config import PipelineConfig, load_config

    clean = find(movie.frames[:4], sampling=movie.sampling, classical=True)
    filled = find(tif, sampling=movie.sampling, classical=True, config=load_config(tmp_path / "fill0.01.toml"))
    assert len(filled.attrs["rejected"]) == 0 and abs(len(filled) - len(clean)) <= 4
    assert len(find(tif, sampling=movie.sampling, classical=True, config=PipelineConfig()).attrs["rejected"]) == 4

def test_a_run_that_tracks_nothing_says_so_and_fails(tmp_path, capsys):
    """A file whose only frame is NaN, and a camera address nothing publishes to: no frame is
    tracked, no run file is written, none is named, and the exit status says it."""
    tif = tmp_path / "nan.tif"
    tifffile.imwrite(tif, np.full((1, 64, 64), np.nan, np.float32), photometric="minisblack")
    run = tmp_path / "run.h5"
    assert main(["replay", str(tif), "-o", str(run), "--quiet", "--sampling", "0.1"]) == 1
    out, err = capsys.readouterr()
    assert "1 rejected" in out and "run file" not in out and not run.exists()
    assert "nothing tracked: 1 frame(s) rejected" in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["track", "--listen", f"tcp://127.0.0.1:{port}", "-o", str(run), "--idle-timeout", "1", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert f"no frame arrived at tcp://127.0.0.1:{port}" in err and not run.exists() and "run file" not in out

def test_find_parquet_by_suffix(movie, tmp_path):
    npy = tmp_path / "one.npy"
    np.save(npy, movie.frames[0])
    assert main(["find", str(npy), "--classical", "-o", str(tmp_path / "c.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "c.parquet")) > 10


def test_find_dash_writes_the_table_to_stdout_and_the_words_to_stderr(movie, tmp_path, capsys):
    npy = tmp_path / "one.npy"
    np.save(npy, movie.frames[0])
    png = tmp_path / "overlay.png"
    assert main(["find", str(npy), "--classical", "-o", "-", "--overlay", str(png)]) == 0
    out, err = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns[:4]) == ["file", "frame", "y", "x"] and len(df) > 10
    assert "columns in 1 frame(s)" in err and "overlay:" in err
    assert png.exists() and not (tmp_path / "-").exists() and not Path("-").exists()


def test_replay_then_export(movie, tmp_path, capsys):
    save_movie(movie, tmp_path / "movie.h5")
    run = tmp_path / "run.h5"
    assert main(["replay", str(tmp_path / "movie.h5"), "-o", str(run), "--quiet"]) == 0
    assert "12 processed" in capsys.readouterr().out
    assert len(open_run(run).frames) == 12
    assert main(["replay", str(tmp_path / "movie.h5"), "-o", str(run), "--quiet"]) == 2  # no silent overwrite
    assert "overwrite" in capsys.readouterr().err
    # a run against the simulated movie's truth: columns, sites and events
    assert main(["evaluate", str(run), str(tmp_path / "movie.h5")]) == 0
    out = capsys.readouterr().out
    f1 = float(out.split("F1 ")[1].split()[0])
    assert f1 > 0.9 and "sites:" in out and "true sites matched" in out
    assert "events:" in out and "same frame: recall" in out and "within 2 frames: recall" in out
    assert main(["export", str(run), "-o", str(tmp_path / "out"), "--formats", "csv,png"]) == 0
    for name in ("frames.csv", "columns.csv", "sites.csv", "hops.csv", "occupancy.png", "events.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert main(["export", str(run), "--formats", "xlsx"]) == 2


def test_replay_a_folder_of_frame_files_by_pattern(movie, tmp_path, capsys):
    """`etem replay FOLDER --pattern GLOB`: the files below the folder that the pattern names, in
    natural order of their paths; a pattern given with a file is refused."""
    folder = tmp_path / "capture"
    for i, image in enumerate(movie.frames[:6]):
        sub = folder / f"Second_{i // 3}"
        sub.mkdir(parents=True, exist_ok=True)
        np.save(sub / f"frame_{i}.npy", image)
    tifffile.imwrite(folder / "overview.tif", movie.frames[0])  # left out by the pattern
    run = tmp_path / "run.h5"
    assert main(["replay", str(folder), "--pattern", "**/*.npy", "--sampling", str(movie.sampling), "--classical",
                 "-o", str(run), "--quiet"]) == 0
    assert "6 processed" in capsys.readouterr().out
    assert open_run(run).attrs["source_options"]["pattern"] == "**/*.npy"
    assert main(["replay", str(folder / "overview.tif"), "--pattern", "*.tif", "--quiet"]) == 2
    assert "a pattern chooses the files of a folder" in capsys.readouterr().err


def test_replay_at_acquisition_pace_needs_a_frame_rate(movie, tmp_path, capsys):
    import time

    import h5py

    save_movie(movie, tmp_path / "movie.h5")
    with h5py.File(tmp_path / "movie.h5", "a") as f:  # a plain stack: no frame times recorded
        del f["frames"].attrs["fps"]
    assert main(["replay", str(tmp_path / "movie.h5"), "--pace", "1", "--quiet"]) == 2
    assert "--fps" in capsys.readouterr().err
    t0 = time.perf_counter()
    assert main(["replay", str(tmp_path / "movie.h5"), "--pace", "1", "--fps", "20", "--quiet"]) == 0
    # 12 frames at 20 frames/s: the last frame is due 0.55 s after the first
    assert time.perf_counter() - t0 >= 0.55
    assert "12 processed" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publish_and_track_over_zeromq(movie, tmp_path, capsys):
    save_movie(movie, tmp_path / "movie.h5")
    address = f"tcp://127.0.0.1:{_free_port()}"
    pub = threading.Thread(target=main, args=(["publish", str(tmp_path / "movie.h5"), "--address", address,
                                               "--mode", "push", "--fps", "50"],), daemon=True)
    pub.start()
    rc = main(["track", "--listen", address, "--mode", "pull", "-o", str(tmp_path / "live.h5"), "--quiet",
               "--idle-timeout", "20"])
    pub.join(10)
    assert rc == 0
    out, err = capsys.readouterr()
    assert "12 received, 12 processed, 0 rejected, 0 dropped" in out
    assert f"etem track: connecting to {address} (PUSH/PULL, lossless); run file {tmp_path / 'live.h5'}" in err
    assert len(open_run(tmp_path / "live.h5").frames) == 12


def test_track_says_where_it_listens_what_it_saves_and_when_nothing_comes(tmp_path, capsys, monkeypatch, caplog):
    """A tracker waiting on a silent address said nothing at all (a wrong address, the wrong
    mode or CURVE keys that differ looked the same as a camera not started yet); without -o it
    tracked a whole session and saved nothing, without a word."""
    from etem.tracker import sources

    monkeypatch.setattr(sources, "_QUIET_S", 0.5)
    address = f"tcp://127.0.0.1:{_free_port()}"
    assert main(["track", "--listen", address, "--quiet", "--idle-timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert f"connecting to {address} (PUB/SUB); no -o: the run is not saved (-o RUN.h5 keeps it)" in err
    assert f"no message from {address} after 0 s" in caplog.text and "--mode pull" in caplog.text
    assert main(["track", "--listen", "tcp://127.0.0.1:99999"]) == 2
    assert "the port must be 1 to 65535" in capsys.readouterr().err


def test_config_file_errors_are_reported(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[batch]\nmax_bath = 3\n")
    assert main(["replay", "whatever.h5", "--config", str(cfg)]) == 2
    assert "unknown key 'max_bath'" in capsys.readouterr().err


def test_a_ctrl_c_after_the_command_ended_exits_quietly_with_its_code():
    """A second Ctrl-C that lands while Python shuts down (the first one stopped the run, whose
    files are closed) ends the process at once with the command's exit code, not with a
    traceback from a library's exit handler."""
    code = ("import os, signal, sys, time\n"
            "from etem.tracker import cli\n"
            "cli.main = lambda: 130\n"
            "rc = cli.console()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(10)\n"
            "sys.exit(0)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 130 and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_ctrl_c_leaves_a_complete_run_file_marked_interrupted(tmp_path, detection):
    import glob
    import signal
    import time

    segments = set(glob.glob("/dev/shm/psm_*"))

    # 600 frames at 20 frames/s: 30 s of replay, ample time to catch it mid-run on a loaded machine
    movie = make_movie(n_frames=600, shape=(128, 128), particle_radius_A=8.0, seed=4)
    save_movie(movie, tmp_path / "movie.h5")
    run = tmp_path / "run.h5"
    proc = subprocess.Popen([sys.executable, "-m", "etem.tracker.cli", "replay", str(tmp_path / "movie.h5"),
                             "--pace", "1", "--fps", "20", "-o", str(run), "--quiet", "--detection", detection],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: an earlier test (or its thread pools) may leave
                            # SIGINT ignored in this process, and children inherit an ignored signal
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until frames are being written
        time.sleep(0.5)
        try:
            if len(open_run(run).frames) >= 5:
                break
        except Exception:
            pass
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"interrupted; what was processed is saved in {run}" in err, err
    r = open_run(run)
    assert r.status == "interrupted"
    n = len(r.frames)
    assert 5 <= n < 600
    c = r.counters
    assert c["processed"] == n
    # every frame read is accounted for: processed, or dropped because the run was stopped
    assert c["received"] == c["processed"] + c.get("dropped/stopped", 0)
    assert len(r.sites) > 0 and r.maps["occupancy"].size > 0
    assert "hops" in r.stats
    assert r.attrs["config"]["detection"] == detection
    assert set(glob.glob("/dev/shm/psm_*")) <= segments  # a detection process's frame ring is gone


def test_find_then_evaluate_agree_with_the_python_scores(tmp_path, capsys):
    from etem.tracker import find
    from etem.tracker.evaluate import score_columns

    movie = make_movie(n_frames=3, shape=(128, 128), particle_radius_A=8.0, seed=9)
    save_movie(movie, tmp_path / "movie.h5")
    tifffile.imwrite(tmp_path / "stack.tif", movie.frames)
    np.save(tmp_path / "stack.npy", movie.frames)
    expected = score_columns(find(movie.frames, sampling=movie.sampling, classical=True), movie.truth.positions,
                             radius_px=1 / movie.sampling, sampling=movie.sampling)
    for name in ("stack.tif", "stack.npy"):
        out = tmp_path / f"{name}.csv"
        assert main(["find", str(tmp_path / name), "--classical", "--sampling", str(movie.sampling), "-o", str(out)]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(out), str(tmp_path / "movie.h5")]) == 0
        line = capsys.readouterr().out
        assert f"F1 {expected['f1']:.3f}" in line and f"RMS {expected['rms_A']:.3f} Å" in line
    assert main(["evaluate", str(tmp_path / "movie.h5"), str(tmp_path / "movie.h5")]) == 2  # not a run file
    # the columns of one image against the movie: scored on that frame (the others counted as
    # missed gave F1 0.03), and a one-class locator's classes are not scored
    tifffile.imwrite(tmp_path / "first.tif", movie.frames[0])
    one = tmp_path / "first.csv"
    assert main(["find", str(tmp_path / "first.tif"), "--classical", "--sampling", str(movie.sampling), "-o", str(one)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(one), str(tmp_path / "movie.h5")]) == 0
    out = capsys.readouterr().out
    truth0 = movie.truth.positions[movie.truth.positions["frame"] == 0]
    first = score_columns(find(movie.frames[0], sampling=movie.sampling, classical=True), truth0,
                          radius_px=1 / movie.sampling, sampling=movie.sampling)
    assert "scored on the 1 frame of the truth's 3 that first.csv holds (frame 0)" in out
    assert f"F1 {first['f1']:.3f}" in out and first["f1"] > 0.8


def test_replay_with_averaged_frames(movie, tmp_path, capsys):
    """--average N: recorded in the run's config; a bad N is a clear error, not a traceback."""
    save_movie(movie, tmp_path / "movie.h5")
    run = tmp_path / "run.h5"
    assert main(["replay", str(tmp_path / "movie.h5"), "-o", str(run), "--quiet", "--average", "3"]) == 0
    assert "12 processed" in capsys.readouterr().out
    r = open_run(run)
    cfg = r.attrs["config"]
    assert (cfg if isinstance(cfg, dict) else __import__("json").loads(cfg))["preprocess"]["average_frames"] == 3
    assert len(r.frames) == 12 and len(r.sites) > 0
    with pytest.raises(SystemExit) as info:
        main(["replay", str(tmp_path / "movie.h5"), "--quiet", "--average", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --average: must be at least 1, got '0'" in err and "Traceback" not in err


def test_the_status_line_says_how_many_frames_were_trusted():
    from etem.tracker.cli import StatusLine

    s = {"fps": 9.5, "latency_p50_ms": 80.0, "latency_p99_ms": 140.0, "queue_ingest": 2, "queue_host": 0,
         "received": 12, "processed": 10, "rejected": 1, "dropped": 0, "missing": 1, "sites": 40,
         "in_range": 7, "out_of_range": 3}
    line = StatusLine.text(s)
    assert line.startswith("9.5 frames/s | latency 80/140 ms") and line.endswith("| 40 sites | trusted 7/10")
    assert "trusted" not in StatusLine.text({**s, "in_range": 0, "out_of_range": 0})  # no ranges to judge by
    # most of the latest frames out of range: the line says so
    alert = {**s, "in_range": 70, "out_of_range": 40, "recent_in_range": 12, "recent_judged": 50, "trust_alert": True}
    assert StatusLine.text(alert).endswith("| trusted 70/110 (latest 50: 38 out)")
    assert StatusLine.text({**s, "class_changes": 12}).endswith("| 40 sites, 12 class changes | trusted 7/10")
    assert "class changes" not in StatusLine.text({**s, "class_changes": 0})


def test_the_status_line_writes_whole_lines_where_stderr_is_no_terminal(capsys):
    """Logged to a file (stderr no terminal, as under pytest's capture): whole lines with the
    frame count, no carriage returns and nothing cut at the terminal's width, at most one per
    ``log_interval_s``, and the last state when the run ends."""
    from etem.tracker.cli import StatusLine

    s = {"fps": 9.5, "latency_p50_ms": 80.0, "latency_p99_ms": 140.0, "queue_ingest": 2, "queue_host": 0,
         "received": 12, "processed": 10, "rejected": 1, "dropped": 0, "missing": 1, "sites": 40,
         "in_range": 7, "out_of_range": 3}

    class Pipe:
        def status(self):
            return s

    line = StatusLine(total=30, log_interval_s=60.0)
    for _ in range(5):
        line(None, Pipe())
    line.close()
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines() == ["1/30 frames | " + StatusLine.text(s), "5/30 frames | " + StatusLine.text(s)]

def test_the_status_line_ends_on_how_the_run_ended(movie, tmp_path, capsys):
    """Its last form is drawn as the run closes (here, stderr no terminal: as a whole line)."""
    save_movie(movie, tmp_path / "movie.h5")
    assert main(["replay", str(tmp_path / "movie.h5"), "--classical"]) == 0
    last = capsys.readouterr().err.strip().splitlines()
    n = len(movie.frames)
    last = [line for line in last if line.startswith(f"{n}/{n} frames |")]
    assert len(last) == 1 and f"in {n} done {n} " in last[0], last


def test_find_overlay_says_the_file_frame_pixel_size_locator_and_the_trust_warning(movie, tmp_path):
    """`etem find --overlay` drew the bare image: its title now names the file, the frame shown of
    a stack, the pixel size and where it came from and the locator, and a frame outside the
    locator's trust ranges is said in red (the real ABF image without --dark: contrast)."""
    from test_files import realdata

    from etem.tracker.api import find
    from etem.tracker.cli import _overlay_words
    from etem.tracker.cli_parser import build_parser

    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, movie.frames[:3], photometric="minisblack")
    args = build_parser().parse_args(["find", str(tif), "--sampling", str(movie.sampling), "--overlay", "x.png"])
    df = find(tif, sampling=movie.sampling)
    title, warning, sampling = _overlay_words(args, df, 0, [0, 1, 2])
    assert title.splitlines()[0] == "stack.tif — frame 0 of the 3 located (the table holds them all)"
    assert f"{movie.sampling:.4g} Å/px (--sampling)" in title and "located by" in title
    assert sampling == pytest.approx(movie.sampling)

    abf = realdata() / "test_ABF_cropped.hdf5"
    args = build_parser().parse_args(["find", str(abf), "--sampling", "0.0933", "--overlay", "x.png"])
    df = find(abf, sampling=0.0933)
    title, warning, _ = _overlay_words(args, df, 0, [0])
    assert title.splitlines()[0] == "test_ABF_cropped.hdf5"
    assert warning.startswith("outside the locator's trust ranges: contrast") and "columns may be false" in warning
    # with --dark, inside them: no warning
    df = find(abf, sampling=0.0933, dark=True)
    assert _overlay_words(args, df, 0, [0])[1] is None
    # the file's own pixel size
    dm3 = realdata() / "example_Se_implanted_MoS2.dm3"
    args = build_parser().parse_args(["find", str(dm3), "--overlay", "x.png"])
    assert "0.127 Å/px (from the file)" in _overlay_words(args, find(dm3), 0, [0])[0]


def test_find_says_which_groups_a_run_would_take_as_one(tmp_path, capsys):
    """On the real MoS2 image `find --intensity-groups` gave A/B0/B1 and `replay
    --intensity-classes` A/B: a run takes groups closer than D = 2 as one (find from D = 1), and
    the S2 and Se-bright groups lie at D ≈ 1.5. find now says so."""
    from test_files import realdata

    from etem.tracker.api import find
    from etem.tracker.cli import RUN_SEPARATION
    from etem.tracker.intensity import IntensityClasses

    dm3 = realdata() / "example_Se_implanted_MoS2.dm3"
    assert main(["find", str(dm3), "--intensity-groups", "-o", str(tmp_path / "c.csv")]) == 0
    said = capsys.readouterr().out
    assert re.search(r"\(groups 0 and 1 \(D = 1\.\d\): replay/track --intensity-classes takes groups closer "
                     r"than D = 2 as one", said)
    # the run's classes of the same columns: A and B (the reason said), and B0/B1 with --groups 2
    classes = IntensityClasses()
    assert classes.separation == RUN_SEPARATION
    table = find(dm3)
    classes(table)
    assert classes.class_names == ["A", "B"]
    two = IntensityClasses(groups=2)
    two(table)
    assert two.class_names == ["A0", "A1", "B0", "B1"]
