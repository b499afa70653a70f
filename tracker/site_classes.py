"""The class state of each site: which species (or column height) it holds, followed through
a detector that confuses classes, and the frames at which it changes (a sulfur vacancy turning
an S2 column into S). Two opposite changes at neighbouring sites are an atom moving between
them (a vacancy hopping the other way). Part of :class:`etem.tracker.sites.SiteMap`."""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_N_CLS = 16                      # column classes a site keeps track of (votes, class state): a height model's 10 and more
_PRIOR_CONFUSION = (0.7, 50.0)   # a column given its own class: prior probability, weight in detections per class
_PRIOR_CLS_SWITCH = (0.01, 1000.0)  # a site's class changing between two detections: prior, weight
_CLS_DECIDE = 0.9                # a site changes class when another is this probable
_CLS_HISTORY = 12                # detections per site kept to date a class change
_PAIR_WAIT = 3                   # frames a class change waits after its decision for a partner to be decided
_CLASS_NAME = re.compile(r"([A-Z][a-z]?)(\d*)")  # "S2": S, 2 atoms; "S": S, 1; "B0", "B1": sublattice B, groups 0, 1


@lru_cache(maxsize=32)
def class_kinds(names: tuple[str, ...]) -> tuple[tuple[str | None, int], ...]:
    """Each class's kind and amount, from its name: ``"S2"`` is two S atoms, ``"S"`` one, ``"Mo"``
    one Mo; an intensity class ``"B0"``, ``"B1"`` is group 0, 1 (faintest first) of sublattice
    B; a column height ``"4"`` (a height model's classes ``"1"`` … ``"10"``) is 4 atoms of kind
    ``"atoms"``. A class whose name says none of these is ``(None, 0)``. A change between two
    classes of one kind and different amounts moves atoms: the site of the larger amount holds
    more."""
    out = []
    for name in names:
        name = str(name).strip()
        m = _CLASS_NAME.fullmatch(name)
        out.append((m.group(1), int(m.group(2) or 1)) if m else ("atoms", int(name)) if name.isdigit() else (None, 0))
    return tuple(out)


class ClassStates:
    """The class half of :class:`etem.tracker.sites.SiteMap`, whose ``__init__`` makes the
    arrays used here (``_cls_post``, ``_cls_state``, ``_cls_hist``, ``_cls_hist_frame``,
    ``_shadow``, ``conf_counts``, ``cls_counts``, ``n_classes``, ``class_changes``; for the hops
    of class changes ``class_names``, ``_cc_open``, ``hops``, ``_pos``, ``hop_radius_px``)."""

    def class_model(self) -> tuple[np.ndarray, float]:
        """The current class confusion ``[K, K]`` (row: true class, column: detected class;
        rows sum to 1) and the probability that a site's class changes between two of its
        detections, from expected counts with weak priors (``K``: classes seen so far)."""
        K = max(self.n_classes, 1)
        (p, w), (k0, wk) = _PRIOR_CONFUSION, _PRIOR_CLS_SWITCH
        prior = np.full((K, K), (1 - p) * w / max(K - 1, 1))
        np.fill_diagonal(prior, p * w)
        conf = self.conf_counts[:K, :K] + prior
        k = (self.cls_counts[1] + k0 * wk) / (self.cls_counts[0] + wk)
        return conf / conf.sum(1, keepdims=True), float(min(max(k, 1e-4), 0.5))

    def _update_classes(self, frame: int, sites: np.ndarray, cls: np.ndarray) -> None:
        """Each detected site's class: a hidden Markov chain over the classes seen through the
        detector's (estimated) confusion, filtered detection by detection. A change is taken
        when the more probable class changes, and dated to the first frame of the run of
        detections of the new class that led to it."""
        K = max(self.n_classes, int(cls.max()) + 1)
        self.n_classes = K
        if K < 2:
            return
        conf, k = self.class_model()
        old = self._cls_state.take(sites)
        known = old >= 0
        post = self._cls_post[:, :K].take(sites, axis=0)
        post[_row_sums(post) <= 0] = 1.0 / K  # (a site's first detection)
        pred = post * (1 - k) + (1 - post) * k / (K - 1)  # change to any other class alike
        like = conf[:, cls].T
        q = pred * like
        z = _row_sums(q)[:, None]
        q /= z
        # expected class changes since the last detection (for the estimate of k): not the
        # decided ones, which noise makes too many (and more with a larger k: a runaway)
        stay = _row_sums(post * (1 - k) * like) / z[:, 0]
        switched = float((1 - stay)[known].sum())
        self.conf_counts[:K, :K] += q.T @ np.eye(K)[cls]  # expected (true, detected) pairs
        self._cls_post[sites, :K] = q
        # each site's latest detections, to date a change by
        for h, v in ((self._cls_hist, cls), (self._cls_hist_frame, frame)):
            rows = np.empty((len(sites), h.shape[1]), h.dtype)
            rows[:, :-1] = h.take(sites, axis=0)[:, 1:]
            rows[:, -1] = v
            h[sites] = rows
        # decided: the most probable class, where it is probable enough to leave the old one; a
        # site's first class too waits until one is that probable, so that a first detection in
        # a wrong class (or in a class the run's first frames had not yet learned to tell) is not
        # a change when the next ones set it right
        best = q.argmax(1)
        top = q.ravel().take(best + K * np.arange(len(best)))  # q.max(1), for less
        new = np.where(top < _CLS_DECIDE, old, best)
        changed = known & (new != old)
        shadow = self._shadow  # (a shadow site's class changes are no more events than its flips)
        if shadow is not None and changed.any():
            at = sites < len(shadow)
            changed[at] &= ~shadow[sites[at]]
        self.cls_counts += (int(known.sum()), switched)
        start = len(self.class_changes)
        for s, a, b in zip(sites[changed].tolist(), old[changed].tolist(), new[changed].tolist()):
            at = self._change_frame(s, a, b, conf)
            self.class_changes.append((at, s, a, b))
            # the detections before it belong to the class it left: the next change is dated
            # among those after (else a site that went S -> S2 -> S could date its second change
            # to before its first)
            self._cls_hist[s, self._cls_hist_frame[s] < at] = -1
        self._cls_state[sites] = new
        if self.class_names and (len(self.class_changes) > start or self._cc_open):
            self._pair_class_changes(frame, self.class_changes[start:].tolist())

    def _pair_class_changes(self, frame: int, new: list[tuple[int, int, int, int]]) -> None:
        """Hops from class changes: a site whose class loses atoms (S2 -> S) and a neighbour
        within ``hop_radius_A`` whose class gains them back (S -> S2), dated at most
        ``hop_window`` frames apart, are an atom that moved between them (logged at the losing
        site's change). A change waits ``_PAIR_WAIT`` frames after it was decided for its
        partner to be decided too; then the pairs closest in time (then in distance) are taken.
        A class change is dated by the site's own detections however late it is decided, so
        the two of a hop fall within a frame: they pair within ``min(hop_window, 1)`` frames
        (2 frames paired twice as many unrelated changes on ADF MoS2 movies, and found no
        more hops)."""
        kinds = class_kinds(tuple(self.class_names))
        for f, s, a, b in new:
            if max(a, b) < len(kinds) and kinds[a][0] is not None and kinds[a][0] == kinds[b][0] \
                    and kinds[a][1] != kinds[b][1]:  # (a change of amount within one kind: atoms moved)
                self._cc_open.append((f, s, a, b, frame))
        open_ = self._cc_open
        if len(open_) > 1:
            from scipy.spatial import cKDTree

            c = np.asarray(open_, np.int64)
            yx = self._pos[c[:, 1]]
            # the changes within hop_radius of each other (a busy flake keeps hundreds waiting)
            i, j = cKDTree(yx).query_pairs(self.hop_radius_px, output_type="ndarray").T
            dt = np.abs(c[i, 0] - c[j, 0])
            d = np.hypot(*(yx[i] - yx[j]).T)
            # one site's change the other's reversed (S2 -> S beside S -> S2); for column heights,
            # which count atoms, what one lost the other gained (5 -> 4 atoms beside 3 -> 4). (An
            # intensity group's index is no count: B2 -> B1 beside B0 -> B1 is no atom moved.)
            count = np.array([k == "atoms" for k, _ in kinds])
            amount = np.array([a for _, a in kinds], np.int64)
            gain = amount[c[:, 3]] - amount[c[:, 2]]
            reverse = (c[i, 2] == c[j, 3]) & (c[i, 3] == c[j, 2])
            moved = count[c[i, 2]] & count[c[j, 2]] & (gain[i] == -gain[j])
            ok = (reverse | moved) & (c[i, 1] != c[j, 1]) & (dt <= min(self.cfg.hop_window, 1))
            ready = frame - np.maximum(c[i, 4], c[j, 4]) >= _PAIR_WAIT
            taken = np.zeros(len(c), bool)
            order = np.lexsort((d, dt))  # closest in time, then in distance
            for k in order[ok[order]]:
                if taken[i[k]] or taken[j[k]]:
                    continue
                taken[i[k]] = taken[j[k]] = True  # (the best partner of each, ready or not)
                if ready[k]:
                    (f1, s1, a1, b1, _), (f2, s2, _, _, _) = open_[i[k]], open_[j[k]]
                    self.hops.append((f1, s1, s2) if kinds[b1][1] < kinds[a1][1] else (f2, s2, s1))
                    open_[i[k]] = open_[j[k]] = None
        # a change whose partner could no longer be decided (changes are dated back over up to
        # _CLS_HISTORY detections) is left as a class change alone
        keep_from = frame - self.cfg.hop_window - 2 * _CLS_HISTORY
        self._cc_open = [e for e in open_ if e is not None and e[0] >= keep_from]

    def _change_frame(self, site: int, a: int, b: int, conf: np.ndarray) -> int:
        """The most likely frame of a change from class ``a`` to ``b`` among the site's latest
        detections: the split of them into a's (before) and b's (from then on) that the
        confusion ``conf`` makes most probable."""
        c, f = self._cls_hist[site], self._cls_hist_frame[site]
        c, f = c[c >= 0], f[c >= 0]
        la, lb = np.log(conf[a, c]), np.log(conf[b, c])
        # log-likelihood of the change at detection j: a's before j, b's from j on
        ll = np.r_[0.0, np.cumsum(la)][:-1] + np.cumsum(lb[::-1])[::-1]
        return int(f[int(np.argmax(ll))])


def _row_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(1)``; of two columns as one addition, which is what numpy's sum of two numbers
    is, for a fraction of the cost of its reduction along a short axis."""
    return a[:, 0] + a[:, 1] if a.shape[1] == 2 else a.sum(1)
