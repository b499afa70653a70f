"""Watched folders: frame files that arrive one by one, half-written, corrupt or unreadable."""
from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from etem.tracker.errors import ConfigError, FileFormatError
from etem.tracker.files import FolderWatcher, watch_folder
from test_files import stack, write_imagej

def _write_then_rename(folder: Path, name: str, data: np.ndarray) -> None:
    tmp = folder / f".{name}.part"
    write_imagej(tmp, data, px_per_unit=20, unit="nm")
    os.replace(tmp, folder / name)


def test_watcher_yields_all_frames_in_order_then_stops(tmp_path):
    data = stack(6)
    _write_then_rename(tmp_path, "frame_0.tif", data[0])  # present before the watch starts
    _write_then_rename(tmp_path, "frame_1.tif", data[1])

    def writer():
        for i in range(2, 6):
            time.sleep(0.04)
            _write_then_rename(tmp_path, f"frame_{i}.tif", data[i])

    thread = threading.Thread(target=writer)
    thread.start()
    watcher = watch_folder(tmp_path, poll_s=0.02, settle_s=0.05, idle_timeout_s=0.4)
    assert isinstance(watcher, FolderWatcher)
    t0 = time.monotonic()
    frames = list(watcher)
    thread.join()
    assert time.monotonic() - t0 < 3
    assert [f.frame for f in frames] == list(range(6)) and [f.seq for f in frames] == list(range(6))
    for f, expected in zip(frames, data):
        np.testing.assert_array_equal(f.image, expected)
    assert [Path(f.meta["source"]).name for f in frames] == [f"frame_{i}.tif" for i in range(6)]
    assert frames[0].sampling == pytest.approx(0.5)
    assert watcher.rejected == []


def test_watcher_waits_for_a_half_written_file(tmp_path):
    image = stack(1, 64, 64)[0]
    buf = io.BytesIO()
    tifffile.imwrite(buf, image)
    raw = buf.getvalue()

    def slow_writer():
        with open(tmp_path / "slow.tif", "wb") as fh:
            for k in range(4):
                fh.write(raw[k * len(raw) // 4:(k + 1) * len(raw) // 4])
                fh.flush()
                time.sleep(0.05)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    watcher = watch_folder(tmp_path, poll_s=0.01, settle_s=0.25, idle_timeout_s=0.3, sampling=1.5)
    frames = list(watcher)
    thread.join()
    assert watcher.rejected == [] and len(frames) == 1
    np.testing.assert_array_equal(frames[0].image, image)
    assert frames[0].sampling == 1.5


def test_watcher_rejects_a_corrupt_file_and_goes_on(tmp_path):
    data = stack(2)
    _write_then_rename(tmp_path, "a.tif", data[0])
    (tmp_path / "b.tif").write_bytes(b"not a tiff at all" * 10)
    _write_then_rename(tmp_path, "c.tif", data[1])
    (tmp_path / "d.tif").write_bytes(b"")
    watcher = watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1)
    frames = list(watcher)
    assert [Path(f.meta["source"]).name for f in frames] == ["a.tif", "c.tif"]
    rejected = {Path(p).name: why for p, why in watcher.rejected}
    assert set(rejected) == {"b.tif", "d.tif"} and "b.tif" in rejected["b.tif"]
    assert rejected["d.tif"] == "empty file"


def test_watcher_stops_when_told(tmp_path):
    stop = threading.Event()
    watcher = watch_folder(tmp_path, poll_s=0.01, stop=stop)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert list(watcher) == []
    assert time.monotonic() - t0 < 1


def test_watcher_needs_a_folder(tmp_path):
    with pytest.raises(FileFormatError, match="no such folder"):
        watch_folder(tmp_path / "missing")


def test_watcher_skips_what_a_resumed_run_holds_and_knows_the_frame_rate(tmp_path):
    data = stack(9)
    # files of 1, 3 (a stack), 1, 4 frames; the resumed watch starts inside the stack
    for name, part in (("f1.tif", data[:1]), ("f2.tif", data[1:4]), ("f10.tif", data[8:9]), ("f3.tif", data[4:8])):
        _write_then_rename(tmp_path, name, part if len(part) > 1 else part[0])
    watcher = watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1, fps=50.0, start=2)
    frames = list(watcher)
    assert [f.frame for f in frames] == list(range(2, 9))
    for f in frames:  # f2.tif's second image onwards, in natural name order (f10 last)
        np.testing.assert_array_equal(f.image, data[f.frame])
    assert [f.t for f in frames] == pytest.approx([n / 50.0 for n in range(2, 9)])
    assert frames[0].meta["file_frame"] == 1
    with pytest.raises(ConfigError, match="start"):
        watch_folder(tmp_path, start=-1)
    with pytest.raises(ConfigError, match="fps"):
        watch_folder(tmp_path, fps=0)


def test_watched_focal_series_files(tmp_path):
    data = stack(6)  # two frames of three focal images each, one file per frame
    _write_then_rename(tmp_path, "a_0.tif", data[:3])
    _write_then_rename(tmp_path, "a_1.tif", data[3:])
    frames = list(watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1, focal=3))
    assert len(frames) == 2 and frames[1].image.shape == (3, 24, 32)
    np.testing.assert_array_equal(frames[1].image, data[3:])


def test_watched_folder_reads_every_frame_type_below_it_in_order(tmp_path):
    """An in-situ camera program files frames by hour, minute and second; the watch reads them
    in that order, whatever their type, and leaves run files, TIA headers and hidden folders."""
    data = stack(5)
    paths = ["Hour_00/Minute_00/Second_9/f.npy", "Hour_00/Minute_00/Second_10/f.tif",
             "Hour_00/Minute_01/Second_0/f_2.npy", "Hour_00/Minute_01/Second_0/f_10.npy", "Hour_01/Minute_00/a.tif"]
    for path, image in zip(paths, data):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".npy"):
            np.save(tmp_path / path, image)
        else:
            tifffile.imwrite(tmp_path / path, image)
    (tmp_path / "run.h5").write_bytes(b"\x89HDF\r\n\x1a\n")  # not a frame file: never read
    (tmp_path / "scan.emi").write_bytes(b"header")
    (tmp_path / ".partial").mkdir()
    np.save(tmp_path / ".partial" / "f.npy", data[0])
    from etem.tracker.watch import first_file

    assert first_file(tmp_path) == tmp_path / paths[0]
    watcher = watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1)
    frames = list(watcher)
    assert [Path(f.meta["source"]).relative_to(tmp_path).as_posix() for f in frames] == paths
    for f, image in zip(frames, data):
        np.testing.assert_array_equal(f.image, image)
    assert watcher.rejected == []
    # a pattern narrows it: only the NumPy files, subfolders included
    only = list(watch_folder(tmp_path, pattern="**/*.npy", poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1))
    assert [Path(f.meta["source"]).name for f in only] == ["f.npy", "f_2.npy", "f_10.npy"]
    assert list(watch_folder(tmp_path, pattern="*.tif", poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1)) == []
    for bad in ("", "/abs/*.tif", "../*.tif"):
        with pytest.raises(ConfigError, match="pattern"):
            watch_folder(tmp_path, pattern=bad)


def test_watcher_counts_an_unreadable_file_as_a_rejected_frame_in_its_place(tmp_path, caplog):
    """f2.tif is cut short: frame 2 is rejected (rejected/unreadable) and f3.tif stays frame 3, at
    3/fps s; a resumed watch past it does not count it again."""
    from etem.tracker.accounting import Counters

    data = stack(5)
    for i in range(5):
        _write_then_rename(tmp_path, f"f{i}.tif", data[i])
    raw = (tmp_path / "f2.tif").read_bytes()
    (tmp_path / "f2.tif").write_bytes(raw[: len(raw) // 2])
    counters = Counters()
    watcher = watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1, fps=10.0, counters=counters)
    frames = list(watcher)
    assert [f.frame for f in frames] == [0, 1, 3, 4]
    assert [Path(f.meta["source"]).name for f in frames] == ["f0.tif", "f1.tif", "f3.tif", "f4.tif"]
    assert [f.t for f in frames] == pytest.approx([0.0, 0.1, 0.3, 0.4])
    c = counters.as_dict()
    assert c["received"] == 1 and c["rejected/unreadable"] == 1  # (the frames read are counted by the run)
    assert [Path(p).name for p, _ in watcher.rejected] == ["f2.tif"]
    assert "frame 2 rejected" in caplog.text and "f2.tif" in caplog.text
    counters = Counters()
    again = list(watch_folder(tmp_path, poll_s=0.01, settle_s=0.02, idle_timeout_s=0.1, start=3, counters=counters))
    assert [f.frame for f in again] == [3, 4] and counters.as_dict()["rejected"] == 0
