"""`etem` and the files it is given and told to write: unreadable, cut short, several datasets,
folders of frames, outputs that cannot be written, options that name nothing."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from etem.simulate.toy import save_movie
from etem.tracker.cli import main
from etem.tracker.runfile import open_run
from test_cli import movie  # noqa: F401 - the fixture

def test_a_reader_that_stops_early_is_no_error(movie, tmp_path):
    """`etem find … | head -1`: the pipe closes under the writer; it stops quietly, as SIGPIPE would."""
    stack = tmp_path / "stack.npy"
    np.save(stack, np.concatenate([movie.frames] * 40))  # a table far larger than a pipe's buffer
    proc = subprocess.Popen([sys.executable, "-m", "etem.tracker.cli", "find", str(stack), "--classical"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"file,frame,y,x")
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 10])
def test_unreadable_file_is_a_clear_error_not_a_traceback(tmp_path, content):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "etem.tracker.cli", "find", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "broken.tif" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["replay", "x.h5", "--no-such-option"])
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_options_that_would_do_nothing_are_refused(tmp_path, capsys):
    """`publish FILE --frames 10 --size 64` sent the whole file at its size; `replay --force`
    without --resume was taken and did nothing."""
    np.save(tmp_path / "m.npy", np.ones((3, 16, 16), np.float32))
    assert main(["publish", str(tmp_path / "m.npy"), "--frames", "10", "--size", "64"]) == 2
    assert "--frames and --size go with --simulate" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "m.npy"), "--force", "--quiet"]) == 2
    assert "--force goes with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["find", "x.tif", "--engine", "bogus"], ["--engine", "'bogus'", "onnxruntime"]),
    (["replay", "x.h5", "--device", "gpu"], ["--device", "cuda:N", "'gpu'"]),
    (["replay", "x.h5", "--max-batch", "0"], ["--max-batch", "at least 1"]),
    (["replay", "x.h5", "--max-wait", "-1"], ["--max-wait", "0 or more"]),
    (["find", "x.tif", "--focal", "0"], ["--focal", "at least 1"]),
    (["track", "--dashboard-port", "70000"], ["--dashboard-port", "0 to 65535"]),
    (["train", "w.h5", "-o", "m", "--steps", "0"], ["--steps", "at least 1"]),
    (["demo", "--size", "8"], ["--size", "at least 16 px"]),
])
def test_a_bad_option_value_is_refused_by_the_parser_before_any_work(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_outputs_go_into_new_folders_or_fail_up_front(movie, tmp_path, capsys):
    """``-o runs/today/run.h5`` where the folders are new: they are made. An output under a file
    is a clear error before any work, and the Python API makes a run file's folder too."""
    from etem.tracker import track
    from etem.tracker.errors import ConfigError

    npy = tmp_path / "one.npy"
    np.save(npy, movie.frames[0])
    out, png = tmp_path / "a" / "cols.csv", tmp_path / "b" / "c" / "overlay.png"
    assert main(["find", str(npy), "--sampling", str(movie.sampling), "-o", str(out), "--overlay", str(png)]) == 0
    assert len(pd.read_csv(out)) > 10 and png.stat().st_size > 10_000
    src = tmp_path / "movie.h5"
    save_movie(movie, src)
    run = tmp_path / "runs" / "today" / "run.h5"
    assert main(["replay", str(src), "-o", str(run)]) == 0
    assert len(open_run(run).frames) == len(movie.frames)
    (tmp_path / "afile").write_text("")
    capsys.readouterr()
    assert main(["replay", str(src), "-o", str(tmp_path / "afile" / "run.h5")]) == 2
    err = capsys.readouterr().err
    assert "cannot create its folder" in err and "afile" in err and "replay 1/" not in err
    res = track(np.asarray(movie.frames[:2], np.float32), sampling=movie.sampling, run_path=tmp_path / "py" / "run.h5")
    assert (tmp_path / "py" / "run.h5").exists() and len(res.columns) > 0
    with pytest.raises(ConfigError, match="cannot create its folder"):
        track(np.asarray(movie.frames[:2], np.float32), sampling=movie.sampling,
              run_path=tmp_path / "afile" / "x" / "run.h5")


def test_a_model_without_a_pixel_size_says_how_to_give_one(movie, tmp_path, capsys):
    npy = tmp_path / "one.npy"  # no pixel size in a .npy
    np.save(npy, movie.frames[0])
    assert main(["find", str(npy), "--model", "haadf-stem"]) == 2
    err = capsys.readouterr().err
    assert "expects 0.2 Å/px" in err and "--sampling" in err and "--material" in err


def test_an_unreadable_file_of_a_folder_is_a_rejected_frame_in_its_place(movie, tmp_path, capsys):
    """A folder of 12 frame files, frame_5.tif cut short: one frame rejected (unreadable), counted
    as received, and the later files keep their frame numbers and times (frame_6.tif is frame 6,
    at 6/fps s); before, it was dropped unsaid and every later frame was one early."""
    folder = tmp_path / "capture"
    folder.mkdir()
    for i, image in enumerate(movie.frames):
        tifffile.imwrite(folder / f"frame_{i}.tif", np.asarray(image, np.float32))
    raw = (folder / "frame_5.tif").read_bytes()
    (folder / "frame_5.tif").write_bytes(raw[: len(raw) // 2])
    run = tmp_path / "run.h5"
    assert main(["replay", str(folder), "--fps", "10", "--classical", "--sampling", str(movie.sampling),
                 "-o", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "11 processed" in out and "1 rejected" in out, out
    r = open_run(run)
    c = r.counters
    assert c["received"] == 12 and c["processed"] == 11 and c["rejected/unreadable"] == 1, c
    frames = r.frames.set_index("frame")
    assert 5 not in frames.index and list(frames.index) == [i for i in range(12) if i != 5]
    assert frames.loc[6, "t"] == pytest.approx(0.6) and frames.loc[11, "t"] == pytest.approx(1.1)


def test_outputs_that_cannot_be_written_are_one_clear_line_before_the_work(movie, tmp_path, capsys, monkeypatch):
    """Outputs under /sys or /proc (root may write anywhere the permission bits say, not there),
    and a read-only folder: `etem CMD: error: cannot write PATH: why`, exit 2, no traceback, and
    before the tracking (a replay says no 'no room to create it' any more)."""
    import os

    src = tmp_path / "movie.h5"
    save_movie(movie, src)
    npy = tmp_path / "one.npy"
    np.save(npy, movie.frames[0])
    run = tmp_path / "run.h5"
    assert main(["replay", str(src), "--classical", "-o", str(run), "--quiet"]) == 0
    capsys.readouterr()
    cases = [(["export", str(run), "-o", "/sys/out"], "/sys/out", "permission denied"),
             (["find", str(npy), "--classical", "-o", "/sys/c.csv"], "/sys/c.csv", "permission denied"),
             (["find", str(npy), "--classical", "--overlay", "/proc/o.png"], "/proc/o.png", "does not take new files"),
             (["replay", str(src), "--classical", "-o", "/sys/run.h5"], "/sys/run.h5", "permission denied"),
             (["find", str(npy), "--classical", "-o", str(tmp_path)], str(tmp_path), "it is a folder")]
    for argv, path, why in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.startswith(f"etem {argv[0]}: error: cannot write {path}: ") and why in err, err
        assert "Traceback" not in err and "no room" not in err and not re.search(r"\d+/\d+ frames", err), err
        assert not out, out
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode, **kw))
    assert main(["export", str(run), "-o", str(ro)]) == 2
    assert f"cannot write {ro}: permission denied in {ro}" in capsys.readouterr().err
    assert not list(ro.iterdir())
    monkeypatch.undo()
    # a write that fails all the same, half-way (the disk full, a folder made read-only meanwhile)
    from etem.tracker import export

    def refuse(blocks, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setitem(export._TABLE_WRITERS, "csv", refuse)
    assert main(["export", str(run), "-o", str(tmp_path / "out"), "--formats", "csv"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'out'}" in err and ".csv: permission denied" in err and "Traceback" not in err


def test_a_plain_hdf5_file_with_several_datasets_reads_the_movie_and_says_so(movie, tmp_path, capsys):
    """/calib/dark (4 dark frames) beside /scan/movie (the 12-frame movie, with its sampling): the
    movie is read (the largest stack), the command says which dataset it read and which others
    there are; --dataset chooses another. Before, the dark frames were read, rejected as blank,
    and nothing said which dataset."""
    import h5py

    path = tmp_path / "session.h5"
    with h5py.File(path, "w") as f:
        f["calib/dark"] = np.random.default_rng(0).poisson(0.5, (4, 128, 128)).astype(np.float32)
        f.create_dataset("scan/movie", data=np.asarray(movie.frames, np.float32)).attrs["sampling"] = movie.sampling
    run = tmp_path / "run.h5"
    assert main(["replay", str(path), "--classical", "-o", str(run), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "12 processed" in out
    assert "session.h5: dataset /scan/movie (12 x 128 x 128) read; also in it: /calib/dark (4 x 128 x 128)" in err
    r = open_run(run)
    assert r.counters["processed"] == 12 and r.attrs["source_options"]["dataset"] is None
    table = tmp_path / "dark.csv"
    assert main(["find", str(path), "--classical", "--dataset", "/calib/dark", "-o", str(table)]) == 0
    out = capsys.readouterr().out
    assert "also in it" not in out and "session.h5: " in out
    assert main(["find", str(path), "--classical", "--dataset", "/scan/movie", "-o", str(table)]) == 0
    assert sorted(pd.read_csv(table)["frame"].unique()) == list(range(12))
    assert main(["replay", str(path), "--dataset", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no dataset '/nope' of frames" in err and "/scan/movie (12 x 128 x 128)" in err
    gif = tmp_path / "m.gif"
    assert main(["export", str(run), "-o", str(tmp_path / "out"), "--formats", "csv", "--movie", str(gif),
                 "--source", str(path), "--dataset", "/scan/movie"]) == 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 12


def test_export_a_movie_of_a_folder_of_frames(movie, tmp_path, capsys):
    """`etem export RUN --movie out.gif --source FOLDER`: the folder's frames, as the run read them,
    with its columns; before, it said "use watch_folder()" (a Python name), after writing the rest.
    A --source that is not there is said before any output is written."""
    from PIL import Image

    folder = tmp_path / "capture"
    folder.mkdir()
    for i, image in enumerate(movie.frames[:5]):
        np.save(folder / f"frame_{i}.npy", image)
    run = tmp_path / "run.h5"
    assert main(["replay", str(folder), "--classical", "--sampling", str(movie.sampling), "-o", str(run),
                 "--quiet"]) == 0
    gif, out = tmp_path / "movie.gif", tmp_path / "out"
    assert main(["export", str(run), "-o", str(out), "--formats", "csv", "--movie", str(gif),
                 "--source", str(folder)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 5
    assert (out / "columns.csv").exists()
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert main(["export", str(run), "-o", str(out2), "--formats", "csv", "--movie", str(gif),
                 "--source", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and "no such file or folder" in err and "watch_folder" not in err
    assert not out2.exists() or not list(out2.iterdir())
    assert main(["find", str(folder), "--classical"]) == 2
    assert f"etem replay {folder}" in capsys.readouterr().err


def test_a_folder_of_png_frames_says_why_nothing_is_read_and_how_to_read_them(movie, tmp_path, capsys):
    """A folder of grey PNG frames only: it says there is no frame file and that the PNGs are read
    with --pattern (before: "nothing tracked: no frame was read", the PNGs unmentioned), and
    with --pattern '*.png' they are tracked; an empty folder says it is empty."""
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(movie.frames[:4]):
        im = np.asarray(image, float)
        Image.fromarray(((im - im.min()) / np.ptp(im) * 65535).astype(np.uint16)).save(folder / f"f{i}.png")
    assert main(["replay", str(folder), "--classical", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"nothing tracked: no frame files in {folder} (it holds 4 .png files" in err, err
    assert "--pattern '**/*.png'" in err
    assert main(["replay", str(folder), "--pattern", "*.png", "--classical", "--sampling", str(movie.sampling),
                 "--quiet"]) == 0
    assert "4 processed" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["replay", str(tmp_path / "empty"), "--classical", "--quiet"]) == 1
    assert "(it is empty)" in capsys.readouterr().err


def test_a_list_of_numbers_that_begins_negative_is_an_options_value():
    """`etem train … --focal -100,0,100` (as the training guide writes it) was refused:
    "argument --focal: expected one argument"."""
    from etem.tracker.cli import _joined_negative_lists
    from etem.tracker.cli_parser import build_parser

    argv = _joined_negative_lists(["train", "w.h5", "-o", "m", "--focal", "-100,0,100", "--coarse-factor", "1.5,2"])
    args = build_parser().parse_args(argv)
    assert args.focal == "-100,0,100" and args.coarse_factor == "1.5,2"
    assert _joined_negative_lists(["find", "a.tif", "--sampling", "-0.1"]) == ["find", "a.tif", "--sampling", "-0.1"]
    assert _joined_negative_lists(["simulate", "movie", "--focal-series", "-50,0,50", "-o", "m.h5"])[2] == \
        "--focal-series=-50,0,50"


def test_a_pixel_size_given_far_from_the_files_is_said(tmp_path, caplog):
    """`--sampling 0.0127` for a file that records 0.127 Å/px (nm typed as Å) was taken without
    a word; it is still taken, and said."""
    import logging

    from etem.tracker import find, track

    np.savez(tmp_path / "m.npz", frames=np.random.default_rng(0).poisson(20, (2, 32, 32)).astype(np.float32),
             sampling=0.127)
    with caplog.at_level(logging.WARNING):
        find(tmp_path / "m.npz", sampling=0.0127, classical=True)
    assert "records 0.127 Å/px; --sampling 0.0127 (0.1x that) is used (nm for Å?)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        track(tmp_path / "m.npz", sampling=0.13, classical=True)  # (near the file's: nothing said)
    assert "records" not in caplog.text
