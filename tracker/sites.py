"""Sites, occupancy and events, built online from linked, drift-corrected columns.

A *site* is a place in the reference frame (frame 0's pixels) where a column has been seen. A
column that vanishes and comes back at the same place is at the same site, whatever trackpy
called its track. Per site (Madsen et al. 2018, Fig. 10):

- occupancy: fraction of the run's frames in which the site holds a column;
- event rate: fraction of frame transitions in which it flips between occupied and empty.

A site is taken as empty in every frame before it was first seen, so occupancies of sites
born late in a run are comparable with those of sites seen from the start.
Hops are inferred where, in one frame, a site empties and a neighbouring site fills.

A column missed by the detector for a frame would count as two events (empty, then occupied
again). With ``fill_gaps = k``, an occupied site that is empty for at most k frames and then
occupied again is counted as occupied throughout; a frame's occupancy is therefore final k
frames after it arrived (the live maps lag by k frames). A real hop away and back within k
frames is erased too: set ``fill_gaps = 0`` to count every frame as detected.

The other way round, a false detection makes an empty site occupied for one frame: two events
again. With ``drop_blips``, a column at a site that was empty the frame before and is not seen
there again within the next ``fill_gaps`` frames is taken as a false detection (the site stays
empty). A real visit that short is dropped too; off by default.

Those two rules are the ``occupancy = "gaps"`` mode. The default, ``occupancy = "hmm"``, treats
each site as a two-state hidden Markov chain (occupied/empty) seen through an imperfect
detector, the model of single-molecule state analysis: a site switches state with probability
``k`` per frame (its own); an occupied site is detected with probability ``r`` (its own), an
empty one with probability ``f`` (false detections, one rate for the run). ``r``, ``f`` and
``k`` are estimated from the run as it goes (expected counts over the frames already
decided, with weak priors), so a detector that finds thin surface columns in half of the frames (HRTEM
at a few hundred e/Å²) and one that never misses (STEM) are both handled. Each frame's state
is the more probable one given every detection up to ``lag`` frames later (fixed-lag
forward-backward smoothing), so the live maps lag by ``lag`` frames. A visit or a vacancy much
shorter than the evidence needed to believe it (about ``log(1/k) / log(r/f)`` frames) is not
seen. With ``confidence_bins`` a detection also weighs by its column probability: the model
learns, the same way, how the probabilities of detections at occupied sites and of false ones
are spread (histograms of ``confidence_bins`` bins), so a faint column at an empty site counts
for less than a clear one.

Two more rules (their own modules): a site closer than real columns can be to a site where
columns are found more often is a *shadow* of it, a place where the detector puts a false
peak now and then, and is never occupied (:mod:`etem.tracker.site_shadows`); and the
``"hmm"`` occupancy weighs the image's values at every site in every frame, detected there
or not (:mod:`etem.tracker.site_evidence`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .errors import ConfigError, choice_error
from .eventlog import EventLog
from .matching import GuidedMatcher, candidate_pairs, match_pairs, near_earlier
from .site_classes import _CLS_HISTORY, _N_CLS, ClassStates
from .site_occupancy import _PRIOR_POOLED, OccupancyHMM
from .site_evidence import IntensityEvidence
from .site_hops import SiteHops
from .site_shadows import ShadowSites
from .site_view import SiteView

_OCCUPANCY = ("hmm", "gaps")


@dataclass(frozen=True)
class SitesConfig:
    """Site options.

    radius_A
        A column within this distance of a site's position is at that site [Å]; keep it below
        half the closest column spacing.
    hop_radius_A
        A site that empties and one that fills within this distance, in the same frame or within
        ``hop_window`` frames of each other, make a hop [Å].
    hop_window
        Frames by which the emptying and the filling of a hop may be decided apart (the
        occupancy of a weakly detected site is often decided a frame or two late); 0: the same
        frame only. An emptying or filling that finds no partner is logged as a one-sided hop
        (the other site -1) once the window has passed, so those rows lag by this many frames.
    map_radius_A
        Radius of each site's disc in the occupancy and event maps [Å].
    fill_gaps
        An occupied site empty for at most this many frames counts as occupied (a missed
        detection); results lag by this many frames.
    drop_blips
        A column at a site empty the frame before and not seen there again within ``fill_gaps``
        frames is a false detection (needs ``fill_gaps`` ≥ 1).
    occupancy
        ``"hmm"``: each site's state from a hidden Markov model of an imperfect detector
        (the module's docstring), decided ``lag`` frames late; ``"gaps"``: a frame is occupied
        where a column is seen, with ``fill_gaps`` and ``drop_blips`` (which only this mode
        uses).
    lag
        Frames of look-ahead of the ``"hmm"`` occupancy: results lag by this many frames.
    confidence_bins
        Bins of the column probability over [0, 1] in which the ``"hmm"`` occupancy learns how
        detections at occupied sites and false ones differ; 0: every detection counts alike.
    min_separation_A
        Two sites closer than this [Å] are one place: the one where columns are found less
        often is a *shadow* of the other (where the detector puts a peak now and then, between
        two columns or a column's far off) and is never occupied, so it makes no events and
        is left out of the maps (:mod:`etem.tracker.site_shadows`). None: 0.7 of the spacing
        of the sites found in at least half of the frames; 0: off.
    intensity_radius_A
        The ``"hmm"`` occupancy also weighs the image's mean within this radius of every site in
        every frame [Å], detected there or not (:mod:`etem.tracker.site_evidence`); 0: the
        detections alone.
    """

    radius_A: float = 0.8
    hop_radius_A: float = 4.0
    hop_window: int = 2
    map_radius_A: float = 0.8
    fill_gaps: int = 1
    drop_blips: bool = False
    occupancy: Literal["hmm", "gaps"] = "hmm"
    lag: int = 10
    confidence_bins: int = 0
    min_separation_A: float | None = None
    intensity_radius_A: float = 0.5

    def __post_init__(self) -> None:
        if self.occupancy not in _OCCUPANCY:
            raise choice_error("occupancy", self.occupancy, _OCCUPANCY)
        for name in ("fill_gaps", "lag", "confidence_bins", "hop_window"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= 0):
                raise ConfigError(f"sites.{name} must be an integer >= 0; got {v!r}.")
        for name in ("radius_A", "hop_radius_A", "map_radius_A"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"sites.{name} must be a positive distance in Å; got {v!r}.")
        v = self.intensity_radius_A
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConfigError(f"sites.intensity_radius_A must be a distance >= 0 in Å (0: off); got {v!r}.")
        v = self.min_separation_A
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            raise ConfigError(f"sites.min_separation_A must be a distance >= 0 in Å (0: off), or left out "
                              f"(0.7 of the sites' spacing); got {v!r}.")

    @property
    def look_ahead(self) -> int:
        """Frames a frame's occupancy waits for before it is final."""
        return self.lag if self.occupancy == "hmm" else self.fill_gaps


class SiteMap(OccupancyHMM, ClassStates, ShadowSites, IntensityEvidence, SiteView, SiteHops):
    """Online site bookkeeping; ``update`` once per frame, in frame order."""

    def __init__(self, cfg: SitesConfig, sampling: float | None, *, frames_per_detection: int = 1,
                 view_margin_px: float = 3.0) -> None:
        """``frames_per_detection``: how many frames each detection was made from (the
        detector's running average, :mod:`etem.tracker.average`). Consecutive detections then
        share their noise, so the ``"hmm"`` occupancy counts each as ``1 / frames_per_detection``
        of an independent one (its likelihoods raised to that power); otherwise a false column
        held for a few frames by the average reads as a visit.

        ``view_margin_px``: a site lies out of a frame's view where it is less than this far
        inside the frame's edge (the detector's ``edge_px`` and a pixel; and the site's radius
        more at the edges the view is moving across: :mod:`etem.tracker.site_view`) and no
        column was found at it (given the frame's image and drift to :meth:`update`): the view drifted off it. Such
        a frame says nothing of the site: its state is held, no flip is made of it, its
        ``n_obs`` and occupancy count only the frames it was in view, and its residence runs
        are cut (censored) where it leaves the view and begin anew, cut at their start, where
        it comes back."""
        if not (isinstance(frames_per_detection, (int, np.integer)) and frames_per_detection >= 1):
            raise ConfigError(f"frames_per_detection must be an integer >= 1; got {frames_per_detection!r}.")
        self.cfg = cfg
        self.evidence = 1.0 / int(frames_per_detection)
        self.view_margin_px = float(view_margin_px)
        px = 1.0 if sampling is None else 1.0 / sampling
        self.radius_px = cfg.radius_A * px
        self.hop_radius_px = cfg.hop_radius_A * px
        self.map_radius_px = cfg.map_radius_A * px
        cap = 256
        self._pos = np.zeros((cap, 2))  # running mean position
        self._n_pos = np.zeros(cap, np.int64)
        self._cls_votes = np.zeros((cap, _N_CLS), np.int64)
        self._n_occ = np.zeros(cap, np.int64)
        self._n_ev = np.zeros(cap, np.int64)
        self._first = np.zeros(cap, np.int64)
        self._last = np.zeros(cap, np.int64)
        self._state = np.zeros(cap, bool)
        self._run_start = np.zeros(cap, np.int64)
        # frames decided with the site in view; out of view at the last decided frame; its
        # current residence run began before it was seen (the run's start, or its return to view)
        self._n_seen = np.zeros(cap, np.int64)
        self._out = np.zeros(cap, bool)
        self._left = np.zeros(cap, bool)
        self.unseen_site_frames = 0  # (site, frame) pairs decided out of view, over the run
        # "hmm" occupancy: forward probability of being occupied after the last final frame,
        # detections in final frames, and the expected counts its estimates are made of
        self._alpha = np.zeros(cap)
        self._n_det = np.zeros(cap, np.int64)
        self._w_occ = np.zeros(cap)  # expected occupied frames (posterior sums)
        self._w_det_occ = np.zeros(cap)  # expected detections while occupied
        self._w_switch = np.zeros(cap)  # expected state changes
        # ... and the same two per class (weighted by each site's class probabilities): how
        # often a column of each class is found (a single S column far less often than S2)
        self._w_occ_cls = np.zeros((cap, _N_CLS))
        self._w_det_cls = np.zeros((cap, _N_CLS))
        # ... and how the image's values at the sites are spread, occupied and empty (site_evidence)
        self._int_stats = np.zeros((cap, 6))
        # expected detections by column-probability bin: row 0 at occupied sites, row 1 false
        # ones; and per site, at it while occupied
        self.prob_hist = np.zeros((2, cfg.confidence_bins))
        self._prob_occ = np.zeros((cap, cfg.confidence_bins))
        # class state per site (forward probabilities over the classes, the decided class, and
        # its latest detections, to date a change by), the detector's class confusion
        # (expected counts, true x detected) and the class changes found
        self._cls_post = np.zeros((cap, _N_CLS))
        self._cls_state = np.full(cap, -1, np.int64)
        self._cls_hist = np.full((cap, _CLS_HISTORY), -1, np.int64)  # latest detected classes, newest last
        self._cls_hist_frame = np.full((cap, _CLS_HISTORY), -1, np.int64)  # ... and their frames
        self.conf_counts = np.zeros((_N_CLS, _N_CLS))
        self.cls_counts = np.zeros(2)  # (detections of sites with a class state, expected class changes)
        self.n_classes = 0
        self.class_changes = EventLog(4)  # (frame, site, from class, to class)
        self.alpha_unseen = 0.5  # the forward probability of a site never detected
        self._r_start = _PRIOR_POOLED[0]  # the pooled detection rate's prior, from the first frames
        self.n_sites = 0
        self.n_frames = 0  # frames whose occupancy is final
        # (frame, site ids, probability bins: -1 where not known) awaiting finalization
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        # ... and each one's view: (height, width, drift y, drift x), None where not known
        self._pending_view: deque[tuple[float, float, float, float] | None] = deque()
        self.first_frame: int | None = None
        self.flips = EventLog(3)  # (frame, site, +1 on / -1 off)
        self.hops = EventLog(3)  # (frame, from_site, to_site); -1 unknown
        # emptyings (-1) and fillings (+1) without a partner yet: (frame, site, kind), for hop_window frames
        self._lone: list[tuple[int, int, int]] = []
        self._hops_counted = (0, 0)  # (hops rows counted, of them between two known sites): n_site_hops
        #: the classes' names (the model's, or the intensity classes'): where they say a change
        #: moves atoms (S2 -> S), opposite changes at neighbouring sites are hops
        self.class_names: list[str] | None = None
        # class changes awaiting a partner: (frame, site, from class, to class, frame decided)
        self._cc_open: list[tuple[int, int, int, int, int] | None] = []
        # (site, start, length, occupied, cut): cut 1 where the run's end was not seen (the run
        # ended, the site left the view), + 2 where its start was not (_left)
        self.runs = EventLog(5)
        # speed only, rebuilt as needed (not part of a resume snapshot): the matcher's index of
        # the sites, and the site each track was last seen on (_remember)
        self._matcher = GuidedMatcher(self.radius_px)
        self._track_ids: np.ndarray | None = None
        self._track_sites: np.ndarray | None = None
        sep = cfg.min_separation_A
        self._init_shadows(None if sep is None else sep * px)
        self._init_intensity(cfg.intensity_radius_A * px)

    # -- growth -----------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self._pos)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("_pos", "_n_pos", "_cls_votes", "_n_occ", "_n_ev", "_first", "_last", "_state", "_run_start",
                     "_n_seen", "_out", "_left", "_alpha", "_n_det", "_w_occ", "_w_det_occ", "_w_switch", "_w_occ_cls", "_w_det_cls",
                     "_int_stats", "_prob_occ", "_cls_post", "_cls_state", "_cls_hist", "_cls_hist_frame"):
            a = getattr(self, name)
            b = np.full((new,) + a.shape[1:], -1 if name.startswith(("_cls_state", "_cls_hist")) else 0, a.dtype)
            b[:cap] = a
            setattr(self, name, b)

    # -- per frame --------------------------------------------------------------------------
    def update(self, frame: int, ref_yx: np.ndarray, cls: np.ndarray | None = None, *,
               particles: np.ndarray | None = None, prob: np.ndarray | None = None,
               image: np.ndarray | None = None, offset=None) -> np.ndarray:
        """Assign this frame's columns (drift-corrected ``[N, 2]`` px) to sites; returns site ids
        (-1 for a column found twice, :meth:`_found_twice`, which no site counts).

        ``particles``: the columns' track ids, which only make it faster: a column is looked for
        first on the site its track was last seen on (the sites found are the same either
        way). ``prob``: the columns' probabilities, which the ``"hmm"`` occupancy weighs
        detections by (without them every detection counts alike). ``image``: the frame
        (``[H, W]``, or a focal series ``[F, H, W]``: its first image), whose values at every
        site the ``"hmm"`` occupancy weighs too (:mod:`etem.tracker.site_evidence`), with
        ``offset``: where the reference frame's origin lies in it [px] (the linker's drift)."""
        ref_yx = np.asarray(ref_yx, dtype=float).reshape(-1, 2)
        if particles is not None:
            particles = np.asarray(particles)
            if particles.shape != (len(ref_yx),):
                raise ValueError(f"particles must hold one track id per column ({len(ref_yx)}); "
                                 f"got shape {particles.shape}")
        if self.first_frame is None:
            self.first_frame = frame
        n = len(ref_yx)
        sites = np.full(n, -1, np.int64)
        if n and self.n_sites:
            # sites at their current mean positions
            guess = None if particles is None else self._guess(particles)
            if guess is None:
                i, j, d = candidate_pairs(ref_yx, self._pos[: self.n_sites], self.radius_px)
                r, c = match_pairs(i, j, d)
                reached = np.zeros(n, bool)
                reached[i] = True
            else:
                r, c = self._matcher.match(ref_yx, self._pos[: self.n_sites], guess)
                reached = self._matcher.reached
            sites[r] = c
        else:
            reached = np.zeros(n, bool)
        new = np.flatnonzero(sites < 0)
        if len(new):  # a column found twice keeps site -1: no site counts it
            new = new[~self._found_twice(ref_yx[new], reached[new])]
        if len(new):
            start = self.n_sites
            self._grow(start + len(new))
            ids = np.arange(start, start + len(new))
            sites[new] = ids
            self._pos[ids] = ref_yx[new]
            self._first[ids] = frame
            self._run_start[ids] = self.first_frame  # empty since the run began
            self._n_seen[ids] = self.n_frames  # (in view, as far as is known, in the frames decided)
            self._left[ids] = True
            self._alpha[ids] = self.alpha_unseen  # not detected in any final frame so far
            self.n_sites += len(new)
            self._note_new_sites(start)
        out = sites
        if len(sites) and sites.min() < 0:
            on = sites >= 0
            sites, ref_yx = sites[on], ref_yx[on]
            cls = None if cls is None else np.asarray(cls)[on]
            prob = None if prob is None else np.asarray(prob, float).reshape(-1)[on]
            n = len(sites)
        # running mean of positions and class votes (each site once: ``take`` and plain
        # assignment do what fancy indexing and ``np.add.at`` would, for less)
        n_pos = self._n_pos.take(sites) + 1
        self._n_pos[sites] = n_pos
        pos = self._pos.take(sites, axis=0)
        pos += (ref_yx - pos) / n_pos[:, None]
        flat = self._pos.reshape(-1)
        flat[2 * sites], flat[2 * sites + 1] = pos[:, 0], pos[:, 1]
        if cls is not None and n:
            c = np.clip(np.asarray(cls, int), 0, _N_CLS - 1)
            self._cls_votes.reshape(-1)[sites * self._cls_votes.shape[1] + c] += 1
            whole = self._wholly_in_view(ref_yx, image, offset)  # (a column cut by the edge: no class evidence)
            if whole is None:
                self._update_classes(frame, sites, c)
            elif whole.any():
                self._update_classes(frame, sites[whole], c[whole])
        self._last[sites] = frame
        if particles is not None:
            self._remember(particles, out)
        # both taken before either is queued: a Ctrl-C in the middle of taking them must not
        # leave the two queues of pending frames out of step (they are finalized side by side)
        entry = (frame, sites, self._prob_bins(prob, n))
        z = self._site_values(image, offset)
        view = self._view_of(None if image is None else np.shape(image)[-2:], offset)
        self._pending.append(entry)
        self._pending_z.append(z)
        self._pending_view.append(view)
        while len(self._pending) > self.cfg.look_ahead:
            self._finalize_oldest()
        return out

    def _found_twice(self, yx: np.ndarray, reached: np.ndarray) -> np.ndarray:
        """Which of this frame's columns left without a site (``yx``) are a column found twice
        (a network's double peak, or two peaks of one noisy column) and so get no site: those
        within ``radius_px`` of a site (a closer column of the frame took it, or they would
        have) or of one of them listed before. Real columns lie more than twice the radius
        apart; a second site that close would share the first's detections, each reading as
        empty whenever the other took them."""
        return near_earlier(yx, self.radius_px, reached)  # (reached: a site within the radius)

    def _prob_bins(self, prob: np.ndarray | None, n: int) -> np.ndarray:
        """Each column's bin of :attr:`prob_hist` (-1: no probability, or no bins)."""
        nb = self.prob_hist.shape[1]
        if prob is None or nb == 0:
            return np.full(n, -1, np.int64)
        p = np.asarray(prob, float).reshape(-1)
        if p.shape != (n,):
            raise ValueError(f"prob must hold one probability per column ({n}); got shape {p.shape}")
        return np.where(np.isfinite(p), np.clip(np.nan_to_num(p) * nb, 0, nb - 1), -1).astype(np.int64)

    def _remember(self, particles: np.ndarray, sites: np.ndarray) -> None:
        """Note the site of each track seen in this frame, in a table indexed by the track id
        modulo its size: ids are handed out in sequence, so the ids alive at one time share a
        slot only where they lie a whole table size apart (then the later one keeps it, and
        the other is not guessed)."""
        if particles.dtype.kind not in "iu":
            return
        size = 1 << max(16, (8 * len(particles)).bit_length())
        if self._track_ids is None or len(self._track_ids) < size:
            self._track_ids = np.full(size, -1, np.int64)
            self._track_sites = np.full(size, -1, np.int64)
        slot = (particles & (len(self._track_ids) - 1)).astype(np.intp)
        self._track_ids[slot] = particles
        self._track_sites[slot] = sites

    def _guess(self, particles: np.ndarray) -> np.ndarray | None:
        """The site each track was last seen on (-1: not known); None where few are known."""
        if self._track_ids is None or particles.dtype.kind not in "iu":
            return None
        slot = (particles & (len(self._track_ids) - 1)).astype(np.intp)
        known = self._track_ids.take(slot) == particles
        if 2 * int(known.sum()) < len(particles):
            return None
        return np.where(known, self._track_sites.take(slot), -1)

    def flush(self) -> None:
        """Finalize every pending frame (at the end of a run)."""
        while self._pending:
            self._finalize_oldest()
        self._expire_lone(np.inf)
        if self.class_names and self._cc_open:  # the class changes still waiting pair as they stand
            self._pair_class_changes(np.iinfo(np.int64).max // 2, [])

    def _finalize_oldest(self) -> None:
        if self.cfg.occupancy == "hmm":
            return self._finalize_oldest_hmm()
        frame, sites, _ = self._pending.popleft()
        self._pending_z.popleft()
        ns = self.n_sites
        unseen = self._unseen(self._pending_view.popleft(), ns, sites)
        now = np.zeros(ns, bool)
        now[sites] = True
        if self._pending and self.n_frames:
            later = np.zeros(ns, bool)
            for _, s, _ in self._pending:
                later[s] = True
            # empty now, occupied before and again within fill_gaps frames: a missed detection
            now |= ~now & self._state[:ns] & later
            if self.cfg.drop_blips:
                # occupied now, empty before, not seen again within fill_gaps frames: a false one
                now &= self._state[:ns] | later
        now = self._unshadowed(now)
        self._advance(frame, now, unseen)
        self.n_frames += 1

    def _advance(self, frame: int, now: np.ndarray, unseen: np.ndarray | None = None) -> None:
        """Occupied/empty state change bookkeeping (``now``: occupied mask; ``unseen``: the
        sites out of view, whose state is held): flips, runs, hops, occupancy counts."""
        ns = len(now)
        before = self._state[:ns]
        if unseen is not None:
            self.unseen_site_frames += int(unseen.sum())
            now = np.where(unseen, before, now)
            self._cut_by_the_view(frame, unseen, now)
            self._n_seen[:ns] += ~unseen
            self._n_occ[:ns] += now & ~unseen
        else:
            if self._out[:ns].any():
                self._cut_by_the_view(frame, np.zeros(ns, bool), now)
            self._n_seen[:ns] += 1
            self._n_occ[:ns] += now
        if self.n_frames == 0:
            self._state[:ns] = now
            self._run_start[:ns] = frame
            self._left[:ns] = True  # (begun before the recording)
            return
        on = np.flatnonzero(now & ~before)
        off = np.flatnonzero(~now & before)
        changed = np.concatenate([on, off])
        self._n_ev[changed] += 1
        start = self._run_start[changed]  # completed runs
        self.runs.add(changed, start, frame - start, before[changed], 2 * self._left[changed])
        self._left[changed] = False
        self._run_start[changed] = frame
        self.flips.add(frame, on, 1)
        self.flips.add(frame, off, -1)
        self._infer_hops(frame, off, on)
        self._state[:ns] = now

    # -- results ----------------------------------------------------------------------------
    @property
    def n_occupied_sites(self) -> int:
        """Sites judged occupied in at least one decided frame (:func:`occupied_sites`): the
        sites a run reports, without the places never judged occupied and the shadows."""
        return int(np.count_nonzero(self._n_occ[: self.n_sites]))

    @property
    def n_site_hops(self) -> int:
        """Hops between two known sites logged so far (the hops table's rows without a -1),
        counted over the rows added since the last call."""
        seen, n = self._hops_counted
        new = self.hops[seen:]
        n += int(np.count_nonzero((new[:, 1] >= 0) & (new[:, 2] >= 0)))
        self._hops_counted = (seen + len(new), n)
        return n

    def table(self) -> pd.DataFrame:
        """The sites table (schema SITES of the run file)."""
        ns = self.n_sites
        votes = self._cls_votes[:ns]
        return pd.DataFrame(
            {
                "site": np.arange(ns, dtype=np.int64),
                "y": self._pos[:ns, 0].copy(),
                "x": self._pos[:ns, 1].copy(),
                "cls": votes.argmax(axis=1).astype(np.int16) if ns else np.zeros(0, np.int16),
                "n_obs": self._n_seen[:ns].copy(),  # (the frames it was in view)
                "n_occupied": self._n_occ[:ns].copy(),
                "n_events": self._n_ev[:ns].copy(),
                "occupancy": self._n_occ[:ns] / np.maximum(self._n_seen[:ns], 1),
                "event_rate": self._n_ev[:ns] / np.maximum(self._n_seen[:ns] - 1, 1),
                "first_frame": self._first[:ns].copy(),
                "last_frame": self._last[:ns].copy(),
            }
        )

    def flips_table(self) -> pd.DataFrame:
        f = self.flips.rows()
        return pd.DataFrame({"frame": f[:, 0], "site": f[:, 1], "kind": np.where(f[:, 2] > 0, "on", "off")})

    def class_changes_table(self) -> pd.DataFrame:
        """``frame, site, from_cls, to_cls``: each change of a site's class (e.g. S2 to S where
        a sulfur vacancy forms), in the order found."""
        c = self.class_changes.rows()
        return pd.DataFrame({"frame": c[:, 0], "site": c[:, 1], "from_cls": c[:, 2], "to_cls": c[:, 3]})

    def hops_table(self) -> pd.DataFrame:
        h = self.hops.rows()
        h = h[np.argsort(h[:, 0], kind="stable")]  # (a hop or a one-sided one is logged up to hop_window frames late)
        return pd.DataFrame({"frame": h[:, 0], "from_site": h[:, 1], "to_site": h[:, 2]})

    def statistics(self, last_frame: int | None = None) -> dict[str, pd.DataFrame]:
        """The run's event tables: flips, hops, class changes and residence runs (the open ones
        up to ``last_frame``)."""
        return {"flips": self.flips_table(), "hops": self.hops_table(),
                "class_changes": self.class_changes_table(), "residence": self.residence_table(last_frame)}

    def residence_table(self, last_frame: int | None = None) -> pd.DataFrame:
        """Occupied/empty runs per site: ``censored`` where the run's end was not seen (the
        open run of each site in view at ``last_frame``, a run cut by the site leaving the
        view), ``left_censored`` where its start was not (begun before the recording, or before
        the site came into view). The completed runs are those with neither."""
        rows = self.runs.rows()
        if last_frame is not None:  # (the open runs of the sites in view)
            s = np.flatnonzero(~self._out[: self.n_sites])
            start = self._run_start[s]
            rows = np.concatenate([rows, np.stack([s, start, last_frame + 1 - start, self._state[s],
                                                   1 + 2 * self._left[s]], axis=1).astype(np.int64)])
        cut = rows[:, 4]
        return pd.DataFrame({"site": rows[:, 0], "start": rows[:, 1], "frames": rows[:, 2],
                             "occupied": rows[:, 3] > 0, "censored": (cut & 1) > 0, "left_censored": (cut & 2) > 0})

    def maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Occupancy and event-rate maps ``[H, W]``: each site ever occupied a disc, NaN
        elsewhere (:func:`occupied_sites`)."""
        tab = occupied_sites(self.table())
        return (render_site_values(tab[["y", "x"]].to_numpy(), tab["occupancy"].to_numpy(), shape, self.map_radius_px),
                render_site_values(tab[["y", "x"]].to_numpy(), tab["event_rate"].to_numpy(), shape, self.map_radius_px))


def occupied_sites(sites: pd.DataFrame) -> pd.DataFrame:
    """The rows of a sites table that were occupied in at least one frame.

    With the ``"hmm"`` occupancy a site whose every detection was judged false is never
    occupied: a place where the detector saw something now and then, not a site of the
    structure (on the simulated Au HRTEM movie 237 of its 249 such sites are nowhere near a
    true site; docs/guides/statistics.md). Maps, reports and counts leave them out; the
    sites table keeps them (the columns found there refer to them). Tables without
    ``n_occupied`` are returned whole."""
    if "n_occupied" not in sites.columns:
        return sites
    return sites[sites["n_occupied"].to_numpy() > 0]


def min_frames_in_view(n_frames: int) -> int:
    """How many frames a site must have been in view for its map value to be shown as a
    measurement: 3, or a tenth of the run's frames where that is more, but never more than the
    run has (in a one-frame run every site counts). A site seen in one frame at the edge of the
    field has occupancy 1.0 from that one frame: the maps (``etem export``, the report, the
    dashboard) draw such sites hollow or leave them out, and say so."""
    return int(min(max(3, int(np.ceil(0.1 * n_frames))), max(int(n_frames), 1)))


def seen_too_little(sites: pd.DataFrame, n_frames: int) -> np.ndarray:
    """Per row of a sites table, whether the site was in view (``n_obs``) in fewer frames than
    :func:`min_frames_in_view` asks (all False for a table without ``n_obs``)."""
    if "n_obs" not in sites.columns:
        return np.zeros(len(sites), bool)
    return sites["n_obs"].to_numpy() < min_frames_in_view(n_frames)


def render_site_values(yx: np.ndarray, values: np.ndarray, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """Paint each site's value in a disc of ``radius_px`` (nearest site wins); NaN elsewhere."""
    out = np.full(shape, np.nan, np.float32)
    if len(yx) == 0:
        return out
    r = max(int(np.ceil(radius_px)), 1)
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (oy**2 + ox**2) <= max(radius_px, 1.0) ** 2
    oy, ox = oy[disc], ox[disc]
    cy = np.rint(yx[:, 0]).astype(int)[:, None] + oy[None]
    cx = np.rint(yx[:, 1]).astype(int)[:, None] + ox[None]
    v = np.broadcast_to(np.asarray(values, np.float32)[:, None], cy.shape)
    ok = (cy >= 0) & (cy < shape[0]) & (cx >= 0) & (cx < shape[1])
    out[cy[ok], cx[ok]] = v[ok]
    return out
