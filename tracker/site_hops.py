"""Hops of :class:`etem.tracker.sites.SiteMap`: a site that empties and one near it that fills
(within ``hop_radius_px``), in the same frame or within ``hop_window`` frames; a change left
without a partner is logged as a hop to or from an unknown site (-1)."""
from __future__ import annotations

from itertools import repeat

import numpy as np

from .matching import match_within


class SiteHops:
    """The hop half of :class:`etem.tracker.sites.SiteMap` (its ``_pos``, ``_lone``, ``hops``,
    ``hop_radius_px`` and ``cfg.hop_window``)."""

    def _infer_hops(self, frame: int, off: np.ndarray, on: np.ndarray) -> None:
        """Hops: a site that empties and one near it that fills, in this frame, else within the
        last ``hop_window`` frames (the hop is logged at the emptying's frame); the rest wait."""
        if len(off) and len(on):
            r, c = match_within(self._pos[off], self._pos[on], self.hop_radius_px)
            self.hops.add(frame, off[r], on[c])
            off, on = np.delete(off, r), np.delete(on, c)
        if self._lone and (len(off) or len(on)):
            lone = np.asarray(self._lone, np.int64).reshape(-1, 3)
            # a site that changes again is no hop's partner for its earlier change (a blip)
            used = np.isin(lone[:, 1], np.concatenate([off, on]))
            self._log_one_sided(lone[used].tolist())
            for now, kind in ((off, 1), (on, -1)):  # an emptying now pairs with an earlier filling, and back
                cand = np.flatnonzero((lone[:, 2] == kind) & ~used)
                if not (len(now) and len(cand)):
                    continue
                r, c = match_within(self._pos[now], self._pos[lone[cand, 1]], self.hop_radius_px)
                for i, j in zip(r.tolist(), cand[c].tolist()):
                    pair = (int(now[i]), int(lone[j, 1]))
                    # the hop's frame is its emptying's: the first frame the column is gone from its site
                    self.hops.append((frame, *pair) if kind == 1 else (int(lone[j, 0]), *pair[::-1]))
                used[cand[c]] = True
                if kind == 1:
                    off = np.delete(off, r)
                else:
                    on = np.delete(on, r)
            self._lone = [e for e, u in zip(self._lone, used) if not u]
        self._lone.extend(zip(repeat(frame), off.tolist(), repeat(-1)))
        self._lone.extend(zip(repeat(frame), on.tolist(), repeat(1)))
        self._expire_lone(frame - self.cfg.hop_window + 1)

    def _expire_lone(self, keep_from: float) -> None:
        """Log the unpaired emptyings and fillings older than ``keep_from`` as one-sided hops."""
        if self._lone and self._lone[0][0] < keep_from:
            self._log_one_sided([e for e in self._lone if e[0] < keep_from])
            self._lone = [e for e in self._lone if e[0] >= keep_from]

    def _log_one_sided(self, lone) -> None:
        """Emptyings ``(frame, site, -1)`` and fillings ``(frame, site, 1)`` as hops to or from
        an unknown site (-1)."""
        self.hops.extend((f, s, -1) if k < 0 else (f, -1, s) for f, s, k in lone)
