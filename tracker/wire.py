"""Frame wire format v1 (ZeroMQ multipart): a validating decoder and an encoder.

Part 0 is a UTF-8 JSON header, part 1 the raw C-order little-endian pixels. Never pickle.
A message that fails validation raises :class:`~etem.tracker.errors.WireError` whose
``reason`` is the key it is counted under.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from .errors import WireError
from .frames import Frame

PROTOCOL = "etem-frame/1"

#: Wire dtypes and their little-endian numpy equivalents.
DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
}

#: Every reason a message can be rejected for (the keys of the rejection counters).
REJECT_REASONS = (
    "parts",  # wrong number of message parts
    "bad_json",  # header is not UTF-8 JSON object
    "protocol",  # missing or unknown protocol
    "missing_field",  # a required field is absent
    "bad_field",  # a field has the wrong type or value
    "dtype",  # unknown dtype
    "payload_size",  # pixel payload does not match shape x itemsize
    "nan",  # non-finite pixels
    "seq_repeat",  # a seq already seen (repeated or out of order)
    "stream",  # from another stream than the run's (a second camera sending to the same address)
    "preprocess",  # frame could not be preprocessed (shape/sampling mismatch ...)
    "oom",  # the engine ran out of GPU memory even on a batch of this one frame
    "blank",  # the frame holds no image: constant, or its SNR far below the run's (beam blanked)
    "unreadable",  # a frame file of a watched folder that cannot be read (truncated, corrupt, empty)
)

_REQUIRED = ("seq", "frame", "shape", "dtype", "sampling")
_FRAME_KEYS = "protocol, seq, frame, shape, dtype, sampling"
_MAX_PIXELS = 1 << 28  # 16k x 16k; a larger header is certainly corrupt
#: The smallest image side, and the most images of a focal series, a frame may have to be tracked
#: (the pipeline rejects others, rejected/preprocess; the wire format itself takes any shape).
MIN_SIDE = 8
MAX_FOCAL = 16


def encode(
    image: np.ndarray | None,
    *,
    seq: int,
    frame: int,
    sampling: float | None,
    end: bool = False,
    **optional: Any,
) -> list[bytes | memoryview]:
    """Encode one frame (or an end-of-stream marker) as a multipart message.

    Parameters
    ----------
    image
        ``[H, W]`` or ``[F, H, W]`` array of a wire dtype; ``None`` with ``end=True``.
    seq
        Message sequence number, +1 per message of the stream.
    frame
        Acquisition index.
    sampling
        Pixel size [Å/px]; ``None`` is sent as JSON null (unknown).
    optional
        ``t`` [s], ``defocus`` [Å] per focal image, ``dose`` [e/Å²], ``stream``, ``meta``.
    """
    header: dict[str, Any] = {"protocol": PROTOCOL, "seq": int(seq), "frame": int(frame)}
    if end:
        header["end"] = True
        header.update({k: v for k, v in optional.items() if v is not None})
        return [json.dumps(header).encode()]
    if image is None:
        raise ValueError("encode() needs an image unless end=True.")
    arr = np.asarray(image)
    name = _wire_dtype_name(arr.dtype)
    arr = np.ascontiguousarray(arr, dtype=DTYPES[name])
    header.update(shape=list(arr.shape), dtype=name, sampling=sampling)
    header.update({k: v for k, v in optional.items() if v is not None})
    return [json.dumps(header).encode(), memoryview(arr).cast("B")]


def _wire_dtype_name(dtype: np.dtype) -> str:
    for name, dt in DTYPES.items():
        if np.dtype(dtype).newbyteorder("<") == dt or np.dtype(dtype) == dt:
            return name
    raise ValueError(
        f"dtype {np.dtype(dtype)} cannot be sent; convert to one of {', '.join(DTYPES)}."
    )


def _fail(reason: str, field: str | None, message: str) -> WireError:
    """A WireError that also names the header field at fault (``field``; None: the message as
    a whole), so that a live source can say each fault once."""
    return WireError(reason, message, field)


def _parse(part0: bytes | memoryview) -> dict[str, Any]:
    try:
        # (a UTF-8 byte-order mark, which some writers put first, is passed over)
        header = json.loads(bytes(part0).decode("utf-8").removeprefix("\ufeff"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, an integer too long
        raise _fail("bad_json", None, f"header (part 0) is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _fail("bad_json", None, f"header (part 0) must be a JSON object, got a {type(header).__name__}")
    return header


def decode_header(part0: bytes | memoryview) -> dict[str, Any]:
    """Parse and validate a header; raise WireError with a reason on any fault."""
    header = _parse(part0)
    if header.get("protocol") != PROTOCOL:
        got = "none" if "protocol" not in header else _short(header.get("protocol"))
        raise _fail("protocol", "protocol", f"protocol must be {PROTOCOL!r}, got {got}")
    if header.get("end") is True:
        _check_int(header, "seq")
        return header
    for key in _REQUIRED:
        if key not in header:
            raise _fail("missing_field", key, f"header lacks required field {key!r} (a frame's header needs "
                                              f"{_FRAME_KEYS}; sampling may be null)")
    _check_int(header, "seq")
    _check_int(header, "frame")
    shape = header["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) not in (2, 3)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise _fail("bad_field", "shape", f"shape must be [H, W] or [F, H, W] of positive ints, got {_short(shape)}")
    if math.prod(shape) > _MAX_PIXELS:
        raise _fail("bad_field", "shape", f"shape {shape} exceeds {_MAX_PIXELS} pixels")
    if not isinstance(header["dtype"], str) or header["dtype"] not in DTYPES:
        raise _fail("dtype", "dtype", f"dtype must be one of {', '.join(DTYPES)} (pixels little-endian), "
                                      f"got {_short(header['dtype'])}")
    sampling = header["sampling"]
    if sampling is not None and not _positive_number(sampling):
        raise _fail("bad_field", "sampling",
                    f"sampling must be a positive number [Å/px] or null, got {_short(sampling)}")
    for key in ("t", "dose"):
        if key in header and header[key] is not None and not _finite_number(header[key]):
            raise _fail("bad_field", key, f"{key} must be a finite number, got {_short(header[key])}")
    if "defocus" in header and header["defocus"] is not None:
        d = header["defocus"]
        n_focal = shape[0] if len(shape) == 3 else 1
        if not isinstance(d, list) or len(d) != n_focal or not all(_finite_number(v) for v in d):
            raise _fail("bad_field", "defocus", f"defocus must be a list of {n_focal} numbers [Å] (one per image of "
                                                f"shape {shape}), got {_short(d)}")
    if "meta" in header and not isinstance(header["meta"], dict):
        raise _fail("bad_field", "meta", f"meta must be a JSON object, got {_short(header['meta'])}")
    return header


def header_seq(part0: bytes | memoryview) -> int | None:
    """The ``seq`` of a message whose header fails validation otherwise (a wrong dtype, a
    missing field, another protocol's name): a message rejected for that still arrived, and is
    not missing. None where the header is no JSON object or has no integer seq."""
    try:
        seq = _parse(part0).get("seq")
    except WireError:
        return None
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return seq if 0 <= seq <= _MAX_INT else None


def decode(parts: Sequence[bytes | memoryview], *, received: float = 0.0, nonfinite_ok: bool = False) -> Frame | None:
    """Decode and validate a multipart message.

    Returns a :class:`Frame`, or ``None`` for an end-of-stream message. The pixels are a
    read-only view of the message buffer (no copy). Raises WireError with a reason.
    ``nonfinite_ok``: a frame with NaN or infinite pixels is returned, marked not finite, for
    the pipeline to fill or reject (``[preprocess] fill_nonfinite``), not rejected here.
    """
    if len(parts) == 0:
        raise _fail("parts", None, "empty message")
    header = decode_header(parts[0])
    if header.get("end") is True:
        # (one part; an empty second one, from a sender that always sends two, is taken too)
        if len(parts) > 2 or (len(parts) == 2 and memoryview(parts[1]).nbytes):
            raise _fail("parts", "end", f"an end-of-stream message has 1 part (the header, no pixels), got "
                                        f"{len(parts)}")
        return None
    if len(parts) != 2:
        raise _fail("parts", None, f"a frame message has 2 parts (header, pixels), got {len(parts)}"
                    + (": the pixels are missing" if len(parts) == 1 else ""))
    dtype = DTYPES[header["dtype"]]
    shape = tuple(header["shape"])
    payload = memoryview(parts[1])
    expected = math.prod(shape) * dtype.itemsize
    if payload.nbytes != expected:
        raise _fail(
            "payload_size", "shape",
            f"payload (part 1) has {payload.nbytes} bytes; shape {list(shape)} x {header['dtype']} "
            f"({dtype.itemsize} bytes each) needs {expected}",
        )
    image = np.frombuffer(payload, dtype=dtype).reshape(shape)
    finite = dtype.kind != "f" or bool(np.isfinite(image).all())
    if not (finite or nonfinite_ok):
        raise _fail("nan", None, f"frame contains {int(np.size(image) - np.isfinite(image).sum())} NaN or "
                                 "infinite pixels ([preprocess] fill_nonfinite fills a few)")
    # (the Frame below is marked finite where every wire dtype is whole numbers or was just checked)
    defocus = header.get("defocus")
    meta = dict(header.get("meta") or {})
    if "stream" in header:
        meta["stream"] = header["stream"]
    return Frame(
        image=image,
        frame=header["frame"],
        sampling=None if header["sampling"] is None else float(header["sampling"]),
        seq=header["seq"],
        t=header.get("t"),
        defocus=tuple(float(v) for v in defocus) if defocus is not None else None,
        dose=header.get("dose"),
        meta=meta,
        received=received,
        finite=finite,
    )


_MAX_INT = (1 << 63) - 1  # seq and frame are stored as int64


def _check_int(header: dict, key: str) -> None:
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_INT:
        raise _fail("bad_field", key, f"{key} must be an integer from 0 to 2**63 - 1, got {_short(v)}")


def _short(v: object, n: int = 80) -> str:
    """``repr(v)`` cut to ``n`` characters, for error messages about untrusted values."""
    try:
        text = repr(v)
    except (ValueError, RecursionError):  # an integer too long to print, nesting too deep
        return f"a {type(v).__name__} that cannot be shown"
    return text if len(text) <= n else text[:n] + "..."


def _finite_number(v: object) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond float range
        return False


def _positive_number(v: object) -> bool:
    return _finite_number(v) and v > 0  # type: ignore[operator]


class SeqTracker:
    """Gap and repeat detection over a stream's ``seq`` numbers.

    ``check(seq)`` returns the number of messages missing before this one (0 when in order)
    and raises WireError("seq_repeat") for a seq at or below the last one seen. A seq of 0
    after a higher one is taken as a publisher restart (a new stream), not a repeat; so is any
    seq that goes back after :meth:`reconnected` (a publisher that came back on a new
    connection), its first ``seq`` messages then counting as missing. A source may also take a
    seq that goes back to where the camera began counting (:meth:`counts_again`) as a restart
    (:meth:`restart`).
    """

    def __init__(self) -> None:
        self.last: int | None = None
        self.missing = 0
        self.gaps: list[tuple[int, int]] = []  # (first missing seq, count)
        self.restarts = 0
        self.first: int | None = None  # the first seq heard: where the camera counts from, as far as known
        self._reconnected = False

    def reconnected(self) -> None:
        """The stream's connection was made anew: a seq that goes back next is a new stream."""
        self._reconnected = True

    def check(self, seq: int) -> int:
        last = self.last
        if last is None:
            self.last = self.first = seq
            return 0
        if (seq == 0 and last > 0) or (self._reconnected and seq <= last):
            self.restarts += 1
            self._reconnected = False
            self.last = seq
            if seq:  # the new stream's first messages never arrived
                self.missing += seq
                self.gaps.append((0, seq))
            return seq
        if seq <= last:
            raise WireError("seq_repeat", f"seq {seq} repeats or goes back (last was {last})")
        gap = seq - last - 1
        if gap:
            self.missing += gap
            self.gaps.append((last + 1, gap))
        self.last = seq
        return gap

    def counts_again(self, seq: int) -> bool:
        """Whether ``seq``, going back, is where a camera starts counting: 1 (0 is a restart to
        :meth:`check` already), or at most the first seq this run heard (a camera counting from
        its own number). An acquisition started again on the same connection looks like that."""
        return self.last is not None and self.first is not None and seq < self.last and seq <= max(1, self.first)

    def restart(self, seq: int) -> int:
        """Take ``seq`` as the first of a publisher's new stream (see :meth:`counts_again`);
        returns (and counts) the messages missing before it: those after where the camera
        started counting the first time."""
        self.restarts += 1
        self._reconnected = False
        self.last = seq
        gap = max(0, seq - (self.first or 0))
        if gap:
            self.missing += gap
            self.gaps.append((seq - gap, gap))
        return gap

    def end(self, seq: int) -> int:
        """An end-of-stream marker carrying ``seq`` (the number of messages its stream sent):
        returns (and counts) the messages missing before it. A marker at or below a message
        already seen (a repeated or stale one) raises WireError("seq_repeat"): the stream goes on."""
        last = self.last
        if last is not None and seq <= last and not self._reconnected:
            raise WireError("seq_repeat", f"end of stream at seq {seq}, after seq {last} was seen (a repeated or "
                                          "stale end marker)")
        if last is None or seq <= last + 1 or (self._reconnected and seq <= last):
            return 0
        gap = seq - last - 1
        self.missing += gap
        self.gaps.append((last + 1, gap))
        self.last = seq
        return gap
