"""Fuzzing of the wire decoder: whatever arrives, it is accepted or rejected with a known reason.

Property tests (hypothesis) over arbitrary multipart messages and over valid messages with
mutated headers and payloads; the live fuzz over a real socket is in test_faults.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from etem.tracker.accounting import Counters
from etem.tracker.errors import WireError
from etem.tracker.frames import Frame
from etem.tracker.sources import ZmqSource, _END
from etem.tracker.wire import DTYPES, PROTOCOL, REJECT_REASONS, SeqTracker, decode, decode_header, encode

FIELDS = ["protocol", "seq", "frame", "shape", "dtype", "sampling", "t", "defocus", "dose", "stream",
          "meta", "end"]
INT64_MAX = 2**63 - 1
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_decode(parts):
    """Decode ``parts``; assert it is a frame, an end marker or a rejection with a known reason.

    Returns the Frame, None (end of stream) or the rejection reason (a str).
    """
    try:
        out = decode(parts)
    except WireError as exc:
        assert exc.reason in REJECT_REASONS, exc.reason
        assert str(exc)  # a message that says what was wrong
        return exc.reason
    if out is None:  # an end marker: its header alone, or with an empty second part
        assert len(parts) == 1 or (len(parts) == 2 and not bytes(parts[1]))
        return None
    assert isinstance(out, Frame)
    header = json.loads(bytes(parts[0]).decode("utf-8"))
    # what was accepted is what the format allows
    assert out.image.shape == tuple(header["shape"]) and out.image.ndim in (2, 3)
    assert out.image.dtype == DTYPES[header["dtype"]]
    assert 0 <= out.seq <= INT64_MAX and 0 <= out.frame <= INT64_MAX
    assert out.sampling is None or (math.isfinite(out.sampling) and out.sampling > 0)
    if out.image.dtype.kind == "f":
        assert np.isfinite(out.image).all()
    for key in ("t", "dose"):
        v = getattr(out, key)
        assert v is None or math.isfinite(v)
    return out


# ------------------------------------------------------------------ JSON values of every kind
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 2**64, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["uint8", "float64", "complex64", "<f4", "UINT16", "", "\ud800", "etem-frame/2"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
shapes = st.one_of(
    st.lists(st.integers(-3, 40), min_size=0, max_size=4),
    st.lists(st.sampled_from([0, -1, 1, 2**14, 2**31, 2**63, 10**30]), min_size=1, max_size=4),
    json_values,
)


def nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


@st.composite
def valid_messages(draw):
    """A valid frame message: (header dict, payload bytes, image)."""
    dtype = draw(st.sampled_from(list(DTYPES)))
    focal = draw(st.sampled_from([None, 1, 3]))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    shape = (h, w) if focal is None else (focal, h, w)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = (rng.random(shape) * 100).astype(DTYPES[dtype])
    parts = encode(image, seq=draw(st.integers(0, INT64_MAX)), frame=draw(st.integers(0, INT64_MAX)),
                   sampling=draw(st.one_of(st.none(), st.floats(1e-3, 10.0))),
                   t=draw(st.one_of(st.none(), st.floats(0, 1e6))),
                   dose=draw(st.one_of(st.none(), st.floats(0, 1e4))),
                   defocus=None if focal is None else [float(i) for i in range(focal)],
                   stream=draw(st.one_of(st.none(), st.text(max_size=5))),
                   meta=draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=4), json_scalars, max_size=3))))
    return json.loads(bytes(parts[0])), bytes(parts[1]), image


@st.composite
def mutated_messages(draw):
    """A valid message with one to four faults: the kinds a broken camera or network makes."""
    header, payload, image = draw(valid_messages())
    header_bytes = None
    n = draw(st.integers(1, 4))
    for _ in range(n):
        kind = draw(st.sampled_from([
            "set_field", "drop_field", "extra_field", "shape", "dtype", "payload_cut", "payload_grow",
            "payload_nan", "header_bytes", "non_utf8", "nested", "parts", "end", "big_int_text",
        ]))
        if kind == "set_field":
            header[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif kind == "drop_field" and header:
            header.pop(draw(st.sampled_from(sorted(header))), None)
        elif kind == "extra_field":
            header[draw(st.text(max_size=8))] = draw(json_values)
        elif kind == "shape":
            header["shape"] = draw(shapes)
        elif kind == "dtype":
            header["dtype"] = draw(st.one_of(st.sampled_from(["float64", "int8", "bool", "object", "<u2",
                                                               "uint8 ", "Float32"]), json_values))
        elif kind == "payload_cut":
            payload = payload[: draw(st.integers(0, max(len(payload) - 1, 0)))]
        elif kind == "payload_grow":
            payload = payload + draw(st.binary(min_size=1, max_size=16))
        elif kind == "payload_nan" and len(payload) >= 4:
            arr = bytearray(payload)
            at = draw(st.integers(0, len(arr) // 4 - 1)) * 4
            arr[at:at + 4] = np.array(draw(st.sampled_from([np.nan, np.inf, -np.inf])), "<f4").tobytes()
            payload = bytes(arr)
        elif kind == "header_bytes":
            raw = bytearray(json.dumps(header).encode())
            for _ in range(draw(st.integers(1, 4))):
                if raw:
                    raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            header_bytes = bytes(raw[: draw(st.integers(0, len(raw)))]) if draw(st.booleans()) else bytes(raw)
        elif kind == "non_utf8":
            raw = json.dumps(header).encode()
            at = draw(st.integers(0, len(raw)))
            header_bytes = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
        elif kind == "nested":
            depth = draw(st.sampled_from([10, 900, 5000, 200_000]))
            text = nested(depth, draw(st.sampled_from(["list", "dict"])))
            header_bytes = (text if draw(st.booleans()) else
                            json.dumps(header)[:-1] + ', "meta": ' + text + "}").encode()
        elif kind == "big_int_text":
            field = draw(st.sampled_from(["seq", "frame", "sampling", "shape"]))
            digits = "9" * draw(st.sampled_from([20, 400, 4301, 10_000]))
            value = f"[{digits}, 4]" if field == "shape" else digits
            header_bytes = (json.dumps({k: v for k, v in header.items() if k != field})[:-1]
                            + f', "{field}": {value}}}').encode()
        elif kind == "end":
            header["end"] = draw(st.one_of(st.just(True), json_values))
    try:
        raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    except (ValueError, RecursionError):  # a value json cannot write (e.g. a lone surrogate)
        raw = json.dumps(header, ensure_ascii=True).encode()
    parts = [raw, payload]
    shape_of = draw(st.sampled_from(["two", "one", "three", "empty"]))
    if shape_of == "one":
        parts = parts[:1]
    elif shape_of == "three":
        parts = parts + [draw(st.binary(max_size=8))]
    elif shape_of == "empty":
        parts = []
    return parts


# ----------------------------------------------------------------------------------- tests
@settings(max_examples=400, **SETTINGS)
@given(st.lists(st.binary(max_size=256), min_size=0, max_size=7))
def test_random_parts_are_accepted_or_rejected_with_a_reason(parts):
    check_decode(parts)


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.one_of(st.binary(max_size=64), st.builds(lambda v: json.dumps(v).encode(), json_values)),
                min_size=1, max_size=4))
def test_random_json_headers_and_payloads(parts):
    check_decode(parts)


@settings(max_examples=600, **SETTINGS)
@given(mutated_messages())
def test_mutated_valid_messages_are_accepted_or_rejected_with_a_reason(parts):
    check_decode(parts)


@settings(max_examples=200, **SETTINGS)
@given(valid_messages())
def test_valid_messages_are_accepted_bit_for_bit(msg):
    header, payload, image = msg
    frame = check_decode([json.dumps(header).encode(), payload])
    assert isinstance(frame, Frame)
    np.testing.assert_array_equal(frame.image, image)


@settings(max_examples=200, **SETTINGS)
@given(valid_messages(), st.data())
def test_each_single_fault_gets_its_own_reason(msg, data):
    header, payload, _ = msg
    fault = data.draw(st.sampled_from(["cut", "grow", "dtype", "shape", "non_utf8", "nested", "parts",
                                       "protocol", "missing", "seq", "sampling", "nan"]))
    expected = {"cut": "payload_size", "grow": "payload_size", "dtype": "dtype", "shape": "bad_field",
                "non_utf8": "bad_json", "nested": "bad_json", "parts": "parts", "protocol": "protocol",
                "missing": "missing_field", "seq": "bad_field", "sampling": "bad_field", "nan": "nan"}[fault]
    h = dict(header)
    if fault == "cut":
        payload = payload[:-1]
    elif fault == "grow":
        payload += b"\0"
    elif fault == "dtype":
        h["dtype"] = data.draw(st.sampled_from(["float64", "complex64", "", ["uint8"], {"a": 1}, 3, None]))
    elif fault == "shape":
        h["shape"] = data.draw(st.sampled_from([[-1, 4], [0, 4], [2], [1, 2, 3, 4], [2**20, 2**20],
                                                [10**30, 1], "2x4", None, [2.0, 4], [True, 4]]))
    elif fault == "protocol":
        h["protocol"] = data.draw(st.sampled_from(["etem-frame/2", None, 1, ["etem-frame/1"]]))
    elif fault == "missing":
        h.pop(data.draw(st.sampled_from(["seq", "frame", "shape", "dtype", "sampling"])))
    elif fault == "seq":
        h["seq"] = data.draw(st.sampled_from([-1, 2**63, 10**400, 1.5, "3", None, True, float("nan")]))
    elif fault == "sampling":
        h["sampling"] = data.draw(st.sampled_from([0, -0.1, float("nan"), float("inf"), 10**400, "0.1", [0.1]]))
    elif fault == "nan":
        if h["dtype"] != "float32":
            expected = None  # integers hold no NaN
        else:
            arr = np.frombuffer(payload, "<f4").copy()
            arr.flat[data.draw(st.integers(0, arr.size - 1))] = np.nan
            payload = arr.tobytes()
    raw = json.dumps(h).encode()
    if fault == "non_utf8":
        raw = raw[:1] + b"\xff" + raw[1:]
    elif fault == "nested":
        raw = json.dumps(h)[:-1].encode() + b', "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    parts = [raw, payload] if fault != "parts" else [raw, payload, b""]
    out = check_decode(parts)
    if expected is None:
        assert isinstance(out, Frame)
    else:
        assert out == expected, (fault, h)


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.integers(0, 50), max_size=60))
def test_seq_tracker_against_a_model(seqs):
    s = SeqTracker()
    last, missing, restarts, gaps = None, 0, 0, []
    for q in seqs:
        # the model: first seq starts; 0 after >0 restarts; going back or repeating is rejected
        if last is None or (q == 0 and last > 0):
            restarts += last is not None
            expect = 0
        elif q <= last:
            with pytest.raises(WireError) as info:
                s.check(q)
            assert info.value.reason == "seq_repeat"
            continue
        else:
            expect = q - last - 1
            if expect:
                gaps.append((last + 1, expect))
            missing += expect
        assert s.check(q) == expect
        last = q
    assert (s.missing, s.restarts, s.gaps) == (missing, restarts, gaps)
    assert s.missing == sum(n for _, n in s.gaps)


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.one_of(st.tuples(st.just("seq"), st.integers(0, 40)), st.just(("reconnect", 0)),
                          st.tuples(st.just("end"), st.integers(0, 40))), max_size=60))
def test_seq_tracker_with_reconnects_and_end_markers(ops):
    """After a new connection a seq that goes back starts a new stream (its first seqs missing);
    an end marker's seq tells how many went missing at the end, and one at or below a seq seen
    (on the same connection) is rejected."""
    s = SeqTracker()
    last, fresh, missing, restarts = None, False, 0, 0
    for op, q in ops:
        if op == "reconnect":
            s.reconnected()
            fresh = True
            continue
        if op == "end":
            if last is not None and q <= last and not fresh:  # a repeated or stale end: rejected
                with pytest.raises(WireError):
                    s.end(q)
                continue
            gap = 0 if last is None or q <= last + 1 or (fresh and q <= last) else q - last - 1
            assert s.end(q) == gap
            if gap:
                missing, last = missing + gap, q
            continue
        if last is not None and ((q == 0 and last > 0) or (fresh and q <= last)):
            assert s.check(q) == q
            restarts, missing, last, fresh = restarts + 1, missing + q, q, False
        elif last is not None and q <= last:
            with pytest.raises(WireError):
                s.check(q)
        else:
            gap = 0 if last is None else q - last - 1
            assert s.check(q) == gap
            missing, last = missing + gap, q
    assert (s.missing, s.restarts) == (missing, restarts)
    assert s.missing == sum(n for _, n in s.gaps)


@settings(max_examples=100, **SETTINGS)
@given(st.lists(st.one_of(mutated_messages(), valid_messages().map(
    lambda m: [json.dumps(m[0]).encode(), m[1]])), max_size=12))
def test_source_accounts_for_every_message(messages):
    """ZmqSource's decoding step: each message is counted received once, then accepted or rejected."""
    counters = Counters()
    src = ZmqSource("tcp://127.0.0.1:1", counters=counters)
    accepted = ends = 0
    for parts in messages:
        out = src._accept([memoryview(p) for p in parts], 0.0)
        if out is _END:
            ends += 1
        elif out is not None:
            assert isinstance(out, Frame)
            accepted += 1
    c = counters.as_dict()
    assert c["received"] == len(messages) - ends
    assert c["received"] == accepted + c["rejected"]
    assert set(counters.rejected) <= set(REJECT_REASONS)
    assert c["missing"] == src.seq.missing


def test_deep_nesting_and_huge_integers_are_bad_json_not_a_crash():
    for raw in (b"[" * 1_000_000, nested(100_000, "dict").encode(), b"9" * 5000,
                b'{"protocol": "etem-frame/1", "seq": ' + b"1" * 5000 + b"}"):
        with pytest.raises(WireError) as info:
            decode_header(raw)
        assert info.value.reason == "bad_json"


def test_unhashable_dtype_and_out_of_range_numbers_are_bad_fields():
    good = {"protocol": PROTOCOL, "seq": 0, "frame": 0, "shape": [2, 4], "dtype": "uint8", "sampling": 0.1}
    for change, reason in [({"dtype": ["uint8"]}, "dtype"), ({"dtype": {"u": 1}}, "dtype"),
                           ({"sampling": 10**400}, "bad_field"), ({"t": 10**400}, "bad_field"),
                           ({"dose": -(10**400)}, "bad_field"), ({"seq": 2**63}, "bad_field"),
                           ({"frame": 2**64}, "bad_field")]:
        with pytest.raises(WireError) as info:
            decode([json.dumps({**good, **change}).encode(), b"\0" * 8])
        assert info.value.reason == reason, change
    f = decode([json.dumps({**good, "seq": 2**63 - 1}).encode(), b"\0" * 8])
    assert f.seq == 2**63 - 1
