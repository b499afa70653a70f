"""Detect: frames -> preprocess -> engine -> locate -> column tables in the input's pixels.

The one place where an engine meets the data; the streaming pipeline and ``find`` both use it.

A batch that runs the GPU out of memory is not the end of the run: the CUDA cache is emptied,
the micro-batch size halves (for the rest of the run) and the same frames are run again; a frame
that does not fit even alone is given back as ``None`` for the caller to reject and count.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import pandas as pd

from .engines import ENGINE_KINDS, engine_label
from .errors import ConfigError, SamplingUnknown, choice_error
from .frames import Frame
from .intensity import intensity_of_frames
from .lattice_classes import lattice_classes
from .lattice_classes import resolve as lattice_species_of
from .locate import LocateConfig, locate, refine_on_image, suppress_close, suppress_close_spacing
from .preprocess import PreprocessConfig, Preprocessor, coords_to_input, resample_scale

log = logging.getLogger("etem.detect")
_UNSET = object()  # trust ranges not looked up yet


@dataclass(frozen=True)
class EngineConfig:
    """Which engine runs and where.

    kind
        ``auto``, ``classical``, ``eager``, ``compiled``, ``onnxruntime``, ``tensorrt``.
    model
        A bundled model's name or a bundle path. None with ``auto``: the bundled model for what
        the frames are (their file's or stream's metadata, ``--imaging``, ``--material``; see
        :func:`etem.tracker.api.track`), else the classical locator.
    device
        ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1`` …
    contrast
        ``bright`` or ``dark`` columns. The classical locator looks for either; a network trained
        on STEM images of bright columns (annular dark field) is shown a dark-column frame
        (annular bright field) negated. A network trained on HRTEM learned the contrast its
        training optics give, and ``dark`` is refused for it (:func:`contrast_inversion`).
    column_sigma_A
        Classical locator only: Gaussian width of a column image [Å].
    column_sigma_px
        Classical locator, frames of unknown pixel size: the width [px]. None (the default):
        measured on the first frame (:func:`etem.tracker.classical.column_width_px`), 2 px
        where it cannot be.
    imaging
        ``"hrtem"``, ``"stem"`` or None (not said): what kind of images the frames are. The
        classical locator is then judged by the trust ranges measured on that kind only, not
        the strictest over every kind (:func:`etem.tracker.trust.ranges_for`).
    options
        Options of a model engine, passed to ``make_engine`` (e.g. ``threads`` for
        onnxruntime, ``max_batch`` for tensorrt, ``dtype`` for eager and compiled).
    """

    kind: str = "auto"
    model: str | None = None
    device: str = "auto"
    contrast: Literal["bright", "dark"] = "bright"
    column_sigma_A: float = 0.45
    column_sigma_px: float | None = None
    imaging: Literal["hrtem", "stem"] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:  # (said as the config is read, not when the engine is built)
            raise choice_error("kind", self.kind, ENGINE_KINDS)
        if self.imaging not in (None, "hrtem", "stem"):
            raise ConfigError(f"imaging must be 'hrtem', 'stem' or unset; got {self.imaging!r}")
        if self.column_sigma_px is not None and not self.column_sigma_px > 0:
            raise ConfigError(f"column_sigma_px must be a width in px > 0, or unset (measured); "
                              f"got {self.column_sigma_px!r}")


class Detector:
    """Engine, preprocessing and column location for frames of one shape and sampling.

    The engine is built at the first frame when not given (the classical locator sizes its
    filter from the frame's sampling, or, where that is unknown, from the frame itself).
    """

    def __init__(
        self,
        engine_cfg: EngineConfig | None = None,
        preprocess_cfg: PreprocessConfig | None = None,
        locate_cfg: LocateConfig | None = None,
        *,
        engine=None,
        measure_quality: bool = True,
        trust_ranges=None,
        batch_size: int | None = None,
    ) -> None:
        self.engine_cfg = engine_cfg or EngineConfig()
        self.preprocess_cfg = preprocess_cfg or PreprocessConfig()
        self.locate_cfg = locate_cfg or LocateConfig()
        self.engine = engine
        self._pre: Preprocessor | None = None
        self.stage_s = {"preprocess": 0.0, "engine": 0.0, "locate": 0.0, "quality": 0.0}
        #: measure each frame's quality and judge it against the engine's trust ranges
        self.measure_quality = measure_quality
        self.trust_ranges = _UNSET if trust_ranges is None else trust_ranges
        #: largest number of frames run through the engine at once (None: the whole batch); set
        #: (and halved) when the GPU runs out of memory
        self.micro_batch: int | None = None
        #: the batch size the pipeline forms (at most); an engine that runs one fixed shape
        #: (``engine.fixed_batch``: torch.compile with CUDA graphs) gets every batch padded to it,
        #: so that it compiles and records once instead of once per batch size met in the stream
        self.batch_size = batch_size
        self.oom_retries = 0  #: batches run again, smaller, after running out of GPU memory
        self.oom_rejected = 0  #: frames given up: out of memory even alone
        #: columns refined on the image: (input image, sigma [Å], radius [Å]); () for the maps
        self._image_refine: tuple = ()
        self._invert = False  #: the network is shown the frames negated (dark columns, a bright-column model)
        #: the first frame's intensities are skewed the other way than the columns looked for
        #: (:func:`_say_contrast`): every frame is out of the trust ranges for its contrast
        self._contrast_opposed = False
        #: metal or chalcogen from the sublattice ([locate] lattice_classes): the model's species, or None
        self._lattice = None
        #: the classical locator's column width [px] where it was measured on the first frame
        #: (the pixel size unknown), else None
        self.measured_sigma_px: float | None = None

    @property
    def trust_note(self) -> str:
        """How the trust ranges the frames are judged by were chosen, where worth saying (``""``)."""
        return getattr(self.trust_ranges, "note", "")

    @property
    def engine_label(self) -> str | None:
        """The engine's name as said to users (with " int8" for an int8 graph); None before it is built."""
        return engine_label(self.engine)

    @property
    def lattice_classes(self) -> bool:
        """Whether each column's sublattice decides metal or chalcogen (known once the engine is built)."""
        return self._lattice is not None

    def choose(self, engine_cfg: EngineConfig) -> None:
        """Run with ``engine_cfg`` instead (before the first frame, when the engine is not built)."""
        if self.engine is None:
            self.engine_cfg = engine_cfg

    def _ensure_engine(self, sampling: float | None, image=None) -> None:
        if self.engine is None:
            from .engines import make_engine

            e = self.engine_cfg
            opts: dict[str, Any] = dict(e.options) if e.model is not None else {}
            if e.kind == "classical" or (e.kind == "auto" and e.model is None):
                opts = {"contrast": e.contrast}
                if sampling:
                    opts["column_sigma_px"] = e.column_sigma_A / sampling
                elif e.column_sigma_px:
                    opts["column_sigma_px"] = e.column_sigma_px
                elif image is not None:
                    opts["column_sigma_px"] = self._measure_width(image)
            self.engine = make_engine(e.kind, e.model, device=e.device, **opts)
            log.info("engine: %s on %s", self.engine.name, self.engine.device)
        if self.locate_cfg.threshold is None:
            self.locate_cfg = dataclasses.replace(self.locate_cfg, threshold=engine_threshold(self.engine))
        if self._pre is None:
            self._invert = contrast_inversion(self.engine, self.engine_cfg.contrast)
            if image is not None:
                self._contrast_opposed = _say_contrast(image, self.engine, self.engine_cfg.contrast)
            self._image_refine = image_refinement(self.engine, self.locate_cfg)
            self._lattice = lattice_species_of(self.locate_cfg.lattice_classes, getattr(self.engine, "card", None))
            target, as_is = model_grid(self.engine, self.preprocess_cfg)
            pcfg = dataclasses.replace(self.preprocess_cfg, target_sampling=target, as_is=as_is)
            if pcfg.normalize is None:
                pcfg = dataclasses.replace(pcfg, normalize=_engine_normalization(self.engine))
            if sampling is None and target is None and pcfg.normalize == "local":
                log.warning(
                    "pixel size unknown: local normalization needs it (sigma_A); using global "
                    "normalization and a %.1f px column width. Pass the sampling (Å/px) for better results.",
                    getattr(self.engine, "column_sigma_px", float("nan")),
                )
                pcfg = dataclasses.replace(pcfg, normalize="global")
            self._pre = Preprocessor(pcfg, device=self.engine.device)

    def _measure_width(self, image) -> float:
        """The classical locator's column width [px] for frames of unknown pixel size, measured
        on ``image`` (the first frame)."""
        from .classical import DEFAULT_SIGMA_PX, column_width_px

        width = column_width_px(image)
        if width is None:
            log.warning("pixel size unknown, and the first frame shows no lattice to measure the column width "
                        "on: the classical locator looks for columns %.1f px wide. Give the pixel size "
                        "(--sampling, sampling=; Å/px) or [engine] column_sigma_px.", DEFAULT_SIGMA_PX)
            return DEFAULT_SIGMA_PX
        self.measured_sigma_px = width
        log.info("pixel size unknown: column width %.2f px, measured on the first frame", width)
        return width

    def device(self, sampling: float | None, image=None):
        """The device the engine runs on (building the engine for frames of ``sampling``
        first, where it is not built yet; ``image``: the first frame, on which the classical
        locator measures the column width where the pixel size is unknown)."""
        self._ensure_engine(sampling, image)
        return self.engine.device

    def detect(self, frames: Sequence[Frame]) -> list[pd.DataFrame | None]:
        """Columns (``y, x, cls, prob, intensity``; pixels of the input frame) for each frame of a batch.

        Runs the frames in micro-batches of at most :attr:`micro_batch`. When the GPU runs out of
        memory (``torch.cuda.OutOfMemoryError``, or a ``RuntimeError`` that says "out of
        memory"), the CUDA cache is emptied, :attr:`micro_batch` halves and the same frames run
        again (counted in :attr:`oom_retries`); a frame that runs out of memory alone gets
        ``None`` in place of its table.
        """
        out: list[pd.DataFrame | None] = []
        i = 0
        while i < len(frames):
            size = len(frames) - i if self.micro_batch is None else min(self.micro_batch, len(frames) - i)
            cols = self._attempt(frames[i:i + size])
            if cols is not None:
                out.extend(cols)
                i += size
            elif size > 1:
                self.micro_batch = size // 2
                self.oom_retries += 1
                log.warning("out of GPU memory on a batch of %d frames; going on with batches of %d",
                            size, self.micro_batch)
            else:
                self.micro_batch = 1
                self.oom_rejected += 1
                log.error("frame %d: out of GPU memory even alone; rejected", frames[i].frame)
                out.append(None)
                i += 1
        return out

    def _attempt(self, frames: Sequence[Frame]) -> list[pd.DataFrame] | None:
        """:meth:`_detect`, or None when it ran out of GPU memory (the cache then emptied)."""
        try:
            return self._detect(frames)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled
            if not is_out_of_memory(exc):
                raise
        # Out of the except block, the traceback and the tensors its frames held are gone.
        free_gpu_cache()
        return None

    def _inputs_of(self, f: Frame, n_in: int):
        """The images of frame ``f`` the network takes (``n_in`` of them): a focal series too
        short for the model is an error, and of one too long a single-image model takes the
        image nearest its own defocus (the frame's ``defocus`` where known, else the middle
        image, nearest focus in a series about it: not the first, the most defocused one)."""
        if f.n_focal == n_in or (n_in == 1 and f.n_focal == 1):
            return f.image
        if f.n_focal < n_in:
            raise ConfigError(f"the model takes a focal series of {n_in} images per frame; frame {f.frame} holds "
                              f"{f.n_focal}: give it such series (--focal {n_in}, focal={n_in}: a stack of single images "
                              "taken in series order), or a model for single images")
        if n_in > 1:
            return f.image[:n_in]
        card = getattr(self.engine, "card", None) or {}
        own = float((card.get("inputs") or [0.0])[0])
        if f.defocus is not None and len(f.defocus) == f.n_focal:
            k = min(range(f.n_focal), key=lambda i: abs(float(f.defocus[i]) - own))
            why = f"its defocus, {float(f.defocus[k]):g} Å, nearest the model's {own:g} Å"
        else:
            k = f.n_focal // 2
            why = "the middle one, nearest focus in a series about it (the frames say no defocus)"
        if not getattr(self, "_said_focal", False):
            self._said_focal = True
            log.warning("the frames are focal series of %d images and the model takes one: image %d is used, %s",
                        f.n_focal, k, why)
        return f.image[k]

    def _detect(self, frames: Sequence[Frame]) -> list[pd.DataFrame]:
        self._ensure_engine(frames[0].sampling, frames[0].image)
        n_in = self.engine.n_inputs
        t0 = time.perf_counter()
        images = [self._inputs_of(f, n_in) for f in frames]
        try:
            batch, scales = self._pre(images, [f.sampling for f in frames], finite=all(f.finite for f in frames))
        except SamplingUnknown as exc:
            raise SamplingUnknown(f"{exc}{_sampling_hint(frames[0].image, self.engine_cfg.column_sigma_A)}") from None
        raw, self._pre.raw = self._pre.raw, None  # (held no longer than this batch: GPU memory)
        if self._invert:
            batch = batch.neg()
        t1 = time.perf_counter()
        n = batch.shape[0]
        pad = self._padded_size(n)
        run = batch
        if pad > n:
            import torch

            run = torch.cat([batch, batch[-1:].expand(pad - n, -1, -1, -1)])  # its results are dropped
        probs = self.engine.predict(run)[:n]
        t2 = time.perf_counter()
        cols = locate(probs, self.locate_cfg)
        if self._image_refine:
            k, sigma_A, radius_A = self._image_refine
            s_batch = next((f.sampling / sc for f, sc in zip(frames, scales) if f.sampling), None)
            s_batch = s_batch or getattr(self.engine, "sampling", None) or 0.2  # a guess only without any
            refine_on_image(cols, batch[:, min(k, batch.shape[1] - 1)], sigma_px=sigma_A / s_batch,
                            radius_px=max(1, round(radius_A / s_batch)))
        for df, scale in zip(cols, scales):
            if scale != 1.0 and len(df):
                yx = coords_to_input(df[["y", "x"]].to_numpy(), scale)
                df["y"], df["x"] = yx[:, 0], yx[:, 1]
        sep = self.locate_cfg.min_separation_A
        if sep:
            cols = [suppress_close(df, sep / f.sampling) if f.sampling else df for df, f in zip(cols, frames)]
        if self.locate_cfg.min_separation_nn:
            cols = [suppress_close_spacing(df, self.locate_cfg.min_separation_nn) for df in cols]
        if self.locate_cfg.intensity_radius_A:
            intensity_of_frames(cols, frames, raw, radius_A=self.locate_cfg.intensity_radius_A, radius_px=2.5,
                                dark=self.engine_cfg.contrast == "dark")
        if self._lattice is not None:
            for df in cols:
                if len(df):
                    df["cls"] = lattice_classes(df, self._lattice)
        t3 = time.perf_counter()
        if self.measure_quality:
            self._judge(frames, cols, raw)
        t4 = time.perf_counter()
        self.stage_s["preprocess"] += t1 - t0
        self.stage_s["engine"] += t2 - t1
        self.stage_s["locate"] += t3 - t2
        self.stage_s["quality"] += t4 - t3
        return cols

    def _padded_size(self, n: int) -> int:
        """The batch size the engine is run with for ``n`` frames (``n`` unless it wants one shape)."""
        if not getattr(self.engine, "fixed_batch", False) or not self.batch_size:
            return n
        size = self.batch_size if self.micro_batch is None else min(self.batch_size, self.micro_batch)
        return max(n, size)

    def _judge(self, frames: Sequence[Frame], cols: list[pd.DataFrame], raw=None) -> None:
        """Image quality and the trust flag of each frame, into its table's ``attrs["quality"]``;
        ``raw``: the frames' first images as sent to the device, where the preprocessor kept them."""
        import numpy as np
        import torch

        from .quality import measure
        from .trust import FLAGS, describe, judge, ranges_for

        if self.trust_ranges is _UNSET:
            # what the run says its frames are, else what the first frame's file says
            imaging = self.engine_cfg.imaging or (frames[0].meta or {}).get("imaging")
            self.trust_ranges = ranges_for(self.engine, imaging=imaging)
        first = raw
        if first is None or first.shape[0] != len(frames):
            stack = np.stack([f.image.reshape(-1, *f.image.shape[-2:])[0] for f in frames])
            first = torch.from_numpy(stack).to(self.engine.device)
        q = measure(first, [f.sampling for f in frames])
        for df, f, (snr, dose_est, res) in zip(cols, frames, q):
            conf = float(df["prob"].mean()) if len(df) else float("nan")
            mask = judge(snr, res, f.sampling, conf, self.trust_ranges)
            if mask >= 0 and self._contrast_opposed:
                mask |= FLAGS["contrast"]
            df.attrs["quality"] = {"snr": float(snr), "dose_est": float(dose_est), "resolution_A": float(res),
                                   "confidence": conf, "out_of_range": int(mask),
                                   "in_range": -1 if mask < 0 else int(mask == 0),
                                   "trust": describe(mask, self.trust_ranges)}


#: A first frame whose intensities are skewed by more than this to the other side than the
#: columns the locator looks for gets a warning (:func:`_say_contrast`).
_SKEW_WARN = 0.5


def _say_contrast(image, engine, contrast: str) -> bool:
    """Warn, once at the first frame, where its intensities are skewed the other way than the
    columns the locator looks for: bright columns on a dark background skew them to the bright
    side (annular dark field: skewness +1.3 to +9 on the real MoS2 and SrTiO3 images and on the
    simulated STEM movies; HRTEM frames of Au and MoS2 +0.3 to +1.2), dark ones to the dark
    side (the real SrTiO3 annular bright-field crop: -0.77). Looking for bright columns in such
    a frame finds the bright gaps between them. Returns whether it warned: the run's frames are
    then out of the trust ranges for their contrast (``trust.FLAGS["contrast"]``). Not for an
    HRTEM network, which reads frames as recorded."""
    if model_imaging(getattr(engine, "card", None)) == "hrtem":
        return False
    import numpy as np

    a = np.asarray(image, dtype=np.float64)
    a = a.reshape(-1, *a.shape[-2:])[0][::2, ::2]
    a = a[np.isfinite(a)]
    sd = a.std() if a.size else 0.0
    if not sd > 0:
        return False
    skew = float(np.mean(((a - a.mean()) / sd) ** 3))
    if contrast == "dark" and skew > _SKEW_WARN:
        log.warning("the first frame's intensities are skewed to the bright side (skewness %+.2f), as where the "
                    "columns are bright (annular dark field), but the locator looks for dark columns (--dark): if "
                    "the overlay shows columns in the gaps between the columns, leave out --dark", skew)
    elif contrast != "dark" and skew < -_SKEW_WARN:
        log.warning("the first frame's intensities are skewed to the dark side (skewness %+.2f), as where the "
                    "columns are dark (annular bright field; HRTEM at some defoci), but the locator looks for bright "
                    "columns: if the overlay shows columns in the gaps between the columns, add --dark", skew)
    else:
        return False
    return True


def _sampling_hint(image, column_sigma_A: float) -> str:
    """For the error a network gives on a frame of unknown pixel size: the pixel size its
    columns' width suggests (:func:`etem.tracker.classical.column_width_px`, taken as
    ``column_sigma_A``), or nothing where it cannot be measured."""
    from .classical import column_width_px

    width = column_width_px(image)
    if width is None:
        return ""
    return (f" (A guess from the image: its columns are {width:.2f} px wide; at the {column_sigma_A:g} Å the "
            f"classical locator takes a column to be, that is {column_sigma_A / width:.3g} Å/px. On the real "
            "SrTiO3 and MoS2 images this guess was 2-4 % below the true pixel size: check it before using it.)")


def detect_averaged(detector: Detector, averager, frames: Sequence[Frame]) -> tuple[list[pd.DataFrame | None], float]:
    """``detector.detect`` on the running average of ``frames`` (``averager``: a
    :class:`~etem.tracker.average.FrameAverager`, or None for the frames as they are); returns
    the tables and the seconds spent averaging. The average is taken where the engine runs (the
    GPU, where it has one)."""
    if averager is None:
        return detector.detect(frames), 0.0
    t0 = time.perf_counter()
    if not averager.started:
        averager.device = detector.device(frames[0].sampling, frames[0].image)
    seen = [averager(f) for f in frames]  # the detector sees the window's mean
    t1 = time.perf_counter()
    return detector.detect(seen), t1 - t0


def image_refinement(engine, cfg: LocateConfig) -> tuple[int, float, float] | tuple[()]:
    """Whether columns are refined on the image (``LocateConfig.refine_on``), and how:
    ``(input image, sigma_A, radius_A)``, or ``()`` for positions from the maps. The image of a
    focal series is its least defocused one (the model card's ``inputs``)."""
    if cfg.refine_on != "image":
        return ()
    inputs = list((getattr(engine, "card", None) or {}).get("inputs") or [0.0])
    k = min(range(len(inputs)), key=lambda i: abs(float(inputs[i])))
    return k, cfg.image_sigma_A, cfg.image_radius_A


def model_grid(engine, preprocess_cfg: PreprocessConfig) -> tuple[float | None, tuple[float, float] | None]:
    """The pixel size [Å/px] frames are resampled to for ``engine`` (the config's, else the
    model's), and the range of ratios taken as they are (the config's, else where the model's
    card says frames do better not resampled)."""
    card = getattr(engine, "card", None) or {}
    target = preprocess_cfg.target_sampling
    if target is None:
        target = getattr(engine, "sampling", None) or card.get("sampling_A")
    as_is = preprocess_cfg.as_is
    if as_is is None:
        as_is = (card.get("inference") or {}).get("as_is_ratio")
    return target, None if not as_is else tuple(as_is)


def view_margin_px(engine, preprocess_cfg: PreprocessConfig, edge_px: float, sampling: float | None) -> float:
    """How far inside a frame's edge [its px] the detector sees columns: ``edge_px`` on the grid
    it locates on, which a network's resampling to its pixel size makes ``edge_px / scale`` of
    the frame's where it shrinks the frame (frames finer than its pixel size, beyond its card's
    ``as_is_ratio``); plus 1 px. A site nearer the edge than this is out of view (no column
    there is no evidence of an empty site). Until 2026-12-07 the sites took ``edge_px + 1``
    whatever the resampling: ``haadf-stem`` on 0.127 Å/px frames sees from 3.2 px inside."""
    scale = resample_scale(sampling, *model_grid(engine, preprocess_cfg))
    return edge_px / min(scale, 1.0) + 1.0


def model_imaging(card: dict | None) -> str | None:
    """What a model card says its network was trained on: ``"stem"``, ``"hrtem"``, or None (no
    card: the classical locator). The card's ``use`` says it for a bundled model; a model trained
    with ``etem train`` has its training configuration's ``imaging`` (``haadf``, ``hrtem``)."""
    if not card:
        return None
    imaging = (card.get("use") or {}).get("imaging") \
        or (card.get("training") or {}).get("config", {}).get("imaging") or "hrtem"
    return "stem" if imaging in ("stem", "haadf", "adf") else "hrtem"


def contrast_inversion(engine, contrast: str) -> bool:
    """Whether a network is shown the frames negated: ``contrast="dark"`` (dark columns, as in
    annular bright-field STEM) for a network trained on STEM images of bright columns. The
    classical locator handles ``dark`` itself (False). An HRTEM network learned the contrast of
    its training optics, and a negated HRTEM image is none a microscope makes (the bundled
    ``au-hrtem`` finds columns in held-out ones with F1 0.63 against 0.86 at 1,000 e/Å²): ``dark``
    is refused for it."""
    if contrast != "dark":
        return False
    card = getattr(engine, "card", None)
    imaging = model_imaging(card)
    if imaging is None:
        return False
    if imaging == "hrtem":
        name = card.get("name", "this model")
        raise ConfigError(
            f"dark columns (--dark) and the HRTEM model {name!r}: it was trained on HRTEM images over its "
            "optics ranges, and reads frames as the microscope records them; leave out --dark (it is for "
            "the classical locator and for STEM models, which are shown an annular bright-field frame negated)")
    return True


def engine_threshold(engine) -> float:
    """The column-probability threshold an engine is read with: its own suggestion (the
    classical locator's), its model card's ``threshold`` (chosen on validation images after
    training), else 0.5."""
    t = getattr(engine, "suggested_threshold", None)
    if t is None:
        t = (getattr(engine, "card", None) or {}).get("threshold")
    return float(t) if t is not None else 0.5


def _engine_normalization(engine) -> str:
    """The normalization an engine expects: its own attribute, else its model card's, else local."""
    own = getattr(engine, "normalization", None)
    if isinstance(own, str):
        return own
    card = getattr(engine, "card", None) or {}
    norm = card.get("normalization", {})
    return norm.get("method", "local") if isinstance(norm, dict) else str(norm)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the GPU ran out of memory."""
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_gpu_cache() -> None:
    """Release what torch's CUDA allocator caches (nothing to do without CUDA in use)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
