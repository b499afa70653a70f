import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from etem.tracker.errors import WireError
from etem.tracker.wire import DTYPES, PROTOCOL, REJECT_REASONS, SeqTracker, decode, encode


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
def test_round_trip(dtype, shape):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 200).astype(dtype)
    parts = encode(img, seq=3, frame=9, sampling=0.1, t=1.5, dose=300.0,
                   defocus=[0.0, 50.0, -50.0][: shape[0]] if len(shape) == 3 else None)
    f = decode([bytes(p) for p in parts])
    assert f.seq == 3 and f.frame == 9 and f.sampling == 0.1 and f.t == 1.5 and f.dose == 300.0
    np.testing.assert_array_equal(f.image, img)
    assert f.image.dtype == DTYPES[dtype]
    assert f.finite  # checked on arrival (floats) or whole numbers: not scanned again downstream


def test_big_endian_input_is_sent_little_endian():
    img = np.arange(6, dtype=">u2").reshape(2, 3)
    f = decode([bytes(p) for p in encode(img, seq=0, frame=0, sampling=None)])
    np.testing.assert_array_equal(f.image, img)
    assert f.sampling is None


def test_end_of_stream():
    parts = encode(None, seq=10, frame=10, sampling=None, end=True)
    assert len(parts) == 1 and decode(parts) is None


def _msg(header, payload=b"\0" * 8):
    return [json.dumps(header).encode(), payload]


GOOD = {"protocol": PROTOCOL, "seq": 0, "frame": 0, "shape": [2, 4], "dtype": "uint8", "sampling": 0.1}


@pytest.mark.parametrize(
    "parts, reason",
    [
        ([b"{not json", b""], "bad_json"),
        ([b"\xff\xfe", b""], "bad_json"),
        ([b"[1, 2]", b""], "bad_json"),
        (_msg({**GOOD, "protocol": "other/1"}), "protocol"),
        (_msg({k: v for k, v in GOOD.items() if k != "shape"}), "missing_field"),
        (_msg({k: v for k, v in GOOD.items() if k != "sampling"}), "missing_field"),
        (_msg({**GOOD, "dtype": "float64"}), "dtype"),
        (_msg({**GOOD, "shape": [2, -4]}), "bad_field"),
        (_msg({**GOOD, "shape": [2]}), "bad_field"),
        (_msg({**GOOD, "shape": [100000, 100000]}), "bad_field"),
        (_msg({**GOOD, "seq": -1}), "bad_field"),
        (_msg({**GOOD, "seq": "3"}), "bad_field"),
        (_msg({**GOOD, "sampling": 0}), "bad_field"),
        (_msg({**GOOD, "t": "noon"}), "bad_field"),
        (_msg({**GOOD, "defocus": [1.0, 2.0]}), "bad_field"),
        (_msg(GOOD, b"\0" * 7), "payload_size"),
        (_msg(GOOD)[:1], "parts"),
        (_msg(GOOD) + [b"x"], "parts"),
        ([], "parts"),
        (_msg({**GOOD, "dtype": "float32"}, np.array([np.nan] * 8, "<f4").tobytes()), "nan"),
        (_msg({**GOOD, "dtype": "float32"}, np.array([np.inf] * 8, "<f4").tobytes()), "nan"),
    ],
)
def test_rejections_have_reasons(parts, reason):
    with pytest.raises(WireError) as info:
        decode(parts)
    assert info.value.reason == reason
    assert info.value.reason in REJECT_REASONS


def test_seq_tracker_gaps_repeats_restart():
    s = SeqTracker()
    assert s.check(0) == 0
    assert s.check(1) == 0
    assert s.check(4) == 2
    assert s.missing == 2 and s.gaps == [(2, 2)]
    with pytest.raises(WireError) as info:
        s.check(4)
    assert info.value.reason == "seq_repeat"
    with pytest.raises(WireError):
        s.check(3)
    assert s.check(0) == 0 and s.restarts == 1  # publisher restart
    assert s.check(1) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_arbitrary_messages_never_crash(parts):
    try:
        decode(parts)
    except WireError as exc:
        assert exc.reason in REJECT_REASONS


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["protocol", "seq", "frame", "shape", "dtype", "sampling", "t", "defocus", "meta", "end"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(), st.text(max_size=8),
                  st.lists(st.integers(-3, 5), max_size=4)),
    ),
    st.binary(max_size=64),
)
def test_arbitrary_headers_never_crash(header, payload):
    header.setdefault("protocol", PROTOCOL)
    try:
        decode([json.dumps(header).encode(), payload])
    except WireError as exc:
        assert exc.reason in REJECT_REASONS


def test_how_a_frame_was_taken_travels_in_the_header_meta():
    """A recording's imaging mode (e.g. STEM, from its file) reaches the receiver over a real socket."""
    import zmq

    from etem.tracker.frames import Frame
    from etem.tracker.publish import Publisher, publish_frames

    pub = Publisher("tcp://127.0.0.1:0", mode="push")
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.connect(pub.address)
    try:
        frames = [Frame(image=np.ones((4, 4), np.float32), frame=0, sampling=0.2, meta={"imaging": "stem", "detector": "adf", "source": "a.dm3"}),
                  Frame(image=np.ones((4, 4), np.float32), frame=1, sampling=0.2)]
        publish_frames(frames, pub)
        got = [decode(pull.recv_multipart()) for _ in range(2)]
    finally:
        pull.close(linger=0)
        pub.close()
    assert got[0].meta == {"imaging": "stem", "detector": "adf"} and got[1].meta == {}  # not the local path


def test_a_rejected_header_still_tells_its_seq():
    from etem.tracker.wire import header_seq

    assert header_seq(json.dumps({**GOOD, "seq": 7, "dtype": "u16"}).encode()) == 7
    assert header_seq(json.dumps({**GOOD, "seq": 7, "protocol": "other/1"}).encode()) == 7
    assert header_seq(b"\xef\xbb\xbf" + json.dumps({**GOOD, "seq": 3}).encode()) == 3
    assert header_seq(json.dumps({**GOOD, "seq": "7"}).encode()) is None
    assert header_seq(b"{not json") is None


def test_a_rejection_names_the_field_at_fault():
    with pytest.raises(WireError) as info:
        decode(_msg({k: v for k, v in GOOD.items() if k != "sampling"}))
    assert info.value.field == "sampling" and "'sampling'" in str(info.value)
    with pytest.raises(WireError) as info:
        decode(_msg({**GOOD, "dtype": ">u2"}))
    assert info.value.field == "dtype" and "little-endian" in str(info.value)


def test_an_end_marker_may_come_with_an_empty_second_part_but_not_pixels():
    end = encode(None, seq=3, frame=3, sampling=None, end=True)
    assert decode(end + [b""]) is None
    with pytest.raises(WireError) as info:
        decode(end + [b"\0" * 8])
    assert info.value.reason == "parts"


def test_seq_tracker_a_camera_counting_again_from_its_start():
    s = SeqTracker()
    for q in range(1, 6):
        s.check(q)
    assert s.counts_again(1) and not s.counts_again(3) and not s.counts_again(5)
    assert s.restart(1) == 0 and s.restarts == 1 and s.missing == 0  # it counts from 1: none missing
    assert s.check(2) == 0
    s = SeqTracker()
    s.check(0), s.check(1), s.check(2)
    assert s.counts_again(1) and s.restart(1) == 1 and s.gaps == [(0, 1)]  # seq 0 of the new stream is lost
