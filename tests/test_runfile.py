"""The run file: round trip, validation, reading while written, surviving a killed writer."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import h5py
import numpy as np
import pandas as pd
import pytest

from etem.tracker.errors import FileFormatError
from etem.tracker.runfile import COLUMNS, FRAMES, SITES, RunWriter, open_run

SHAPE = (24, 32)
ATTRS = {
    "config": {"engine": "eager", "batch": 4, "thresholds": [0.5, 0.995], "note": None},
    "model_card": {"classes": ["background", "Au"], "sampling_A": 0.1, "text": "x" * 100_000},
    "versions": {"etem-tracker": "0.1.0", "numpy": np.__version__},
}
COUNTERS = ["received", "processed", "rejected:bad_json", "dropped:slow"]


def random_table(schema: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
    data = {}
    for name, dtype in schema.items():
        if dtype.kind == "f":
            data[name] = rng.normal(size=n).astype(dtype)
        else:
            data[name] = rng.integers(-1, 1000, size=n).astype(dtype)
    return pd.DataFrame(data)


def write_run(path, rng, *, n_frames=30, close=True, **kwargs) -> tuple[RunWriter, dict]:
    frames = random_table(FRAMES, n_frames, rng)
    columns = random_table(COLUMNS, 10 * n_frames, rng)
    sites = random_table(SITES, 40, rng)
    maps = {"occupancy": rng.random(SHAPE).astype("f4"), "events": rng.random(SHAPE).astype("f4")}
    counters = dict(zip(COUNTERS, [n_frames, n_frames - 2, 1, 1]))
    stats = {"msd": pd.DataFrame({"lag_frames": np.arange(5), "msd_A2": rng.random(5),
                                  "cls": ["Au", "Au", "C", "C", "Au"],
                                  "converged": [True, False, True, True, True]})}
    w = RunWriter(path, attrs=ATTRS, counter_names=COUNTERS, **kwargs)
    w.begin(SHAPE, 0.12)
    for i in range(n_frames):          # the way the pipeline feeds it: a frame at a time
        w.append("frames", frames.iloc[i:i + 1])
        w.append("columns", columns.iloc[10 * i:10 * (i + 1)])
        w.maybe_flush()
    w.replace("sites", sites.iloc[:5])
    w.flush()
    w.replace("sites", sites)           # grows ...
    w.write_maps(maps["occupancy"], maps["events"])
    w.write_counters(counters)
    if close:
        w.close(extra_tables=stats, extra_attrs={"summary": {"n_frames": n_frames}})
    return w, dict(frames=frames, columns=columns, sites=sites, maps=maps, counters=counters,
                   stats=stats)


def test_round_trip(tmp_path):
    path = tmp_path / "run.h5"
    _, expected = write_run(path, np.random.default_rng(0))
    with open_run(path) as run:
        assert not run.live
        assert run.status == "complete"
        for table in ("frames", "columns", "sites"):
            pd.testing.assert_frame_equal(getattr(run, table), expected[table])
        for name, arr in expected["maps"].items():
            np.testing.assert_array_equal(run.maps[name], arr)
        assert run.counters == expected["counters"]
        assert set(run.stats) == {"msd"}
        pd.testing.assert_frame_equal(run.stats["msd"], expected["stats"]["msd"],
                                      check_dtype=False)
        assert run.stats["msd"]["converged"].dtype == bool
        for key, value in ATTRS.items():
            assert run.attrs[key] == value
        assert run.attrs["summary"] == {"n_frames": 30}
        assert run.frame_shape == SHAPE and run.sampling == 0.12
        assert run.attrs["format"] == "etem-run"


def test_replace_shrinks_the_table(tmp_path):
    path = tmp_path / "run.h5"
    w, expected = write_run(path, np.random.default_rng(1), close=False)
    w.replace("sites", expected["sites"].iloc[:3])
    w.close()
    with open_run(path) as run:
        pd.testing.assert_frame_equal(run.sites, expected["sites"].iloc[:3])


def test_missing_columns_get_sentinels_and_scalars_broadcast(tmp_path):
    with RunWriter(tmp_path / "run.h5", attrs={}, counter_names=[]) as w:
        w.begin(SHAPE, None)
        w.append("columns", {"frame": 7, "y": [1.5, 2.5], "x": [3.0, 4.0],
                             "particle": pd.array([4, None], dtype="Int64"),
                             "site": np.array([2.0, np.nan])})
    with open_run(tmp_path / "run.h5") as run:
        cols = run.columns
        assert cols["frame"].tolist() == [7, 7]
        assert cols["cls"].tolist() == [-1, -1]
        assert cols["particle"].tolist() == [4, -1]
        assert cols["site"].tolist() == [2, -1]
        assert cols["prob"].isna().all() and cols["y_ref"].isna().all()
        assert cols.dtypes.to_dict() == {k: v for k, v in COLUMNS.items()}
        assert run.sampling is None
        assert np.isnan(run.maps["occupancy"]).all() and run.maps["events"].shape == SHAPE


@pytest.mark.parametrize("table, data, match", [
    ("columns", {"frame": [1], "z": [0.0]}, "'z'"),
    ("frames", pd.DataFrame({"frame": [1], "bogus": [2], "other": [3]}), "'bogus', 'other'"),
    ("particles", {"frame": [1]}, "must be one of"),
    ("columns", {"y": [1.0, 2.0], "x": [1.0]}, "different lengths"),
])
def test_bad_append_is_rejected(tmp_path, table, data, match):
    with RunWriter(tmp_path / "run.h5", attrs={}, counter_names=["received"]) as w:
        w.begin(SHAPE, 0.1)
        with pytest.raises(ValueError, match=match):
            w.append(table, data)


def test_bad_counters_maps_and_attrs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        RunWriter(tmp_path / "a.h5", attrs={"status": "x"}, counter_names=[])
    with pytest.raises(ValueError, match="JSON"):
        RunWriter(tmp_path / "a.h5", attrs={"config": object()}, counter_names=[])
    with RunWriter(tmp_path / "run.h5", attrs={}, counter_names=["received"]) as w:
        with pytest.raises(RuntimeError, match="begin"):
            w.append("frames", {"frame": [0]})
        w.begin(SHAPE, 0.1)
        with pytest.raises(ValueError, match="'dropped'"):
            w.write_counters({"dropped": 1})
        with pytest.raises(ValueError, match="frame shape"):
            w.write_maps(np.zeros((3, 3)), None)


def test_rows_are_buffered_until_a_flush(tmp_path):
    path = tmp_path / "run.h5"
    w = RunWriter(path, attrs={}, counter_names=[], flush_interval_s=3600)
    w.begin(SHAPE, 0.1)
    w.append("frames", {"frame": [0, 1]})
    assert not w.maybe_flush()
    with open_run(path) as run:
        assert len(run.frames) == 0
        w.flush()
        run.refresh()
        assert run.frames["frame"].tolist() == [0, 1]
    w.flush_interval_s = 0.0
    w.append("frames", {"frame": 2})
    assert w.maybe_flush()
    w.close()


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, np.random.default_rng(2), n_frames=2)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RunWriter(path, attrs={}, counter_names=[])
    with RunWriter(path, attrs={}, counter_names=[], overwrite=True) as w:
        w.begin(SHAPE, 0.1)
    with open_run(path) as run:
        assert len(run.frames) == 0 and run.status == "complete"


def test_exception_in_context_marks_the_run_failed(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(ZeroDivisionError):
        with RunWriter(path, attrs={}, counter_names=[]) as w:
            w.begin(SHAPE, 0.1)
            w.append("frames", {"frame": 0})
            1 / 0
    with open_run(path) as run:
        assert run.status == "failed"
        assert "ZeroDivisionError" in run.attrs["error"]
        assert len(run.frames) == 1


def test_corrupt_and_foreign_files_raise_file_format_error(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(FileFormatError, match="junk.h5"):
        open_run(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(FileFormatError, match="not an etem run file"):
        open_run(foreign)
    with pytest.raises(FileFormatError, match="does not exist"):
        open_run(tmp_path / "missing.h5")
    good = tmp_path / "run.h5"
    write_run(good, np.random.default_rng(4), n_frames=200)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FileFormatError, match="cut.h5"):
        open_run(cut)


# ------------------------------------------------------------- a writer in another process

def _writer_process(path: str, committed, flushes, stop) -> None:
    """Feeds a run a frame (and two columns) every 2 ms; publishes the rows it has flushed."""
    w = RunWriter(path, attrs={"config": {"demo": True}}, counter_names=["received"],
                  flush_interval_s=0.05)
    w.begin((16, 16), 0.5)
    i = 0
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        w.append("frames", {"frame": i, "seq": i, "n_columns": 2})
        w.append("columns", {"frame": i, "y": [1.0, 2.0], "x": [float(i), float(i)]})
        w.write_counters({"received": i + 1})
        i += 1
        if w.maybe_flush():
            committed.value = i
            flushes.value += 1
        time.sleep(0.002)
    w.close()


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer process made no progress")
        time.sleep(0.01)


@pytest.fixture
def writer_process(tmp_path):
    # fork: the child starts at once, with everything already imported (no file is open yet)
    ctx = mp.get_context("fork")
    committed, flushes = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    stop = ctx.Event()
    path = tmp_path / "live.h5"
    proc = ctx.Process(target=_writer_process, args=(str(path), committed, flushes, stop),
                       daemon=True)
    proc.start()
    yield path, proc, committed, flushes, stop
    if proc.is_alive():
        proc.kill()
    proc.join(5)


def _check_consistent(run) -> int:
    frames, columns = run.frames, run.columns
    n = len(frames)
    np.testing.assert_array_equal(frames["frame"], np.arange(n))
    np.testing.assert_array_equal(columns["frame"], np.repeat(np.arange(n), 2))
    np.testing.assert_array_equal(columns["x"], np.repeat(np.arange(n), 2).astype("f4"))
    return n


def test_reader_sees_a_growing_run_while_another_process_writes(writer_process):
    path, proc, committed, flushes, stop = writer_process
    _wait_for(lambda: flushes.value >= 1)
    with open_run(path) as run:
        assert run.live and run.status == "running"
        assert run.attrs["config"] == {"demo": True}
        n1 = _check_consistent(run)
        assert n1 >= 1
        target = committed.value + 10
        _wait_for(lambda: committed.value >= target)
        run.refresh()
        n2 = _check_consistent(run)
        assert n2 >= target > n1
        assert run.counters["received"] >= n2
        stop.set()
        proc.join(20)
        assert proc.exitcode == 0
        run.refresh()
        assert not run.live and run.status == "complete"
        assert _check_consistent(run) >= n2


def test_run_survives_a_writer_killed_mid_run(writer_process):
    path, proc, committed, flushes, stop = writer_process
    _wait_for(lambda: flushes.value >= 4)
    n_flushed = committed.value
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    with open_run(path) as run:
        assert run.status == "running"
        assert _check_consistent(run) >= n_flushed
        assert run.counters["received"] >= n_flushed
        assert run.maps["occupancy"].shape == (16, 16)
