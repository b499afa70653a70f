"""The class state of each site: which species (or column height) it holds, followed through
a detector that confuses classes, and the frames at which it changes (a sulfur vacancy turning
an S2 column into S). Part of :class:`etem.tracker.sites.SiteMap`."""
from __future__ import annotations

import numpy as np

_N_CLS = 8                       # column classes a site keeps track of (votes, class state)
_PRIOR_CONFUSION = (0.7, 50.0)   # a column given its own class: prior probability, weight in detections per class
_PRIOR_CLS_SWITCH = (0.01, 1000.0)  # a site's class changing between two detections: prior, weight
_CLS_DECIDE = 0.9                # a site changes class when another is this probable
_CLS_HISTORY = 12                # detections per site kept to date a class change


class ClassStates:
    """The class half of :class:`etem.tracker.sites.SiteMap`, whose ``__init__`` makes the
    arrays used here (``_cls_post``, ``_cls_state``, ``_cls_hist``, ``_cls_hist_frame``,
    ``_shadow``, ``conf_counts``, ``cls_counts``, ``n_classes``, ``class_changes``)."""

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
        post[~known] = 1.0 / K
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
        # decided: the most probable class, where it is probable enough to leave the old one
        best = q.argmax(1)
        top = q.ravel().take(best + K * np.arange(len(best)))  # q.max(1), for less
        new = np.where(known & (top < _CLS_DECIDE), old, best)
        changed = known & (new != old)
        shadow = self._shadow  # (a shadow site's class changes are no more events than its flips)
        if shadow is not None and changed.any():
            at = sites < len(shadow)
            changed[at] &= ~shadow[sites[at]]
        self.cls_counts += (int(known.sum()), switched)
        for s, a, b in zip(sites[changed].tolist(), old[changed].tolist(), new[changed].tolist()):
            self.class_changes.append((self._change_frame(s, a, b, conf), s, a, b))
        self._cls_state[sites] = new

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
