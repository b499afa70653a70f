"""What a camera's own sender does wrong or differently, over a real socket, as its integrator
meets it: each fault said once and counted, nothing received counted missing, a camera that
counts again from 1, frame numbers that repeat, two cameras on one address, an end marker
sent with an empty pixel part. The messages are written by hand (json + numpy), as a camera
vendor's code would, not by the package's encoder."""
import json
import logging

import numpy as np
import pytest

from _procs import free_port
from etem.tracker.errors import ConfigError
from etem.tracker.sources import ZmqSource
from test_stream_numbers import _send

IMAGE = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 97 + 100).astype("<u2")


def header(seq, frame=None, **fields):
    h = {"protocol": "etem-frame/1", "seq": seq, "frame": seq if frame is None else frame,
         "shape": [32, 32], "dtype": "uint16", "sampling": 0.1}
    h.update(fields)
    return h


def frame_msg(seq, frame=None, drop=(), payload=None, **fields):
    h = header(seq, frame, **fields)
    for key in drop:
        h.pop(key)
    return [json.dumps(h).encode(), IMAGE.tobytes() if payload is None else payload]


def end_msg(seq, **fields):
    return [json.dumps({"protocol": "etem-frame/1", "seq": seq, "end": True, **fields}).encode()]


def receive(messages, **kw):
    """Send ``messages`` from a PUSH that connects; receive them with a binding PULL source."""
    address = f"tcp://127.0.0.1:{free_port()}"
    t = _send(address, messages)  # (a PUSH that connects, in a thread)
    src = ZmqSource(address, mode="pull", bind=True, idle_timeout_s=kw.pop("idle_timeout_s", 20), **kw)
    got = list(src)
    t.join(10)
    return src, got


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "etem.source"]


def test_each_fault_is_said_once_naming_the_field_and_a_rejected_message_is_not_missing(caplog):
    """Before, a rejection was logged at debug level only (the integrator saw a count and no
    reason), and a message rejected for its header (a wrong dtype, a missing field) was counted
    a second time, as a 'seq gap'."""
    caplog.set_level(logging.INFO, logger="etem.source")
    messages = [frame_msg(0)]
    for s in range(1, 21, 2):  # every other message has a dtype the format does not know
        messages += [frame_msg(s, dtype="u16"), frame_msg(s + 1)]
    messages += [frame_msg(21, drop=("sampling",)), frame_msg(22, drop=("sampling",)), frame_msg(23)]
    messages.append(end_msg(24))
    src, got = receive(messages)
    c = src.counters.as_dict()
    assert src.ended and len(got) == 12
    assert c["received"] == 24 and c["rejected/dtype"] == 10 and c["rejected/missing_field"] == 2, c
    assert c["missing"] == 0, c  # every message arrived
    said = warnings_of(caplog)
    dtype_lines = [m for m in said if "rejected/dtype" in m]
    assert len(dtype_lines) == 1 and "'u16'" in dtype_lines[0] and "uint16" in dtype_lines[0], said
    sampling_lines = [m for m in said if "rejected/missing_field" in m]
    assert len(sampling_lines) == 1 and "'sampling'" in sampling_lines[0], said
    assert not any("seq gap" in m for m in said), said


def test_seq_gaps_are_said_a_few_times_then_counted_only(caplog):
    caplog.set_level(logging.INFO, logger="etem.source")
    seqs = list(range(0, 60, 3))  # 19 gaps of 2
    src, got = receive([frame_msg(s) for s in seqs] + [end_msg(seqs[-1] + 1)])
    assert len(got) == len(seqs) and src.counters.missing == 2 * (len(seqs) - 1)
    gap_lines = [m for m in warnings_of(caplog) if "seq gap" in m]
    assert 1 <= len(gap_lines) <= 3 and "not said each" in gap_lines[-1], gap_lines


@pytest.mark.parametrize("first, again", [(1, 1), (100, 100), (0, 1)], ids=["from-1", "from-its-own", "0-then-1"])
def test_a_camera_counting_again_on_the_same_connection_is_taken_as_restarted(first, again):
    """Before, only a seq back to exactly 0 (or a new connection) was a restart: a camera that
    numbers from 1, started again by its software on the same socket, had every frame rejected
    (rejected/seq_repeat) until its seq passed the old one, and its end marker too."""
    n1, n2 = 10, 6
    messages = [frame_msg(s) for s in range(first, first + n1)]
    messages += [frame_msg(s, frame=s - again) for s in range(again, again + n2)]
    messages.append(end_msg(again + n2))
    src, got = receive(messages)
    c = src.counters.as_dict()
    assert src.ended, c
    assert len(got) == n1 + n2 and c["rejected"] == 0 and c["restarts"] == 1, c
    assert c["missing"] == max(0, again - first), c  # (counting from 0 the first time: seq 0 of the new one is lost)
    frames = [f.frame for f in got]
    assert frames == sorted(set(frames)), frames  # the run's frame numbers stay its own


def test_frame_numbers_that_repeat_are_numbered_on(caplog):
    """A camera that sends no acquisition index of its own (frame always 0), or whose index
    starts again while seq goes on: before, the frames were tracked under one frame number (the
    per-frame tables merged them); now a number the run has had is numbered on, said once, the
    camera's number kept. One that goes back to a number the run has not had is kept as it is
    (shifted as the numbers before it were): a single odd number does not renumber the rest."""
    caplog.set_level(logging.INFO, logger="etem.source")
    frames_sent = [0, 0, 0, 0, 7, 8, 3, 4, 7, 100, 11]
    src, got = receive([frame_msg(s, frame=f) for s, f in enumerate(frames_sent)] + [end_msg(len(frames_sent))])
    frames = [f.frame for f in got]
    # 0 0 0 0: 0 1 2 3 (shift 3), 7 8: 10 11, 3 4: 6 7 (not had), 7: 12 (10 had: shift 5 from there),
    # 100: 105, 11: 16
    assert frames == [0, 1, 2, 3, 10, 11, 6, 7, 12, 105, 16], frames
    assert len(set(frames)) == len(frames)
    assert [f.meta.get("camera_frame", f.frame) for f in got] == frames_sent
    assert sum("repeats one this run has had" in m for m in warnings_of(caplog)) == 1


def test_two_cameras_on_one_address_are_told_apart_by_their_stream_ids(caplog):
    """Two cameras sending to the same address (each counting from 0): before, their frames
    were tracked as one movie where their seqs happened to rise, the rest rejected as repeats
    without a word. Now the run follows the first, the second is said once and its messages
    are rejected (rejected/stream), and the first's end marker ends the run."""
    caplog.set_level(logging.INFO, logger="etem.source")
    messages = []
    for s in range(12):
        messages += [frame_msg(s, stream="camA"), frame_msg(s, stream="camB")]
    messages += [end_msg(12, stream="camA")]
    src, got = receive(messages)
    c = src.counters.as_dict()
    assert src.ended and [f.meta["stream"] for f in got] == ["camA"] * 12
    assert c["rejected/stream"] == 12 and c["received"] == 12 * 2 and c["missing"] == 0, c
    said = [m for m in warnings_of(caplog) if "rejected/stream" in m]
    assert len(said) == 1 and "'camA'" in said[0] and "'camB'" in said[0]


def test_a_stray_stream_id_does_not_take_the_run_over():
    """One message whose stream id is corrupt (or two in a row): before, the run took it as the
    camera started again and rejected every later message of the real stream, its end marker
    too, until --idle-timeout."""
    messages = [frame_msg(s, stream="cam") for s in range(4)] + [frame_msg(4, stream="c\x00m")]
    messages += [frame_msg(s, stream="cam") for s in range(5, 8)] + [frame_msg(s, stream=7) for s in (8, 9)]
    messages += [frame_msg(s, stream="cam") for s in range(10, 14)] + [end_msg(14, stream="cam")]
    src, got = receive(messages, idle_timeout_s=5)
    c = src.counters.as_dict()
    assert src.ended and [f.seq for f in got] == [0, 1, 2, 3, 5, 6, 7, 10, 11, 12, 13]
    assert c["rejected/stream"] == 3 and c["missing"] == 0, c


def test_a_camera_started_again_under_a_new_stream_id_is_followed(caplog):
    """A camera whose acquisition software starts again with a new stream id (and seq from 0):
    after three of its messages in a row with none of the old id's, it is the run's stream
    (the first two counted rejected/stream)."""
    caplog.set_level(logging.INFO, logger="etem.source")
    messages = [frame_msg(s, stream="run-1") for s in range(5)]
    messages += [frame_msg(s, frame=5 + s, stream="run-2") for s in range(6)] + [end_msg(6, stream="run-2")]
    src, got = receive(messages)
    c = src.counters.as_dict()
    assert src.ended and [f.meta["stream"] for f in got] == ["run-1"] * 5 + ["run-2"] * 4
    assert c["rejected/stream"] == 2 and c["missing"] == 0, c
    assert any("taken as the camera started again" in m for m in warnings_of(caplog))


def test_an_end_marker_sent_with_an_empty_pixel_part_ends_the_stream():
    """A sender that always sends two parts: before, its end marker was rejected (parts) and
    the run waited for --idle-timeout."""
    end = end_msg(3) + [b""]
    src, got = receive([frame_msg(s) for s in range(3)] + [end], idle_timeout_s=60)
    assert src.ended and len(got) == 3 and src.counters.as_dict()["rejected"] == 0


def test_a_header_with_a_byte_order_mark_is_read():
    raw = [b"\xef\xbb\xbf" + frame_msg(0)[0], IMAGE.tobytes()]
    src, got = receive([raw, end_msg(1)])
    assert len(got) == 1 and src.ended


@pytest.mark.parametrize("address, bind", [("localhost:5555", False), ("tcp://127.0.0.1:99999", True)])
def test_an_address_error_names_the_option_and_the_keyword(address, bind):
    with pytest.raises(ConfigError, match=r"--listen, source="):
        ZmqSource(address, mode="pull", bind=bind)
