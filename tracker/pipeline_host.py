"""Stage 3 of :class:`~etem.tracker.pipeline.Pipeline`, on the host: a frame's columns linked
into tracks (drift corrected), its sites updated, its row and columns kept and written.
:class:`HostStage` is a part of the pipeline, kept apart as
:class:`~etem.tracker.pipeline_checks.FrameChecks` is."""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from .frames import Frame, FrameResult, column_values
from .link import StreamLinker

log = logging.getLogger("etem.pipeline")


class HostStage:
    """The host stage of :class:`~etem.tracker.pipeline.Pipeline` (its linker, sites, run
    writer, tables and counters)."""

    def _host(self, frame: Frame, cols: pd.DataFrame) -> FrameResult:
        t0 = time.perf_counter()
        if self.linker is None:
            self.sites = self._new_sites()
            self.linker = StreamLinker(self.cfg.link, self._settings_sampling())
            self._open_writer(frame)
            if self.intensity_classes is not None:
                self._check_intensity_imaging(frame)
            else:  # the model's classes (S2 -> S at one site, S -> S2 beside it: a hop)
                self.sites.class_names = [str(n) for n in getattr(self.detector.engine, "class_names", ()) or ()]
        quality = cols.attrs.get("quality", {})
        if self.intensity_classes is not None and "intensity" in cols.columns:
            learning = not self.intensity_classes.fixed
            cols["cls"] = self.intensity_classes(cols)
            self.sites.class_names = self.intensity_classes.class_names
            if learning and self.intensity_classes.fixed:
                self.reclass_provisional()
        ids, ref = self.linker.link(frame.frame, cols)
        oversize = self.linker.counts.get("oversize", 0)
        if oversize:
            if not self.oversize_subnets:
                log.warning("frame %d: %d clump(s) of columns too dense to link even at the smallest search "
                            "range started new tracks (counted in status()['oversize_subnets'])",
                            frame.frame, oversize)
            self.oversize_subnets += oversize
        t1 = time.perf_counter()
        site = self.sites.update(frame.frame, ref, column_values(cols, "cls"), particles=ids,
                                 prob=column_values(cols, "prob") if "prob" in cols.columns else None,
                                 image=frame.image, offset=self.linker.drift)
        linked = self.linker.table(cols, ids, ref, frame=frame.frame, site=site)
        t2 = time.perf_counter()
        latency = t2 - frame.received if frame.received else float("nan")
        self.latencies.append(latency)
        drift = (float(self.linker.drift[0]), float(self.linker.drift[1]))
        row = {
            "frame": frame.frame,
            "seq": -1 if frame.seq is None else frame.seq,
            "t": np.nan if frame.t is None else frame.t,
            "received": (frame.received - self.t_start) if frame.received else np.nan,
            "latency_ms": latency * 1e3,
            "n_columns": len(linked),
            "drift_y": drift[0],
            "drift_x": drift[1],
            "sampling": np.nan if frame.sampling is None else frame.sampling,
            "dose": np.nan if frame.dose is None else frame.dose,
            "snr": quality.get("snr", np.nan),
            "dose_est": quality.get("dose_est", np.nan),
            "resolution_A": quality.get("resolution_A", np.nan),
            "confidence": quality.get("confidence", np.nan),
            "in_range": quality.get("in_range", -1),
            "out_of_range": quality.get("out_of_range", -1),
        }
        if len(self.columns_parts) == self.columns_parts.maxlen:  # (its window is never wider than the rows')
            self._evicted = True
        self.frames_rows.append(row)
        self.trust.add(row["in_range"], quality.get("trust", ""))
        self.columns_parts.append(linked)
        self.last_frame = frame
        self._last_index, self._last_seq, self._last_received = frame.frame, frame.seq, frame.received
        if len(ids):
            self._next_particle = max(self._next_particle, int(ids.max()) + 1)
        if self.writer is not None:
            self.writer.append("columns", linked)
            self.writer.append("frames", row)  # the frame's row in the run file is
        self.counters.add("processed")  # what counts it (run_iter squares the two after a stop)
        if self.writer is not None and self.writer.due():
            self._flush_live()
        t3 = time.perf_counter()
        self.stage_s["link"] += t1 - t0
        self.stage_s["sites"] += t2 - t1
        self.stage_s["write"] += t3 - t2
        return FrameResult(frame.frame, frame.seq, linked, drift, latency, frame.sampling)

    def _flush_live(self) -> None:
        """Sites, maps, counters and a resume snapshot, all as of the last frame, then the flush."""
        self._write_live()
        self.writer.flush()  # may fail (a full disk): the frames were processed all the same

    def _flush_idle(self) -> None:
        """While no frame comes (a camera paused, a burst tracked faster than the flush
        interval): the frames tracked since the last flush are written once it is due, so that
        readers see them, and a killed tracker keeps them."""
        w = self.writer
        if w is not None and w.due() and w.n_rows_pending() and self.last_frame is not None:
            self._flush_live()
