"""The view of :class:`etem.tracker.sites.SiteMap`: which sites lie out of a frame's field of view
(they drifted out, or the view moved), so that a column leaving the view is no site emptying.

A site counts as out of view in a frame where it lies less than ``view_margin_px`` (the
detector's ``edge_px`` + 1) inside the frame's edge, at the linker's drift, and no column was
found at it. Where the view moves across the specimen by :data:`MOVING_PX` or more a frame along
an axis, the margin at the edges across that axis widens by the site's radius (``radius_px``): a
column there is cut by the edge differently in each frame and found in some only (on a real ADF
movie of MoS2 drifting by whole pixels, identical pixels, the columns 3 to 8 px from the moving
edges came and went: 25 to 41 false flips in 12 frames). In a view that holds still (the toy and
STEM demos drift by a tenth of a pixel a frame) a column cut by the edge is cut alike in each
frame, and its site's events there are counted. Out of view a site holds its state, makes no
flip, and its frames are left out of its ``n_obs`` and occupancy; its residence run is cut where
it leaves, and a new run, cut at its start, begins where it comes back.
"""
from __future__ import annotations

import numpy as np

#: The view moves across the specimen along an axis where its drift changes by this much or more
#: from one frame to the next [px]: the margin at the edges across that axis widens.
MOVING_PX = 0.5


class SiteView:
    """The view half of :class:`etem.tracker.sites.SiteMap` (its ``_pos``, ``_state``,
    ``_run_start``, ``_left``, ``_out``, ``runs``, ``n_frames``, ``radius_px`` and
    ``view_margin_px``)."""

    def _view_of(self, shape, offset) -> tuple[float, ...] | None:
        """A frame's view for :meth:`_unseen`: height, width, the drift (``offset``) and the
        margin's widening across each axis (``radius_px`` where the view moved by
        :data:`MOVING_PX` or more along it since the frame before, or where there is none,
        else 0); None where the frame's shape is not known."""
        if shape is None:
            return None
        oy, ox = (0.0, 0.0) if offset is None else (float(offset[0]), float(offset[1]))
        last, self._last_offset = getattr(self, "_last_offset", None), (oy, ox)
        wy = wx = self.radius_px  # (the first frame: how the view moves is not known yet)
        if last is not None:
            wy = self.radius_px if abs(oy - last[0]) >= MOVING_PX else 0.0
            wx = self.radius_px if abs(ox - last[1]) >= MOVING_PX else 0.0
        return (float(shape[0]), float(shape[1]), oy, ox, wy, wx)

    def _site_box(self, ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The sites' bounding box (lowest, highest ``y, x``), for :meth:`_unseen`."""
        pos = self._pos[:ns]
        return pos.min(axis=0), pos.max(axis=0)

    def _unseen(self, view, ns: int, found: np.ndarray, box=None) -> np.ndarray | None:
        """Which sites lay out of a frame's view (``view``: height, width and the drift; a
        site with a column ``found`` at it was in view); None where all were in view. ``box``:
        :meth:`_site_box`, where the caller asks for several frames."""
        if view is None or not ns:
            return None
        h, w, oy, ox = view[:4]
        wy, wx = view[4:6] if len(view) >= 6 else (0.0, 0.0)
        my, mx = self.view_margin_px + wy, self.view_margin_px + wx
        pos = self._pos[:ns]
        lo, hi = self._site_box(ns) if box is None else box
        if lo[0] + oy >= my and lo[1] + ox >= mx and hi[0] + oy <= h - 1 - my and hi[1] + ox <= w - 1 - mx:
            return None  # (all well inside: the usual case, at the cost of four comparisons)
        y, x = pos[:, 0] + oy, pos[:, 1] + ox
        out = (y < my) | (x < mx) | (y > h - 1 - my) | (x > w - 1 - mx)
        out[found[found < ns]] = False
        return out if out.any() else None

    def _wholly_in_view(self, ref_yx: np.ndarray, image, offset) -> np.ndarray | None:
        """Which of a frame's columns (``ref_yx``: in the reference frame; ``image`` and
        ``offset`` as :meth:`update` takes them) lie at least ``view_margin_px`` and the site's
        radius inside the frame's edge, the view still or not; None where all do or the view is not known. A column nearer the edge is
        cut by it: its intensity, its floor and its sublattice (its neighbours half out of
        view) are not those of the whole column, so its class says nothing of the site's (on a
        real MoS2 ADF movie drifting by whole pixels, a column 5 px from the edge changed
        class from the metal's to a chalcogen group)."""
        if image is None or not len(ref_yx):
            return None
        h, w = np.shape(image)[-2:]
        oy, ox = (0.0, 0.0) if offset is None else (float(offset[0]), float(offset[1]))
        m = self.view_margin_px + self.radius_px
        y, x = ref_yx[:, 0] + oy, ref_yx[:, 1] + ox
        whole = (y >= m) & (x >= m) & (y <= h - 1 - m) & (x <= w - 1 - m)
        return None if whole.all() else whole

    def _cut_by_the_view(self, frame: int, unseen: np.ndarray, now: np.ndarray) -> None:
        """The residence runs of the sites that leave the view at ``frame`` end there, cut; a
        site coming back begins a run, cut at its start, in the state it is seen in (which is
        no flip: what happened meanwhile was not seen)."""
        ns = len(unseen)
        out = self._out[:ns]
        leaving = np.flatnonzero(unseen & ~out)
        if len(leaving) and self.n_frames:
            start = self._run_start[leaving]
            keep = frame > start
            gone = leaving[keep]
            self.runs.add(gone, start[keep], frame - start[keep], self._state[gone], 1 + 2 * self._left[gone])
        back = np.flatnonzero(~unseen & out)
        self._state[back] = now[back]
        self._run_start[back] = frame
        self._left[back] = True
        self._out[:ns] = unseen
