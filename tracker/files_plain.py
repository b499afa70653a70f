"""Plain files without a microscope's metadata: HDF5 (a dataset of frames, chosen or the largest
stack in the file), NumPy .npy (memory-mapped) and .npz, and grey-level PNG/JPEG through Pillow.
:func:`etem.tracker.files.open_recording` calls these; each returns ``(data, meta, sampling,
times[, close])``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import FileFormatError
from .wire import MIN_SIDE  # (a narrower 2-D array is a table: drift, positions)

__all__ = ["read_hdf5", "read_numpy", "read_pillow"]


_PREFERRED = ("frames", "images", "data")




def _frames_like(shape: tuple[int, ...], kind: str) -> bool:
    """Whether an array of this shape and dtype kind can be frames: 2-D to 4-D, both image sides
    at least ``MIN_SIDE``, not boolean (a mask or an occupancy table)."""
    return len(shape) in (2, 3, 4) and min(shape[-2:]) >= MIN_SIDE and kind != "b"


def _pick(path: Path, shapes: dict[str, tuple[int, ...]], dataset: str | None, meta: dict[str, Any],
          unreadable: tuple[str, ...] = ()) -> str:
    """The dataset to read: ``dataset``, else the largest stack of frames (most images: a
    file's dark or gain references are a few frames beside the movie), then one named 'frames',
    'images' or 'data', then the first. Where there was a choice, ``meta['datasets']`` lists the
    candidates (``name (shape)``, the one read first). ``unreadable``: datasets shaped as frames
    that cannot be read as frames (complex, text): ``dataset`` may name one, to be told why,
    but they are not listed as a choice."""
    names = list(shapes)
    if dataset is not None:
        if dataset in unreadable:
            return dataset
        if dataset not in names:
            found = ", ".join(f"{n} ({' x '.join(map(str, shapes[n]))})" for n in names[:8])
            more = f" and {len(names) - 8} more" if len(names) > 8 else ""
            raise FileFormatError(f"{path}: no dataset {dataset!r} of frames; "
                                  + (f"those in it: {found}{more}" if names else "it holds none"))
        return dataset
    if not names:
        raise FileFormatError(f"{path}: no 2-D, 3-D or 4-D numeric dataset")

    def rank(name: str) -> tuple:
        base = name.rsplit("/", 1)[-1]
        images = 1 if len(shapes[name]) == 2 else shapes[name][0]
        return (-images, _PREFERRED.index(base) if base in _PREFERRED else len(_PREFERRED), names.index(name))

    ranked = sorted(names, key=rank)
    if len(ranked) > 1:
        meta["datasets"] = [f"{n} ({' x '.join(map(str, shapes[n]))})" for n in ranked]
    return ranked[0]


def read_hdf5(path: Path, dataset: str | None):
    import h5py

    f = h5py.File(path, "r")
    try:
        if dataset is None and _is_run_file(f):
            raise FileFormatError(f"{path} is an etem run file (what a run wrote), not a recording: read it with "
                                  "open_run() or etem export, or go on with its run with resume= (--resume); "
                                  "dataset= (--dataset) reads one of its arrays all the same")
        real: dict[str, tuple[int, ...]] = {}
        other: dict[str, tuple[int, ...]] = {}  # complex or non-numeric: picked only to say why it cannot be read

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and _frames_like(obj.shape, obj.dtype.kind):
                (real if obj.dtype.kind in "iuf" else other)["/" + name] = tuple(obj.shape)

        f.visititems(visit)
        dataset = "/" + dataset.lstrip("/") if dataset is not None else None
        meta: dict[str, Any] = {"format": "hdf5", "reader": "h5py", "lazy": True}
        ds = f[_pick(path, real or other, dataset, meta, unreadable=tuple(other) if real else ())]
        meta["dataset"] = ds.name
        sampling = ds.attrs.get("sampling")
        if sampling is None:
            meta["sampling_note"] = f"dataset {ds.name} has no 'sampling' attribute (Å/px)"
        if "fps" in ds.attrs:
            meta["fps"] = float(ds.attrs["fps"])
        for key, known in (("imaging", ("hrtem", "stem")), ("detector", ("adf", "bf"))):
            value = ds.attrs.get(key)  # how the frames were taken (etem simulate movie writes these)
            value = value.decode() if isinstance(value, bytes) else value
            if isinstance(value, str) and value.lower() in known:
                meta[key] = value.lower()
        from .files import known_material

        material = known_material(ds.attrs.get("material"))
        if material:
            meta["material"] = material
        return ds, meta, None if sampling is None else float(sampling), None, f.close
    except Exception:
        f.close()
        raise


def _is_run_file(f) -> bool:
    """Whether the open HDF5 file is a run file (:mod:`etem.tracker.runschema`: a JSON 'format'
    attribute ``"etem-run"``)."""
    import json

    from .runschema import FORMAT

    value = f.attrs.get("format")
    value = value.decode() if isinstance(value, bytes) else value
    try:
        return isinstance(value, str) and json.loads(value) == FORMAT
    except ValueError:
        return False


def read_numpy(path: Path, dataset: str | None):
    meta: dict[str, Any] = {"format": path.suffix[1:], "reader": "numpy",
                            "sampling_note": f"a {path.suffix} file records no pixel size"}
    if path.suffix.lower() == ".npy":
        meta["lazy"] = True
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False), meta, None, None
        except ValueError as exc:
            cut = _npy_truncation(path)
            if cut is None:
                raise
            raise FileFormatError(cut) from exc
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    shapes = {k: tuple(a.shape) for k, a in arrays.items() if _frames_like(a.shape, a.dtype.kind)}
    meta.update(lazy=False, dataset=_pick(path, shapes, dataset, meta))
    sampling = arrays.get("sampling")
    if sampling is not None and sampling.size == 1:
        meta.pop("sampling_note")
        return arrays[meta["dataset"]], meta, float(sampling), None
    return arrays[meta["dataset"]], meta, None, None


def read_pillow(path: Path):
    """A grey-level PNG or JPEG (8 or 16 bit; a multi-frame one as a stack); a colour image is
    refused, unless its channels are equal (grey saved as RGB)."""
    from PIL import Image

    frames = []
    with Image.open(path) as im:
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(_grey(path, im))
    if len({f.shape for f in frames}) > 1:
        raise FileFormatError(f"{path}: its {len(frames)} frames differ in size")
    meta = {"format": path.suffix[1:].lower(), "reader": "pillow", "lazy": False,
            "sampling_note": f"a {path.suffix} image records no pixel size; pass the sampling in Å/px"}
    return frames[0] if len(frames) == 1 else np.stack(frames), meta, None, None


def _grey(path: Path, im: Any) -> np.ndarray:
    if im.mode in ("L", "I", "F") or im.mode.startswith("I;16"):
        return np.array(im)
    if im.mode == "1":
        return np.array(im, np.uint8)
    rgb = np.array(im.convert("RGB"))
    if im.mode in ("LA", "P", "PA", "RGB", "RGBA") and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # grey, stored as colour
    raise FileFormatError(f"{path}: a colour image ({im.mode}); frames must be grey-level: save it as 8- or "
                          "16-bit greyscale")


def _npy_truncation(path: Path) -> str | None:
    """Where a .npy file whose header is intact breaks off, or None if it is not cut short."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fh)
            offset = fh.tell()
    except Exception:  # noqa: BLE001 - not even the header: the caller says so
        return None
    have, need = path.stat().st_size - offset, int(np.prod(shape)) * dtype.itemsize
    if have >= need or len(shape) < 3:
        return None
    per_frame = int(np.prod(shape[1:])) * dtype.itemsize
    return (f"{path}: truncated: {have} of {need} bytes of pixels; it breaks off in frame "
            f"{have // per_frame} of {shape[0]}")
