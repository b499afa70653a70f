"""It keeps running through faults: fuzzed input over a real socket, publisher restarts,
corrupt recordings and a full disk, with real run files (signals and stops: test_stops.py).

Cameras are separate processes (see _procs.py).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from _procs import (  # noqa: F401 - fixtures
    ENV, Camera, accounted, etem, free_port, movie, movie_file, one_torch_thread, wait_for_frames,
)

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import Pipeline, PipelineConfig, track
from etem.tracker.accounting import Counters
from etem.tracker.cli import main
from etem.tracker.errors import WireError
from etem.tracker.frames import Frame
from etem.tracker.publish import Publisher, publish_frames
from etem.tracker.runfile import open_run
from etem.tracker.sources import ZmqSource
from etem.tracker.wire import decode, encode


# ------------------------------------------------------------------------------ live fuzz
def _mutate(rng: random.Random, header: dict, payload: bytes, shape) -> list[bytes]:
    """One faulty message made from a valid one: the faults a broken camera or network makes."""
    h, p = dict(header), payload
    kind = rng.choice(["random", "header_bytes", "non_utf8", "nested", "big_int", "field", "drop",
                       "shape", "dtype", "cut", "grow", "nan", "parts", "decodable", "decodable",
                       "decodable"])
    if kind == "random":  # (ZeroMQ has no message of no parts)
        return [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 4))]
    if kind == "header_bytes":
        raw = bytearray(json.dumps(h).encode())
        for _ in range(rng.randint(1, 5)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return [bytes(raw[: rng.randint(0, len(raw))]), p]
    if kind == "non_utf8":
        raw = json.dumps(h).encode()
        at = rng.randint(0, len(raw))
        return [raw[:at] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + raw[at:], p]
    if kind == "nested":
        depth = rng.choice([1000, 50_000])
        return [json.dumps(h)[:-1].encode() + b', "meta": ' + b"[" * depth + b"]" * depth + b"}", p]
    if kind == "big_int":
        key = rng.choice(["seq", "frame", "sampling"])
        raw = json.dumps({k: v for k, v in h.items() if k != key})[:-1] + f', "{key}": {"9" * rng.choice([20, 5000])}}}'
        return [raw.encode(), p]
    if kind == "field":
        h[rng.choice(["protocol", "seq", "frame", "shape", "dtype", "sampling", "t", "dose", "defocus", "meta"])] = \
            rng.choice([None, True, -1, 2**64, 10**400, "x", [], {}, [1, 2], float("nan"), float("inf"), "\ud800"])
        return [json.dumps(h).encode(), p]
    if kind == "drop":
        h.pop(rng.choice(["protocol", "seq", "frame", "shape", "dtype", "sampling"]))
        return [json.dumps(h).encode(), p]
    if kind == "shape":
        h["shape"] = rng.choice([[-128, 128], [0, 128], [2**40, 2**40], [128], [1, 1, 128, 128], [128.0, 128]])
        return [json.dumps(h).encode(), p]
    if kind == "dtype":
        h["dtype"] = rng.choice(["float64", "complex64", "<f4", "", ["float32"], {"t": 1}, 4])
        return [json.dumps(h).encode(), p]
    if kind == "cut":
        return [json.dumps(h).encode(), p[: rng.randrange(len(p))]]
    if kind == "grow":
        return [json.dumps(h).encode(), p + rng.randbytes(rng.randint(1, 9))]
    if kind == "nan":
        arr = np.frombuffer(p, "<f4").copy()
        arr[rng.randrange(arr.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return [json.dumps(h).encode(), arr.tobytes()]
    if kind == "parts":
        return rng.choice([[json.dumps(h).encode()], [json.dumps(h).encode(), p, b""], [b""]])
    # decodable: valid by the wire format, odd for the run (other dtypes, pixel sizes, shapes,
    # extreme or constant pixels); the pipeline tracks or rejects it, and goes on either way
    r = np.random.default_rng(rng.randrange(2**32))
    h2, w2 = shape
    variant = rng.choice(["uint8", "uint16", "int16", "uint32", "zeros", "huge", "tiny", "sampling",
                          "no_sampling", "focal", "small", "meta"])
    img = np.frombuffer(p, "<f4").reshape(shape)
    if variant in ("uint8", "uint16", "int16", "uint32"):
        img = (r.random(shape) * 200).astype(variant)
    elif variant == "zeros":
        img = np.zeros(shape, np.float32)
    elif variant == "huge":
        img = (r.random(shape) * 3e38).astype(np.float32)
    elif variant == "tiny":
        img = (r.random(shape) * 1e-42).astype(np.float32)  # subnormal
    elif variant == "focal":
        img = np.stack([img] * 3)
    elif variant == "small":
        img = img[: h2 // 2, : w2 // 3]
    extra = {}
    if variant == "sampling":
        extra["sampling"] = rng.choice([1e-300, 1e300, h["sampling"] * 2])
    elif variant == "no_sampling":
        extra["sampling"] = None
    elif variant == "meta":
        extra["meta"] = {"deep": [[[[1]]]], "text": "\u00e5\u00ff\ud7ff", "n": 10**300}
        extra["stream"] = ["not", "a", "string"]
    sampling = extra.pop("sampling", h["sampling"])
    parts = encode(img, seq=h["seq"], frame=h["frame"], sampling=sampling, t=rng.random() * 1e9,
                   dose=rng.choice([None, 0.0, 1e30]), **extra)
    return [bytes(x) for x in parts]


def test_live_fuzz_over_a_real_socket(movie, tmp_path):
    """Hundreds of faulty messages mixed into a stream: every valid frame is tracked, and every
    message is accounted for, each rejection under the reason the decoder gives."""
    rng = random.Random(20261123)
    frames = np.asarray(movie.frames, np.float32)
    messages: list[list[bytes]] = []
    expected: Counter = Counter()
    seq = n_fuzzed = n_decodable = 0
    for i, img in enumerate(frames):
        # the camera starts with a good frame (the first frame sets the run's shape and pixel size)
        valid = [bytes(x) for x in encode(img, seq=seq, frame=i, sampling=movie.sampling)]
        messages.append(valid)
        seq += 1
        header = json.loads(valid[0])
        for _ in range(rng.randint(5, 15)):
            parts = _mutate(rng, header, valid[1], img.shape)
            try:
                out = decode(parts)
            except WireError as exc:
                expected[exc.reason] += 1
            else:
                if out is None:  # a valid end-of-stream marker would end the run: not sent
                    continue
                # a valid frame takes its place in the stream: the next seq, a frame index of its own
                h = json.loads(parts[0])
                h.update(seq=seq, frame=100_000 + n_fuzzed)
                parts = [json.dumps(h).encode(), parts[1]]
                assert isinstance(decode(parts), Frame)
                seq += 1
                if "stream" in h:  # (another stream id than the run's, which has none: rejected)
                    expected["stream"] += 1
                else:
                    n_decodable += 1
            messages.append(parts)
            n_fuzzed += 1
    messages.append([bytes(x) for x in encode(None, seq=seq, frame=seq, sampling=None, end=True)])
    assert n_fuzzed >= 300

    pub = Publisher("tcp://127.0.0.1:0", mode="push")

    def send():
        for parts in messages:
            pub.send_raw(parts)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        res = track(pub.address, mode="pull", run_path=tmp_path / "run.h5", idle_timeout_s=30)
    finally:
        t.join(10)
        pub.close()
    c = Counter(res.counters)
    accounted(c)
    assert c["received"] == len(messages) - 1  # all but the end marker
    for reason, n in expected.items():
        assert c[f"rejected/{reason}"] == n, (reason, n, c)
    assert c["rejected/seq_repeat"] == 0 and c["missing"] == 0 and c["restarts"] == 0
    assert c["dropped"] == 0
    # a decodable fault may be of another shape or pixel size, or hold no image (a constant payload)
    assert c["processed"] == len(frames) + n_decodable - c["rejected/preprocess"] - c["rejected/blank"]
    run = open_run(tmp_path / "run.h5")
    assert run.status == "complete"
    assert set(range(len(frames))) <= set(run.frames["frame"])  # every valid frame was tracked
    assert run.counters["received"] == c["received"]
    print(f"live fuzz: {n_fuzzed} faulty messages ({n_decodable} decodable) among {len(frames)} frames; "
          f"rejected {dict((k, v) for k, v in c.items() if k.startswith('rejected/') and v)}")


# ------------------------------------------------------------------------------ publisher restarts
@pytest.mark.parametrize("mode, seq0, wait", [("sub", 0, False), ("sub", "continue", True), ("pull", 0, True)],
                         ids=["sub-restart-at-0", "sub-seq-continues", "pull-restart-at-0"])
def test_publisher_restart_mid_stream(movie_file, tmp_path, mode, seq0, wait):
    """The camera process dies mid-stream and a new one comes up on the same address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    k, n2, skip = 20, 25, 5
    cam_kw = dict(frames=str(movie_file), mode="pub" if mode == "sub" else "push", address=address,
                  sampling=0.2, bind=mode == "sub")
    first_seen: list[int] = []
    cams: dict = {}

    def orchestrate(src, pipe):
        def run():
            cams[1] = Camera(**cam_kw, fps=40, n=k, hang=True)
            deadline = time.monotonic() + 30
            while src.counters.received < k and time.monotonic() < deadline:
                time.sleep(0.02)
            cams[1].kill()  # SIGKILL: no end marker, no goodbye
            cams[2] = Camera(**cam_kw, fps=20, n=n2, frame0=1000, wait=wait,
                             seq0=k + skip if seq0 == "continue" else 0)
        threading.Thread(target=run, daemon=True).start()

    def on_source(src, pipe):
        original = src._accept

        def accept(parts, received):
            frame = original(parts, received)
            if isinstance(frame, Frame) and frame.frame >= 1000 and not first_seen:
                first_seen.append(frame.seq)
            return frame

        src._accept = accept
        orchestrate(src, pipe)

    counters = Counters()
    pipe = Pipeline(PipelineConfig(overflow="drop" if mode == "sub" else "block", default_sampling=0.2),
                    run_path=tmp_path / "run.h5", counters=counters)
    src = ZmqSource(address, mode=mode, bind=mode == "pull", counters=counters, stop=pipe.stop,
                    idle_timeout_s=20)
    on_source(src, pipe)
    list(pipe.run_iter(src))
    cams[2].finish()
    c = Counter(counters.as_dict())
    accounted(c)
    assert c["rejected"] == 0 and c["dropped"] == 0
    run = open_run(tmp_path / "run.h5")
    frames = run.frames["frame"].to_numpy()
    assert (frames < 1000).sum() == k  # everything the first camera sent
    second = frames[frames >= 1000]
    if seq0 == "continue":
        assert c["restarts"] == 0 and c["missing"] == skip
        assert len(second) == n2
    else:
        assert c["restarts"] == 1
        # what a slow-joining subscriber missed of the new stream counts as missing
        assert c["missing"] == first_seen[0] and len(second) == n2 - first_seen[0]
        if mode == "pull":
            assert c["missing"] == 0 and len(second) == n2
    assert c["received"] + c["missing"] == k + skip * (seq0 == "continue") + n2
    # tracking resumed: the new camera's frames are linked into the run's sites
    cols = run.columns
    late = cols[cols["frame"] >= 1000]
    assert len(late) > 10 * len(second) and (late["site"] >= 0).mean() > 0.9
    assert run.status == "complete"
    print(f"restart ({mode}, seq {seq0}): first seq heard from the new camera {first_seen[0]}; {dict(c)}")


# ------------------------------------------------------------------------------ corrupt recordings
def _replay(path, capsys, *extra):
    rc = main(["replay", str(path), "--quiet", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_truncated_hdf5_tiff_npy_and_bad_mrc_header_are_clear_errors(movie, tmp_path, capsys):
    import tifffile

    frames = np.asarray(movie.frames[:10], np.float32)
    save_movie(movie, tmp_path / "full.h5")
    tifffile.imwrite(tmp_path / "full.tif", frames)
    np.save(tmp_path / "full.npy", frames)
    for name in ("full.h5", "full.tif", "full.npy"):
        raw = (tmp_path / name).read_bytes()
        (tmp_path / name.replace("full", "cut")).write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00" + os.urandom(200))
    cases = ["cut.h5", "cut.npy", "garbage.npy"]  # (a TIFF cut short: its frames before the cut are tracked, below)
    _replay_fails_cleanly(tmp_path, cases, capsys)
    rc, err = _replay(tmp_path / "cut.npy", capsys)
    assert rc == 2 and "breaks off in frame 4 of 10" in err, err  # where it breaks (0-based)

    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.new(tmp_path / "full.mrc") as m:
        m.set_data(frames)
    raw = bytearray((tmp_path / "full.mrc").read_bytes())
    raw[0:12] = np.array([-5, 2**31 - 1, 7], "<i4").tobytes()  # nx, ny, nz nonsense
    (tmp_path / "header.mrc").write_bytes(bytes(raw))
    raw = bytearray((tmp_path / "full.mrc").read_bytes())
    raw[12:16] = np.array([42], "<i4").tobytes()  # an unknown pixel mode
    (tmp_path / "mode.mrc").write_bytes(bytes(raw))
    raw = (tmp_path / "full.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[: len(raw) - 3 * 128 * 128])
    _replay_fails_cleanly(tmp_path, ["header.mrc", "mode.mrc", "cut.mrc"], capsys)
    rc, err = _replay(tmp_path / "cut.mrc", capsys)
    assert rc == 2 and "frame" in err, err


def _replay_fails_cleanly(folder, names, capsys):
    for name in names:
        rc, err = _replay(folder / name, capsys, "-o", str(folder / f"{name}.run.h5"))
        assert rc == 2, (name, err)
        assert name in err and "error" in err, (name, err)
        assert not (folder / f"{name}.run.h5").exists()


def test_corrupt_frame_mid_file_keeps_the_frames_before_it(movie, tmp_path, capsys):
    """A compressed HDF5 stack with one chunk overwritten: the frames before it are tracked and
    saved, the run is marked failed with the reason, and replay exits 2 naming file and frame."""
    import h5py

    frames = np.asarray(movie.frames[:20], np.float32)
    path = tmp_path / "movie.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("frames", data=frames, chunks=(1, *frames.shape[1:]), compression="gzip")
        ds.attrs["sampling"] = movie.sampling
    with h5py.File(path, "r") as f:
        info = f["frames"].id.get_chunk_info_by_coord((12, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xde\xad\xbe\xef" * (info.size // 4))
    rc, err = _replay(path, capsys, "-o", str(tmp_path / "run.h5"))
    assert rc == 2 and "movie.h5" in err and "frame 12" in err, err
    run = open_run(tmp_path / "run.h5")
    assert run.status == "failed" and "frame 12" in run.attrs["error"]
    assert run.frames["frame"].tolist() == list(range(12))
    c = run.counters
    assert c["processed"] == 12 and c["received"] == 12


def test_blank_frames_are_rejected_not_tracked(tmp_path):
    """Frames with no image in them (beam blanked: a constant frame, or dark noise alone) are
    rejected and counted, over a real socket, and the run's sites and events are those of the
    movie without them; tracked instead, they made hundreds of false sites and extra flips."""
    m = make_movie(n_frames=30, shape=(192, 192), seed=2)
    frames = np.asarray(m.frames, np.float32)
    rng = np.random.default_rng(0)
    blanked = frames.copy()
    blanked[2] = 0.0  # before the run has a typical SNR: constant frames are known anyway
    blanked[15] = 7.0
    blanked[20] = rng.poisson(0.5, frames[0].shape)  # dark noise: found only against the run's SNR
    blanked[21] = rng.normal(100.0, 3.0, frames[0].shape)

    def run(stack, name, **options):
        pub = Publisher("tcp://127.0.0.1:0", mode="push")
        t = threading.Thread(target=publish_frames, args=(list(stack), pub), kwargs={"sampling": m.sampling},
                             daemon=True)
        t.start()
        try:
            return track(pub.address, mode="pull", classical=True, run_path=tmp_path / name, idle_timeout_s=30,
                         **options)
        finally:
            t.join(10)
            pub.close()

    clean = run(np.delete(frames, [2, 15, 20, 21], axis=0), "clean.h5")
    res = run(blanked, "blanked.h5")
    c = res.counters
    accounted(Counter(c))
    assert c["rejected/blank"] == 4 and c["processed"] == 26 and c["received"] == 30
    assert open_run(tmp_path / "blanked.h5").counters["rejected/blank"] == 4
    assert 2 not in set(res.frames["frame"]) and 20 not in set(res.frames["frame"])
    assert len(res.sites) == len(clean.sites) and len(res.flips) == len(clean.flips)
    off = run(blanked, "off.h5", config=PipelineConfig(blank_snr_fraction=0.0))
    assert off.counters.get("rejected/blank", 0) == 0 and off.counters["processed"] == 30
    assert len(off.sites) > len(clean.sites) + 100


def test_a_new_binning_mid_stream_is_said_once_and_counted(tmp_path, caplog):
    """The camera's binning (frame size) and then its pixel size change mid-run: the frames
    that do not fit the run's pixels are rejected and counted, each kind said once, with what
    to do; the frames before are tracked and saved."""
    import logging

    m = make_movie(n_frames=20, shape=(192, 192), seed=2)
    s = m.sampling
    frames = [Frame(np.asarray(f, np.float32), frame=i, sampling=s) for i, f in enumerate(m.frames[:10])]
    frames += [Frame(np.asarray(f, np.float32).reshape(96, 2, 96, 2).mean((1, 3)), frame=10 + i, sampling=2 * s)
               for i, f in enumerate(m.frames[10:15])]
    frames += [Frame(np.asarray(f, np.float32), frame=15 + i, sampling=1.5 * s) for i, f in enumerate(m.frames[15:])]
    pub = Publisher("tcp://127.0.0.1:0", mode="push")
    t = threading.Thread(target=publish_frames, args=(frames, pub), daemon=True)
    t.start()
    try:
        with caplog.at_level(logging.WARNING, logger="etem.pipeline"):
            res = track(pub.address, mode="pull", classical=True, run_path=tmp_path / "run.h5", idle_timeout_s=30)
    finally:
        t.join(10)
        pub.close()
    c = res.counters
    accounted(Counter(c))
    assert c["processed"] == 10 and c["rejected/preprocess"] == 10
    said = [r.getMessage() for r in caplog.records if "the run's is" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith("frame 10: shape (96, 96), the run's is (192, 192)") and "new run" in said[0]
    assert said[1].startswith(f"frame 15: sampling {1.5 * s:g} Å/px")
    with open_run(tmp_path / "run.h5") as run:
        assert len(run.frames) == 10 and run.counters["rejected/preprocess"] == 10


# ------------------------------------------------------------------------------ a full disk
@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE for this process while the test runs (writes past it fail with EFBIG)."""
    import resource

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death by signal

    def limit(n):
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only), else None."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("how", ["file-size-limit", pytest.param("tmpfs", marks=pytest.mark.slow)])
def test_full_disk_stops_the_run_cleanly_and_keeps_what_was_written(tmp_path, how, request, capsys, monkeypatch):
    from etem.tracker import runfile

    # small chunks, so that the limit is met within a short movie
    monkeypatch.setitem(runfile._CHUNK_ROWS, "columns", 512)
    monkeypatch.setitem(runfile._CHUNK_ROWS, "frames", 64)
    long = make_movie(n_frames=200, shape=(128, 128), particle_radius_A=8.0, seed=6)
    save_movie(long, tmp_path / "movie.h5")
    if how == "tmpfs":
        disk = request.getfixturevalue("small_disk")
        if disk is None:
            pytest.skip("mounting a tmpfs needs root")
        run = disk / "run.h5"
        free = shutil.disk_usage(disk).free  # fill the disk but for about 1.6 MiB
        (disk / "ballast").write_bytes(b"\0" * max(free - int(1.6 * 2**20), 0))
    else:
        run = tmp_path / "run.h5"
        request.getfixturevalue("file_size_limit")(int(1.6 * 2**20))
    rc = main(["replay", str(tmp_path / "movie.h5"), "--pace", "1", "--fps", "50", "-o", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert "run.h5" in err and "no room" in err, err
    r = open_run(run)  # what was written stays readable
    assert r.status == "failed" and "no room" in r.attrs["error"]
    n = len(r.frames)
    assert 0 < n < 200
    assert r.frames["frame"].tolist() == list(range(n))
    assert len(r.columns) > 0 and (r.columns["frame"] < n).all()
    assert r.counters["processed"] >= n


@pytest.mark.parametrize("how", ["stack", "page by page"])
def test_a_tiff_cut_short_keeps_the_frames_before_the_cut(movie, tmp_path, capsys, caplog, how):
    """A TIFF stack whose writer stopped half-way (one imwrite of the stack, or a page per frame):
    as the corrupt HDF5 frame above, the frames before the cut are tracked and saved, the run is
    marked failed with where it breaks off, replay exits 2 naming file and frame, and tifffile's
    own complaint (invalid page offset) is not passed on raw."""
    import tifffile

    frames = np.asarray(movie.frames[:20], np.float32)
    full = tmp_path / "full.tif"
    if how == "stack":
        tifffile.imwrite(full, frames)
    else:
        with tifffile.TiffWriter(full) as tw:
            for f in frames:
                tw.write(f)
    raw = full.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    rc = main(["replay", str(tmp_path / "cut.tif"), "--quiet", "-o", str(tmp_path / "run.h5"), "--classical",
               "--sampling", str(movie.sampling)])
    said = capsys.readouterr()
    err = said.err
    n = 10 if how == "stack" else 9  # (each page has its own header)
    assert rc == 2 and "cut.tif" in err and f"breaks off in frame {n}" in err and "Traceback" not in err, err
    assert f"run file: {tmp_path / 'run.h5'} ({n} frames tracked before it, marked failed" in said.out
    run = open_run(tmp_path / "run.h5")
    assert run.status == "failed" and f"frame {n}" in run.attrs["error"]
    assert run.frames["frame"].tolist() == list(range(n))
    assert run.counters["processed"] == n == run.counters["received"]
    assert not [r for r in caplog.records if r.name == "tifffile"]
    # etem find locates the frames before the cut, and says where the file breaks off
    assert main(["find", str(tmp_path / "cut.tif"), "--classical", "--sampling", str(movie.sampling),
                 "-o", str(tmp_path / "c.csv")]) == 0
    assert f"breaks off in frame {n}" in capsys.readouterr().out
    assert sorted(set(pd.read_csv(tmp_path / "c.csv")["frame"])) == list(range(n))
