"""The pipeline's run file: opened at the first frame (or reopened by a resumed run), fed the
sites, maps, counters and resume snapshots as the run goes, and closed with the final tables;
the first frames' columns are classed again there once a run's intensity classes are fixed.

:class:`RunFileStage` is a part of :class:`~etem.tracker.pipeline.Pipeline` (its host stage),
kept apart so that the pipeline's own module holds the stages and their queues.
"""
from __future__ import annotations

import logging

import pandas as pd

from .frames import Frame

log = logging.getLogger("etem.pipeline")


class RunFileStage:
    """The run-file half of :class:`~etem.tracker.pipeline.Pipeline`'s host stage (it uses the
    pipeline's ``run_path``, ``writer``, ``linker``, ``sites``, counters and resume state)."""

    def _open_writer(self, first: Frame | None) -> None:
        if self.run_path is None:
            return
        from .resume import STATE_ARRAYS, STATE_LOGS, restore
        from .runfile import RunWriter
        from .versions import versions

        engine = self.detector.engine
        if self._resume is not None:  # the same run goes on, in its own file
            point = self._resume
            writer = RunWriter(self.run_path, attrs={}, counter_names=self.COUNTER_NAMES, overwrite=True,
                               state_arrays=STATE_ARRAYS, state_logs=STATE_LOGS)
            last_seq = None if point.meta is None else point.meta["pipeline"]["last_seq"]
            lost = None
            if point.last_frame is None:
                lost = 0
            elif first is not None and last_seq is not None and first.seq is not None and first.seq > last_seq:
                lost = first.seq - last_seq - 1  # what a stream sent while the tracker was down
            writer.reopen({"after_frame": point.last_frame, "from_frame": None if first is None else first.frame,
                           "frames_before": point.n_frames, "lost_frames": lost,
                           "engine": None if engine is None else {"kind": engine.name, "device": str(engine.device)},
                           "versions": versions()})
            self.writer = writer
            restore(self, point)
            return
        attrs = {"config": self.cfg.to_dict(), "versions": versions(), **self.attrs}
        card = getattr(engine, "card", None)
        attrs["engine"] = {"kind": engine.name, "device": str(engine.device),
                           "class_names": [str(n) for n in getattr(engine, "class_names", ()) or ()]}
        if getattr(engine, "int8", False):
            attrs["engine"]["int8"] = True
        if card:
            attrs["model_card"] = card
        writer = RunWriter(self.run_path, attrs=attrs, counter_names=self.COUNTER_NAMES, overwrite=self.overwrite,
                           state_arrays=STATE_ARRAYS, state_logs=STATE_LOGS)
        writer.begin(self.shape, self.sampling)
        self.writer = writer

    def _write_live(self, snapshot: bool = True) -> None:
        self.writer.replace("sites", self.sites.table())
        self.writer.write_maps(*self.sites.maps(self.shape))
        # every counter, those at 0 too: a reason counted before a resume and not since (a
        # stopped run's last frame, 'dropped/stopped') must not keep its old value in the file
        self.writer.write_counters({**dict.fromkeys(self.writer.counter_names, 0), **self.counters.as_dict()})
        if snapshot:
            self._snapshot()

    def _snapshot(self) -> None:
        """Hand the writer a resume snapshot as of the last processed frame."""
        from .resume import capture, counters_at_snapshot

        if self.linker is None or self._last_index is None:
            return
        with self._acct_lock:
            counters = self.counters.as_dict()
            self._ahead = [e for e in self._ahead if e[0] > self._last_received]
            ahead = list(self._ahead)
        meta, arrays, logs = capture(self, counters_at_snapshot(counters, ahead), self._logged)
        self.writer.set_state(meta, arrays, logs)

    def reclass_provisional(self) -> None:
        """Class the frames classed while the intensity groups were being learned again by the
        groups as they are now (fixed, or the last fit where the run ends before they are), in
        memory and in the run file's columns table, which then holds only those frames: the
        first frame's fit may have had more groups than the run's, and a class number is to mean
        the same in every frame. The site map keeps what it saw (it waits for a class to be
        probable before it decides it)."""
        ic = self.intensity_classes
        if ic is None or not ic.comps:
            return
        parts = [p for p in self.columns_parts if len(p) and "intensity" in p.columns]
        for p in parts:
            p["cls"] = ic.classify(p)
        if self.writer is None or self.writer.n_rows("columns") == 0:
            return  # (nothing written yet: the groups were fixed on the run's first frame)
        try:
            if sum(len(p) for p in self.columns_parts) == self.writer.n_rows("columns"):
                table = pd.concat(list(self.columns_parts), ignore_index=True)
            else:  # resumed, or frames gone from memory: the file's (a few thousand columns)
                table = self.writer.read("columns")
                if "intensity" in table.columns and len(table):
                    for _, g in table.groupby("frame", sort=False):
                        table.loc[g.index, "cls"] = ic.classify(g)
            self.writer.replace("columns", table)
        except (OSError, ValueError) as exc:  # (a full disk: the run goes on, and stops at its next flush)
            log.warning("run file %s: the first frames keep their provisional classes (%s)", self.run_path, exc)

    def finish(self, status: str = "complete") -> None:
        """Final sites, maps, statistics and counters into the run file; closes it."""
        if (self.writer is None and self.sites is None and status in ("complete", "stopped", "interrupted")
                and self._resume is not None and self._resume.state is not None):
            # a resumed run that got no frame (killed after its last one, or a stream that sent none
            # before a stop): close it all the same, with its statistics and its status. (Not a
            # failure: a run that failed before its first frame, a source that cannot be read, is
            # left as it was, to be resumed again.)
            self.sites = self._new_sites()
            self._open_writer(None)
        classes = getattr(self, "intensity_classes", None)
        if classes is not None and not classes.fixed:
            try:  # the run ended before its intensity groups were fixed: its frames by the last fit
                self.reclass_provisional()
            except Exception:
                log.exception("run file %s: the first frames keep their provisional classes", self.run_path)
        writer, self.writer = self.writer, None
        try:
            self.writer = writer
            if writer is not None:
                # the snapshot a resume goes on from: before the last frames' gaps are settled
                self._snapshot()
        except Exception:
            log.exception("run file %s: no resume snapshot at the end", self.run_path)
        finally:
            self.writer = None
        if self.sites is not None:
            self.sites.flush()
        if writer is None:
            return
        try:
            self.writer = writer
            self._write_live(snapshot=False)
            tables = self.statistics()
        except BaseException as exc:
            # Whatever the run held is already in the file; mark it so a reader knows the
            # final tables are missing, and never leave it looking as if it were still running.
            writer.close(status="failed", extra_attrs={"error": f"{type(exc).__name__}: {exc}",
                                                        "counters": self.counters.as_dict()})
            raise
        finally:
            self.writer = None
        extra = {"counters": self.counters.as_dict()}
        if self.error is not None:
            extra["error"] = self.error
        writer.close(status=status, extra_tables=tables, extra_attrs=extra)
