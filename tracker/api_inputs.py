"""What :func:`~etem.tracker.find` and :func:`~etem.tracker.track` are given, checked before
any work: arrays that are images (not colour, not a stack stored the wrong way round), pixel
sizes, focal series, configs, frame rates and run file paths; what a source's overflow is and
what a recorded file says of its frames; and what a run that tracked no frame says."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import ConfigError
from .frames import Frame
from .pipeline import PipelineConfig
from .wire import MAX_FOCAL, MIN_SIDE

_log = logging.getLogger("etem.api")



def config_of(config) -> PipelineConfig:
    """``config`` as :func:`find` and :func:`track` take it: a PipelineConfig, a mapping of the
    TOML file's tables (through :func:`~etem.tracker.config.config_from_dict`, which checks every
    key and type), a TOML file's path, or None (the defaults)."""
    if config is None:
        return PipelineConfig()
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, Mapping):
        from .config import config_from_dict

        return config_from_dict(config)
    if isinstance(config, (str, Path)):
        from .config import load_config

        return load_config(config)
    raise ConfigError(f"config must be a PipelineConfig, a mapping of its tables ({{'link': {{'search_range_A': "
                      f"1.0}}}}, as in a TOML config file) or a TOML file's path; got {type(config).__name__}")


def check_sampling(sampling) -> None:
    """``sampling`` as :func:`find` and :func:`track` take it: None, ``"auto"`` or a pixel size > 0."""
    if sampling is None or (isinstance(sampling, str) and sampling == "auto"):
        return
    if isinstance(sampling, str):
        raise ConfigError(f"sampling must be a pixel size in Å/px or 'auto', got {sampling!r}")
    if (isinstance(sampling, bool) or not isinstance(sampling, (int, float, np.integer, np.floating))
            or not math.isfinite(sampling) or sampling <= 0):
        raise ConfigError(f"sampling must be a pixel size > 0 in Å/px (or 'auto'), got {sampling!r}")


def check_focal(focal) -> None:
    if isinstance(focal, bool) or not isinstance(focal, (int, np.integer)) or focal < 1:
        raise ConfigError(f"focal must be a positive integer (images per frame), got {focal!r}")
    if focal > MAX_FOCAL:
        raise ConfigError(f"focal must be at most {MAX_FOCAL} images per frame, got {focal}")


def check_shape(shape: tuple[int, ...], dtype: np.dtype, *, focal: int, who: str) -> None:
    """Refuse an array (or a list of equal arrays, ``shape`` then that of their stack) that
    ``who`` (``find`` or ``track``) cannot read as images: a ConfigError saying what it takes.
    A stack stored as ``[H, W, N]`` cannot be told from ``[N, H, W]`` in general; where its
    last axis cannot be an image side, it is refused, and where the first two axes are equal
    and the last differs, it is read as given with a warning."""
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    takes = ("an image [H, W], a stack [N, H, W] or focal series [N, F, H, W]" if who == "find"
             else "a stack of frames [N, H, W] (or focal series [N, F, H, W])")
    if nd == 2 and who == "track":
        raise ConfigError(f"track() takes {takes}; got one image of shape {shape}: pass image[None] for a "
                          "one-frame stack (or find(image) for its columns)")
    if nd < 2 or nd > 4:
        raise ConfigError(f"{who}() takes {takes}; got a {nd}-D array of shape {shape}"
                          + (": reshape it into images (e.g. a.reshape(N, H, W))" if nd < 2 else ""))
    if 0 in shape:
        raise ConfigError(f"{who}() got an empty array (shape {shape}): it holds no image")
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        raise ConfigError(f"image dtype {dtype} is not a real number type; pass numbers "
                          "(e.g. frames.astype(np.float32))")
    if nd >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) >= MIN_SIDE:
        one = "a colour image" if nd == 3 else "colour frames"
        raise ConfigError(f"{who}() got shape {shape}, which looks like {one} (RGB{'A' if shape[-1] == 4 else ''}"
                          f" in the last axis); the images must be grey: e.g. a.mean(axis=-1)"
                          + ("[None] for one colour image" if nd == 3 and who == "track" else ""))
    if min(shape[-2:]) < MIN_SIDE:
        if nd == 3 and min(shape[:2]) >= MIN_SIDE:
            raise ConfigError(f"{who}() got shape {shape}: images {shape[1]} x {shape[2]} px, narrower than "
                              f"{MIN_SIDE} px; a stack stored as [H, W, N]? np.moveaxis(a, -1, 0) puts its frames first")
        raise ConfigError(f"{who}() got shape {shape}: no image of at least {MIN_SIDE} px a side")
    if nd == 3 and shape[0] == shape[1] != shape[2]:
        _log.warning("shape %s is read as %d frames of %d x %d px; if it is %d frames stored as [H, W, N], "
                     "pass np.moveaxis(a, -1, 0)", shape, shape[0], shape[1], shape[2], shape[2])
    if nd == 4:
        n, f = shape[:2]
        if f > MAX_FOCAL:
            raise ConfigError(f"{who}() got shape {shape}: a 4-D array is a stack of focal series [N, F, H, W], "
                              f"of at most {MAX_FOCAL} images each, not {f}")
        if focal > 1 and f != focal:
            raise ConfigError(f"focal={focal}, but the array of shape {shape} holds focal series of {f} images "
                              "([N, F, H, W])")
        if n == 1 and f > 1 and focal == 1:
            _log.warning("shape %s is read as one frame, a focal series of %d images ([N, F, H, W]); if they are "
                         "%d frames, pass a[0] (an extra leading axis?)", shape, f, f)
    elif focal > 1:
        if nd == 2:
            raise ConfigError(f"focal={focal} takes a stack of {focal} images per frame; got one image of shape {shape}")
        if shape[0] % focal:
            raise ConfigError(f"focal={focal}: the stack's {shape[0]} images do not make whole focal series of "
                              f"{focal} ({shape[0]} is not a multiple of {focal})")


def checked_images(images, *, focal: int, who: str):
    """``images`` as :func:`find` and :func:`track` take them, checked (:func:`check_shape`):
    an array as it is; a list or tuple of arrays as it is, or, where it is a nested list of
    numbers holding one image, that image as an array. Anything else (a path, an iterator) as is."""
    check_focal(focal)
    if isinstance(images, np.ndarray):
        check_shape(images.shape, images.dtype, focal=focal, who=who)
        return images
    if not isinstance(images, (list, tuple)):
        return images
    if not images:
        raise ConfigError(f"{who}() got an empty {type(images).__name__}: it holds no image")
    items = []
    for i, x in enumerate(images):
        try:
            items.append(np.asarray(x))
        except ValueError as exc:  # (a ragged nested list)
            raise ConfigError(f"{who}(): item {i} of the {type(images).__name__} is no array of numbers ({exc})") from None
    shapes = {a.shape for a in items}
    bad = next((a.dtype for a in items if a.dtype.kind not in "uif"), items[0].dtype)
    if len(shapes) == 1:  # as the stack of them
        check_shape((len(items), *items[0].shape), bad, focal=focal, who=who)
        if items[0].ndim == 1:  # (a nested list of rows: one image)
            return np.asarray(images)
        if items[0].ndim == 2 and focal > 1:  # images, F to a frame: the stack, read as focal series
            return np.stack(items)
        return images
    for i, a in enumerate(items):  # frames of several sizes (those not the first's are rejected)
        if a.ndim not in (2, 3):
            raise ConfigError(f"{who}(): item {i} of the {type(images).__name__} has shape {a.shape}; each must "
                              "be an image [H, W] (or a focal series [F, H, W])")
    if bad.kind not in "uif":
        raise ConfigError(f"image dtype {bad} is not a real number type; pass numbers (e.g. frames.astype(np.float32))")
    return images


def say_nothing_tracked(counters: dict, source, run_path, pattern: str | None) -> None:
    """Warn that a run (its ``counters``) tracked no frame, saying why, and that it wrote no run
    file (the file is opened at the first frame tracked: a wrong address or a file of
    unreadable frames is not a run that went well); the result's ``run_path`` is then None. The
    command line says it so too."""
    c = counters
    if c.get("rejected"):
        why = f"{c['rejected']} frame(s) rejected (see the warnings above)"
    elif isinstance(source, str) and "://" in source:
        why = f"no frame arrived at {source}"
    else:
        why = None
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            from .watch import no_frame_files

            why = no_frame_files(source, pattern)
        why = why or "no frame was read"
    where = ""
    if run_path is not None:
        where = ("; no run file written" + (f" ({run_path} is left as it was)" if Path(run_path).exists() else ""))
    _log.warning("nothing tracked: %s%s", why, where)


def check_timing(source, fps: float | None, pace: float | None) -> None:
    """``fps`` and ``pace`` where they mean something: a stream's frames come when they are sent
    (with their own times); frames in memory take their times from ``fps``, and are paced by it."""
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating))
                            or not math.isfinite(fps) or fps <= 0):
        raise ConfigError(f"fps must be a frame rate > 0 [1/s], got {fps!r}")
    if pace is not None and (isinstance(pace, bool) or not isinstance(pace, (int, float, np.integer, np.floating))
                             or not math.isfinite(pace) or pace <= 0):
        raise ConfigError(f"pace must be a positive speed factor (1.0 = real time), got {pace!r}")
    if isinstance(source, (str, Path)):
        if "://" in str(source) and (fps is not None or pace is not None):
            raise ConfigError(f"{source} is a stream: its frames come as they are sent, with their own times; "
                              "leave out fps and pace (they are for recordings and frames in memory)")
        return
    if pace is not None and fps is None:
        raise ConfigError("pace replays frames at their frame rate, and frames in memory record none: give it "
                          "(fps=...), or leave out pace to track them as fast as possible")


def timed(frames: Iterable[Frame], fps: float, pace: float | None, stop, start: int = 0) -> Iterable[Frame]:
    """Frames in memory with their acquisition times, ``t = frame / fps`` [s] (as a recording's
    frames get them from its frame rate); with ``pace``, released at ``pace`` times that rate."""
    it = iter(frames)
    t0 = time.perf_counter()
    i = start
    while True:
        if pace is not None:
            delay = t0 + (i - start) / (fps * pace) - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
        f = next(it, None)
        if f is None:
            return
        f.t = f.frame / fps
        i += 1
        yield f


def check_run_path(path: str | Path, overwrite: bool) -> None:
    """Refuse a run file that cannot be written: a folder, or a file this process holds open."""
    from .run import open_here

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"run_path {path} is a folder; name the run file in it (such as {path / 'run.h5'})")
    if overwrite and path.exists() and open_here(path):
        raise ConfigError(f"run file {path} is open in this process (a Run from open_run() not closed, or an "
                          "h5py.File): close it first (run.close(), or open it with `with open_run(...) as run:`)")


def overflow(cfg: PipelineConfig, is_stream: bool, mode: str, pace: float | None) -> PipelineConfig:
    """What a full queue does for this source: a live SUB stream cannot be pushed back on (drop);
    a recording read as fast as the tracker goes loses nothing by waiting (block), whatever the
    config says for the live camera; a paced replay (acting as the camera) keeps the config's."""
    if is_stream and mode == "sub" and cfg.overflow == "block":
        return dataclasses.replace(cfg, overflow="drop")
    if not is_stream and pace is None and cfg.overflow == "drop":
        logging.getLogger("etem.pipeline").info('a recording is read as fast as the tracker goes: no frame is '
                                                'dropped (overflow = "drop" is for live streams and paced replays)')
        return dataclasses.replace(cfg, overflow="block")
    return cfg


def file_meta(source, model, pattern: str | None = None, dataset: str | None = None) -> dict | None:
    """How a recorded file says its frames were taken (``imaging``: ``"stem"``/``"hrtem"``;
    ``detector``; ``material``) and its images per frame (``n_focal``), read before the run
    only where ``model="auto"`` needs it up front (it asks for a material unless the frames are
    STEM or the file names one); a watched folder answers for the first frame
    file already in it. None for streams, arrays and empty folders; with no model named, the
    first frame's own meta choose instead (:attr:`Pipeline.choose_engine`), so a file is not
    opened twice (a TIFF stack is read whole when opened)."""
    if model != "auto" or not isinstance(source, (str, Path)) or "://" in str(source):
        return None
    path = Path(source)
    if path.is_dir():
        from .watch import first_file

        path = first_file(path, pattern)
    if path is None or not path.is_file():
        return None
    from .files import open_recording

    with contextlib.suppress(Exception):  # a file that cannot be read fails where it is read for frames
        with open_recording(path, dataset=dataset) as rec:
            return {**rec.frame_meta(), "n_focal": rec.n_focal}
    return None
