"""Recorded files and watched folders as frame sources.

Microscope formats are read by rosettasciio (``rsciio``): TIFF, MRC, DigitalMicrograph
(.dm3/.dm4), EMD (Velox and Berkeley), TIA (.ser/.emi) and HyperSpy (.hspy). NumPy .npy/.npz and
plain HDF5 are read directly, and grey-level PNG and JPEG images (8 or 16 bit) through Pillow
(:mod:`etem.tracker.files_plain`).
Everything a reader raises becomes a :class:`FileFormatError` that
names the file.

Memory: .npy files are memory-mapped, plain HDF5 datasets are sliced frame by frame, and rsciio
readers are asked for lazy (dask) arrays, except TIFF: rsciio's lazy TIFF reads the whole series
for every frame, so TIFF files are loaded eagerly (``meta['lazy']`` says which). A TIFF written
page by page (a tifffile series per page) is one stack of its pages of one size; a TIFF cut
short gives the frames before the cut, then an error that says where it breaks off
(:mod:`etem.tracker.files_tiff`).

Watched folders are in :mod:`etem.tracker.watch` (:func:`watch_folder`, :class:`FolderWatcher`,
also importable from here).
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import time
import traceback
import unicodedata
import warnings
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .errors import ConfigError, FileFormatError
from .files_plain import read_hdf5, read_numpy, read_pillow
from .wire import MIN_SIDE
from .frames import Frame

if TYPE_CHECKING:
    from .watch import FolderWatcher, watch_folder  # noqa: F401  (loaded by __getattr__ below)

log = logging.getLogger("etem.files")

#: What a file may say of how its frames were taken, carried on each frame (and over the wire):
#: ``imaging`` ("stem" / "hrtem"), for STEM ``detector`` ("adf" / "bf"), and the ``material`` in
#: view (a name :func:`etem.tracker.lattice.materials` knows: "au", "mos2" …).
ACQUISITION_KEYS = ("imaging", "detector", "material")

#: File suffix -> format key.
SUFFIXES = {
    ".tif": "tiff", ".tiff": "tiff", ".mrc": "mrc", ".dm3": "dm", ".dm4": "dm", ".emd": "emd",
    ".ser": "tia", ".emi": "tia", ".hspy": "hdf5", ".hdf5": "hdf5", ".h5": "hdf5",
    ".npy": "npy", ".npz": "npz", ".png": "image", ".jpg": "image", ".jpeg": "image",
}
_RSCIIO = {"tiff": "rsciio.tiff", "mrc": "rsciio.mrc", "dm": "rsciio.digitalmicrograph",
           "emd": "rsciio.emd", "tia": "rsciio.tia", "hspy": "rsciio.hspy"}
_LAZY = importlib.util.find_spec("dask") is not None
#: Length units -> Å; time units -> s (keys after NFKC normalisation and lower-casing).
_LENGTH_A = {"m": 1e10, "mm": 1e7, "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4,
             "nm": 10.0, "å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "pm": 0.01}
_TIME_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "µs": 1e-6, "μs": 1e-6,
           "us": 1e-6, "ns": 1e-9, "min": 60.0}


def _unit_factor(units: Any, table: dict[str, float]) -> float | None:
    if not isinstance(units, str) or not units.strip():
        return None
    key = unicodedata.normalize("NFKC", units.strip()).lower()
    if key not in table and len(key) > 3 and key.endswith("s"):  # plurals: microns, seconds
        key = key[:-1]
    return table.get(key)


class Recording:
    """A recorded movie: frames read on demand from one file.

    Made by :func:`open_recording`. ``len(rec)`` is the number of frames; ``rec[i]`` is frame
    ``i`` as a new array, ``[H, W]``, or ``[F, H, W]`` for a focal series of F images.

    Attributes
    ----------
    sampling
        Pixel size [Å/px], or None where the file does not give it in a known length unit
        (``meta['sampling_note']`` says why).
    frame_times
        Acquisition time of each frame [s], where the file records it.
    meta
        ``source`` (the path), ``format``, ``reader``, ``lazy`` and what the file told about its
        signal, calibration (``raw_scale``, ``raw_units``) and frame rate (``fps``). A file cut
        short (a TIFF stack whose writer was stopped) has ``cut_short``: why its frames end
        early; :meth:`iter_frames` yields the frames before the cut, then raises
        :class:`FileFormatError` naming the frame where it breaks off.
    """

    def __init__(self, data: Any, *, source: str, focal: int = 1, sampling: float | None = None,
                 frame_times: np.ndarray | None = None, meta: dict[str, Any] | None = None,
                 close: Callable[[], None] | None = None) -> None:
        self._data = data
        self._focal = focal if data.ndim == 3 else 1
        self.sampling = sampling
        self.frame_times = frame_times
        self.meta = {"source": source, **(meta or {})}
        self._close = close

    def __len__(self) -> int:
        return 1 if self._data.ndim == 2 else int(self._data.shape[0]) // self._focal

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image [px]."""
        return tuple(int(s) for s in self._data.shape[-2:])  # type: ignore[return-value]

    @property
    def n_focal(self) -> int:
        """Images per frame (1, or F for a focal series)."""
        return int(self._data.shape[1]) if self._data.ndim == 4 else self._focal

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype as stored in the file."""
        return np.dtype(self._data.dtype)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"frame {i} out of range: {self.meta['source']} has {n} frame(s)")
        f, data = self._focal, self._data
        try:
            if data.ndim == 2:
                block = data[...]
            else:
                block = data[j * f:(j + 1) * f] if f > 1 else data[j]
            return np.array(block)
        except Exception as exc:  # a reader error surfaces here for lazy data
            raise FileFormatError(
                f"{self.meta['source']}: cannot read frame {j} of {n} (the file may be truncated or "
                f"corrupt): {exc}") from exc

    def frame_meta(self) -> dict[str, Any]:
        """What each of its frames carries of the file: its path, and how it was taken where the
        file says (``imaging``, ``detector``, ``material``)."""
        return {"source": self.meta["source"], **{k: self.meta[k] for k in ACQUISITION_KEYS if self.meta.get(k)}}

    @property
    def times(self) -> np.ndarray | None:
        """Acquisition time of each frame [s]: the file's own, else i/``meta['fps']``, else None."""
        return self._times()

    def _times(self) -> np.ndarray | None:
        if self.frame_times is not None:
            return self.frame_times
        fps = self.meta.get("fps")
        return np.arange(len(self)) / float(fps) if fps else None

    def iter_frames(self, start: int = 0, stop: int | None = None, *,
                    pace: float | None = None) -> Iterator[Frame]:
        """Yield frames ``start`` to ``stop`` (exclusive) as :class:`Frame`.

        Parameters
        ----------
        start, stop
            Frame range, as in a slice.
        pace
            None: as fast as they can be read. ``k``: k times acquisition speed (1.0 replays in
            real time), timed by the file's frame times, else by ``meta['fps']`` [1/s].
        """
        indices = range(*slice(start, stop).indices(len(self)))
        times = self._times()
        if pace is not None:
            if not pace > 0:
                raise ConfigError(f"pace must be a positive speed factor (1.0 = real time), got {pace!r}")
            if times is None:
                raise ConfigError(
                    f"{self.meta['source']} records no frame times or frame rate: give it "
                    "(--fps on the command line, fps=... in Python), or replay at full speed (no pace).")
        t0 = time.perf_counter()
        for i in indices:
            if pace is not None:
                delay = t0 + (times[i] - times[indices[0]]) / pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            image = self[i]
            yield Frame(image=image, frame=i, seq=i, sampling=self.sampling,
                        t=None if times is None else float(times[i]),
                        meta=self.frame_meta(),
                        received=time.perf_counter())
        if self.cut_short is not None and indices.stop >= len(self):
            raise FileFormatError(self.cut_short)

    @property
    def cut_short(self) -> str | None:
        """Where and why a file cut short breaks off (None for a whole file): the frames before
        it are those of ``len(self)``."""
        why = self.meta.get("cut_short")
        if not why:
            return None
        n, total = len(self), self.meta.get("frames_declared")
        of = f" of {total // self._focal}" if total else ""
        read = "frame 0 was read" if n == 1 else f"frames 0 to {n - 1} were read"
        return f"{self.meta['source']}: cut short: it breaks off in frame {n}{of} ({why}); {read}"

    def close(self) -> None:
        """Release the file (further reads fail)."""
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Recording({self.meta['source']!r}, frames={len(self)}, shape={self.shape}, "
                f"n_focal={self.n_focal}, dtype={self.dtype}, sampling={self.sampling})")


def open_recording(path: str | Path, *, dataset: str | None = None, focal: int = 1,
                   fps: float | None = None) -> Recording:
    """Open a recorded movie or image.

    Parameters
    ----------
    path
        The file; its suffix picks the reader (see ``SUFFIXES``).
    dataset
        Plain HDF5 and .npz: the dataset or array to read (default: the first 2-D to 4-D numeric
        one, preferring the names 'frames', 'images', 'data'). Files with several signals (EMD, DM,
        HyperSpy): the title of the signal to read (default: the first image signal).
    focal
        Images per frame: a stack ``[N*F, H, W]`` is read as N focal series of F images. A 4-D
        stack ``[N, F, H, W]`` is a focal series already.
    fps
        Frame rate [1/s], overriding the file's, for replay at acquisition pace.

    Raises
    ------
    FileFormatError
        The file is missing, of an unknown type, unreadable, truncated, or holds no numeric image.
    ConfigError
        ``focal`` does not fit the stack.
    """
    path = Path(path)
    if isinstance(focal, bool) or not isinstance(focal, (int, np.integer)) or focal < 1:
        raise ConfigError(f"focal must be a positive integer (images per frame), got {focal!r}")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, not a recording: `etem replay {path}` tracks the frame "
                              "files in it (in Python: watch_folder())")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FileFormatError(f"{path}: unsupported file type {path.suffix!r}; supported: "
                              f"{', '.join(sorted(SUFFIXES))}")
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    close = None
    try:
        if fmt == "hdf5" and not _is_hyperspy(path):
            data, meta, sampling, times, close = read_hdf5(path, dataset)
        elif fmt in ("npy", "npz"):
            data, meta, sampling, times = read_numpy(path, dataset)
        elif fmt == "image":
            data, meta, sampling, times = read_pillow(path)
        else:
            data, meta, sampling, times = _read_rsciio(path, "hspy" if fmt == "hdf5" else fmt, dataset)
        if meta.get("cut_short") and focal > 1 and data.ndim == 3:
            data = data[: len(data) // focal * focal]  # (whole focal series only)
            if not len(data):
                raise FileFormatError(f"{path}: cut short before its first whole focal series ({meta['cut_short']})")
        _check_data(path, data, focal)
        if times is not None and data.ndim == 3:
            times = np.asarray(times, float)[::focal]
        if fps is not None:
            if not float(fps) > 0:
                raise ConfigError(f"fps must be above 0, got {fps!r}")
            meta["fps"] = float(fps)
        rec = Recording(data, source=str(path), focal=focal, sampling=sampling, frame_times=times,
                        meta=meta, close=close)
        if not isinstance(data, np.ndarray):  # lazy: fail now, naming the frame, if the end is missing
            rec[len(rec) - 1]
        return rec
    except Exception as exc:
        if close is not None:
            close()
        if isinstance(exc, (FileFormatError, ConfigError)):
            raise
        raise FileFormatError(f"{path}: cannot read as {fmt.upper()}: {type(exc).__name__}: {exc}") from exc


def _check_data(path: Path, data: Any, focal: int) -> None:
    dtype = np.dtype(data.dtype)
    if dtype.kind == "c":
        raise FileFormatError(f"{path}: complex data ({dtype}) is not supported; store the "
                              "modulus or the real part")
    if dtype.kind not in "biuf":
        raise FileFormatError(f"{path}: non-numeric data ({dtype}); expected grey-level images")
    if data.ndim not in (2, 3, 4) or 0 in data.shape:
        raise FileFormatError(f"{path}: data of shape {tuple(data.shape)} is not an image [H, W], a "
                              "stack [N, H, W] or a focal-series stack [N, F, H, W]")
    if min(data.shape[-2:]) < MIN_SIDE:
        raise FileFormatError(f"{path}: data of shape {tuple(data.shape)} would be images of "
                              f"{data.shape[-2]} x {data.shape[-1]} px; frames are images [H, W] of at least "
                              f"{MIN_SIDE} px a side, stacks [N, H, W] or focal series [N, F, H, W] (an axis of "
                              "colour channels last is not read: save grey images)")
    if focal > 1 and data.ndim == 4 and focal != data.shape[1]:
        raise ConfigError(f"{path} holds focal series of {data.shape[1]} images, not focal={focal}")
    if focal > 1 and data.ndim < 4 and (data.ndim == 2 or data.shape[0] % focal):
        n = 1 if data.ndim == 2 else data.shape[0]
        raise ConfigError(f"focal={focal} does not divide the {n} image(s) of {path}")


def _read_rsciio(path: Path, fmt: str, dataset: str | None):
    from . import files_tiff as _tiff

    module = importlib.import_module(_RSCIIO[fmt])
    lazy = _LAZY and fmt != "tiff"
    said = _tiff.TifffileSays()
    logging.getLogger("tifffile").addFilter(said)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                signals = module.file_reader(str(path), lazy=lazy)
            except Exception as exc:
                _release(exc)
                if fmt == "tiff" and (said.errors or "failed to read" in str(exc)):
                    return _tiff.cut_tiff(path, said.errors or [str(exc)])
                if fmt != "tiff" or "must be 3 or 4" not in str(exc):
                    raise
                # A stack of three or four planes written without a photometric tag is stored
                # as planar RGB(A); it is read as the grey-level stack it almost always is.
                signals = [_tiff.plain_tiff(path)]
                caught.append(warnings.WarningMessage(
                    "a 3- or 4-plane TIFF tagged as colour, read as a stack of grey images",
                    UserWarning, str(path), 0))
            if said.errors and fmt == "tiff":
                return _tiff.cut_tiff(path, said.errors)
    finally:
        logging.getLogger("tifffile").removeFilter(said)
    if said.errors:
        raise FileFormatError(f"{path}: truncated or corrupt ({'; '.join(said.errors)})")
    notes = sorted({str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)} | set(said.notes))
    titles = [s.get("metadata", {}).get("General", {}).get("title", "") for s in signals]
    images = [k for k, s in enumerate(signals) if _is_image(s)]
    if dataset is not None:
        chosen = [k for k in images if titles[k] == dataset]
        if not chosen:
            raise FileFormatError(_no_signal_titled(path, dataset, [titles[k] for k in images],
                                                    [tuple(signals[k]["data"].shape) for k in images]))
        images = chosen
    if not images:
        raise FileFormatError(f"{path}: no 2-D image signal among {len(signals)} signal(s) "
                              f"{[(t, tuple(s['data'].shape)) for t, s in zip(titles, signals)][:8]}")
    k = images[0]
    signal = signals[k]
    meta: dict[str, Any] = {"format": fmt, "reader": _RSCIIO[fmt], "lazy": lazy,
                            "signal": k, "title": titles[k], "n_signals": len(signals)}
    if len(signals) > 1:
        meta["signals"] = [f"{j}: {t!r} {tuple(s['data'].shape)}" for j, (t, s) in
                           enumerate(zip(titles, signals))]
    if fmt == "tiff" and dataset is None and len(signals) > 1:
        signal = _tiff.join_pages(path, signals, meta)
    axes = [dict(a) for a in signal["axes"]]
    if notes:
        meta["reader_warnings"] = notes
    times = None
    if fmt == "tiff":
        times = _tiff.imagej_fixup(signal.get("original_metadata", {}), axes, meta)
    sampling = _sampling(axes[-2:], meta)
    imaging = _imaging(signal)
    if imaging:
        meta["imaging"] = imaging
        detector = _detector(signal) if imaging == "stem" else None
        if detector:
            meta["detector"] = detector
    if signal["data"].ndim >= 3 and times is None:
        factor = _unit_factor(axes[0].get("units"), _TIME_S)
        if factor is not None and axes[0].get("scale"):
            times = (axes[0].get("offset", 0.0) + axes[0]["scale"] * np.arange(axes[0]["size"])) * factor
    return signal["data"], meta, sampling, times


_WARNED: dict[tuple, None] = {}


def _warn_once(path: Path, text: str) -> None:
    """Log ``text`` once for this version of the file (a command opens a file more than once)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, text)
    if key not in _WARNED:
        _WARNED[key] = None
        while len(_WARNED) > 256:
            del _WARNED[next(iter(_WARNED))]
        log.warning("%s", text)


def known_material(value: Any) -> str | None:
    """A file's or a stream's ``material`` as the tracker names it (lower case), or None where
    it names none or one :mod:`etem.tracker.lattice` does not know (such a value is ignored, as
    a file's other unknown metadata are)."""
    from .lattice import materials

    value = value.decode() if isinstance(value, bytes) else value
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        materials(value.strip())
    except ConfigError:
        return None
    return value.strip().lower()


def _imaging(signal: dict) -> str | None:
    """``"stem"`` or ``"hrtem"`` where the file's metadata say how the image was taken: HyperSpy's
    ``Acquisition_instrument.TEM.acquisition_mode``, or a Gatan file's "Operation Mode" /
    "Illumination Mode" (SCANNING / STEM against IMAGING with TEM illumination); else None."""
    mode = signal.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {}).get("acquisition_mode")
    if isinstance(mode, str) and mode.upper() in ("STEM", "TEM"):
        return "stem" if mode.upper() == "STEM" else "hrtem"
    found: dict[str, str] = {}
    for k, v in _strings(signal.get("original_metadata") or {}, lambda k: k in ("Operation Mode", "Illumination Mode")):
        found.setdefault(k, v)
    if found.get("Operation Mode") == "SCANNING" or found.get("Illumination Mode") == "STEM":
        return "stem"
    if found.get("Illumination Mode") == "TEM":
        return "hrtem"
    return None


def _detector(signal: dict) -> str | None:
    """``"bf"`` (bright field, annular bright field: dark columns) or ``"adf"`` (annular dark
    field, HAADF: bright columns) where the metadata name a STEM detector (a "Detector" entry,
    HyperSpy's or a Gatan file's); else None."""
    import re

    def is_detector(key: str) -> bool:
        return "detector" in key.lower()

    names = [v for tree in ("metadata", "original_metadata") for _, v in _strings(signal.get(tree) or {}, is_detector)]
    for name in names:
        if re.search(r"\b(HA)?ADF\b|DARK", name):
            return "adf"
        if re.search(r"\bA?BF\b|BRIGHT", name):
            return "bf"
    return None


def _strings(tree: dict, keep: Callable[[str], bool], depth: int = 0) -> list[tuple[str, str]]:
    """``(key, VALUE)`` of each string entry of a nested metadata dict (8 levels at most) whose
    key ``keep`` accepts, the value upper-cased, in the dict's order."""
    out: list[tuple[str, str]] = []
    for k, v in tree.items():
        if isinstance(v, dict) and depth < 8:
            out += _strings(v, keep, depth + 1)
        elif isinstance(v, str) and keep(str(k)):
            out.append((str(k), v.upper()))
    return out


def _release(exc: BaseException) -> None:
    """Close the files a failing reader left open (they would warn later, anywhere)."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, io.IOBase) or type(value).__name__ == "TiffFile":
                with suppress(Exception):
                    value.close()
        tb = tb.tb_next
    traceback.clear_frames(exc.__traceback__)


def _no_signal_titled(path: Path, dataset: str, titles: list[str], shapes: list[tuple[int, ...]]) -> str:
    """Why ``--dataset`` names no image signal of the file, and what it can name there."""
    def shape(k: int) -> str:
        return " x ".join(map(str, shapes[k]))

    named = [f"{t!r} ({shape(k)})" for k, t in enumerate(titles) if t]
    if len(titles) == 1 and not named:
        return f"{path}: no signal titled {dataset!r}: the file holds one image ({shape(0)}); leave out --dataset"
    if not named:
        return (f"{path}: no signal titled {dataset!r}: its {len(titles)} images have no titles; leave out "
                "--dataset (the pages of a TIFF are read as one stack)")
    more = f" and {len(named) - 8} more" if len(named) > 8 else ""
    return f"{path}: no image signal titled {dataset!r}; the titles in it: {', '.join(named[:8])}{more}"


def _is_image(signal: dict) -> bool:
    data, axes = signal["data"], signal["axes"]
    if data.ndim not in (2, 3, 4) or len(axes) != data.ndim:
        return False
    energy = any(_unit_factor(a.get("units"), {"ev": 1, "kev": 1}) for a in axes[-2:])
    return not energy and not any(a.get("navigate", False) for a in axes[-2:])


def _sampling(axes_yx: list[dict], meta: dict) -> float | None:
    """Pixel size [Å/px] from the two image axes, or None with meta['sampling_note'] saying why."""
    scales = [float(a.get("scale", 1.0)) for a in axes_yx]
    units = [a.get("units") for a in axes_yx]
    meta["raw_scale"], meta["raw_units"] = scales[0], units[0] if isinstance(units[0], str) else None
    factors = [_unit_factor(u, _LENGTH_A) for u in units]
    if None in factors:
        given = [u for u in units if isinstance(u, str) and u.strip() and u != "<undefined>"]
        if given:
            meta["sampling_note"] = f"axis units {given[0]!r} are not a length unit (nm, Å, pm, µm)"
        elif scales != [1.0, 1.0]:
            meta["sampling_note"] = (f"the file gives a pixel scale of {scales[0]:g} without a unit; "
                                     "pass the sampling in Å/px")
        else:
            meta["sampling_note"] = "the file has no pixel calibration; pass the sampling in Å/px"
        return None
    sy, sx = (s * f for s, f in zip(scales, factors))
    if not (np.isfinite(sy) and np.isfinite(sx) and sy > 0 and sx > 0):
        meta["sampling_note"] = f"invalid pixel scale {scales}"
        return None
    if abs(sy - sx) > 0.01 * max(sy, sx):
        meta["sampling_yx"] = (sy, sx)
        meta["sampling_note"] = f"non-square pixels ({sy:g} x {sx:g} Å); sampling is their mean"
    return float((sy + sx) / 2)


def _is_hyperspy(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("Experiments", getlink=False), h5py.Group)
    except OSError as exc:
        raise FileFormatError(f"{path}: not a readable HDF5 file: {exc}") from exc


def __getattr__(name: str) -> Any:
    # Folder watching lives in .watch, which reads each file with open_recording; it is loaded
    # on first use so that either module can be imported first.
    if name in ("FolderWatcher", "watch_folder"):
        from . import watch
        return getattr(watch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
