"""Watched folders as frame sources: frames from image files as an acquisition program writes them.

Each file is read with :func:`etem.tracker.files.open_recording`, so every format it reads can be
watched. By default a folder is read for every frame-file type (:data:`FRAME_SUFFIXES`), its
subfolders included, in natural order of the path below the folder: an in-situ camera program
that files its frames by hour, minute and second (``Hour_00/Minute_01/Second_07/…dm4``) is read
in the order it wrote them. A ``pattern`` (a glob below the folder, ``**/`` for subfolders)
narrows that.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Iterator

from .accounting import Counters
from .errors import ConfigError, FileFormatError
from .files import open_recording
from .frames import Frame

__all__ = ["FolderWatcher", "watch_folder"]

log = logging.getLogger("etem.files")


#: What a watched folder is read for without a pattern: image files as cameras and acquisition
#: programs write them (not HDF5, which is what runs are written to, nor TIA's .emi, which
#: describes a .ser, nor PNG and JPEG, which are more often previews and figures than frames:
#: a pattern such as ``"*.png"`` reads them, as grey-level frames).
FRAME_SUFFIXES = (".tif", ".tiff", ".dm3", ".dm4", ".mrc", ".emd", ".ser", ".hspy", ".npy")


def _candidates(folder: Path, pattern: str | None) -> Iterator[tuple[str, Path]]:
    """``(path below folder, path)`` of each file a watcher may read; hidden names (a part
    starting with '.') are left out, so that a writer can write to ``.name`` and rename."""
    found = folder.glob(pattern) if pattern else (
        p for p in folder.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES)
    for p in found:
        rel = p.relative_to(folder).as_posix()
        if not any(part.startswith(".") for part in rel.split("/")):
            yield rel, p


def first_file(folder: str | Path, pattern: str | None = None) -> Path | None:
    """The file of ``folder`` that a watcher reads first (natural order), or None."""
    files = [(rel, p) for rel, p in _candidates(Path(folder), pattern) if p.is_file()]
    return min(files, key=lambda f: _natural(f[0]))[1] if files else None


def no_frame_files(folder: str | Path, pattern: str | None = None) -> str | None:
    """What a watcher of ``folder`` has no frame file to read in, said for its user (``"no frame
    files in capture (30 .png files are not read without --pattern: …)"``); None where there is
    one to read."""
    folder = Path(folder)
    if first_file(folder, pattern) is not None:
        return None
    others: dict[str, int] = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            others[p.suffix.lower() or "(no suffix)"] = others.get(p.suffix.lower() or "(no suffix)", 0) + 1
    which = f"no file matching --pattern (pattern=) {pattern!r}" if pattern else "no frame files"
    if not others:
        return f"{which} in {folder} (it is empty)"
    held = ", ".join(f"{n} {suffix} file{'s' if n > 1 else ''}" for suffix, n in
                     sorted(others.items(), key=lambda kv: -kv[1])[:4])
    images = [x for x in (".png", ".jpg", ".jpeg") if x in others]
    if images and not pattern:
        return (f"{which} in {folder} (it holds {held}; PNG and JPEG images are read only when asked for: "
                f"--pattern '**/*{images[0]}' (pattern=) reads them as grey-level frames)")
    kinds = "" if pattern else f"; frame files are {', '.join(FRAME_SUFFIXES)}"
    return f"{which} in {folder} (it holds {held}{kinds})"


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class FolderWatcher:
    """Frames from image files as an acquisition program writes them into a folder.

    Frame files (``pattern``) are read in natural order of their path below the folder (``f2``
    before ``f10``), each once its size and modification time have been still for
    ``settle_s``; files present at the start are read too. Hidden files and folders (names
    starting with '.') are ignored, so a writer can write to ``.name.tif`` and rename. Frames are
    numbered across files. A file that cannot be read (truncated, corrupt) is recorded in
    ``rejected`` as ``(path, reason)``, counted as a frame received and rejected (``unreadable``)
    where ``counters`` are given, and keeps its frame number (the frame of the next file is the
    one after it); the watch goes on.

    Parameters
    ----------
    folder
        The folder to watch.
    pattern
        Glob pattern of the frame files below the folder (``"*.tif"``; ``"**/*.dm4"`` for
        subfolders too). None: every type of :data:`FRAME_SUFFIXES`, subfolders included.
    poll_s
        Interval between folder scans [s].
    settle_s
        How long a file must be unchanged before it is read [s]; longer than the writer's pauses.
    stop
        Set it to end the iteration (checked between scans and frames).
    idle_timeout_s
        End when no file has appeared or changed for this long [s] (None: wait until ``stop``).
    sampling
        Pixel size [Å/px] for every frame, overriding the files' own (None: the files').
    focal
        Images per frame, as in :func:`open_recording`.
    fps
        Frame rate [1/s]: frame n was taken at n/fps s. None: a file's own frame times where it
        records them (counted from that file's first frame), else none.
    start
        Skip the first ``start`` frames (a resumed run: the folder is read again in the same
        order, and the frames the run holds already are passed over without being decoded).
    counters
        The run's counters: a file that cannot be read counts as a frame received and rejected
        (``rejected/unreadable``). The frames yielded are counted by whoever takes them
        (:func:`etem.tracker.sources.counted`).
    dataset
        The dataset or signal to read of each file, as in :func:`open_recording`.
    """

    def __init__(self, folder: str | Path, *, pattern: str | None = None, poll_s: float = 0.2,
                 settle_s: float = 0.3, stop: threading.Event | None = None,
                 idle_timeout_s: float | None = None, sampling: float | None = None,
                 focal: int = 1, fps: float | None = None, start: int = 0,
                 counters: Counters | None = None, dataset: str | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileFormatError(f"{self.folder}: no such folder")
        if not poll_s > 0 or not settle_s >= 0:
            raise ConfigError(f"poll_s must be > 0 and settle_s >= 0 [s], got {poll_s!r}, {settle_s!r}")
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be a positive frame rate [1/s], got {fps!r}")
        if start < 0:
            raise ConfigError(f"start must be a frame number (>= 0), got {start!r}")
        if pattern is not None and (not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts):
            raise ConfigError(f"pattern must be a glob below the folder, such as '*.tif' or '**/*.dm4'; got {pattern!r}")
        self.fps, self._skip = fps, int(start)
        self.pattern, self.poll_s, self.settle_s = pattern, poll_s, settle_s
        self.stop = stop if stop is not None else threading.Event()
        self.idle_timeout_s, self.sampling, self.focal = idle_timeout_s, sampling, focal
        self.counters, self.dataset = counters, dataset
        self.rejected: list[tuple[str, str]] = []
        self.files: list[str] = []
        self.n_frames = 0
        self._done: set[str] = set()
        self._seen: dict[str, tuple[tuple[int, int], float]] = {}

    def _scan(self, now: float) -> bool:
        changed, present = False, set()
        for rel, p in _candidates(self.folder, self.pattern):
            if rel in self._done:
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            if not p.is_file():
                continue
            present.add(rel)
            key = (st.st_size, st.st_mtime_ns)
            if self._seen.get(rel, (None,))[0] != key:
                self._seen[rel] = (key, now)
                changed = True
        for name in set(self._seen) - present:
            del self._seen[name]
        return changed

    def _ready(self, now: float) -> list[str]:
        ready = []
        for name in sorted(self._seen, key=_natural):
            (size, _), since = self._seen[name]
            if size == 0:
                continue
            if now - since < self.settle_s:
                break
            ready.append(name)
        return ready

    def _read(self, name: str) -> Iterator[Frame]:
        path = self.folder / name
        self._done.add(name)
        del self._seen[name]
        try:
            with open_recording(path, focal=self.focal, dataset=self.dataset) as rec:
                sampling = self.sampling if self.sampling is not None else rec.sampling
                skip = min(self._skip, len(rec))  # read before: passed over, numbered all the same
                self._skip -= skip
                self.n_frames += skip
                times = None if self.fps is not None else rec.times
                for j in range(skip, len(rec)):
                    image = rec[j]
                    t = self.n_frames / self.fps if self.fps is not None else (
                        None if times is None else float(times[j]))
                    yield Frame(image=image, frame=self.n_frames, seq=self.n_frames, sampling=sampling, t=t,
                                meta={**rec.frame_meta(), "file_frame": j},
                                received=time.perf_counter())
                    self.n_frames += 1
                if rec.cut_short is not None:  # the frames before the cut are in; the rest is lost
                    raise FileFormatError(rec.cut_short)
            self.files.append(str(path))
        except (FileFormatError, ConfigError) as exc:
            self._unreadable(path, str(exc))

    def _unreadable(self, path: Path, why: str) -> None:
        """A file (or the rest of one) that cannot be read: one frame, rejected, in its place
        (the frame of the next file is the one after it), counted once (not again where a
        resumed run passes over it)."""
        frame = self.n_frames
        self.n_frames += 1
        self.rejected.append((str(path), why))
        if self._skip:  # the run being resumed holds it already
            self._skip -= 1
            return
        log.warning("frame %d rejected: %s", frame, why if str(path) in why else f"{path}: {why}")
        if self.counters is not None:
            self.counters.add("received")
            self.counters.add("rejected", reason="unreadable")

    def __iter__(self) -> Iterator[Frame]:
        last = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if self._scan(now):
                last = now
            for name in self._ready(now):
                for frame in self._read(name):
                    yield frame
                    if self.stop.is_set():
                        return
                last = time.monotonic()
            quiet = time.monotonic() - last
            if self.idle_timeout_s is not None and quiet >= max(self.idle_timeout_s, self.settle_s):
                for name in sorted(self._seen, key=_natural):  # only empty files are left
                    self._unreadable(self.folder / name, "empty file")
                log.info("no new file for %.1f s; stopping", quiet)
                return
            self.stop.wait(self.poll_s)


def watch_folder(folder: str | Path, *, pattern: str | None = None, poll_s: float = 0.2,
                 settle_s: float = 0.3, stop: threading.Event | None = None,
                 idle_timeout_s: float | None = None, sampling: float | None = None,
                 focal: int = 1, fps: float | None = None, start: int = 0,
                 counters: Counters | None = None, dataset: str | None = None) -> FolderWatcher:
    """Follow a folder that an acquisition program fills with frame files.

    Returns a :class:`FolderWatcher`: iterate it for frames, read ``rejected`` for files that
    failed. Parameters as in :class:`FolderWatcher` (times in s, sampling in Å/px).
    """
    return FolderWatcher(folder, pattern=pattern, poll_s=poll_s, settle_s=settle_s, stop=stop,
                         idle_timeout_s=idle_timeout_s, sampling=sampling, focal=focal, fps=fps, start=start,
                         counters=counters, dataset=dataset)
