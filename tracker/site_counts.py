"""What a run's sites have decided so far: the frames whose sites are final, and the class
changes and hops dated at them (the dashboard's, the metrics' and the status line's counts)."""
from __future__ import annotations

import math

__all__ = ["final_upto", "counts_so_far"]


def final_upto(sites) -> float:
    """The last frame whose sites are final (:class:`etem.tracker.sites.SiteMap` decides a
    frame's occupancy ``look_ahead`` frames after it): inf where no frame waits (the run has
    ended), below the first frame where none is final yet."""
    try:
        pending = sites._pending
        return float(pending[0][0] - 1) if pending else math.inf
    except (AttributeError, IndexError):  # (emptied while read: all final)
        return math.inf


def counts_so_far(sites) -> tuple[int, int]:
    """Class changes and hops between two sites dated at frames whose sites are final: what the
    site count beside them stands for. (A class change is decided as its column is seen, a
    site's occupancy only ``look_ahead`` frames later: counted at once, the first frames of a
    run showed "class changes 3" beside "sites 0".) Both only grow, as counters do."""
    if sites is None:
        return 0, 0
    upto = final_upto(sites)
    changes = list(sites.class_changes)  # (a copy: the pipeline's thread appends to it)
    hops = list(sites.hops)
    n_changes = sum(1 for f, *_ in changes if f <= upto)
    n_hops = sum(1 for f, a, b in hops if f <= upto and a >= 0 and b >= 0)
    return n_changes, n_hops
