"""The run file: one HDF5 file per run, written while the run goes on and readable meanwhile.

Its layout (groups, tables and their schemas, the ``state`` group a resumed run goes on from) is
described and defined in :mod:`etem.tracker.runschema`.

The writer switches the file to SWMR (single writer, multiple readers) mode once everything is
created, so other processes can read it while it grows, and a writer killed at any moment leaves
a file that opens and holds everything up to its last flush. Rows are buffered in memory and
written by :meth:`RunWriter.flush`; ``/rows`` is updated only after the data it counts has been
flushed, and readers never read past it.

Other programs can read a live file too: ``h5py.File(path, "r", swmr=True, locking=False)``
(re-open, or ``refresh()`` each dataset, to see new rows; read no further than ``/rows``).
Neither side takes a file lock, so that a reader left open never stops the writer from
reopening the file when it closes.

This module writes the file; :mod:`etem.tracker.run` reads it (:func:`open_run`,
:class:`Run`, also importable from here).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd

from .errors import EtemError
from .h5io import (_as_columns, _to_json, _write_frame, add_state_arrays, room_to_grow)
from .runfile_resume import RunResume
from .runschema import (COLUMNS, FORMAT, FORMAT_VERSION, FRAMES, MAPS,  # noqa: F401 (re-exported)
                        RESERVED_ATTRS, SITES, TABLES, LIBVER, STATE_CHUNK, check_attr_keys)

if TYPE_CHECKING:
    from .run import Run, open_run

__all__ = [
    "FRAMES", "COLUMNS", "SITES", "TABLES", "FORMAT", "FORMAT_VERSION",
    "RunWriter", "RunWriteError", "Run", "open_run",
]


class RunWriteError(EtemError, OSError):
    """The run file cannot be written on (the disk is full, the file size limit is reached, an
    I/O error); the message says what the file still holds."""

_CHUNK_ROWS = {"frames": 1024, "columns": 32768, "sites": 4096}
_MAX_PENDING_ROWS = 1_000_000   # flush early rather than buffer more than this
# A write that fails half-way leaves HDF5 unable to close the file (and the process unable to
# exit cleanly), so the writer never starts one without room for it: new chunks, plus this much
# for metadata, plus a reserve for closing the file (final status, statistics tables).
_METADATA_SLACK = 256 << 10
_CLOSE_RESERVE = 1 << 20
_ABANDONED: list = []  # files HDF5 failed to write: kept, as closing them fails (noisily) again


# ---------------------------------------------------------------------------------------- writer

class RunWriter(RunResume):
    """Writes one run file incrementally.

    Parameters
    ----------
    path
        The ``.h5`` file to create.
    attrs
        The run's description (config, model card, versions …): JSON-serialisable values, stored
        as JSON-string root attributes.
    counter_names
        Names of the run's counters (received, processed, rejected:<reason> …).
    flush_interval_s
        :meth:`maybe_flush` writes buffered rows when this much time [s] has passed.
    overwrite
        Replace an existing file; otherwise an existing ``path`` raises ``FileExistsError``.
    state_arrays
        Names and dtypes of the arrays of a resume snapshot (:meth:`set_state`).
    state_logs
        Names, dtypes and widths of the append-only records of a resume snapshot.

    Notes
    -----
    Not thread-safe: one thread creates, feeds and closes a writer. Call :meth:`begin` once the
    frame shape is known (or :meth:`reopen` to go on writing a run file), then :meth:`append` /
    :meth:`replace` / :meth:`write_maps` / :meth:`write_counters` per frame and
    :meth:`maybe_flush` after each; :meth:`close` at the end (or use the writer as a context
    manager, which records ``status='failed'`` on an exception).
    """

    def __init__(self, path: str | Path, *, attrs: Mapping[str, Any],
                 counter_names: Sequence[str], flush_interval_s: float = 1.0,
                 overwrite: bool = False,
                 state_arrays: Mapping[str, Any] | None = None,
                 state_logs: Mapping[str, tuple[Any, int]] | None = None):
        self.path = Path(path)
        self.overwrite = bool(overwrite)
        self._state_arrays = {str(k): np.dtype(v) for k, v in (state_arrays or {}).items()}
        self._state_logs = {str(k): (np.dtype(d), int(w)) for k, (d, w) in (state_logs or {}).items()}
        self._state: tuple[dict, dict[str, np.ndarray], dict[str, int]] | None = None
        self._log_pending: dict[str, list[np.ndarray]] = {k: [] for k in self._state_logs}
        self._log_rows = dict.fromkeys(self._state_logs, 0)
        self._state_slot, self._state_number = -1, 0
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"run file {self.path} already exists; choose another path "
                                  "or pass overwrite=True to replace it.")
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0; got {flush_interval_s}.")
        self.flush_interval_s = float(flush_interval_s)
        self._attrs = check_attr_keys(attrs)
        self.counter_names = tuple(str(c) for c in counter_names)
        if len(set(self.counter_names)) != len(self.counter_names):
            raise ValueError(f"counter names must be unique; got {list(self.counter_names)}.")
        self._counters = np.zeros(len(self.counter_names), dtype=np.int64)
        self._counters_dirty = False
        self._maps: dict[str, np.ndarray] = {}
        self._pending: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in TABLES}
        self._n_pending = 0
        self._reset: set[str] = set()
        self._rows = dict.fromkeys(TABLES, 0)
        self._allocated = dict.fromkeys(TABLES, 0)  # rows with chunks on disk, per table
        self._full: str | None = None   # why writing stopped for want of room
        self._broken = False            # a write failed half-way: HDF5 cannot be trusted
        self._file: h5py.File | None = None
        self._closed = False
        self._last_flush = time.monotonic()
        self.frame_shape: tuple[int, int] | None = None

    # -- set-up
    def begin(self, frame_shape: tuple[int, int], sampling: float | None) -> None:
        """Create the file and everything in it, then switch it to SWMR mode."""
        if self._file is not None or self._closed:
            raise RuntimeError(f"run file {self.path}: begin() may be called only once.")
        shape = tuple(int(s) for s in frame_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"frame_shape must be (H, W) with H, W >= 1; got {frame_shape}.")
        need = 2 * 4 * shape[0] * shape[1] + _METADATA_SLACK + _CLOSE_RESERVE  # maps, metadata
        room = room_to_grow(self.path)
        if need > room:
            raise RunWriteError(f"run file {self.path}: no room to create it ({room / 2**20:.1f} MiB left on "
                                f"the disk or under the file size limit, {need / 2**20:.1f} MiB needed).")
        try:
            f = h5py.File(self.path, "w" if self.overwrite else "w-", libver=LIBVER,
                          locking=False)
        except FileExistsError:
            raise FileExistsError(f"run file {self.path} already exists; choose another path "
                                  "or pass overwrite=True to replace it.") from None
        try:
            f.attrs["format"] = json.dumps(FORMAT)
            f.attrs["format_version"] = json.dumps(FORMAT_VERSION)
            f.attrs["status"] = json.dumps("running")
            f.attrs["frame_shape"] = json.dumps(list(shape))
            f.attrs["sampling"] = json.dumps(None if sampling is None else float(sampling))
            f.attrs["created"] = json.dumps(_dt.datetime.now(_dt.timezone.utc).isoformat())
            f.attrs["finished"] = json.dumps(None)
            for key, text in self._attrs.items():
                f.attrs[key] = text
            for table, schema in TABLES.items():
                g = f.create_group(table)
                g.attrs["columns"] = list(schema)
                for name, dtype in schema.items():
                    g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                     chunks=(_CHUNK_ROWS[table],))
            rows = f.create_dataset("rows", data=np.zeros(len(TABLES), dtype=np.int64))
            rows.attrs["tables"] = list(TABLES)
            maps = f.create_group("maps")
            for name in MAPS:
                maps.create_dataset(name, data=np.full(shape, np.nan, dtype=np.float32))
            counters = f.create_dataset("counters", data=self._counters)
            counters.attrs["names"] = list(self.counter_names)
            f.create_group("stats")
            self._create_state(f)
        except BaseException:
            f.close()
            raise
        self._go_live(f)
        self.frame_shape = shape  # type: ignore[assignment]

    def _go_live(self, f: h5py.File) -> None:
        """Take the file set up by :meth:`begin` or :meth:`reopen` as this writer's: its writer
        recorded, flushed and switched to SWMR, so that readers may open it (closed on failure)."""
        try:
            f.attrs["writer"] = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
            f.flush()
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self._file = f
        self._last_flush = time.monotonic()

    def _create_state(self, f: h5py.File) -> None:
        st = f.create_group("state")
        st.create_dataset("active", data=np.array([-1, 0], dtype=np.int64))
        for slot in ("slot0", "slot1"):
            g = st.create_group(slot)
            g.create_dataset("meta", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(STATE_CHUNK,))
            add_state_arrays(g, self._state_arrays, STATE_CHUNK)
        logs = st.create_group("logs")
        for name, (dtype, width) in self._state_logs.items():
            logs.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=dtype,
                                chunks=(max(STATE_CHUNK // width, 1), width))

    def _check_open(self) -> h5py.File:
        if self._file is None:
            state = "closed" if self._closed else "not begun; call begin() first"
            raise RuntimeError(f"run file {self.path} is {state}.")
        return self._file

    @staticmethod
    def _schema(table: str) -> dict[str, np.dtype]:
        if table not in TABLES:
            raise ValueError(f"table must be one of {list(TABLES)}; got {table!r}.")
        return TABLES[table]

    # -- feeding
    def append(self, table: str, data: pd.DataFrame | Mapping[str, Any]) -> None:
        """Buffer rows for ``table``; columns not given get -1 (integers) or NaN (floats)."""
        self._check_open()
        block = _as_columns(table, data, self._schema(table))
        self._pending[table].append(block)
        self._n_pending += len(next(iter(block.values())))
        if self._n_pending >= _MAX_PENDING_ROWS:
            self.flush()

    def replace(self, table: str, data: pd.DataFrame | Mapping[str, Any]) -> None:
        """Replace the whole of ``table`` (the sites table) at the next flush."""
        self._check_open()
        block = _as_columns(table, data, self._schema(table))
        self._n_pending -= sum(len(next(iter(b.values()))) for b in self._pending[table])
        self._pending[table] = [block]
        self._n_pending += len(next(iter(block.values())))
        self._reset.add(table)

    def write_maps(self, occupancy: np.ndarray | None, events: np.ndarray | None) -> None:
        """Set the occupancy and event maps (``[H, W]``; ``None`` leaves one unchanged)."""
        self._check_open()
        for name, arr in zip(MAPS, (occupancy, events)):
            if arr is None:
                continue
            arr = np.array(arr, dtype=np.float32, copy=True)
            if arr.shape != self.frame_shape:
                raise ValueError(f"{name} map must have the frame shape {self.frame_shape}; "
                                 f"got {arr.shape}.")
            self._maps[name] = arr

    def write_counters(self, counters: Mapping[str, int]) -> None:
        """Set counters by name; names not given keep their values."""
        self._check_open()
        unknown = [k for k in counters if k not in self.counter_names]
        if unknown:
            raise ValueError(f"unknown counter(s) {unknown}; declared ones are "
                             f"{list(self.counter_names)}.")
        for k, v in counters.items():
            self._counters[self.counter_names.index(k)] = int(v)
        self._counters_dirty = True

    def set_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                  logs: Mapping[str, np.ndarray] | None = None) -> None:
        """A resume snapshot, written with the next flush: it stands for the rows given so far.

        ``meta`` is JSON-serialisable; ``arrays`` has one array (any shape) per name declared in
        ``state_arrays``; ``logs`` holds the rows ``[n, width]`` added to each append-only record
        since the last call. Only the latest snapshot is kept until the flush; logs accumulate.
        """
        self._check_open()
        missing = sorted(set(self._state_arrays) - set(arrays))
        unknown = sorted(set(arrays) - set(self._state_arrays)) + sorted(set(logs or {}) - set(self._state_logs))
        if missing or unknown:
            raise ValueError(f"state arrays: missing {missing}, unknown {unknown}.")
        out = {}
        for name, dtype in self._state_arrays.items():
            out[name] = np.array(arrays[name], dtype=dtype, copy=True)
        for name, rows in (logs or {}).items():
            dtype, width = self._state_logs[name]
            rows = np.asarray(rows, dtype=dtype).reshape(-1, width)
            if len(rows):
                self._log_pending[name].append(rows)
        doc = json.loads(_to_json("state", dict(meta)))
        self._state = (doc, out, {t: self.n_rows(t) for t in ("frames", "columns")})

    def read(self, table: str) -> pd.DataFrame:
        """All rows of ``table`` written so far (what is buffered is flushed first)."""
        from .run import _read_group

        f = self._check_open()
        self.flush()
        return _read_group(f[table], self._rows[table])

    def n_rows(self, table: str) -> int:
        """Rows of ``table`` written or buffered so far."""
        self._schema(table)
        start = 0 if table in self._reset else self._rows[table]
        return start + sum(len(next(iter(b.values()))) for b in self._pending[table])

    # -- writing
    def _room(self) -> int:
        return room_to_grow(self.path)

    def _bytes_needed(self) -> int:
        """Disk space the next flush takes at most: the chunks it adds, and metadata."""
        need = _METADATA_SLACK
        if self._state is not None:
            need += sum(a.nbytes + STATE_CHUNK * a.itemsize for a in self._state[1].values()) + 2 * STATE_CHUNK
            need += sum(b.nbytes for blocks in self._log_pending.values() for b in blocks)
            need += len(self._log_pending) * STATE_CHUNK * 8
        for table, schema in TABLES.items():
            blocks = self._pending[table]
            if not blocks:
                continue
            rows = (0 if table in self._reset else self._rows[table])
            rows += sum(len(next(iter(b.values()))) for b in blocks)
            chunk = _CHUNK_ROWS[table]
            new_chunks = math.ceil(rows / chunk) - math.ceil(self._allocated[table] / chunk)
            if new_chunks > 0:
                need += new_chunks * chunk * sum(dt.itemsize for dt in schema.values())
        return need

    def _discard_pending(self) -> int:
        """Drop the buffered table rows (there is no room for them); returns how many."""
        n = sum(len(next(iter(b.values()))) for blocks in self._pending.values() for b in blocks)
        self._pending = {t: [] for t in TABLES}
        self._reset.clear()
        self._n_pending = 0
        self._state = None  # the file keeps the snapshot that matches its rows
        self._log_pending = {k: [] for k in self._state_logs}
        return n

    def flush(self) -> None:
        """Write everything buffered, flush it to disk, then commit the new row counts.

        Raises :class:`RunWriteError`, having written nothing, when the disk (or the file size
        limit) leaves no room for it: the file then still holds everything up to the last
        flush, and :meth:`close` closes it cleanly.
        """
        f = self._check_open()
        if self._broken or self._full:
            raise RunWriteError(f"run file {self.path}: {self._full or 'a write failed'}; "
                                "nothing more is written to it.")
        need, room = self._bytes_needed() + _CLOSE_RESERVE, self._room()
        if need > room:
            self._full = (f"no room to go on writing ({room / 2**20:.1f} MiB left on the disk or under "
                          f"the file size limit, {need / 2**20:.1f} MiB needed)")
            raise RunWriteError(f"run file {self.path}: {self._full}; the run was stopped, and the file "
                                "keeps what was written up to now.")
        try:
            self._write(f)
        except (OSError, RuntimeError) as exc:
            self._broken = True
            raise RunWriteError(f"run file {self.path}: writing failed ({exc}); the file may hold "
                                f"only what was flushed before, {self._rows['frames']} frames.") from exc

    def _write(self, f: h5py.File) -> None:
        for table, schema in TABLES.items():
            blocks = self._pending[table]
            if not blocks and table not in self._reset:
                continue
            start = 0 if table in self._reset else self._rows[table]
            n_new = sum(len(next(iter(b.values()))) for b in blocks)
            group = f[table]
            for name in schema:
                ds = group[name]
                if ds.shape[0] != start + n_new:
                    ds.resize((start + n_new,))
                if n_new:
                    parts = [b[name] for b in blocks]
                    ds[start:start + n_new] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._rows[table] = start + n_new
            self._allocated[table] = max(self._allocated[table], start + n_new)
            self._pending[table] = []
        self._reset.clear()
        self._n_pending = 0
        for name, arr in self._maps.items():
            f["maps"][name][...] = arr
        self._maps = {}
        if self._counters_dirty:
            f["counters"][...] = self._counters
            self._counters_dirty = False
        slot = self._write_state(f)
        f.flush()                     # data first ...
        f["rows"][...] = np.array([self._rows[t] for t in TABLES], dtype=np.int64)
        if slot is not None:
            self._state_number += 1
            f["state/active"][...] = np.array([slot, self._state_number], dtype=np.int64)
            self._state_slot = slot
        f.flush()                     # ... then the counts that make it visible
        self._last_flush = time.monotonic()

    def _write_state(self, f: h5py.File) -> int | None:
        """Write the pending snapshot into the slot not in use; returns that slot (None: none)."""
        if self._state is None or "state" not in f:
            return None
        meta, arrays, rows = self._state
        slot = 0 if self._state_slot != 0 else 1
        g = f["state"][f"slot{slot}"]
        shapes = {}
        for name, arr in arrays.items():
            flat = arr.reshape(-1)
            ds = g[name]
            ds.resize((flat.size,))
            if flat.size:
                ds[:] = flat
            shapes[name] = list(arr.shape)
        for name, blocks in self._log_pending.items():
            if not blocks:
                continue
            new = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            ds = f["state/logs"][name]
            start = self._log_rows[name]
            ds.resize((start + len(new), ds.shape[1]))
            ds[start:] = new
            self._log_rows[name] = start + len(new)
            self._log_pending[name] = []
        doc = json.dumps({**meta, "rows": rows, "logs": dict(self._log_rows), "shapes": shapes}).encode("utf-8")
        ds = g["meta"]
        ds.resize((len(doc),))
        ds[:] = np.frombuffer(doc, dtype=np.uint8)
        self._state = None
        return slot

    def n_rows_pending(self) -> int:
        """Rows given but not yet flushed."""
        return self._n_pending

    def due(self) -> bool:
        """Whether ``flush_interval_s`` has passed since the last flush."""
        return time.monotonic() - self._last_flush >= self.flush_interval_s

    def maybe_flush(self) -> bool:
        """Flush when ``flush_interval_s`` has passed since the last flush; True if it did."""
        if time.monotonic() - self._last_flush < self.flush_interval_s:
            return False
        self.flush()
        return True

    def close(self, *, status: str = "complete",
              extra_tables: Mapping[str, pd.DataFrame] | None = None,
              extra_attrs: Mapping[str, Any] | None = None) -> None:
        """Flush, leave SWMR mode, store ``extra_tables`` under ``stats/`` and the final attrs.

        Closing twice, or closing a writer that never began, does nothing.
        """
        if self._closed:
            return
        extra_tables = dict(extra_tables or {})
        for name in extra_tables:
            if not isinstance(name, str) or not name or "/" in name or name in TABLES:
                raise ValueError(f"stats table name {name!r} must be a non-empty string without "
                                 f"'/' and not one of {list(TABLES)}.")
        final_attrs = check_attr_keys(extra_attrs or {})
        if self._file is None:
            self._closed = True
            return
        if self._broken:
            # HDF5 failed a write: closing would only fail again; leave the file as it is.
            _ABANDONED.append(self._file)
            self._file = None
            self._closed = True
            return
        try:
            if self._full is not None and self._bytes_needed() + _CLOSE_RESERVE // 2 > self._room():
                lost = self._discard_pending()  # the maps and counters are rewritten in place
                final_attrs["rows_not_written"] = json.dumps(lost)
            if self._full is not None:
                final_attrs.setdefault("error", json.dumps(f"run file {self.path}: {self._full}"))
                self._write(self._file)
            else:
                self.flush()
        finally:
            self._file.close()
            self._file = None
            self._closed = True
        with h5py.File(self.path, "r+", libver=LIBVER, locking=False) as f:
            stats = f.require_group("stats")
            if self._full is not None:
                size = sum(int(df.memory_usage(deep=True).sum()) + 65536 for df in extra_tables.values())
                if size + _METADATA_SLACK > self._room():
                    final_attrs["stats_not_written"] = json.dumps(sorted(extra_tables))
                    extra_tables = {}
            for name, df in extra_tables.items():
                if name in stats:
                    del stats[name]
                _write_frame(stats, name, df)
            for key, text in final_attrs.items():
                f.attrs[key] = text
            f.attrs["finished"] = json.dumps(_dt.datetime.now(_dt.timezone.utc).isoformat())
            f.attrs["status"] = json.dumps(str(status))

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._file is not None:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
            self.close(status=status, extra_attrs={"error": f"{exc_type.__name__}: {exc}"})
        else:
            self._closed = True


def __getattr__(name: str) -> Any:
    # The reader lives in .run, which imports the schemas above; it is loaded on first use so
    # that either module can be imported first.
    if name in ("Run", "open_run"):
        from . import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
