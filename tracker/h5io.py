"""HDF5 helpers of the run file: JSON attributes, typed table columns, clearing the
"open for writing" marks a killed writer leaves in the superblock, and the room a file may
still grow by."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .errors import ConfigError, FileFormatError

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, _dt.date)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(key: str, value: Any) -> str:
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run attribute {key!r} cannot be stored as JSON: {exc}") from None


def _sentinel(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return -1
    return b""


def _add_missing_columns(group: h5py.Group, schema: Mapping[str, np.dtype], n: int) -> None:
    """Give a table of a file written before some of its columns were added those columns, ``n``
    rows of -1 (integers) or NaN (floats), so that a run resumed by this version goes on."""
    missing = [name for name in schema if name not in group]
    for name in missing:
        dtype = schema[name]
        group.create_dataset(name, data=np.full(n, _sentinel(dtype), dtype=dtype), maxshape=(None,),
                             chunks=group[next(iter(group.attrs["columns"]))].chunks)
    if missing:
        group.attrs["columns"] = list(schema)


def add_state_arrays(group: h5py.Group, arrays: Mapping[str, Any], chunk: int) -> None:
    """Give a resume snapshot's ``group`` each array of ``arrays`` (name: dtype) it lacks, empty
    and growable: a snapshot written before an array was kept is restored with it zero."""
    for name, dtype in arrays.items():
        if name not in group:
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,))


def _coerce(table: str, name: str, values: Any, dtype: np.dtype, n: int) -> np.ndarray:
    """``values`` as a new 1-D array of ``dtype`` and length ``n``; NaN in int columns -> -1."""
    if isinstance(values, (pd.Series, pd.api.extensions.ExtensionArray)) and not isinstance(values.dtype, np.dtype):
        # pandas extension dtypes (Int64, Float64 …): missing values become the sentinel.
        values = (values.to_numpy(dtype=dtype) if not values.isna().any()
                  else values.to_numpy(dtype=object, na_value=_sentinel(dtype)))
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    elif arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{table}.{name}: expected {n} values, got an array of shape {arr.shape}.")
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        arr = np.where(np.isfinite(arr), arr, -1)
    try:
        return arr.astype(dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{table}.{name}: cannot convert {arr.dtype} to {dtype}: {exc}") from None


def _frame_columns(df: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame's columns by name as arrays (NumPy, or pandas extension arrays), without the
    Series pandas builds for each column it hands out (about 10 µs each, per frame: the run
    file takes a table of every frame's columns)."""
    get = getattr(df, "_get_column_array", None)  # pandas' own, not public: items() where it is gone
    if get is None:
        return {str(c): s for c, s in df.items()}
    return {str(c): get(i) for i, c in enumerate(df.columns)}


def _as_columns(table: str, data: Any, schema: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """A DataFrame or dict of arrays/scalars as a full row block of ``schema``."""
    if isinstance(data, pd.DataFrame):
        given = _frame_columns(data)
        n = len(data)
    elif isinstance(data, Mapping):
        given = {str(k): v for k, v in data.items()}
        lengths = {len(v) for v in given.values() if np.ndim(v) == 1}
        if len(lengths) > 1:
            raise ValueError(f"{table}: columns have different lengths {sorted(lengths)}.")
        n = lengths.pop() if lengths else 1
    else:
        raise TypeError(f"{table}: expected a DataFrame or a dict of arrays, "
                        f"got {type(data).__name__}.")
    unknown = [c for c in given if c not in schema]
    if unknown:
        raise ValueError(f"{table}: unknown column(s) {unknown}; valid ones are {list(schema)}.")
    out = {}
    for name, dtype in schema.items():
        if name in given:
            out[name] = _coerce(table, name, given[name], dtype, n)
        else:
            out[name] = np.full(n, _sentinel(dtype), dtype=dtype)
    return out


def _write_frame(group: h5py.Group, name: str, df: pd.DataFrame) -> None:
    """Store an arbitrary DataFrame: numbers as datasets, everything else as UTF-8 strings."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"stats table {name!r} must be a DataFrame, got {type(df).__name__}.")
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names) or any("/" in c or not c for c in names):
        raise ValueError(f"stats table {name!r}: column names must be unique, non-empty and "
                         f"free of '/'; got {names}.")
    g = group.create_group(name)
    g.attrs["columns"] = names
    for col, key in zip(names, df.columns):
        s = df[key]
        if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
            g.create_dataset(col, data=s.to_numpy(dtype=bool))
        elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            if isinstance(s.dtype, np.dtype):
                arr = s.to_numpy()
            elif s.isna().any():
                arr = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                arr = s.to_numpy(dtype=s.dtype.numpy_dtype)
            g.create_dataset(col, data=arr)
        else:
            text = np.array(["" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                             for v in s], dtype=object)
            g.create_dataset(col, data=text, dtype=h5py.string_dtype("utf-8"))


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    m = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m    # noqa: E702
        b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m    # noqa: E702
        c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m    # noqa: E702
        a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m   # noqa: E702
        b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m   # noqa: E702
        c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m    # noqa: E702
        i += 12
    if n == i:
        return c
    tail = data[i:] + bytes(12 - (n - i))
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - rot(b, 14)) & m   # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & m   # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & m   # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & m   # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & m    # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & m   # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & m   # noqa: E702
    return c


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def clear_write_flags(path: str | Path) -> bool:
    """Mark a run file whose writer died as closed, so that it can be opened for writing again.

    A file written in SWMR mode carries "open for writing" flags in its superblock (version 2
    or 3) until its writer closes it; HDF5 refuses to open it for writing while they are set
    (the ``h5clear`` tool clears them). This clears them and, as ``h5clear --increment`` does,
    moves the end-of-allocation mark to the end of the file so that nothing written after the
    last flush is overwritten. The superblock's checksum is verified before and recomputed
    after. Returns True when there were flags to clear.
    """
    path = Path(path)
    with open(path, "r+b") as fh:
        for base in (0, 512, 1024, 2048, 4096, 8192):
            fh.seek(base)
            head = fh.read(12)
            if head[:8] == _HDF5_SIGNATURE:
                break
        else:
            raise FileFormatError(f"{path} is not an HDF5 file.")
        version, size_offsets = head[8], head[9]
        if version < 2 or head[11] == 0:
            return False
        if size_offsets not in (2, 4, 8):
            raise FileFormatError(f"{path}: unexpected HDF5 superblock (offsets of {size_offsets} bytes).")
        n = 12 + 4 * size_offsets
        fh.seek(base)
        block = bytearray(fh.read(n + 4))
        if len(block) != n + 4 or _lookup3(bytes(block[:n])) != int.from_bytes(block[n:], "little"):
            raise FileFormatError(f"{path}: the HDF5 superblock's checksum does not match; the file is damaged.")
        o = size_offsets
        base_addr = int.from_bytes(block[12:12 + o], "little")
        eoa = int.from_bytes(block[12 + 2 * o:12 + 3 * o], "little")
        size = path.stat().st_size - base_addr
        block[11] = 0
        block[12 + 2 * o:12 + 3 * o] = max(eoa, size).to_bytes(o, "little")
        block[n:] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
        fh.seek(base)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def make_folder_for(path: str | Path) -> None:
    """Create the folder an output file goes in (``runs/today`` for ``runs/today/run.h5``) and
    check that it can be written, so that a path that cannot be made is a clear error before any
    work rather than a traceback after it."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create its folder {folder} ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: its folder {folder} cannot be written to")


def room_to_grow(path: str | Path) -> int:
    """Bytes the file at ``path`` (existing or not) may still grow by: the free space on its disk,
    and the process's file size limit (``RLIMIT_FSIZE``) less its present size."""
    path = Path(path)
    room = shutil.disk_usage(path.resolve().parent).free
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            room = min(room, limit - (path.stat().st_size if path.exists() else 0))
    return room
