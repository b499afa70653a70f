"""The site records' store (tracker/eventlog.py): rows in one growing int64 array."""
import sys

import numpy as np
import pytest

from etem.tracker.eventlog import EventLog


def test_rows_go_in_every_way_and_come_back_in_order():
    log = EventLog(3)
    assert not log and len(log) == 0 and log.rows().shape == (0, 3)
    log.append((1, 2, 3))
    log.extend([(4, 5, 6), (7, 8, 9)])
    log.extend(np.array([[10, 11, 12]]))
    log.add(13, np.array([14, 15]), -1)  # scalars repeat along the arrays
    log.add(0, np.zeros(0, int), 1)  # no rows
    log.extend([])
    assert len(log) == 6 and log
    assert log.rows().tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, -1], [13, 15, -1]]
    assert list(log)[-1] == (13, 15, -1) and all(type(v) is int for v in list(log)[0])
    assert log[2:4].tolist() == [[7, 8, 9], [10, 11, 12]]
    assert np.asarray(log, np.float64).dtype == np.float64
    assert EventLog(3, log.rows()) == log and EventLog(3, log.rows()[:-1]) != log
    with pytest.raises(TypeError, match="slices"):
        log[0]


def test_a_view_taken_earlier_keeps_its_rows_while_the_log_grows():
    log = EventLog(2)
    log.add(np.arange(10), 0)
    early = log.rows()
    with pytest.raises(ValueError):
        early[0, 0] = 99  # (read-only: another thread may be reading it)
    for k in range(100):  # several doublings
        log.append((k, 1))
    assert early.tolist() == [[i, 0] for i in range(10)]
    assert len(log) == 110 and log.rows()[:10].tolist() == early.tolist()


def test_it_holds_a_flip_in_a_fraction_of_a_list_of_tuples():
    n = 100_000
    rng = np.random.default_rng(0)
    frame, site = rng.integers(1000, 10**6, n), rng.integers(300, 5000, n)
    log = EventLog(3)
    for k in range(0, n, 7):  # (as a run adds them: a few per frame)
        log.add(frame[k], site[k:k + 7], 1)
    listed = [(int(f), int(s), 1) for f, s in zip(np.repeat(frame[::7], 7)[:n], site)]
    list_bytes = sys.getsizeof(listed) + sum(sys.getsizeof(t) + sys.getsizeof(t[1]) for t in listed)
    assert log.nbytes / n <= 2 * 24  # (the array doubles: at most half empty)
    assert list_bytes / n > 3 * log.nbytes / n
