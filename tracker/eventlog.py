"""Append-only tables of integer rows: the site records a run keeps for its statistics.

A run logs every flip, hop, class change and residence run it finds, and keeps them until the
run ends (the statistics, the dashboard's per-site timelines and the resume snapshots read
them). As Python lists of tuples they cost 100-170 bytes a row; an :class:`EventLog` keeps them
in one int64 array that doubles as it fills: 8 bytes a field, 24 a flip. Rows are never changed
once appended, so a view of the first ``n`` rows (:meth:`EventLog.rows`) stays valid while the
log grows, in whatever thread reads it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["EventLog"]


class EventLog:
    """Rows of ``width`` int64 fields, appended one at a time (:meth:`append`), as tuples
    (:meth:`extend`) or as columns (:meth:`add`). ``log[i:j]`` and ``np.asarray(log)`` give
    arrays of shape ``(rows, width)``; iterating gives tuples of ints."""

    __slots__ = ("width", "_a", "_n")

    def __init__(self, width: int, rows: Iterable[Sequence[int]] | np.ndarray | None = None) -> None:
        self.width = int(width)
        self._a = np.zeros((16, self.width), np.int64)
        self._n = 0
        if rows is not None:
            self.extend(rows)

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __repr__(self) -> str:
        return f"EventLog(width={self.width}, rows={self._n})"

    @property
    def nbytes(self) -> int:
        """Bytes held (the array's room, filled or not)."""
        return self._a.nbytes

    def _room(self, k: int) -> np.ndarray:
        need = self._n + k
        if need > len(self._a):
            a = np.zeros((max(need, 2 * len(self._a)), self.width), np.int64)
            a[: self._n] = self._a[: self._n]
            self._a = a  # (views of the old array keep the rows they show)
        return self._a

    def append(self, row: Sequence[int]) -> None:
        """One row (a tuple of ``width`` ints)."""
        a = self._room(1)
        a[self._n] = row
        self._n += 1

    def extend(self, rows: Iterable[Sequence[int]] | np.ndarray) -> None:
        """Rows given as a 2-D array or as tuples (an empty iterable adds none)."""
        r = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), np.int64)
        if r.size == 0:
            return
        r = r.reshape(-1, self.width)
        a = self._room(len(r))
        a[self._n : self._n + len(r)] = r
        self._n += len(r)

    def add(self, *columns: np.ndarray | int) -> None:
        """Rows given by column: arrays of one length, and scalars repeated along them (the
        length is the arrays'; none adds no rows)."""
        n = max((len(c) for c in columns if np.ndim(c)), default=0)
        if n == 0:
            return
        a = self._room(n)
        for j, c in enumerate(columns):
            a[self._n : self._n + n, j] = c
        self._n += n

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start`` to ``stop`` (default: all so far), a read-only view."""
        v = self._a[: self._n][start:stop]
        v.flags.writeable = False
        return v

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("an EventLog is read by slices (log[i:j]) or rows(); a row is log[i:i+1]")
        return self.rows()[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        v = self.rows()
        return v.astype(dtype) if dtype is not None and dtype != v.dtype else (v.copy() if copy else v)

    def __iter__(self):
        return iter(map(tuple, self.rows().tolist()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventLog):
            return self.width == other.width and np.array_equal(self.rows(), other.rows())
        return NotImplemented

    __hash__ = None  # (mutable)
