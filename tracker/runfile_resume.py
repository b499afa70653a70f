"""Going on writing a run file after its writer stopped (``etem track --resume``): the file is
checked against the writer's layout and cut back to its latest resume snapshot. The reopening
half of :class:`etem.tracker.runfile.RunWriter`."""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from .errors import FileFormatError
from .h5io import _add_missing_columns, _to_json, add_state_arrays, clear_write_flags
from .runschema import FORMAT, FORMAT_VERSION, LIBVER, STATE_CHUNK, TABLES


class RunResume:
    """:meth:`reopen` of :class:`etem.tracker.runfile.RunWriter` (its ``path``, ``counter_names``,
    ``_state_arrays``, ``_state_logs`` and the row and state bookkeeping it restores)."""

    def reopen(self, record: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Open the existing run file to go on writing it, at its latest resume snapshot.

        Rows of ``frames``, ``columns`` and the logs past the snapshot are dropped (the caller
        restores its state from the snapshot and takes it from there); a killed writer's
        "open for writing" marks are cleared (:func:`clear_write_flags`); statistics tables of
        an earlier close are removed (they are written again at the next close). The status
        goes back to ``running``, and ``record`` (what the caller says about this resume) is
        added, with the time, to the ``resumes`` attribute. Returns the snapshot's JSON
        document, or None when the file holds no snapshot yet.
        """
        if self._file is not None or self._closed:
            raise RuntimeError(f"run file {self.path}: reopen() may be called only once, instead of begin().")
        if not self.path.is_file():
            raise FileFormatError(f"run file {self.path} does not exist.")
        clear_write_flags(self.path)
        try:
            f = h5py.File(self.path, "r+", libver=LIBVER, locking=False)
        except OSError as exc:
            raise FileFormatError(f"{self.path} cannot be opened for writing: {exc}") from None
        try:
            meta = self._adopt(f)
            previous = {k: json.loads(f.attrs[k]) for k in ("status", "finished", "error", "rows_not_written",
                                                              "stats_not_written") if k in f.attrs}
            for k in ("error", "rows_not_written", "stats_not_written"):
                if k in f.attrs:
                    del f.attrs[k]
            resumes = json.loads(f.attrs["resumes"]) if "resumes" in f.attrs else []
            resumes.append({"at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                            "previous": previous, **dict(record or {})})
            f.attrs["resumes"] = _to_json("resumes", resumes)
            f.attrs["status"] = json.dumps("running")
            f.attrs["finished"] = json.dumps(None)
            for name in list(f["stats"]):
                del f["stats"][name]
        except BaseException:
            f.close()
            raise
        self._go_live(f)
        return meta

    def _adopt(self, f: h5py.File) -> dict[str, Any] | None:
        """Check an existing file against this writer's layout; cut it back to its snapshot."""
        try:
            fmt, version = json.loads(f.attrs["format"]), json.loads(f.attrs["format_version"])
        except (KeyError, TypeError, ValueError):
            fmt, version = None, None
        if fmt != FORMAT:
            raise FileFormatError(f"{self.path} is not an etem run file.")
        if version != FORMAT_VERSION:
            raise FileFormatError(f"{self.path} has run-file format version {version!r}; this etem-tracker "
                                  f"goes on writing only version {FORMAT_VERSION}.")
        names = [str(n) for n in f["counters"].attrs["names"]]
        if names != list(self.counter_names):
            if not set(names) <= set(self.counter_names):
                raise FileFormatError(f"{self.path} was written by another version of etem-tracker (its counters "
                                      "differ); it cannot be resumed by this one.")
            # written before a counter was added (a rejection reason): the new ones start at 0
            old = dict(zip(names, f["counters"][()].tolist()))
            del f["counters"]
            ds = f.create_dataset("counters", data=np.array([old.get(n, 0) for n in self.counter_names], np.int64))
            ds.attrs["names"] = list(self.counter_names)
        st = f.get("state")
        for g in [] if st is None else [st[k] for k in ("slot0", "slot1") if k in st and "meta" in st[k]]:
            add_state_arrays(g, self._state_arrays, STATE_CHUNK)  # (kept since the snapshot was written)
        wanted = [f"state/slot{i}/{n}" for i in (0, 1) for n in ("meta", *self._state_arrays)]
        wanted += [f"state/logs/{n}" for n in self._state_logs] + ["state/active"]
        if st is None or any(w not in f for w in wanted):
            raise FileFormatError(f"{self.path} holds no resume state of this version (it was written by "
                                  "another version of etem-tracker); it cannot be resumed.")
        slot, number = (int(v) for v in f["state/active"][()])
        meta = None
        rows = {"frames": 0, "columns": 0}
        logs = dict.fromkeys(self._state_logs, 0)
        if slot in (0, 1):
            meta = json.loads(bytes(f[f"state/slot{slot}/meta"][()]).decode("utf-8"))
            rows.update({t: int(meta["rows"][t]) for t in rows})
            logs.update({k: int(v) for k, v in meta["logs"].items() if k in logs})
        for table, n in rows.items():
            _add_missing_columns(f[table], TABLES[table], n)
            for name in TABLES[table]:
                ds = f[table][name]
                if ds.shape[0] < n:
                    raise FileFormatError(f"{self.path}: the resume snapshot counts {n} rows of {table!r}, "
                                          f"the file holds {ds.shape[0]}; it is damaged.")
                ds.resize((n,))
        for name, n in logs.items():
            ds = f["state/logs"][name]
            if ds.shape[0] < n:
                raise FileFormatError(f"{self.path}: the resume snapshot's {name!r} records are incomplete.")
            ds.resize((n, ds.shape[1]))
        n_sites = int(f["rows"][list(TABLES).index("sites")])
        self._rows = {"frames": rows["frames"], "columns": rows["columns"], "sites": n_sites}
        self._allocated = dict(self._rows)
        f["rows"][...] = np.array([self._rows[t] for t in TABLES], dtype=np.int64)
        self._log_rows = logs
        self._state_slot, self._state_number = slot, number
        self._counters = f["counters"][()].astype(np.int64)
        self.frame_shape = tuple(int(v) for v in json.loads(f.attrs["frame_shape"]))  # type: ignore[assignment]
        return meta
