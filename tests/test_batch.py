"""Many recorded files on a real Dask LocalCluster: one row per file, failures as rows."""
import logging
from pathlib import Path

import pandas as pd

from etem.simulate.toy import make_movie, save_movie
from etem.tracker.cli import main
from etem.tracker.runfile import open_run


def test_batch_replay_on_a_local_cluster(tmp_path, capsys, caplog):
    files = []
    for seed in (1, 2, 3):
        m = make_movie(n_frames=12, shape=(128, 128), particle_radius_A=8.0, seed=seed)
        files.append(tmp_path / f"seq{seed}.h5")
        save_movie(m, files[-1])
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # an HDF5 signature, then nothing
    out = tmp_path / "out"
    rc = main(["batch", *map(str, files), str(bad), "--out", str(out), "--workers", "2", "--classical"])
    assert rc == 1  # one file failed
    table = pd.read_csv(out / "batch.csv")
    assert table["file"].tolist() == [str(f) for f in files] + [str(bad)]
    assert table["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert (table.loc[:2, "frames"] == 12).all() and (table.loc[:2, "count_processed"] == 12).all()
    assert "broken.h5" in table.loc[3, "error"]
    for f in files:  # each file's run file is complete
        with open_run(out / f"{f.stem}.run.h5") as run:
            assert run.status == "complete" and len(run.frames) == 12
    assert pd.read_parquet(out / "batch.parquet").shape[0] == 4
    assert "3 of 4 files tracked" in capsys.readouterr().out
    # Dask's start-up and shut-down notes are not shown without -v
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]


def test_batch_of_files_read_lazily_through_dask_finishes(tmp_path, capsys):
    """A HyperSpy file (read as a lazy dask array) on a cluster of one thread per worker: the
    task computed its file's chunks on the cluster it ran on and waited for a free thread
    forever (DM3 and HyperSpy files hung `etem batch`, and nothing was saved)."""
    import numpy as np
    import rsciio.hspy

    from etem.tracker.files import open_recording
    from test_files import _signal

    m = make_movie(n_frames=6, shape=(96, 96), particle_radius_A=6.0, seed=4)
    path = tmp_path / "scan.hspy"
    rsciio.hspy.file_writer(str(path), _signal(np.asarray(m.frames, np.float32), scale=m.sampling / 10,
                                               dt_s=0.04))
    with open_recording(path) as rec:
        assert rec.meta["lazy"]  # (the case at hand: chunks the task must compute)
    out = tmp_path / "out"
    assert main(["batch", str(path), "--out", str(out), "--workers", "1", "--classical"]) == 0
    table = pd.read_csv(out / "batch.csv")
    assert table["status"].tolist() == ["ok"] and table.loc[0, "count_processed"] == 6


def test_files_of_the_same_name_get_run_files_of_their_own(tmp_path):
    """`etem batch day1/movie.h5 day2/movie.h5`: two tasks wrote one movie.run.h5 at once, and
    one of them failed (HDF5 'addr overflow') or both runs were lost."""
    from etem.tracker.batch import replay_many

    class Inline:  # a client that runs each task at once, in this process
        def submit(self, fn, *args, pure=True):
            return fn(*args)

        def gather(self, futures):
            return futures

    files = []
    for day, seed in (("day1", 1), ("day2", 2)):
        (tmp_path / day).mkdir()
        files.append(tmp_path / day / "movie.h5")
        save_movie(make_movie(n_frames=4, shape=(64, 64), particle_radius_A=5.0, seed=seed), files[-1])
    table = replay_many(files, tmp_path / "out", options={"classical": True}, client=Inline())
    assert table["status"].tolist() == ["ok", "ok"], table.get("error")
    assert [Path(p).name for p in table["run_file"]] == ["movie.run.h5", "movie-2.run.h5"]
    for f, run_file in zip(files, table["run_file"]):
        with open_run(run_file) as run:
            assert run.status == "complete" and len(run.frames) == 4 and run.attrs["source"] == str(f)
