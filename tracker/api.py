"""The Python API: the same functions the command line calls.

>>> from etem.tracker import find, track
>>> cols = find(image, sampling=0.1)          # DataFrame: frame, y, x, cls, prob, y_A, x_A
>>> result = track(movie, sampling=0.1)       # linked columns, sites, occupancy and event maps
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from .accounting import Counters
from .detect import Detector, EngineConfig
from .errors import ConfigError
from .frames import Frame
from .pipeline import FrameResult, Pipeline, PipelineConfig
from .sources import open_source

ArrayLike = np.ndarray | Sequence[np.ndarray]


def _engine_cfg(base: EngineConfig, model, classical: bool, dark: bool, device: str | None, engine: str | None) -> EngineConfig:
    changes: dict[str, Any] = {}
    if classical and model is not None:
        raise ConfigError("pass either model=... or classical=True, not both")
    if classical:
        changes["kind"] = "classical"
    elif model is not None:
        changes["model"] = str(model)
        if base.kind == "classical":
            changes["kind"] = "auto"
    if engine is not None:
        changes["kind"] = engine
    if dark:
        changes["contrast"] = "dark"
    if device is not None:
        changes["device"] = device
    return dataclasses.replace(base, **changes)


def find(
    image: ArrayLike | str | Path,
    *,
    sampling: float | Literal["auto"] | None = None,
    material: str | None = None,
    model: str | Path | None = None,
    classical: bool = False,
    dark: bool = False,
    focal: int = 1,
    device: str | None = None,
    engine: str | None = None,
    config: PipelineConfig | None = None,
) -> pd.DataFrame:
    """Find the atomic columns in one image or a stack.

    Parameters
    ----------
    image
        ``[H, W]`` image, ``[N, H, W]`` stack (``[N, F, H, W]`` with focal series), a list of
        images, or the path of any file ``etem replay`` reads.
    sampling
        Pixel size [Å/px]; overrides the file's. ``"auto"``: from the lattice (needs
        ``material``). Without any, positions stay in pixels.
    material
        The material in view (``graphene``, ``mos2``, ``au``, ``srtio3`` …; see
        :data:`etem.tracker.lattice.MATERIALS`): the sampling is estimated from its lattice's
        Fourier peaks where the data give none, and checked against it where they do.
    model
        Bundled model name or bundle path; default: the classical locator until a model is given.
    classical
        Use the classical (Laplacian-of-Gaussian) locator.
    dark
        Dark-column contrast (ABF, some HRTEM), classical locator only.
    focal
        Images per frame in a stack (a focal series of F images forms one frame).

    Returns
    -------
    DataFrame with one row per column: ``frame, y, x`` [px], ``cls``, ``prob``, and
    ``y_A, x_A`` [Å] when the sampling is known. ``df.attrs`` holds the class names, per
    frame the measured image quality and trust flag (``frames``: a list of dicts with ``snr``,
    ``dose_est``, ``resolution_A``, ``confidence``, ``in_range``, ``out_of_range``; see
    :mod:`etem.tracker.trust`) and, when the lattice was used, ``sampling_estimate``.
    """
    from .lattice import require_material, resolve_sampling

    cfg = config or PipelineConfig()
    ecfg = _engine_cfg(cfg.engine, model, classical, dark, device, engine)
    det = Detector(ecfg, cfg.preprocess, cfg.locate)
    auto = sampling == "auto"
    if auto:
        require_material(material)
    if isinstance(sampling, str) and not auto:
        raise ConfigError(f"sampling must be a pixel size in Å/px or 'auto', got {sampling!r}")
    frames = list(_frames_of(image, sampling=None if auto else sampling, focal=focal))
    parts = []
    quality_rows: list[dict] = []
    estimate = None
    for i, f in enumerate(frames):
        if material and i == 0:
            # once per sequence: a stack shares its pixel size
            f.sampling, estimate = resolve_sampling(f.image, given=f.sampling, material=material, auto=auto)
        elif estimate is not None and (auto or f.sampling is None):
            f.sampling = estimate.sampling
        df = det.detect([f])[0]
        quality = df.attrs.pop("quality", None)
        if quality:
            quality_rows.append({"frame": f.frame, **quality})
        df.insert(0, "frame", np.int64(f.frame))
        if f.sampling:
            df["y_A"] = df["y"] * f.sampling
            df["x_A"] = df["x"] * f.sampling
        parts.append(df)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["frame", "y", "x", "cls", "prob"])
    out.attrs["class_names"] = list(det.engine.class_names) if det.engine is not None else []
    out.attrs["engine"] = det.engine.name if det.engine is not None else None
    # per frame: snr, dose_est, resolution_A, confidence, in_range, out_of_range (etem.tracker.trust)
    out.attrs["frames"] = quality_rows
    if estimate is not None:
        used = frames[0].sampling == estimate.sampling
        out.attrs["sampling_estimate"] = {**estimate.as_dict(), "used": used,
                                          "given": None if used else frames[0].sampling}
    return out


def _frames_of(image, *, sampling: float | None, focal: int) -> Iterable[Frame]:
    if isinstance(image, (str, Path)):
        from .files import open_recording

        rec = open_recording(image, focal=focal)
        for f in rec.iter_frames():
            if sampling is not None:
                f.sampling = sampling
            yield f
        return
    arr = image if isinstance(image, np.ndarray) else None
    if arr is not None and arr.ndim == 2:
        yield Frame(image=arr, frame=0, sampling=sampling)
        return
    if arr is not None and arr.ndim == 3 and focal > 1:
        arr = arr.reshape(-1, focal, *arr.shape[-2:])
    if arr is not None and arr.ndim not in (3, 4):
        raise ConfigError(f"image must be 2-D, a 3-D stack or 4-D focal-series stack; got shape {arr.shape}")
    for i, im in enumerate(image):
        yield Frame(image=np.asarray(im), frame=i, sampling=sampling)


@dataclass
class TrackResult:
    """What :func:`track` returns."""

    columns: pd.DataFrame  # frame, y, x, cls, prob, particle, y_ref, x_ref, site
    frames: pd.DataFrame  # per-frame: seq, latency_ms, n_columns, drift_y, drift_x …
    sites: pd.DataFrame  # site, y, x, occupancy, event_rate …
    occupancy_map: np.ndarray
    event_map: np.ndarray
    flips: pd.DataFrame
    hops: pd.DataFrame
    residence: pd.DataFrame
    counters: dict[str, int]
    sampling: float | None
    run_path: Path | None


def track(
    source: ArrayLike | str | Path,
    *,
    sampling: float | Literal["auto"] | None = None,
    material: str | None = None,
    model: str | Path | None = None,
    classical: bool = False,
    dark: bool = False,
    device: str | None = None,
    engine: str | None = None,
    config: PipelineConfig | None = None,
    run_path: str | Path | None = None,
    overwrite: bool = False,
    mode: Literal["sub", "pull"] = "sub",
    bind: bool = False,
    pace: float | None = None,
    fps: float | None = None,
    idle_timeout_s: float | None = None,
    focal: int = 1,
    on_frame: Callable[[FrameResult, Pipeline], None] | None = None,
    attrs: dict[str, Any] | None = None,
    curve_keys: str | Path | None = None,
) -> TrackResult:
    """Track every column through a sequence.

    Parameters
    ----------
    source
        A stack ``[N, H, W]`` (or list of arrays), a recorded file, a folder being written by
        an acquisition program, or a ZeroMQ address (``tcp://host:port``).
    sampling, material
        As in :func:`find`; the lattice estimate is made on the first frame and stored in the
        run file's attributes.
    run_path
        Write the run's HDF5 file here (incrementally, readable while written).
    mode, bind
        ZeroMQ only: ``sub`` (live camera PUB) or ``pull`` (lossless PUSH); bind or connect.
    pace
        Files only: None replays as fast as possible, 1.0 at acquisition pace.
    fps
        Files only: the recording's frame rate [1/s], for ``pace`` when the file records none.
    idle_timeout_s
        Streams and folders: stop after this long without a frame.
    curve_keys
        ZeroMQ only: a CURVE key folder (``etem keys``) to encrypt and authenticate the stream.
    on_frame
        Called with each :class:`FrameResult` and the pipeline (for status lines, dashboards).
    """
    cfg = config or PipelineConfig()
    cfg = dataclasses.replace(cfg, engine=_engine_cfg(cfg.engine, model, classical, dark, device, engine))
    if material is not None:
        cfg = dataclasses.replace(cfg, material=material)
    if sampling == "auto":
        cfg = dataclasses.replace(cfg, sampling_from_lattice=True)  # checks that a material is named
        sampling = None
    elif isinstance(sampling, str):
        raise ConfigError(f"sampling must be a pixel size in Å/px or 'auto', got {sampling!r}")
    if sampling is not None:
        cfg = dataclasses.replace(cfg, default_sampling=sampling)
    is_stream = isinstance(source, (str, Path)) and "://" in str(source)
    if is_stream and mode == "sub" and cfg.overflow == "block":
        cfg = dataclasses.replace(cfg, overflow="drop")  # a live SUB stream cannot be pushed back on
    counters = Counters()
    attrs = dict(attrs or {})
    if isinstance(source, (str, Path)):
        # where the frames came from: a file or folder (absolute, so viewers can find the images)
        # or a stream address
        attrs.setdefault("source", str(source) if "://" in str(source) else str(Path(source).resolve()))
    pipe = Pipeline(cfg, run_path=run_path, counters=counters, overwrite=overwrite, attrs=attrs)
    if isinstance(source, np.ndarray) and source.ndim == 3 and focal > 1:
        source = source.reshape(-1, focal, *source.shape[-2:])
    src = open_source(source, counters=counters, stop=pipe.stop, mode=mode, bind=bind, sampling=sampling,
                      pace=pace, fps=fps, idle_timeout_s=idle_timeout_s, focal=focal, curve_keys=curve_keys)
    for res in pipe.run_iter(src):
        if on_frame is not None:
            on_frame(res, pipe)
    return result_of(pipe)


def result_of(pipe: Pipeline) -> TrackResult:
    """Gather a finished pipeline's results."""
    shape = pipe.shape or (0, 0)
    stats = pipe.statistics()
    if pipe.sites is not None:
        occ, ev = pipe.sites.maps(shape)
        sites = pipe.sites.table()
    else:
        occ = ev = np.zeros((0, 0), np.float32)
        sites = pd.DataFrame()
    return TrackResult(
        columns=pipe.columns_table(),
        frames=pipe.frames_table(),
        sites=sites,
        occupancy_map=occ,
        event_map=ev,
        flips=stats.get("flips", pd.DataFrame()),
        hops=stats.get("hops", pd.DataFrame()),
        residence=stats.get("residence", pd.DataFrame()),
        counters=pipe.counters.as_dict(),
        sampling=pipe.sampling,
        run_path=pipe.run_path,
    )
