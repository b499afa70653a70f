"""Per-frame rows kept in memory in columns: a run without a run file keeps every frame's row
(the report's trust tally and ``TrackResult.frames`` read them), and a row kept as a dict of
16 Python numbers took about 620 bytes; in arrays of the run file's dtypes it takes about 140
(measured; a live session at 10 frames/s for 8 hours: 40 MB instead of 180)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .runschema import FRAMES

__all__ = ["CompactRows"]


class CompactRows:
    """An append-only table of rows (dicts with the keys of ``schema``), held as arrays of the
    schema's dtypes in chunks of ``chunk`` rows; the rows not yet in a chunk stay dicts. A key
    the schema lacks is kept as objects. Unbounded, as the list it replaces (``maxlen`` None)."""

    maxlen = None

    def __init__(self, schema: Mapping[str, np.dtype] = FRAMES, chunk: int = 1024) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least one row, got {chunk}")
        self._schema = dict(schema)
        self._chunk = chunk
        self._pending: list[Mapping[str, Any]] = []
        self._chunks: list[pd.DataFrame] = []
        self._n = 0

    def append(self, row: Mapping[str, Any]) -> None:
        self._pending.append(row)
        self._n += 1
        if len(self._pending) >= self._chunk:
            self._chunks.append(self._table(self._pending))
            self._pending = []

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for part in self._chunks:
            yield from part.to_dict("records")
        for row in self._pending:
            yield dict(row)

    def _table(self, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        names = list(dict.fromkeys(k for r in rows for k in r))
        data = {}
        for name in names:
            values = [r.get(name, np.nan) for r in rows]
            dtype = self._schema.get(name)
            data[name] = np.asarray(values, dtype=dtype) if dtype is not None else np.asarray(values, dtype=object)
        return pd.DataFrame(data)

    def table(self) -> pd.DataFrame:
        """Every row, in the order appended."""
        parts = self._chunks + ([self._table(self._pending)] if self._pending else [])
        if not parts:
            return pd.DataFrame()
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
