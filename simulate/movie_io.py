"""Toy movies on disk: :func:`save_movie` and :func:`load_movie` (exactly what was saved).

One HDF5 file per movie that any reader of a plain HDF5 stack can open (dataset ``frames`` with
a ``sampling`` attribute), with the movie's truth and parameters beside it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .toy import _TABLES, MovieTruth, ToyMovie, _table

__all__ = ["FORMAT", "save_movie", "load_movie"]

#: Format tag written to the HDF5 file's root attributes.
FORMAT = "etem-toy-movie/1"

_ARRAYS = ("occupancy", "drift", "rotation_deg")



def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in the movie's parameters")


def save_movie(movie: ToyMovie, path: str | Path) -> None:
    """Write a toy movie and its truth to one HDF5 file.

    Layout: dataset ``frames`` ``[N, H, W]`` float32, one chunk per frame, attribute
    ``sampling`` [Å/px] and ``fps`` [1/s] (so any reader of a plain HDF5 stack opens it), and, for
    an exit-wave movie, ``imaging`` (``hrtem``/``stem``), for STEM ``detector`` (``adf``) and
    the ``material`` in view (``au110``, ``mos2``); group ``truth`` with one
    subgroup per table (one dataset per column) and the arrays ``occupancy``, ``drift`` and
    ``rotation_deg``. Root attributes: ``format`` and ``params`` (JSON).
    """
    frames = np.asarray(movie.frames, dtype=np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["params"] = json.dumps(movie.params, default=_json_default)
        chunks = (1, *frames.shape[1:]) if frames.size else None
        ds = f.create_dataset("frames", data=frames, chunks=chunks)
        ds.attrs["sampling"] = float(movie.sampling)
        if movie.fps is not None:
            ds.attrs["fps"] = movie.fps
        if movie.params.get("mode") in ("hrtem", "stem"):  # how the frames were taken, as a file's metadata say
            ds.attrs["imaging"] = movie.params["mode"]
            if movie.params["mode"] == "stem":
                ds.attrs["detector"] = "adf"  # simulated STEM is annular dark field: bright columns
        if movie.params.get("material"):  # what is in view: lets a replay take the bundled model made for it
            ds.attrs["material"] = movie.params["material"]
        g = f.create_group("truth")
        for name in _TABLES:
            table: pd.DataFrame = getattr(movie.truth, name)
            tg = g.create_group(name)
            tg.attrs["columns"] = json.dumps(list(_TABLES[name]))
            for col, dtype in _TABLES[name].items():
                if dtype == "str":
                    tg.create_dataset(col, data=np.asarray(table[col], dtype=object),
                                      dtype=h5py.string_dtype("utf-8"))
                else:
                    tg.create_dataset(col, data=table[col].to_numpy(dtype=dtype))
        for name in _ARRAYS:
            g.create_dataset(name, data=getattr(movie.truth, name))


def load_movie(path: str | Path) -> ToyMovie:
    """Read a file written by :func:`save_movie` (exactly what was saved)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT or "truth" not in f:
            raise ValueError(f"{path} is not a toy movie file (no {FORMAT!r} format tag or truth group).")
        frames = f["frames"][()]
        sampling = float(f["frames"].attrs["sampling"])
        params = json.loads(f.attrs["params"])
        g = f["truth"]
        tables = {}
        for name, cols in _TABLES.items():
            data = {}
            for col, dtype in cols.items():
                ds = g[name][col]
                data[col] = ds.asstr()[()] if dtype == "str" else ds[()]
            tables[name] = _table(name, data)
        arrays = {name: g[name][()] for name in _ARRAYS}
    truth = MovieTruth(**tables, **arrays)
    return ToyMovie(frames=frames, sampling=sampling, truth=truth, params=params)
