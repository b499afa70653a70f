"""The ``"hmm"`` occupancy of :class:`etem.tracker.sites.SiteMap` (the model is described in
:mod:`etem.tracker.sites`): each site a two-state hidden Markov chain seen through an imperfect
detector, its rates estimated from the run as it goes, each frame decided ``lag`` frames late."""
from __future__ import annotations

import numpy as np

# weak priors of the "hmm" occupancy: (value, weight in frames)
_PRIOR_POOLED = (0.8, 10.0)      # the detection rate pooled over all sites
_PRIOR_DETECT = 10.0             # per site detection rate, shrunk to the pooled rate with this weight
_PRIOR_FALSE = (0.02, 100.0)     # false detections per empty site and frame
_PRIOR_SWITCH = (0.01, 1000.0)   # the pooled state changes per site and frame
_PRIOR_GRADE = 100.0          # detections by column probability: weight of the prior (all detections)
_PRIOR_SITE_SWITCH = 100.0       # per site switching rate, shrunk to the pooled rate with this weight


class OccupancyHMM:
    """The ``"hmm"`` occupancy half of :class:`etem.tracker.sites.SiteMap`, whose ``__init__``
    makes the arrays used here."""

    def _class_detection_rate(self, r: np.ndarray, pooled: float) -> np.ndarray:
        """Where columns have classes, each site's detection rate is that of the class it holds
        now (weighted by its class probabilities): the class's rate at the site, shrunk to the
        class's rate pooled over all sites, itself shrunk to the rate pooled over all classes.
        A site whose S2 column turns into a single S column, which the network finds less often,
        is then expected to be missed more often, and its misses read less as the site
        emptying. Sites without class probabilities keep ``r``."""
        ns, K = self.n_sites, self.n_classes
        occ, det = self._w_occ_cls[:ns, :K], self._w_det_cls[:ns, :K]
        r_cls = (det.sum(0) + _PRIOR_POOLED[1] * pooled) / (occ.sum(0) + _PRIOR_POOLED[1])
        own = det + _PRIOR_DETECT * r_cls
        own /= occ + _PRIOR_DETECT
        # (each row of the class probabilities sums to 1, or is 0 where the site has no class yet)
        return np.where(self._cls_state[:ns] >= 0, np.einsum("ij,ij->i", self._cls_post[:ns, :K], own), r)

    def _count_class_detections(self, gamma: np.ndarray, det: np.ndarray) -> None:
        """Expected occupied frames and detections in them, per site and class (the sites'
        class probabilities as they stand, which have seen up to ``lag`` frames more)."""
        ns, K = self.n_sites, self.n_classes
        w = self._cls_post[:ns, :K] * gamma[:, None]  # (rows sum to 1, or 0 for a site with no class yet)
        self._w_occ_cls[:ns, :K] += w
        w *= det[:, None]
        self._w_det_cls[:ns, :K] += w

    def hmm_parameters(self) -> tuple[np.ndarray, float, np.ndarray]:
        """The ``"hmm"`` occupancy's current estimates: detection rate per site ``[n_sites]``,
        false-detection rate, and switching rate per site and frame ``[n_sites]``.

        Each is an expected count over the frames decided so far with a weak prior; per site rates are
        shrunk towards the rate pooled over all sites (a site seen for a few frames has the
        pooled rate, a busy site its own), so surface sites that hop often and core sites that
        never do are each judged by their own kinetics."""
        ns, nf = self.n_sites, self.n_frames
        w_occ, w_det_occ, n_det = self._w_occ[:ns], self._w_det_occ[:ns], self._n_det[:ns]
        (_, wr0), (f0, wf), (k0, wk) = _PRIOR_POOLED, _PRIOR_FALSE, _PRIOR_SWITCH
        r0 = self._r_start
        pooled = (w_det_occ.sum() + wr0 * r0) / (w_occ.sum() + wr0)
        # frames before a site was first seen count as empty and undetected, as they were
        f = (float(n_det.sum() - w_det_occ.sum()) + wf * f0) / (float(ns * nf - self.unseen_site_frames - w_occ.sum())
                                                                 + wf)
        f = min(max(f, 1e-4), 0.4)
        w_switch = self._w_switch[:ns]
        k_pooled = (float(w_switch.sum()) + wk * k0) / (ns * max(nf - 1, 0) + wk)
        k = np.clip((w_switch + _PRIOR_SITE_SWITCH * k_pooled) / (max(nf - 1, 0) + _PRIOR_SITE_SWITCH), 1e-4, 0.3)
        r = (w_det_occ + _PRIOR_DETECT * pooled) / (w_occ + _PRIOR_DETECT)
        if self.n_classes >= 2:
            r = self._class_detection_rate(r, pooled)
        r = np.clip(r, f + 0.05, 1 - 1e-4)  # a detector that sees occupied sites more often than empty ones
        return r, f, k

    def _grade(self, sites: np.ndarray, bins: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray]:
        """How likely each detection's probability bin is if its site is occupied and if it is
        false, relative to a bin of the histogram's width (1 where a column had no probability),
        tempered by ``w``. Thin surface columns are found with lower probabilities than the
        core's, so a site's own histogram counts, shrunk towards the pooled one as the detection
        rate is."""
        nb = self.prob_hist.shape[1]
        known = bins >= 0
        g1, g0 = np.ones(len(bins)), np.ones(len(bins))
        if not known.any():
            return g1, g0
        s, b = sites[known], bins[known]
        # each state's histogram with a prior of the histogram of all detections: where one
        # state has few detections (a detector that rarely sees an empty site), a probability
        # says little about it
        h = self.prob_hist
        base = h.sum(axis=0) + 1.0
        base /= base.sum()
        pooled = (h + _PRIOR_GRADE * base) / (h.sum(axis=1, keepdims=True) + _PRIOR_GRADE)
        own = self._prob_occ[s]
        g1[known] = nb * (own[np.arange(len(s)), b] + _PRIOR_DETECT * pooled[0, b]) / (own.sum(axis=1) + _PRIOR_DETECT)
        g0[known] = nb * pooled[1, b]
        return (g1, g0) if w == 1.0 else (g1**w, g0**w)

    def _window_detection_rate(self, ns: int, frames: list[np.ndarray]) -> float:
        """The detection rate the run starts with: how often the sites seen in most of the
        first frames (``frames``: their site ids) are seen in them; the prior where none is."""
        seen = np.zeros(ns)
        for s in frames:
            np.add.at(seen, s, 1)
        q = seen / len(frames)
        busy = q[q >= 0.5]
        return float(np.clip(busy.mean(), 0.5, 0.999)) if len(frames) > 1 and busy.size else _PRIOR_POOLED[0]

    def _finalize_oldest_hmm(self) -> None:
        """Fixed-lag smoothing: the oldest pending frame's states from its detections, the
        forward probabilities so far and the detections of the frames still pending."""
        frame, sites, bins = self._pending.popleft()
        z = self._pending_z.popleft()
        ns = self.n_sites
        box = self._site_box(ns) if ns else None
        unseen = self._unseen(self._pending_view.popleft(), ns, sites, box)  # (out of view: no evidence)
        det = np.zeros(ns, bool)
        det[sites] = True
        first = self.n_frames == 0
        if first:
            self._r_start = self._window_detection_rate(ns, [sites] + [s for _, s, _ in self._pending])
        r, f, k = self.hmm_parameters()
        a_prev = np.full(ns, 0.5) if first else self._alpha[:ns]
        keep, a_not = 1 - k, 1 - a_prev
        a_keep, a_not_move = a_prev * keep, a_not * k
        prior = a_prev if first else a_keep + a_not_move
        w = self.evidence
        # P(detected | occupied), P(missed | occupied), the same if empty: tempered by ``w``, each
        # power taken once per site rather than once per pending frame (a power of 1 is skipped:
        # it changes nothing)
        rates = np.empty((2, ns))
        rates[0] = r
        np.subtract(1, r, out=rates[1])
        false = np.array([[f], [1 - f]])
        if w != 1.0:
            rates, false = rates**w, false**w
        e1 = np.where(det, rates[0], rates[1])  # P(detections now | occupied now), tempered
        e0 = np.where(det, false[0], false[1])
        # the image's values at the sites, this frame's and the pending frames' (site_evidence)
        ratios = self._intensity_ratios([z, *self._pending_z], ns, w)
        if ratios is not None:
            e1 *= ratios[0]
        graded = self.prob_hist.shape[1] > 0  # (without bins, every detection counts alike)
        n_later = len(self._pending)
        later = [s for _, s, _ in self._pending]
        if graded:  # the grades of this frame's detections and of the pending frames', in one pass
            g1, g0 = self._grade(np.concatenate([sites, *later]),
                                 np.concatenate([bins, *(b for _, _, b in self._pending)]), w)
            e1[sites] *= g1[:len(sites)]
            e0[sites] *= g0[:len(sites)]
        if unseen is not None:
            e1[unseen] = e0[unseen] = 1.0
        lo, le = e1 * prior, e0 * (1 - prior)
        alpha = lo / (lo + le)
        # backward messages (P(later detections | occupied / empty now)) over the pending frames,
        # both states in one array: row 0 occupied, row 1 empty. The likelihoods of all pending
        # frames are written at once, then each frame costs a few operations on that array.
        like = np.empty((n_later, 2, ns))
        like[:, 0] = rates[1]  # missed, then the detections written over
        like[:, 1] = false[1]
        if n_later:
            seen = np.concatenate(later)
            at = np.repeat(np.arange(n_later) * 2 * ns, [len(s) for s in later]) + seen
            flat = like.reshape(-1)
            flat[at] = rates[0].take(seen)
            flat[at + ns] = false[0]
            if graded:
                flat[at] *= g1[len(sites):]
                flat[at + ns] *= g0[len(sites):]
            if ratios is not None:
                like[:, 0] *= ratios[1:]
        for p, view in enumerate(self._pending_view):
            u = self._unseen(view, ns, later[p], box)
            if u is not None:
                like[p][:, u] = 1.0
        b = np.ones((2, ns))
        lb, moved, norm = np.empty((2, ns)), np.empty((2, ns)), np.empty(ns)
        for p in range(n_later - 1, -1, -1):
            np.multiply(like[p], b, out=lb)  # l1, l0
            np.multiply(keep, lb, out=b)
            np.multiply(k, lb[::-1], out=moved)
            b += moved  # (1 - k) l1 + k l0, (1 - k) l0 + k l1
            np.add(b[0], b[1], out=norm)
            b /= norm
        b1, b0 = b
        gamma = alpha * b1 / (alpha * b1 + (1 - alpha) * b0)  # P(occupied now | detections so far and pending)
        now = self._unshadowed(gamma > 0.5)  # (a shadow's detections still count in the estimates)
        # expected counts for the estimates: occupied frames, detections in them, state changes
        seen_gamma = gamma if unseen is None else np.where(unseen, 0.0, gamma)  # (the estimates: frames in view)
        self._w_occ[:ns] += seen_gamma
        self._count_intensity(z, gamma, det)
        self._w_det_occ[:ns] += det * gamma
        if self.n_classes >= 2:
            self._count_class_detections(seen_gamma, det)
        known = bins >= 0
        if graded and known.any():
            nb, s, b = self.prob_hist.shape[1], sites[known], bins[known]
            g = gamma.take(s)
            self.prob_hist[0] += np.bincount(b, weights=g, minlength=nb)
            self.prob_hist[1] += np.bincount(b, weights=1 - g, minlength=nb)
            self._prob_occ.reshape(-1)[s * nb + b] += g
        if not first:
            stay = a_keep * e1 * b1 + a_not * keep * e0 * b0
            move = a_prev * k * e0 * b0 + a_not_move * e1 * b1
            self._w_switch[:ns] += move / (stay + move)
        self._alpha[:ns] = alpha
        # a site never detected: its forward probability at the mean rates
        pooled = float(r.mean()) if ns else _PRIOR_POOLED[0]
        ku = float(k.mean()) if ns else _PRIOR_SWITCH[0]
        u = 0.5 if first else self.alpha_unseen * (1 - ku) + (1 - self.alpha_unseen) * ku
        miss1, miss0 = (1 - pooled) ** w, (1 - f) ** w
        self.alpha_unseen = u * miss1 / (u * miss1 + (1 - u) * miss0)
        self._n_det[:ns] += det
        self._advance(frame, now, unseen)
        self.n_frames += 1
