"""napari reader (npe2): a run file as its image stack, a Points layer per class and a Tracks layer;
the images ``etem find`` reads as an image layer.

napari is an optional extra (``pip install 'etem-tracker[napari]'``); this module needs only
numpy and the run file, so the layers can be built and tested without a display. ``etem view
RUN.h5`` starts napari with them. The manifest is ``napari.yaml`` beside this module.

A run file holds tables, not images: the image stack is read from the recording the run came
from (the run's ``source`` attribute, a file path), when that file is still there; otherwise
the layers come without an image. Coordinates are pixels (napari's ``scale`` carries the
sampling in Å when the run knows it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["napari_get_reader", "read_run", "read_image"]

LayerData = tuple[Any, dict[str, Any], str]
_IMAGE_SUFFIXES = (".tif", ".tiff", ".dm3", ".dm4", ".emd", ".ser", ".mrc", ".npy", ".hspy")
_COLOURS = ("red", "cyan", "yellow", "magenta", "lime", "orange")


def _is_run(path: Path) -> bool:
    import h5py

    from .runfile import FORMAT

    try:
        with h5py.File(path, "r", locking=False) as f:
            tag = f.attrs.get("format")
    except OSError:
        return False
    if isinstance(tag, bytes):
        tag = tag.decode(errors="replace")
    return isinstance(tag, str) and tag.strip('"') == FORMAT


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The npe2 reader hook: a reader for a run file or an image ``etem find`` reads, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() in (".h5", ".hdf5") and _is_run(p):
        return read_run
    if p.suffix.lower() in _IMAGE_SUFFIXES + (".h5", ".hdf5"):
        return read_image
    return None


def read_image(path: str | Path) -> list[LayerData]:
    """An image file (or stack) as one image layer."""
    from .files import open_recording

    rec = open_recording(path)
    stack = np.stack([np.asarray(f.image) for f in rec.iter_frames()])
    meta: dict[str, Any] = {"name": Path(path).name}
    if rec.sampling:
        meta["scale"] = (1.0,) * (stack.ndim - 2) + (rec.sampling, rec.sampling)
    return [(stack, meta, "image")]


def read_run(path: str | Path) -> list[LayerData]:
    """A run file as layers: the image stack (when its recording is found), Points per class, Tracks."""
    from .frames import class_label
    from .runfile import open_run

    layers: list[LayerData] = []
    with open_run(path) as run:
        cols = run.columns
        sampling = run.sampling
        source = run.attrs.get("source")
        classes = run.class_names
    scale = (1.0, sampling, sampling) if sampling else (1.0, 1.0, 1.0)
    if source and "://" not in str(source) and Path(source).is_file():
        (stack, meta, kind), = read_image(source)
        meta.update(name=f"{Path(source).name}", scale=scale if stack.ndim == 3 else meta.get("scale"))
        layers.append((stack, meta, kind))
    for i, (cls, g) in enumerate(cols.groupby("cls", sort=True)):
        name = class_label(classes, cls)
        pts = g[["frame", "y", "x"]].to_numpy(float)
        layers.append((pts, {"name": f"columns: {name}", "scale": scale, "size": 4, "face_color": "transparent",
                             "border_color": _COLOURS[i % len(_COLOURS)],
                             "properties": {"prob": g["prob"].to_numpy(), "site": g["site"].to_numpy(),
                                            **({"intensity": g["intensity"].to_numpy()} if "intensity" in g else {})}},
                       "points"))
    linked = cols[cols["particle"] >= 0]
    if len(linked):
        tracks = linked[["particle", "frame", "y", "x"]].sort_values(["particle", "frame"]).to_numpy(float)
        layers.append((tracks, {"name": "tracks", "scale": scale, "tail_length": 10}, "tracks"))
    return layers
