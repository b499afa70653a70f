"""Shadow sites of :class:`etem.tracker.sites.SiteMap`: two sites closer than real columns can
be are one place, and the one where columns are found less often is never occupied.

A detector puts a peak now and then where no column is: between two columns (an HRTEM image's
interference at low dose), or a column's peak far off its position. Each such place becomes a
site, and its peaks come and go: flips, hops and events that never happened. On the simulated
Au HRTEM movie (``etem demo``, seed 0) half of the preview model's flips were at such places,
1.0–1.5 Å from a true site, where the columns lie 2.5 Å apart (docs/guides/statistics.md).

A site closer than the separation to one where more columns have been found is its *shadow*:
it is never taken as occupied (its detections still count in the occupancy model's estimates,
as the false detections they are; its columns keep its site id). The separation is
:attr:`SitesConfig.min_separation_A`, by default 0.7 of the spacing of the sites found in at
least half of the frames (the median distance to the nearest one): real neighbours lie a whole
spacing apart, a peak between two columns half of one.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

_SPACING_FRACTION = 0.7  # the separation, as a fraction of the sites' spacing
_MIN_SITES = 8           # sites found in half of the frames needed to estimate the spacing
_REFRESH = 25            # frames between estimates of the spacing (and pairs found anew)
_REACH = 1.25            # pairs are noted up to this many separations (sites move a little)


class ShadowSites:
    """The shadow half of :class:`etem.tracker.sites.SiteMap` (its ``_pos``, ``_n_pos``,
    ``n_sites`` and ``n_frames``)."""

    def _init_shadows(self, separation_px: float | None) -> None:
        """``separation_px``: the separation set [px] (0: off), or None: from the sites' spacing."""
        self._separation_set = separation_px
        self.separation_px = 0.0  # the separation in use (0: none yet, or off)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None  # sites within _REACH separations
        self._pairs_frame = 0  # n_frames when the pairs were last found anew
        self._tree: cKDTree | None = None  # ... from the sites then
        self._shadow: np.ndarray | None = None  # which sites were shadows when last asked

    def _site_spacing(self) -> float:
        """The median distance [px] from each site found in at least half as many frames as the
        most found one to the nearest other such site; 0 where there are too few."""
        ns = self.n_sites
        n = self._n_pos[:ns]
        strong = np.flatnonzero(n >= 0.5 * n.max()) if ns else n
        if len(strong) < _MIN_SITES:
            return 0.0
        pos = self._pos[strong]
        d, _ = cKDTree(pos).query(pos, k=2)
        return float(np.median(d[:, 1]))

    def _note_new_sites(self, start: int) -> None:
        """Note the pairs the sites from ``start`` on make with the earlier ones and each other:
        with those in the tree of the last :meth:`_find_pairs`, from the tree, and with those
        made since, from every distance (the pairs are found anew when those grow many)."""
        if self._pairs is None or self.separation_px <= 0:
            return  # (found when next asked)
        stop, reach = self.n_sites, _REACH * self.separation_px
        if 4 * (stop - self._tree.n) > self._tree.n:
            return self._find_pairs(keep_separation=True)
        new = self._pos[start:stop]
        near = self._tree.query_ball_point(new, reach, return_sorted=False)
        i = np.repeat(np.arange(start, stop), [len(p) for p in near])
        j = np.fromiter((k for p in near for k in p), np.int64, len(i))
        since = self._pos[self._tree.n:stop]
        d = new[:, None, :] - since[None]
        i2, j2 = np.nonzero(np.einsum("ijk,ijk->ij", d, d) < reach * reach)
        i2, j2 = i2 + start, j2 + self._tree.n
        earlier = j2 < i2  # (each pair once)
        a, b = self._pairs
        self._pairs = (np.concatenate([a, j, j2[earlier]]), np.concatenate([b, i, i2[earlier]]))

    def _find_pairs(self, keep_separation: bool = False) -> None:
        """The separation (set, or from the spacing, unless ``keep_separation``) and every pair
        of sites within reach of it."""
        sep = self._separation_set
        if not keep_separation:
            self.separation_px = self._site_spacing() * _SPACING_FRACTION if sep is None else sep
            self._pairs_frame = self.n_frames
        ns, reach = self.n_sites, _REACH * self.separation_px
        if reach <= 0 or ns < 2:
            self._pairs = None
            return
        self._tree = cKDTree(self._pos[:ns])
        p = self._tree.query_pairs(reach, output_type="ndarray")
        self._pairs = (p[:, 0].astype(np.int64), p[:, 1].astype(np.int64))

    def _shadows(self) -> np.ndarray | None:
        """Which sites are shadows now (``[n_sites]`` bool; None: none is): those closer than
        :attr:`separation_px` to a site where more columns have been found, or as many where
        they were shadows before (so that two sites found equally often do not trade places)."""
        if self._separation_set == 0:
            return None
        if self._pairs is None or self.n_frames - self._pairs_frame >= _REFRESH:
            self._find_pairs()
        if self._pairs is None or not len(self._pairs[0]):
            return None
        a, b = self._pairs
        d = self._pos[a] - self._pos[b]
        close = np.einsum("ij,ij->i", d, d) < self.separation_px**2  # (at the sites' positions now)
        a, b = a[close], b[close]
        na, nb = self._n_pos.take(a), self._n_pos.take(b)
        was = np.zeros(self.n_sites, bool)
        if self._shadow is not None:
            was[:len(self._shadow)] = self._shadow[: self.n_sites]
        shadow = np.zeros(self.n_sites, bool)
        shadow[a[(na < nb) | ((na == nb) & was.take(a))]] = True
        shadow[b[(nb < na) | ((na == nb) & was.take(b))]] = True
        self._shadow = shadow
        return shadow

    def _unshadowed(self, now: np.ndarray) -> np.ndarray:
        """``now`` (which sites are occupied in the frame being decided) with every shadow empty."""
        shadow = self._shadows()
        if shadow is not None:
            now &= ~shadow[: len(now)]
        return now
