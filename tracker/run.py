"""Reading a run file (see :mod:`etem.tracker.runfile` for its layout), also while it is written.

:func:`open_run` opens a file read-only in SWMR mode while its writer holds it (or if the writer
died), and plainly once it was closed; :class:`Run` reads only the rows the writer has committed.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .errors import FileFormatError
from .runschema import FORMAT, FORMAT_VERSION, LIBVER, TABLES

__all__ = ["Run", "open_run"]


# --------------------------------------------------------------------------------------- helpers

def _read_group(group: h5py.Group, n: int | None = None, start: int = 0) -> pd.DataFrame:
    names = [str(c) for c in group.attrs["columns"]]
    data = {}
    for c in names:
        ds = group[c]
        stop = ds.shape[0] if n is None else start + n
        if h5py.check_string_dtype(ds.dtype) is not None:
            data[c] = ds.asstr()[start:stop]
        else:
            data[c] = ds[start:stop]
    return pd.DataFrame(data, columns=names)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SWMR_WRITE_FLAGS = 0x01 | 0x04   # superblock v3: open for write, open for SWMR write


def _write_flags(path: Path) -> int:
    """The superblock's file-consistency flags (0 when closed cleanly or unknown).

    A file being written in SWMR mode, or whose SWMR writer died, has them set; such a file
    opens only as an SWMR reader.
    """
    with open(path, "rb") as fh:
        for offset in (0, 512, 1024, 2048, 4096):
            fh.seek(offset)
            head = fh.read(12)
            if head[:8] == _HDF5_SIGNATURE:
                return head[11] if len(head) == 12 and head[8] >= 2 else 0
    return 0


#: The tables :func:`etem.tracker.report.run_statistics` derives from a run (not in its file).
DERIVED_TABLES = ("site_kinetics", "residence_histogram", "hop_jumps", "msd", "tracks", "class_counts",
                  "site_intensity")


class _Stats(dict):
    """A run's statistics tables; a table it lacks raises a ``KeyError`` saying why."""

    missing = ""

    def __missing__(self, key):
        if key in DERIVED_TABLES:
            raise KeyError(f"{key!r} is not kept in the run file: it is derived from it, by "
                           f"etem.tracker.report.run_statistics (tables, summary = run_statistics(run); "
                           f"tables[{key!r}])")
        raise KeyError(f"{key!r}: {self.missing}" if self.missing else
                       f"{key!r}: the run's statistics tables are {sorted(self)}")


# ---------------------------------------------------------------------------------------- reader

class Run:
    """A run file opened for reading, also while its writer is still appending.

    Tables are read once and cached; :meth:`refresh` reopens the file to see what the writer
    has flushed since (and, once the writer has closed, the stats tables and final status).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self.live = False
        self.refresh()

    def _open(self) -> None:
        if self.path.is_dir():
            raise FileFormatError(f"run file {self.path} is a folder; name the run's file (RUN.h5)")
        if not self.path.is_file():
            raise FileFormatError(f"run file {self.path} does not exist.")
        # Nobody takes file locks: a reader's lock would stop the writer from reopening the
        # file when it closes (to store the stats tables and final status), and SWMR keeps
        # readers consistent without one.
        live = bool(_write_flags(self.path) & _SWMR_WRITE_FLAGS)
        try:
            f = h5py.File(self.path, "r", libver=LIBVER if live else None, swmr=live,
                          locking=False)
        except (OSError, RuntimeError) as exc:  # (h5py raises RuntimeError for some corrupt superblocks)
            raise FileFormatError(f"{self.path} is not a readable HDF5 file: {exc}") from None
        try:
            fmt = json.loads(f.attrs.get("format", "null"))
            version = json.loads(f.attrs.get("format_version", "null"))
        except (TypeError, ValueError):
            fmt, version = None, None
        except (OSError, RuntimeError, KeyError) as exc:  # (a file corrupt past its superblock)
            f.close()
            raise FileFormatError(f"{self.path} is not a readable HDF5 file: {exc}") from None
        if fmt != FORMAT:
            f.close()
            raise FileFormatError(f"{self.path} is an HDF5 file but not an etem run file "
                                  f"(its 'format' attribute is not {FORMAT!r}).")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            f.close()
            raise FileFormatError(f"{self.path} has run-file format version {version!r}; this "
                                  f"etem-tracker reads up to {FORMAT_VERSION}. Upgrade it.")
        missing = [k for k in (*TABLES, "rows", "maps", "counters") if k not in f]
        if missing:
            f.close()
            raise FileFormatError(f"{self.path} is incomplete: missing {missing}.")
        self._file, self.live = f, live

    def refresh(self) -> None:
        """Reopen the file to see everything flushed so far."""
        self.close()
        self._cache: dict[str, Any] = {}
        self._open()

    def _see_new_rows(self) -> None:
        """Let the tables' datasets show the rows the writer has flushed since they were first
        read (an SWMR reader sees a dataset as it was then), and read them again when asked."""
        if self.live:
            f = self._f
            f["rows"].refresh()
            for table in TABLES:
                for c in f[table].attrs["columns"]:
                    f[table][str(c)].refresh()
        for key in TABLES:
            self._cache.pop(key, None)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def _f(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"run file {self.path} is closed.")
        return self._file

    # -- tables
    def n_rows(self, table: str) -> int:
        """Rows of ``table`` that the writer has committed."""
        if table not in TABLES:
            raise ValueError(f"table must be one of {list(TABLES)}; got {table!r}.")
        f = self._f
        committed = int(f["rows"][list(TABLES).index(table)])
        group = f[table]  # (its own columns: a file written before a column was added lacks it)
        return min([committed, *(group[str(c)].shape[0] for c in group.attrs["columns"])])

    def read_table(self, table: str, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` of ``frames``, ``columns`` or ``sites``."""
        n = self.n_rows(table)
        stop = n if stop is None else min(stop, n)
        start = min(max(start, 0), stop)
        try:
            return _read_group(self._f[table], stop - start, start)
        except (OSError, KeyError) as exc:
            raise FileFormatError(f"{self.path}: cannot read table {table!r}: {exc}") from None

    def iter_table(self, table: str, chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """``table`` in blocks of at most ``chunk_rows`` rows (at least one block, maybe empty)."""
        n = self.n_rows(table)
        for start in range(0, max(n, 1), chunk_rows):
            yield self.read_table(table, start, start + chunk_rows)

    def _cached(self, key: str, load) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    @property
    def frames(self) -> pd.DataFrame:
        return self._cached("frames", lambda: self.read_table("frames"))

    @property
    def columns(self) -> pd.DataFrame:
        return self._cached("columns", lambda: self.read_table("columns"))

    @property
    def sites(self) -> pd.DataFrame:
        return self._cached("sites", lambda: self.read_table("sites"))

    @property
    def maps(self) -> dict[str, np.ndarray]:
        return self._cached("maps", lambda: {k: ds[()] for k, ds in self._f["maps"].items()})

    @property
    def counters(self) -> dict[str, int]:
        def load():
            ds = self._f["counters"]
            return dict(zip((str(n) for n in ds.attrs["names"]), ds[()].tolist()))
        return self._cached("counters", load)

    @property
    def stats(self) -> dict[str, pd.DataFrame]:
        """The statistics tables: ``flips``, ``hops``, ``class_changes``, ``residence``.

        Those the run's close wrote; for a run not closed (still being written, or its tracker
        killed) those of its latest resume snapshot (:func:`etem.tracker.resume.snapshot_statistics`),
        and :attr:`stats_as_of` says as of which frame. A table the file cannot give raises a
        ``KeyError`` that says why and what to do.
        """
        return self._cached("stats", self._load_stats)

    @property
    def stats_as_of(self) -> dict[str, Any] | None:
        """Where :attr:`stats` come from a resume snapshot (the run was not closed): ``last_frame``,
        ``frames`` (rows of the frames table they stand for) and ``why`` (a phrase for a reader);
        None where they are the final ones the run's close wrote (or there are none)."""
        self.stats
        return self._cache.get("stats_as_of")

    def _load_stats(self) -> dict[str, pd.DataFrame]:
        g = self._f.get("stats")
        tables = _Stats({} if g is None else {k: _read_group(v) for k, v in g.items()})
        if "flips" in tables:
            return tables
        from .resume import snapshot_statistics

        status = self.status
        try:
            found = snapshot_statistics(self)
        except FileFormatError as exc:
            tables.missing = (f"run file {self.path} holds no statistics (status {status!r}) and none can be "
                              f"computed from it: {exc}")
            return tables
        if found is None:
            tables.missing = (f"run file {self.path} holds no statistics yet: its run (status {status!r}) has "
                              "written no resume snapshot so far. Open it again after the writer's first flush "
                              "(about a second after its first frame), or once the run is closed.")
            return tables
        computed, as_of = found
        if self.n_rows("frames") < as_of["frames"]:  # tables first read before the writer's last flush
            self._see_new_rows()
        why = ("run still being written, or its tracker died: not closed" if status == "running"
               else f"run {status}: its statistics were not written at its close")
        self._cache["stats_as_of"] = {**as_of, "why": why}
        tables.update(computed)
        return tables

    @property
    def attrs(self) -> dict[str, Any]:
        """All root attributes, JSON-decoded (values that are not JSON are returned as stored)."""
        def load():
            out = {}
            for k, v in self._f.attrs.items():
                try:
                    out[k] = json.loads(v)
                except (TypeError, ValueError):
                    out[k] = v
            return out
        return self._cached("attrs", load)

    @property
    def resumes(self) -> list[dict[str, Any]]:
        """One entry per time the run was resumed (``etem track --resume``): when, from which
        frame, what was lost in between."""
        return list(self.attrs.get("resumes") or [])

    def resume_state(self) -> dict[str, Any] | None:
        """The latest resume snapshot: ``{"meta": dict, "arrays": {name: array}, "logs": {name: array}}``.

        None when the writer has not written one yet; :class:`FileFormatError` when the file
        keeps none (written by a version without resume support).
        """
        f = self._f
        try:
            found = self._state_meta()
            if found is None:
                return None
            g, meta = found
            arrays = {}
            for name, shape in meta["shapes"].items():
                size = int(np.prod(shape)) if shape else 1
                arrays[name] = g[name][:size].reshape(shape)
            logs = {name: f["state/logs"][name][:n] for name, n in meta["logs"].items()}
        except FileFormatError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise FileFormatError(f"{self.path}: cannot read the resume state: {exc}") from None
        return {"meta": meta, "arrays": arrays, "logs": logs}

    def _state_meta(self) -> tuple[h5py.Group, dict[str, Any]] | None:
        """The latest resume snapshot's group and meta (None before the first snapshot)."""
        f = self._f
        if "state" not in f or "active" not in f["state"]:
            raise FileFormatError(f"{self.path} holds no resume state (it was written by a version of "
                                  "etem-tracker that keeps none); it cannot be resumed.")
        slot = int(f["state/active"][0])
        if slot not in (0, 1):
            return None
        g = f[f"state/slot{slot}"]
        return g, json.loads(bytes(g["meta"][()]).decode("utf-8"))

    @property
    def class_names(self) -> list[str]:
        """The names of the columns' classes (``cls`` 0, 1, …): those the run learned from the
        intensities where it classed columns by them (``[locate] intensity_classes``; ``A``,
        ``B0``, ``B1`` …), else its locator's (a model's card's; ``column`` for the classical
        locator), else none (files written before they were kept, without a model)."""
        config = self.attrs.get("config") or {}
        if ((config.get("locate") or {}).get("intensity_classes")):
            classes = self._intensity_classes()
            return [] if classes is None else classes.class_names
        engine, card = self.attrs.get("engine"), self.attrs.get("model_card")
        if isinstance(engine, dict) and engine.get("class_names"):
            return [str(n) for n in engine["class_names"]]
        return [str(n) for n in card.get("class_names", [])] if isinstance(card, dict) else []

    def _intensity_classes(self):
        """The intensity classes the run learned (:class:`etem.tracker.intensity.IntensityClasses`,
        from its latest snapshot's meta alone: its arrays and logs can be large); None without."""
        try:
            found = self._state_meta()
        except (FileFormatError, OSError, KeyError, ValueError):
            found = None
        learned = found[1].get("pipeline", {}).get("intensity_classes") if found else None
        if not learned:
            return None
        from .intensity import IntensityClasses

        classes = IntensityClasses()
        classes.restore(learned)
        return classes

    @property
    def material(self) -> str | None:
        """The material in view where the run knows it: its config's, or the demo movie's."""
        from .intensity import material_in_view

        return material_in_view((self.attrs.get("config") or {}).get("material"), self.attrs.get("demo"))

    @property
    def class_labels(self) -> list[str]:
        """The class names as shown (legends, the report), beside :attr:`class_names`: MoS2's
        intensity classes with their species by the groups' intensities, ``A (Mo)``, ``B0 (S)``,
        ``B1 (S2)``, as the dashboard shows them (:func:`etem.tracker.intensity.display_names`);
        other names as they are."""
        from .intensity import display_names

        names = self.class_names
        ratios = None
        if self.material and ((self.attrs.get("config") or {}).get("locate") or {}).get("intensity_classes"):
            classes = self._intensity_classes()
            try:
                ratios = None if classes is None else classes.ratios()
            except (KeyError, TypeError, ValueError):
                ratios = None
        return display_names(names, self.material, ratios if ratios and len(ratios) == len(names) else None)

    @property
    def status(self) -> str:
        """'running' while written (or if the writer died), else what ``close`` recorded."""
        return str(self.attrs.get("status"))

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.attrs["frame_shape"])  # type: ignore[return-value]

    @property
    def sampling(self) -> float | None:
        """Pixel size [Å/px], or None where unknown."""
        return self.attrs.get("sampling")

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, status={self.status!r}, "
                f"frames={self.n_rows('frames')}, columns={self.n_rows('columns')})")


def open_here(path: str | Path) -> bool:
    """Whether this process holds the HDF5 file ``path`` open (a :class:`Run` not closed, an
    ``h5py.File``): it cannot be written again until it is closed. Told by the open file itself
    (device and inode), whatever name or working folder it was opened by."""
    import os

    try:
        want = os.stat(path)
    except OSError:
        return False
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            st = os.fstat(fid.get_vfd_handle())
        except (OSError, ValueError, RuntimeError, TypeError):  # (a driver without a file descriptor)
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False


def open_run(path: str | Path) -> Run:
    """Open a run file for reading (also one still being written); see :class:`Run`."""
    return Run(path)
