"""TIFF stacks as microscopists write them: the frames of a file written page by page (a series
per page), one cut short (its frames before the cut, and where it breaks off), an ImageJ
file's units and frame interval, and tifffile's own log lines taken in rather than shown raw.
:func:`etem.tracker.files.open_recording` reads TIFFs through these."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import files as _files
from .errors import FileFormatError


def plain_tiff(path: Path) -> dict[str, Any]:
    import tifffile

    data = tifffile.imread(path)
    names = ("frame", "y", "x")[-data.ndim:] if data.ndim <= 3 else tuple(f"axis{i}" for i in range(data.ndim))
    axes = [{"name": n, "size": int(sz), "scale": 1.0, "offset": 0.0, "units": "", "navigate": i < data.ndim - 2}
            for i, (n, sz) in enumerate(zip(names, data.shape))]
    return {"data": data, "axes": axes, "metadata": {"General": {"title": path.stem}}, "original_metadata": {}}


class TifffileSays(logging.Filter):
    """Takes what tifffile logs while a file is read (it logs what it finds broken, then reads
    on): errors into ``errors``, warnings into ``notes``; neither reaches the user's log raw
    (its debug and info lines pass, for ``-vv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.notes: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = re.sub(r"^<tifffile\.\w+ @\d+> ", "", record.getMessage())
        (self.errors if record.levelno >= logging.ERROR else self.notes).append(text)
        return False


def join_pages(path: Path, signals: list[dict], meta: dict[str, Any]) -> dict:
    """The frames of a TIFF written page by page (``TiffWriter.write`` in a loop, ``imwrite(...,
    append=True)``: a series per page) as one stack: the largest set of pages of one size and
    dtype, in file order. Pages of other sizes are left out, and said (``reader_warnings``)."""
    def key(s: dict) -> tuple:
        return (tuple(s["data"].shape[-2:]), np.dtype(s["data"].dtype).str)

    usable = [s for s in signals if _files._is_image(s) and s["data"].ndim in (2, 3)]
    groups: dict[tuple, list[dict]] = {}
    for s in usable:
        groups.setdefault(key(s), []).append(s)
    size = {k: sum(1 if s["data"].ndim == 2 else s["data"].shape[0] for s in g) for k, g in groups.items()}
    best = max(groups, key=lambda k: size[k]) if groups else None
    if best is None or len(groups[best]) < 2:
        return next(s for s in signals if _files._is_image(s))
    chosen = groups[best]
    h, w = best[0]
    out = np.empty((size[best], h, w), chosen[0]["data"].dtype)  # (filled page by page, each let go once copied)
    i = 0
    for s in chosen:
        block = s["data"] if s["data"].ndim == 3 else s["data"][None]
        out[i:i + len(block)] = block
        i += len(block)
        s["data"] = block[:0]
    left = len(signals) - len(chosen)
    taken = {id(s) for s in chosen}
    meta.update(pages_joined=len(chosen), signal=next(j for j, s in enumerate(signals) if id(s) in taken))
    if left:
        others = sorted({"x".join(map(str, s["data"].shape[-2:])) for s in signals if id(s) not in taken})
        note = (f"{left} of its {len(signals)} pages (or series) are not {h}x{w} {best[1][1:]} frames "
                f"({', '.join(others)}) and are left out; {size[best]} frames are read")
        meta.setdefault("reader_warnings", []).append(note)
        _files._warn_once(path, f"{path}: {note}")
    first = chosen[0]
    frame_axis = {"name": "frame", "size": size[best], "scale": 1.0, "offset": 0.0, "units": "", "navigate": True}
    return {**first, "data": out, "axes": [frame_axis, *[dict(a) for a in first["axes"][-2:]]]}


def cut_tiff(path: Path, errors: list[str]):
    """The frames of a TIFF stack cut short (its writer stopped, a copy broken off) that can
    still be read, with what its first page says of the calibration (ImageJ's pixel size and
    frame interval); ``meta['cut_short']`` says why it ends early."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # not even a first page
        raise FileFormatError(f"{path}: truncated or corrupt ({'; '.join(errors) or exc})") from None
    with tif:
        pages = list(tif.pages)
        first = pages[0]
        if len(first.shape) != 2:
            raise FileFormatError(f"{path}: truncated or corrupt ({'; '.join(errors)}), and its pages "
                                  f"are not grey-level images ({first.shape})")
        h, w = first.shape
        declared = None
        if tif.imagej_metadata and int(tif.imagej_metadata.get("images", 1)) > 1:
            declared = int(tif.imagej_metadata["images"])
        elif tif.shaped_metadata and len(tif.shaped_metadata[0].get("shape", ())) >= 3:
            declared = int(np.prod(tif.shaped_metadata[0]["shape"][:-2]))
        why = errors[0]
        if declared and declared > len(pages) and first.compression == 1 and first.is_contiguous:
            # the frames one after another from the first page's pixels (ImageJ, tifffile's stacks)
            dtype = np.dtype(first.dtype).newbyteorder(tif.byteorder)
            start = first.dataoffsets[0]
            n = min(declared, max(0, path.stat().st_size - start) // (h * w * dtype.itemsize))
            data = np.fromfile(path, dtype, count=n * h * w, offset=start).reshape(n, h, w).astype(dtype.newbyteorder("="))
            why = f"only {n * h * w * dtype.itemsize} of its {declared * h * w * dtype.itemsize} bytes of pixels are there"
        else:
            why = f"page {len(pages)} is missing: {errors[0]}"
            frames = []
            for j, page in enumerate(pages):
                if page.shape != first.shape:
                    continue
                try:
                    frames.append(page.asarray())
                except Exception as exc:  # noqa: BLE001 - the page the file breaks off in
                    why = f"page {j} cannot be read: {exc}"
                    break
            data = np.stack(frames) if frames else np.zeros((0, h, w), first.dtype)
        if not len(data):
            raise FileFormatError(f"{path}: truncated or corrupt: not one frame can be read ({why})")
        original = {tag.name: tag.value for tag in first.tags}
        imagej = bool(tif.imagej_metadata)
    scale = 1.0
    if imagej and isinstance(original.get("XResolution"), tuple) and original["XResolution"][0]:
        num, den = original["XResolution"]
        scale = den / num
    axes = [{"name": "frame", "size": len(data), "scale": 1.0, "offset": 0.0, "units": "", "navigate": True},
            *[{"name": n, "size": sz, "scale": scale, "offset": 0.0, "units": "", "navigate": False}
              for n, sz in (("y", h), ("x", w))]]
    meta: dict[str, Any] = {"format": "tiff", "reader": "tifffile", "lazy": False, "cut_short": why}
    if declared:
        meta["frames_declared"] = declared
    times = imagej_fixup(original, axes, meta)
    sampling = _files._sampling(axes[-2:], meta)
    if sampling is None and not imagej:
        meta["sampling_note"] = "a TIFF cut short is read without its calibration; pass the sampling in Å/px"
    signal = {"metadata": {}, "original_metadata": original}
    imaging = _files._imaging(signal)
    if imaging:
        meta["imaging"] = imaging
    _files._warn_once(path, f"{path}: cut short ({why}); the {len(data)} frame(s) before the cut are read")
    return data, meta, sampling, times


def imagej_fixup(original: dict, axes: list[dict], meta: dict) -> np.ndarray | None:
    """rsciio reads ImageJ's pixel size but keeps only the unit 'micron'; take the others too."""
    desc = original.get("ImageDescription")
    if not isinstance(desc, str) or not desc.startswith("ImageJ="):
        return None
    info = dict(line.split("=", 1) for line in desc.splitlines() if "=" in line)
    unit = info.get("unit")
    if unit and "\\u" in unit:
        unit = unit.encode().decode("unicode_escape")
    if unit and all(not a.get("units") for a in axes[-2:]):
        for a in axes[-2:]:
            a["units"] = unit
    try:
        if info.get("fps"):
            meta["fps"] = float(info["fps"])
        if info.get("finterval") and info.get("tunit", "sec") in ("s", "sec"):
            n = axes[0]["size"] if len(axes) > 2 else 1
            return np.arange(n) * float(info["finterval"])
    except ValueError:
        pass
    return None
