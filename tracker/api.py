"""The Python API: the same functions the command line calls.

>>> from etem.tracker import find, track
>>> cols = find(image, sampling=0.1)          # DataFrame: frame, y, x, cls, prob, intensity, background, y_A, x_A
>>> result = track(movie, sampling=0.1)       # linked columns, sites, occupancy and event maps
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .accounting import Counters
from .detect import Detector, EngineConfig
from .errors import ConfigError, EngineUnavailable, FileFormatError
from . import interrupt
from .frames import Frame
from .lattice_classes import lattice_species
from .model_choice import _engine_cfg, resolve_model  # noqa: F401 (resolve_model: re-exported)
from .pipeline import FrameResult, Pipeline, PipelineConfig
from .sources import open_source
from .api_inputs import (check_run_path, check_sampling, check_timing, checked_images, config_of, file_meta,
                         overflow, say_nothing_tracked, timed)

ArrayLike = np.ndarray | Sequence[np.ndarray]


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
    config: PipelineConfig | Mapping[str, Any] | str | Path | None = None,
    dataset: str | None = None,
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
        Bundled model name or bundle path, or ``"auto"`` (the bundled model for ``material``;
        ``"auto:stem"``: the STEM model). Default: where the frames say how they were taken
        (a file's metadata, or ``config.engine.imaging``), the bundled model made for that kind
        of image (STEM: ``haadf-stem``; HRTEM: the model for ``material``, when one is named
        and fits); otherwise the classical locator.
    classical
        Use the classical (Laplacian-of-Gaussian) locator.
    dark
        Dark columns on a bright background (annular bright-field STEM): the classical locator
        looks for them, a STEM model is shown the frames negated; refused for an HRTEM model,
        which reads frames as recorded. A file that says it is bright-field STEM implies it.
    focal
        Images per frame in a stack (a focal series of F images forms one frame).
    device
        Where a model runs: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …
        (default: ``config.engine.device``).
    engine
        What runs a model: ``"auto"``, ``"eager"``, ``"compiled"``, ``"onnxruntime"``,
        ``"tensorrt"``, or ``"classical"`` (as ``classical=True``); default
        ``config.engine.kind``.
    config
        The settings of a TOML config file (``--config`` on the command line): a
        :class:`~etem.tracker.config.PipelineConfig`, a mapping of its tables, such as
        ``{"locate": {"threshold": 0.3}}`` (read by :func:`etem.tracker.config.config_from_dict`,
        which refuses an unknown key or a value of the wrong type, naming it), or a TOML file's
        path. Default: the defaults.
    dataset
        A file's dataset (HDF5, .npz) or signal (EMD, DM, HyperSpy) to read, as in
        :func:`~etem.tracker.files.open_recording` (default: its largest stack of frames).

    Returns
    -------
    DataFrame with one row per column: ``frame, y, x`` [px], ``cls``, ``prob``, ``intensity``
    (the frame's mean about the column, as recorded: :mod:`etem.tracker.intensity`),
    ``background`` (the frame's floor about it; ``intensity - background`` is the column's own), and
    ``y_A, x_A`` [Å] when the sampling is known. ``df.attrs`` holds the class names, per
    frame the measured image quality and trust flag (``frames``: a list of dicts with
    ``sampling``, ``snr``, ``dose_est``, ``resolution_A`` (in px where the sampling is
    unknown), ``confidence``, ``in_range``, ``out_of_range``; see
    :mod:`etem.tracker.trust`), when the lattice was used, ``sampling_estimate``, and
    ``column_sigma_px``: the classical locator's column width where it was measured on the
    first image, the pixel size being unknown (else None), and ``trust_note``: how the trust
    ranges were chosen, where worth saying (else ``""``), and ``rejected``: the frames that could
    not be located, each ``{"frame", "reason"}`` (NaN or infinite pixels: such a frame is
    skipped with a warning, the others are located).
    """
    from .lattice import require_material, resolve_sampling
    from .preprocess import fill_nonfinite, nonfinite_words

    cfg = config_of(config)
    check_sampling(sampling)
    auto = isinstance(sampling, str) and sampling == "auto"
    if auto:
        require_material(material)
    frames: list[Frame] = []
    try:
        frames.extend(_frames_of(image, sampling=None if auto else sampling, focal=focal, dataset=dataset))
    except FileFormatError as exc:  # a file cut short: its frames before the cut are located (said as it is read)
        if not frames or "cut short" not in str(exc):
            raise
        cut_short = str(exc)
    else:
        cut_short = None
    if not auto and cfg.default_sampling is not None:  # ([default_sampling]: for frames that say none)
        for f in frames:
            if f.sampling is None:
                f.sampling = cfg.default_sampling
    if material is None and frames:
        from .files import known_material

        material = known_material((frames[0].meta or {}).get("material"))  # as the file says
        if material:
            logging.getLogger("etem.engine").info("material %s, as the data say", material)
    # images per frame as the data hold them (a 4-D stack or a focal-series file says so itself)
    per_frame = frames[0].image.shape[0] if frames and frames[0].image.ndim == 3 else focal
    ecfg = _engine_cfg(cfg.engine, model, classical, dark, device, engine, material, per_frame,
                       data=(frames[0].meta or {}) if frames else None)
    det = Detector(ecfg, cfg.preprocess, cfg.locate)
    parts = []
    quality_rows: list[dict] = []
    estimate = None
    rejected: list[dict] = []
    first = True
    for f in frames:
        if not f.finite and not np.isfinite(f.image).all():  # (dead or masked pixels)
            image, bad = fill_nonfinite(f.image, cfg.preprocess.fill_nonfinite)
            if image is None:  # more than [preprocess] fill_nonfinite allows: the frame cannot be read
                rejected.append({"frame": f.frame,
                                 "reason": nonfinite_words(bad, f.image.size, cfg.preprocess.fill_nonfinite)})
                logging.getLogger("etem.find").warning("frame %d: %s; skipped", f.frame, rejected[-1]["reason"])
                continue
            logging.getLogger("etem.find").warning("frame %d: %d pixels NaN or infinite, filled with the frame's "
                                                   "median ([preprocess] fill_nonfinite)", f.frame, bad)
            f.image = image
        if material and first:
            # once per sequence (its first readable frame): a stack shares its pixel size
            f.sampling, estimate = resolve_sampling(f.image, given=f.sampling, material=material, auto=auto)
            ref = f
        elif estimate is not None and (auto or f.sampling is None):
            f.sampling = estimate.sampling
        first = False
        df = det.detect([f])[0]
        if df is None:
            raise EngineUnavailable(f"frame {f.frame} ({f.shape[0]}x{f.shape[1]} px) does not fit in the GPU's "
                                    "memory even alone; free the GPU, or run on the CPU (--device cpu, device='cpu').")
        quality = df.attrs.pop("quality", None)
        if quality:
            quality_rows.append({"frame": f.frame, "sampling": f.sampling, **quality})
        df.insert(0, "frame", np.int64(f.frame))
        if f.sampling:
            df["y_A"] = df["y"] * f.sampling
            df["x_A"] = df["x"] * f.sampling
        parts.append(df)
    if parts:
        out = pd.concat(parts, ignore_index=True)
    else:  # (no frame located: the table's columns all the same, in Å too where the sampling is known)
        known = any(f.sampling for f in frames) or (not auto and sampling is not None)
        out = pd.DataFrame(columns=["frame", "y", "x", "cls", "prob", "intensity", "background"]
                           + (["y_A", "x_A"] if known else []))
    out.attrs["class_names"] = list(det.engine.class_names) if det.engine is not None else []
    out.attrs["engine"] = det.engine_label
    out.attrs["model"] = ecfg.model if ecfg.kind != "classical" else None
    out.attrs["lattice_classes"] = det.lattice_classes  # (metal or chalcogen from the sublattice)
    out.attrs["column_sigma_px"] = det.measured_sigma_px  # (measured on the image: the pixel size unknown)
    # per frame: snr, dose_est, resolution_A, confidence, in_range, out_of_range (etem.tracker.trust)
    out.attrs["frames"] = quality_rows
    out.attrs["trust_note"] = det.trust_note  # (how the trust ranges were chosen, where worth saying)
    out.attrs["rejected"] = rejected  # frames not located: {"frame", "reason"}
    out.attrs["cut_short"] = cut_short  # a file that breaks off: where (its frames before were located)
    if estimate is not None:
        used = ref.sampling == estimate.sampling
        out.attrs["sampling_estimate"] = {**estimate.as_dict(), "used": used,
                                          "given": None if used else ref.sampling}
    return out


def _frames_of(image, *, sampling: float | None, focal: int, dataset: str | None = None) -> Iterable[Frame]:
    if isinstance(image, (str, Path)):
        from .files import open_recording

        rec = open_recording(image, focal=focal, dataset=dataset)
        if sampling is not None:
            from .sources import say_sampling_override

            say_sampling_override(rec.sampling, sampling, image)
        for f in rec.iter_frames():
            if sampling is not None:
                f.sampling = sampling
            yield f
        return
    image = checked_images(image, focal=focal, who="find")
    arr = image if isinstance(image, np.ndarray) else None
    if arr is not None and arr.ndim == 2:
        yield Frame(image=arr, frame=0, sampling=sampling)
        return
    if arr is not None and arr.ndim == 3 and focal > 1:
        arr = arr.reshape(-1, focal, *arr.shape[-2:])
    if arr is not None and arr.ndim not in (3, 4):
        raise ConfigError(f"image must be 2-D, a 3-D stack or 4-D focal-series stack; got shape {arr.shape}")
    for i, im in enumerate(arr if arr is not None else image):
        yield Frame(image=np.asarray(im), frame=i, sampling=sampling)


@dataclass
class TrackResult:
    """What :func:`track` returns.

    ``columns`` (frame, y, x, cls, prob, intensity, background, particle, y_ref, x_ref, site) and ``frames`` (one row
    per frame: seq, latency_ms, n_columns, drift_y, drift_x …) cover the whole run. Where the
    pipeline kept only the latest frames in memory (a run file was written and the run was
    longer than ``keep_in_memory_frames``, or it was resumed), they are read from the run file
    when first used.

    Units (as in the run file, :mod:`etem.tracker.runschema`): ``columns``' ``y, x`` [px] in
    the frame, ``y_ref, x_ref`` [px] drift-corrected (in the first frame's coordinates);
    ``sites``' ``y, x`` [px] in those reference coordinates; ``frames``' ``drift_y, drift_x``
    [px] the drift since the first frame (not per frame), ``t`` [s] the acquisition time
    where known (a file's, or ``fps``), ``received`` [s] since the run started. Multiply by
    ``sampling`` [Å/px] for Å.
    """

    sites: pd.DataFrame  # site, y, x, occupancy, event_rate …
    occupancy_map: np.ndarray
    event_map: np.ndarray
    flips: pd.DataFrame
    hops: pd.DataFrame
    residence: pd.DataFrame
    counters: dict[str, int]
    sampling: float | None
    run_path: Path | None
    #: frame, site, from_cls, to_cls: each change of a site's class (empty for one-class models)
    class_changes: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the model that found the columns (a bundled name or a bundle path), None for the classical locator
    model: str | None = None
    #: the engine that ran it (``classical``, ``eager``, ``onnxruntime`` …), None if no frame was processed
    engine: str | None = None
    #: frames where the view jumped further than the drift estimate looks (found by the linker's jump search)
    view_jumps: int = 0
    #: frames whose few NaN or infinite pixels were filled with the frame's median ([preprocess] fill_nonfinite)
    filled_nonfinite: int = 0
    #: whether each column's sublattice decided metal or chalcogen ([locate] lattice_classes)
    lattice_classes: bool = False
    #: the classical locator's column width [px] where it was measured on the first frame (the
    #: pixel size unknown), else None
    column_sigma_px: float | None = None
    #: how the locator's trust ranges were chosen, where worth saying (etem.tracker.trust.TrustRanges.note)
    trust_note: str = ""
    #: the run could have followed more with ``[locate] intensity_classes`` (ADF STEM frames of
    #: a 2D material, a locator of one class: :meth:`Pipeline.intensity_classes_would_help`)
    intensity_classes_hint: bool = False
    _columns: pd.DataFrame | None = field(default=None, repr=False)
    _frames: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def columns(self) -> pd.DataFrame:
        if self._columns is None:
            self._columns = self._read("columns")
        return self._columns

    @property
    def frames(self) -> pd.DataFrame:
        if self._frames is None:
            self._frames = self._read("frames")
        return self._frames

    def __repr__(self) -> str:
        c = self.counters
        parts = [f"frames={c.get('processed', 0)}"]
        parts += [f"{k}={c[k]}" for k in ("rejected", "dropped", "missing") if c.get(k)]
        if self._columns is not None:
            parts.append(f"columns={len(self._columns)}")
        parts += [f"sites={len(self.sites)}", f"flips={len(self.flips)}", f"hops={len(self.hops)}",
                  f"sampling={'None' if self.sampling is None else format(self.sampling, '.4g')}",
                  f"engine={self.engine!r}"]
        if self.model:
            parts.append(f"model={self.model!r}")
        parts.append(f"run_path={None if self.run_path is None else str(self.run_path)!r}")
        return f"TrackResult({', '.join(parts)})"

    def _read(self, table: str) -> pd.DataFrame:
        from .run import open_run

        if self.run_path is None:
            raise ValueError(f"this result has no {table} table and no run file to read it from (a run "
                             "without a run file keeps every frame's columns only with keep_all_columns=True)")
        with open_run(self.run_path) as run:
            return run.read_table(table)


def track(
    source: ArrayLike | str | Path | None,
    *,
    sampling: float | Literal["auto"] | None = None,
    material: str | None = None,
    model: str | Path | None = None,
    classical: bool = False,
    dark: bool = False,
    device: str | None = None,
    engine: str | None = None,
    config: PipelineConfig | Mapping[str, Any] | str | Path | None = None,
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
    resume: str | Path | None = None,
    force: bool = False,
    pattern: str | None = None,
    dataset: str | None = None,
    keep_all_columns: bool = True,
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
    model, classical, dark, device, engine
        As in :func:`find`. With no model named, the first frame's metadata (a file's, a
        stream's) choose it.
    config
        As in :func:`find`: a PipelineConfig, a mapping of a TOML config file's tables (``{"link":
        {"search_range_A": 1.0}}``), or a TOML file's path.
    run_path
        Write the run's HDF5 file here (incrementally, readable while written; read it with
        :func:`~etem.tracker.run.open_run`). It is opened at the first frame tracked: a run that
        tracks none writes none, and says so (``run_path`` of the result is then None).
    overwrite
        Replace a file at ``run_path`` (else an existing one is refused before the run starts).
    keep_all_columns
        Without ``run_path``, every frame's columns stay in memory for the result's ``columns``
        (13 KiB a frame measured at 85 columns: about 0.15 MB at 1,000). False keeps only the latest
        ``keep_in_memory_frames`` of them, for a run that runs for hours and is only watched
        (``etem track`` without ``-o``); the result then has no ``columns`` table. With a run
        file the file holds them all, and memory the latest few, either way.
    mode, bind
        ZeroMQ only: ``sub`` (live camera PUB) or ``pull`` (lossless PUSH); bind or connect.
    pace
        Recordings and frames in memory: None tracks them as fast as possible, 1.0 at acquisition
        pace (``k``: k times that), as their frame times or ``fps`` say.
    fps
        Frame rate [1/s]. For a recording or folder: where it records none (or to override its own).
        For frames in memory, which record none: their acquisition times, ``t = frame / fps``
        [s], in the frames table, so that rates and diffusion coefficients come per second
        (:func:`etem.tracker.report.run_statistics`); without it they are per frame.
        Streams: not taken (their frames carry their own times).
    idle_timeout_s
        Streams and folders: stop after this long without a frame.
    focal
        Images per frame: a stack ``[N*F, H, W]`` is read as N focal series of F images (a 4-D
        ``[N, F, H, W]`` stack, or a focal-series file, says so itself).
    curve_keys
        ZeroMQ only: a CURVE key folder (``etem keys``) to encrypt and authenticate the stream.
    pattern
        Folders only: the frame files to read, a glob below the folder (``"*.tif"``,
        ``"**/*.dm4"``); default every frame-file type, subfolders included.
    dataset
        Files and folders: the dataset or signal of a file to read, as in :func:`find`.
    on_frame
        Called with each :class:`FrameResult` and the pipeline (for status lines, dashboards).
    attrs
        The run's own attributes, stored in the run file's root (JSON-serialisable values; the
        names the file manages itself, such as ``status`` or ``sampling``, are refused).
    resume
        A run file whose tracker was killed (or stopped): go on with that run, in that file,
        with the config it was started with (see :mod:`etem.tracker.resume`). ``source`` may
        then be None: the run's own (a stream's address, mode and bind; a recording, from the
        frame after the last one saved). Options that shape the run (``config``, ``model``,
        ``sampling`` …) cannot be given; ``device`` can.
    force
        With ``resume``: also go on with a run that finished, that another version of
        etem-tracker wrote, or whose source differs from ``source``.
    """
    if resume is not None:
        shaping = {"config": config, "model": model, "classical": classical, "dark": dark, "engine": engine,
                   "sampling": sampling, "material": material, "run_path": run_path, "overwrite": overwrite,
                   "attrs": attrs}
        given = [k for k, v in shaping.items() if v not in (None, False)]
        if given:
            raise ConfigError(f"a resumed run goes on with the options it was started with; leave out "
                              f"{', '.join(given)}")
        return _resume(resume, source, force=force, device=device, mode=mode, bind=bind, pace=pace, fps=fps,
                       idle_timeout_s=idle_timeout_s, focal=focal, on_frame=on_frame, curve_keys=curve_keys,
                       pattern=pattern, dataset=dataset)
    if source is None:
        raise ConfigError("track() needs a source (frames, a file, a folder or a stream address)")
    check_sampling(sampling)
    source = checked_images(source, focal=focal, who="track")
    check_timing(source, fps, pace)
    if run_path is not None:
        check_run_path(run_path, overwrite)
    cfg = config_of(config)
    base_engine, meta = cfg.engine, file_meta(source, model, pattern, dataset)
    # images per frame: as given, else as the file holds them (a 4-D focal-series stack)
    per_frame = max(focal or 1, (meta or {}).get("n_focal") or 1)
    cfg = dataclasses.replace(cfg, engine=_engine_cfg(base_engine, model, classical, dark, device, engine, material,
                                                      per_frame, data=meta))
    if material is not None:
        cfg = dataclasses.replace(cfg, material=material)
    if isinstance(sampling, str) and sampling == "auto":
        from .lattice import require_material

        require_material(cfg.material)  # (named as find() names it: material=, --material)
        cfg = dataclasses.replace(cfg, sampling_from_lattice=True)
        sampling = None
    elif isinstance(sampling, str):
        raise ConfigError(f"sampling must be a pixel size in Å/px or 'auto', got {sampling!r}")
    if sampling is not None:
        cfg = dataclasses.replace(cfg, default_sampling=sampling)
    is_stream = isinstance(source, (str, Path)) and "://" in str(source)
    cfg = overflow(cfg, is_stream, mode, pace)
    counters = Counters()
    attrs = dict(attrs or {})
    if isinstance(source, (str, Path)):
        # where the frames came from: a file or folder (absolute, so viewers can find the images)
        # or a stream address
        attrs.setdefault("source", str(source) if "://" in str(source) else str(Path(source).resolve()))
        # what a resumed run needs to reconnect or reopen it the same way
        attrs.setdefault("source_options", {"mode": mode, "bind": bind, "focal": focal, "fps": fps,
                                            "curve_keys": None if curve_keys is None else str(curve_keys),
                                            "pattern": pattern, "dataset": dataset})
    elif fps is not None:  # frames in memory: the frame rate their times were given by (for a resume)
        attrs.setdefault("source_options", {"fps": float(fps)})
    pipe = Pipeline(cfg, run_path=run_path, counters=counters, overwrite=overwrite, attrs=attrs,
                    keep_all_columns=keep_all_columns)
    if meta is None and model in (None, "auto"):
        # the first frame says how it was taken in its meta (a file's metadata, a stream's header):
        # it chooses the model (and a bright-field detector dark columns, for the classical
        # locator too), before it is detected
        def choose(frame_meta: dict, n_focal: int = 1) -> EngineConfig:
            return _engine_cfg(base_engine, model, classical, dark, device, engine, material, max(focal or 1, n_focal),
                               data=frame_meta)

        pipe.choose_engine = choose
    if isinstance(source, np.ndarray) and source.ndim == 3 and focal > 1:
        source = source.reshape(-1, focal, *source.shape[-2:])
    src = open_source(source, counters=counters, stop=pipe.stop, mode=mode, bind=bind, sampling=sampling,
                      pace=pace, fps=fps, idle_timeout_s=idle_timeout_s, focal=focal, curve_keys=curve_keys,
                      pattern=pattern, nonfinite_ok=cfg.preprocess.fill_nonfinite > 0, dataset=dataset,
                      default_sampling=cfg.default_sampling)
    if not isinstance(source, (str, Path)) and fps is not None:
        src = timed(src, fps, pace, pipe.stop)
    result = _drive(pipe, src, on_frame)
    if not result.counters.get("processed"):
        say_nothing_tracked(result.counters, source, run_path, pattern)
    return result


def _resume(path, source, *, force: bool, device: str | None, mode, bind, pace, fps, idle_timeout_s, focal,
            on_frame, curve_keys, pattern, dataset=None) -> TrackResult:
    """:func:`track` with ``resume``: the same run goes on, in its own file."""
    from .resume import load, with_device

    check_run_path(path, overwrite=True)  # (the run goes on in its own file)
    point = load(path, force=force)
    stored = point.attrs.get("source")
    options = point.attrs.get("source_options") or {}
    if source is None:
        if not stored:
            raise ConfigError(f"run file {path} records no source; give it (the stream's address or the file)")
        source = stored
        if "://" in str(source):
            mode, bind = options.get("mode", mode), options.get("bind", bind)
            curve_keys = curve_keys if curve_keys is not None else options.get("curve_keys")
        focal = options.get("focal", focal)
    given_fps = fps
    if fps is None:  # the frame rate the run was given for a recording, folder or frames in memory
        fps = options.get("fps")
    if pattern is None:  # the files of a folder the run was reading
        pattern = options.get("pattern")
    if dataset is None:  # the dataset of the file the run was reading
        dataset = options.get("dataset")
    is_stream = isinstance(source, (str, Path)) and "://" in str(source)
    if isinstance(source, (str, Path)) and not is_stream and stored and not force:
        if str(Path(source).resolve()) != stored:
            raise ConfigError(f"run file {path} tracked {stored}, not {Path(source).resolve()}; pass --force "
                              "(force=True) to go on with another recording all the same")
    if options.get("focal", focal) != focal:
        raise ConfigError(f"the run in {path} was started with {options['focal']} images per frame (--focal "
                          f"{options['focal']}, focal={options['focal']}); resume it with the same")
    cfg = overflow(with_device(point.config, device), is_stream, mode, pace)
    counters = Counters()
    source = checked_images(source, focal=focal, who="track")
    if is_stream:  # (a run file of an older version may record an fps for a stream: not taken)
        check_timing(source, given_fps, pace)
        fps = None
    check_timing(source, fps, pace)
    pipe = Pipeline.resume(point, config=cfg, counters=counters)
    if isinstance(source, np.ndarray) and source.ndim == 3 and focal > 1:
        source = source.reshape(-1, focal, *source.shape[-2:])
    start = 0 if is_stream else point.next_frame
    src = open_source(source, counters=counters, stop=pipe.stop, mode=mode, bind=bind, sampling=cfg.default_sampling,
                      pace=pace, fps=fps, idle_timeout_s=idle_timeout_s, focal=focal, curve_keys=curve_keys,
                      start=start, pattern=pattern, nonfinite_ok=cfg.preprocess.fill_nonfinite > 0, dataset=dataset)
    if not isinstance(source, (str, Path)) and fps is not None:
        src = timed(src, fps, pace, pipe.stop, start=start)
    seq = getattr(src, "seq", None)
    last_seq = None if point.meta is None else point.meta["pipeline"]["last_seq"]
    if seq is not None and last_seq is not None and last_seq >= 0:
        # what the stream sent while the tracker was down counts as missing; a seq that went
        # back (the camera restarted meanwhile) as a restart
        seq.last = int(last_seq)
        seq.reconnected()
    return _drive(pipe, src, on_frame)


def _drive(pipe: Pipeline, src, on_frame) -> TrackResult:
    """Run ``pipe`` over ``src``, calling ``on_frame`` with each frame's result; its results."""
    results = pipe.run_iter(src)
    with interrupt.ctrl_c_held():  # a Ctrl-C waits for the frame in hand (in the main thread)
        res = next(results, None)
        while res is not None:
            if on_frame is not None:
                try:
                    on_frame(res, pipe)
                except KeyboardInterrupt as exc:
                    # a stop in the callback is one in the pipeline: the run ends, or a live
                    # stream's frames already received are tracked first (the next result)
                    try:
                        res = results.throw(exc)
                    except StopIteration:
                        res = None
                    continue
            res = next(results, None)
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
    complete = pipe.tables_complete or pipe.run_path is None  # (without a run file every frame's row stays)
    frames = pipe.frames_table() if complete else None
    if frames is not None and not len(frames.columns):  # (no frame tracked: the table's columns all the same)
        from .runschema import FRAMES

        frames = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in FRAMES.items()})
    # the run file is opened at the first frame tracked (a resumed run's was there before)
    written = pipe.run_path is not None and (pipe.linker is not None or pipe._resume is not None)
    return TrackResult(
        _columns=pipe.columns_table() if pipe.tables_complete else None,
        _frames=frames,
        sites=sites,
        occupancy_map=occ,
        event_map=ev,
        flips=stats.get("flips", pd.DataFrame()),
        hops=stats.get("hops", pd.DataFrame()),
        residence=stats.get("residence", pd.DataFrame()),
        class_changes=stats.get("class_changes", pd.DataFrame()),
        counters=pipe.counters.as_dict(),
        sampling=pipe.sampling,
        run_path=pipe.run_path if written else None,
        model=pipe.cfg.engine.model if pipe.cfg.engine.kind != "classical" else None,
        engine=pipe.detector.engine_label,
        view_jumps=0 if pipe.linker is None else pipe.linker.jumps,
        filled_nonfinite=pipe.filled_nonfinite,
        lattice_classes=pipe.cfg.locate.lattice_classes != "off"
        and lattice_species(getattr(pipe.detector.engine, "card", None)) is not None,
        column_sigma_px=pipe.detector.measured_sigma_px,
        trust_note=pipe.detector.trust_note,
        intensity_classes_hint=pipe.sites is not None and pipe.intensity_classes_would_help(),
    )
