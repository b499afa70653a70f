"""Many recorded sequences at once: a Dask task per file, results gathered into one table.

One machine replays a few files; a group with hundreds of sequences hands them to Dask
distributed, which runs here on a :class:`~distributed.LocalCluster` and on a real cluster
unchanged (a scheduler address, or dask-jobqueue's ``SLURMCluster``; see the docs)::

    etem batch runs/*.h5 --out results/ --workers 4            # a local cluster of 4 processes
    etem batch runs/*.h5 --out results/ --scheduler tcp://head:8786

Each task tracks one file through the same pipeline as ``etem replay`` (full speed), writes its
run file ``<out>/<name>.run.h5`` (``<name>-2.run.h5`` … where files of the same name, in
different folders, would share one) and returns one summary row (:func:`etem.tracker.diffusion.
summary` plus the file and its status); a file that fails gives a row with its error, and the
others go on.
"""
from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError

__all__ = ["track_file", "replay_many"]


def track_file(path: str | Path, out_dir: str | Path, options: dict[str, Any] | None = None,
               name: str | None = None) -> dict[str, Any]:
    """Track one recorded file into ``out_dir/<name>.run.h5`` (``name``: the file's stem unless
    given); one summary row (never raises)."""
    from .api import track
    from .diffusion import summary

    path, out_dir = Path(path), Path(out_dir)
    run_path = out_dir / f"{name or path.stem}.run.h5"
    row: dict[str, Any] = {"file": str(path), "run_file": str(run_path)}
    t0 = time.perf_counter()
    try:
        with _local_dask():
            res = track(path, run_path=run_path, overwrite=True, **(options or {}))
        stats = {"flips": res.flips, "hops": res.hops, "residence": res.residence}
        row.update(status="ok", **summary(res.frames, res.sites, stats, res.sampling))
        row.update({f"count_{k.replace('/', '_')}": v for k, v in res.counters.items()})
    except Exception as exc:  # a bad file is a row, not the end of the batch
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   detail=traceback.format_exc(limit=3))
    row["seconds"] = time.perf_counter() - t0
    return row


def _run_names(paths: Sequence[str | Path]) -> list[str]:
    """Each file's run file name: its stem, and where that is taken already (``a/movie.h5`` and
    ``b/movie.h5``: two tasks writing one file) ``<stem>-2``, ``<stem>-3`` …"""
    names: list[str] = []
    for p in paths:
        stem = name = Path(p).stem
        n = 1
        while name in names:
            n += 1
            name = f"{stem}-{n}"
        names.append(name)
    return names


def _local_dask():
    """A file's own lazy (dask) arrays are computed in the task's thread: a reader that returns
    dask arrays (rsciio's DM, HyperSpy, EMD, MRC) would otherwise hand its chunks to the
    cluster the task runs on, and wait for a thread there forever (one thread per worker)."""
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    return dask.config.set(scheduler="synchronous")


def replay_many(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    options: dict[str, Any] | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    client=None,
) -> pd.DataFrame:
    """Track every file, one Dask task each; returns one row per file (in the given order).

    Parameters
    ----------
    options
        Keyword arguments of :func:`etem.tracker.track` (``sampling``, ``classical``,
        ``config``, ``material`` …), the same for every file.
    scheduler
        A Dask scheduler address; None starts a LocalCluster of ``n_workers`` processes.
    client
        An existing ``distributed.Client`` (overrides ``scheduler``).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError("etem batch runs on Dask's distributed, which is not installed: "
                          "pip install 'etem-tracker[simulate]' (or distributed)") from exc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Dask's own start-up and shut-down notes (a few dozen INFO lines) only where asked for (-v)
    dask_log = logging.getLogger("distributed")
    dask_level = dask_log.level
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        dask_log.setLevel(logging.WARNING)
    own = []
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")  # (any free port: 8787 may be taken)
            own.append(cluster)
            client = Client(cluster)
        own.insert(0, client)
    try:
        futures = [client.submit(track_file, str(p), str(out), options, name, pure=False)
                   for p, name in zip(paths, _run_names(paths))]
        rows = client.gather(futures)
    finally:
        for c in own:
            c.close()
        dask_log.setLevel(dask_level)
    table = pd.DataFrame(rows)
    return table
