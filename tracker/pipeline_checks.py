"""The checks a frame passes before it is tracked, those that need the run's state: the run's
frame size, focal series and pixel size (set by its first frame, which also chooses the model
where the frames' metadata say how they were taken), finite pixels, and an image in the frame;
and the pixel size the run's settings in Å are taken at where the frames give none.

:class:`FrameChecks` is a part of :class:`~etem.tracker.pipeline.Pipeline` (its ingest stage),
kept apart as :class:`~etem.tracker.pipeline_run.RunFileStage` is.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from .frames import Frame
from .wire import MAX_FOCAL, MIN_SIDE

log = logging.getLogger("etem.pipeline")


class FrameChecks:
    """Frame checks of :class:`~etem.tracker.pipeline.Pipeline` (they use its ``cfg``,
    ``shape``, ``sampling``, ``n_focal``, ``blank``, ``detector``, counters and ``_account``)."""

    def _accept(self, f: Frame) -> bool:
        """Frame checks that need the run's state; reject (and count) what cannot be tracked."""
        if f.sampling is None and self.cfg.default_sampling is not None:
            f.sampling = self.cfg.default_sampling
        if self.shape is None and not self.cfg.material and (f.meta or {}).get("material"):
            self._material_of(f)
        if self.shape is None and self.cfg.material:
            from .lattice import resolve_sampling

            f.sampling, est = resolve_sampling(f.image, given=f.sampling, material=self.cfg.material,
                                               auto=self.cfg.sampling_from_lattice)
            self.sampling_estimate = est
            if est is not None:
                self.attrs["sampling_estimate"] = est.as_dict()
        elif self.sampling_estimate is not None and (self.cfg.sampling_from_lattice or f.sampling is None):
            f.sampling = self.sampling_estimate.sampling
        first = self.shape is None
        if min(f.shape) < MIN_SIDE or f.n_focal > MAX_FOCAL:
            what = f"shape {tuple(f.image.shape)}"
            if what not in self._mismatches_said:
                self._mismatches_said.add(what)
                log.warning("frame %d: %s is no image of at least %d px a side (nor a focal series of up to %d): "
                            "rejected, and so are further frames like it (rejected/preprocess)", f.frame, what,
                            MIN_SIDE, MAX_FOCAL)
            self._account("rejected", "preprocess", [f])
            return False
        if not first and (f.shape != self.shape or f.n_focal != self.n_focal):
            self._reject_mismatch(f, f"shape {tuple(f.image.shape)}", f"{self.shape}"
                                  + (f" x {self.n_focal} focal images" if self.n_focal > 1 else ""))
            return False
        if self.sampling is not None:  # one pixel size per run: sites and maps are in its pixels
            if f.sampling is None:
                f.sampling = self.sampling
            elif not math.isclose(f.sampling, self.sampling, rel_tol=0.01):
                self._reject_mismatch(f, f"sampling {f.sampling:g} Å/px", f"{self.sampling:g} Å/px")
                return False
        if not f.finite:
            if f.image.dtype.kind == "f" and not np.isfinite(f.image).all():
                if not self._nonfinite(f):
                    return False
            f.finite = True
        why = self.blank.constant(f.image)
        if why:
            self._reject_blank(f, why)
            return False
        if first:  # the first frame accepted sets the run's frame size, focal series and pixel size
            self.shape = f.shape
            self.sampling = f.sampling
            self.n_focal = f.n_focal
            if self.choose_engine is not None and f.meta:
                chosen = self.choose_engine(f.meta, f.n_focal)
                if chosen != self.cfg.engine:
                    self.cfg = dataclasses.replace(self.cfg, engine=chosen)
                    self.detector.choose(chosen)
        return True

    def _material_of(self, f: Frame) -> None:
        """The material in view as the first frame's file or stream says (``--material``
        overrides): it checks the sampling against its lattice, as a named one does. A name the
        tracker does not know is said and passed over."""
        from .files import known_material

        said = f.meta["material"]
        material = known_material(said)
        if material is None:
            log.warning("frame %d says its material is %r, which is not one the tracker knows; passed over "
                        "(--material NAME, material=, names it)", f.frame, said)
            return
        self.cfg = dataclasses.replace(self.cfg, material=material)
        log.info("material %s, as the data say", material)

    def _reject_mismatch(self, f: Frame, what: str, run: str) -> None:
        """Reject a frame of another size or pixel size than the run's (the camera's binning or
        region changed): said once for each new kind, then counted (rejected/preprocess)."""
        if what not in self._mismatches_said:
            self._mismatches_said.add(what)
            log.warning("frame %d: %s, the run's is %s: rejected, and so are further frames like it "
                        "(rejected/preprocess). A run's sites and maps are in the pixels of its first frame; "
                        "track the new frames in a new run (another -o).", f.frame, what, run)
        self._account("rejected", "preprocess", [f])

    def _nonfinite(self, f: Frame) -> bool:
        """A frame with NaN or infinite pixels: filled where they are few enough
        (``[preprocess] fill_nonfinite``; the first said, all counted in
        ``status()["filled_nonfinite"]``), else rejected (rejected/nan; the first rejection says
        how many there were and how to fill them)."""
        from .preprocess import fill_nonfinite, nonfinite_words

        limit = self.cfg.preprocess.fill_nonfinite
        image, n = fill_nonfinite(f.image, limit)
        if image is not None:
            if not self.filled_nonfinite:
                log.warning("frame %d: %d of %d pixels NaN or infinite, filled with the frame's median "
                            "([preprocess] fill_nonfinite); further such frames are filled too, and counted",
                            f.frame, n, f.image.size)
            f.image, f.finite = image, True
            self.filled_nonfinite += 1
            return True
        if not self.counters.rejected.get("nan"):
            log.warning("frame %d rejected, and further such frames counted (rejected/nan): %s", f.frame,
                        nonfinite_words(n, f.image.size, limit))
        self._account("rejected", "nan", [f])
        return False

    def _reject_blank(self, f: Frame, why: str) -> None:
        if not self.counters.rejected.get("blank"):
            log.warning("frame %d holds no image (%s; beam blanked?): rejected, and further such frames are "
                        "counted (rejected/blank)", f.frame, why)
        self._account("rejected", "blank", [f])

    def _check_intensity_imaging(self, f: Frame) -> None:
        """Intensity classes read Z contrast: say so where the run's frames are HRTEM or bright field."""
        from .detect import model_imaging

        imaging = (self.cfg.engine.imaging or (f.meta or {}).get("imaging")
                   or model_imaging(getattr(self.detector.engine, "card", None)))
        if imaging == "hrtem":
            log.warning("intensity classes are made for annular dark-field STEM, where a column's intensity "
                        "follows its atoms; in HRTEM it follows defocus and thickness as much, so the classes "
                        "may mean little")
        elif self.cfg.engine.contrast == "dark" or (f.meta or {}).get("detector") == "bf":
            log.warning("intensity classes are made for annular dark-field STEM; these frames are bright field "
                        "(dark columns), where the contrast is weaker than Z contrast: the columns are grouped by "
                        "how much darker than the floor they are, a heavier column darker, so the groups come in "
                        "ADF's order but lie closer together (SrTiO3 in ABF: O, Ti-O, Sr, as in ADF)")

    def intensity_classes_would_help(self) -> bool:
        """Whether the run could have followed more with ``[locate] intensity_classes``: annular
        dark-field STEM frames, a locator of one class, intensities measured, and the last frame's
        columns on a honeycomb (a 2D material such as MoS2), where an S2 column losing an atom is
        no flip and an S atom hopping between two columns no hop, as the site map sees one class."""
        from .detect import model_imaging
        from .intensity import _sublattices

        parts = getattr(self, "columns_parts", None)
        if self.intensity_classes is not None or not parts or self.last_frame is None:
            return False
        cols = parts[-1]
        if "intensity" not in cols.columns or len(cols) < 12 or len(set(self.sites.class_names or ["column"])) > 1:
            return False
        meta = self.last_frame.meta or {}
        imaging = (self.cfg.engine.imaging or meta.get("imaging")
                   or model_imaging(getattr(self.detector.engine, "card", None)))
        if imaging != "stem" or self.cfg.engine.contrast == "dark" or meta.get("detector") == "bf":
            return False
        return bool(_sublattices(cols)[1])

    def _settings_sampling(self) -> float | None:
        """The pixel size [Å/px] the run's settings in Å (the linker's search range, the site
        radius …) are converted with: the frames', or where that is unknown and the classical
        locator runs, its column width [px] taken as ``engine.column_sigma_A`` (measured on the
        first frame: :func:`etem.tracker.classical.column_width_px`; within about a quarter of the
        true pixel size). None otherwise (the settings are then taken as px). The run file's
        ``settings_sampling`` attribute records it."""
        if self.sampling:
            return self.sampling
        det = self.detector
        if det.engine is None or det.engine.name != "classical":
            return None
        from .classical import DEFAULT_SIGMA_PX

        width = (det.measured_sigma_px or getattr(det.engine, "column_sigma_px", None)
                 or det.engine_cfg.column_sigma_px or DEFAULT_SIGMA_PX)
        scale = self.cfg.engine.column_sigma_A / width
        if "settings_sampling" not in self.attrs:  # said once; the run file, opened after this, records it
            self.attrs["settings_sampling"] = {"sampling": scale, "column_sigma_px": width,
                                               "measured": det.measured_sigma_px is not None}
            log.warning("pixel size unknown: the settings in Å (the linker's search range, the site radius …) are "
                        "taken at %.3g Å/px, the classical locator's column width (%.2f px) as %.2f Å; positions "
                        "and statistics stay in px. Give the pixel size (--sampling, sampling=; Å/px) for figures in Å.",
                        scale, width, self.cfg.engine.column_sigma_A)
        return scale
