"""It keeps running under overload: a camera faster than the pipeline (PUB/SUB drops and
counts, PUSH/PULL slows the camera down), memory bounded on long runs, and a GPU that runs out
of memory.

Cameras are separate processes (see _procs.py).
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
from _procs import Camera, accounted, free_port, one_torch_thread, rss  # noqa: F401

from etem.simulate.toy import make_movie
from etem.tracker import BatchConfig, Pipeline, PipelineConfig
from etem.tracker.accounting import Counters
from etem.tracker.runfile import open_run
from etem.tracker.sources import ZmqSource


# ------------------------------------------------------------------------------ overload
RATE = 25.0  # frames/s the pipeline is held to (a consumer that takes 40 ms per frame)


def _throttled_run(address, mode, *, tmp_path, rcvhwm=100, rcvbuf=None, queue_frames=64, bind=False,
                   on_source=None):
    """Track ``address`` with the host stage held to RATE frames/s; sample memory meanwhile."""
    counters = Counters()
    cfg = PipelineConfig(overflow="drop" if mode == "sub" else "block", queue_frames=queue_frames,
                         default_sampling=0.2)
    pipe = Pipeline(cfg, run_path=tmp_path / "run.h5", counters=counters)
    src = ZmqSource(address, mode=mode, bind=bind, counters=counters, stop=pipe.stop, idle_timeout_s=20,
                    rcvhwm=rcvhwm, rcvbuf=rcvbuf)
    if on_source:
        on_source(src, pipe)
    samples: list[tuple[float, int, int, int, int]] = []  # time, RSS, ingest queue, processed, dropped
    done = threading.Event()

    def sample():
        t0 = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - t0, rss(), pipe.queue_depths()["ingest"][0], counters.processed,
                            sum(counters.dropped.values())))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in pipe.run_iter(src):
            time.sleep(1 / RATE)
    finally:
        done.set()
        sampler.join(5)
    return Counter(counters.as_dict()), src, pipe, samples


def _frames_file(tmp_path_factory, n_frames: int, side: int, radius_A: float):
    m = make_movie(n_frames=n_frames, shape=(side, side), particle_radius_A=radius_A, seed=8)
    path = tmp_path_factory.mktemp("big") / "frames.npy"
    np.save(path, np.asarray(m.frames, np.float32))
    return path


@pytest.fixture(scope="module")
def frames_1mib(tmp_path_factory):
    """512x512 float32 frames (1 MiB each): what overload drops is far above the allocator's noise."""
    return _frames_file(tmp_path_factory, 12, 512, 20.0)


@pytest.fixture(scope="module")
def big_frames(tmp_path_factory):
    """256x256 float32 frames (256 KiB each), so that unbounded buffering would show in memory."""
    return _frames_file(tmp_path_factory, 30, 256, 14.0)


def test_sub_overload_counts_every_drop_and_memory_stays_bounded(frames_1mib, tmp_path):
    """A camera at twice the rate the pipeline sustains, for 10 s, over PUB/SUB (long enough that
    the frames dropped while the queue is full, ~190 MiB, stand well above the allocator's noise
    in the RSS floor, which reached 40-60 MiB in runs of 6 s)."""
    port = free_port()
    cam = Camera(frames=str(frames_1mib), mode="pub", address=f"tcp://127.0.0.1:{port}", fps=2 * RATE,
                 seconds=10.0, sampling=0.2, end_after=1.0)
    try:
        c, src, pipe, samples = _throttled_run(f"tcp://127.0.0.1:{port}", "sub", tmp_path=tmp_path,
                                               queue_frames=32)
        sent = cam.result()["sent"]
    finally:
        cam.finish()
    accounted(c)
    assert c["received"] + c["missing"] == sent  # every frame sent: received, or a gap in seq
    assert c["missing"] == sum(n for _, n in src.seq.gaps)
    assert c["rejected"] == 0 and c["dropped/stopped"] == 0
    assert c["dropped/queue_full"] > 0.25 * sent  # it was overloaded, and the drops were counted
    run = open_run(tmp_path / "run.h5")
    assert run.status == "complete" and len(run.frames) == c["processed"]
    seqs = run.frames["seq"].to_numpy()
    assert (np.diff(seqs) > 0).all()
    assert sent - len(seqs) == c["dropped"] + c["missing"]  # the seqs not tracked are the ones lost
    # memory: once the queue is full it stays flat (bounded by the queue limits), however much
    # is dropped after that
    assert max(s[2] for s in samples) <= pipe.cfg.queue_frames
    # RSS while the queue was full, against what buffering the frames dropped meanwhile would
    # have taken (1 MiB each). Each batch's working memory comes and goes (spikes of tens of
    # MiB), so the floor is compared: its least value in the last third against the first.
    full_at = [i for i, s in enumerate(samples) if s[2] >= pipe.cfg.queue_frames - 2]
    full = next((i for i in full_at if samples[i][3] >= 10), full_at[0])
    end = full_at[-1] + 1  # then the camera stopped and the queue drained
    rss = np.array([s[1] for s in samples[full:end]]) / 2**20
    third = max(len(rss) // 3, 1)
    growth = rss[-third:].min() - rss[:third].min()
    excess = float(samples[end - 1][4] - samples[full][4])  # MiB dropped while full
    assert excess >= 40, ("not overloaded enough for the memory check to mean anything", excess)
    assert growth < 0.5 * excess, (growth, excess)  # buffering the drops would raise it by ~2/3
    print(f"SUB overload: sent {sent}, processed {c['processed']}, dropped {c['dropped']}, missing {c['missing']}; "
          f"while the queue was full {excess:.0f} MiB dropped, RSS floor growth {growth:.1f} MiB "
          f"(peak {rss.max():.0f} MiB)")


def test_pull_overload_loses_nothing(big_frames, tmp_path):
    """A camera trying twice the sustained rate over PUSH/PULL is slowed down, and loses nothing."""
    port = free_port()
    # the kernel's socket buffers bounded too (1 MiB each way, four frames): Linux lets loopback
    # buffers grow to tcp_rmem's maximum, up to 32 MB, which would hold the whole 3 s excess
    cam = Camera(frames=str(big_frames), mode="push", address=f"tcp://127.0.0.1:{port}", fps=2 * RATE,
                 seconds=3.0, sampling=0.2, sndhwm=4, sndbuf=2**20)
    try:
        c, src, pipe, samples = _throttled_run(f"tcp://127.0.0.1:{port}", "pull", tmp_path=tmp_path,
                                               rcvhwm=4, rcvbuf=2**20, queue_frames=16)
        out = cam.result()
    finally:
        cam.finish()
    accounted(c)
    assert c["processed"] == out["sent"] and c["received"] == out["sent"]
    assert c["dropped"] == 0 and c["missing"] == 0 and c["rejected"] == 0
    assert out["sent"] < 0.85 * 2 * RATE * out["seconds"]  # backpressure slowed the camera down
    assert open_run(tmp_path / "run.h5").frames["seq"].tolist() == list(range(out["sent"]))
    # memory: the excess never left the camera (the send-rate check above), and on this side what
    # is held is bounded by the queue (plus the 4-frame HWM and the 1 MiB kernel buffer). Process
    # RSS is not asserted on here: within the run's 3 s it is still settling (allocator and the
    # engine's first batches: 7-17 MiB that level off by ~70 frames), more than the few MiB of
    # frames a leak over this short a run would add, so it would measure the allocator, not us.
    assert max(s[2] for s in samples) <= pipe.cfg.queue_frames
    print(f"PULL overload: camera sent {out['sent']} of {int(2 * RATE * out['seconds'])} attempted; all processed")


def test_a_recording_replayed_with_the_live_config_loses_nothing(tmp_path):
    """The microscope's config (overflow = "drop", for the live camera) checked on a recording,
    as deploy/README says: the file is read as fast as the tracker goes and nothing is dropped
    (83 % of the frames were); at acquisition pace the replay acts as the camera and may drop."""
    from etem.simulate.toy import save_movie
    from etem.tracker import track

    m = make_movie(n_frames=30, shape=(96, 96), particle_radius_A=6.0, seed=2)
    save_movie(m, tmp_path / "m.h5")
    cfg = PipelineConfig(queue_frames=1, overflow="drop", batch=BatchConfig(max_batch=1))
    res = track(tmp_path / "m.h5", config=cfg, classical=True)
    assert res.counters["processed"] == 30 and res.counters["dropped"] == 0, res.counters
    res = track(tmp_path / "m.h5", config=cfg, classical=True, pace=1000.0)
    assert res.counters["received"] == 30  # (paced: the config's overflow holds; drops are counted)
    assert res.counters["processed"] + res.counters["dropped"] == 30




# ------------------------------------------------------------------------------ long runs: bounded memory
def test_long_run_keeps_a_window_in_memory_and_the_result_reads_the_file(tmp_path):
    """With a run file only the latest frames stay in memory; track()'s result still covers the
    whole run (read from the file). Without a run file memory is the output: nothing is let go."""
    from etem.tracker import track

    stack = np.asarray(make_movie(n_frames=30, shape=(96, 96), particle_radius_A=6.0, seed=3).frames, np.float32)
    cfg = PipelineConfig(keep_in_memory_frames=8, default_sampling=0.2)
    pipe = Pipeline(cfg, run_path=tmp_path / "run.h5")
    from etem.tracker.sources import iter_array

    for _ in pipe.run_iter(iter_array(stack, counters=pipe.counters)):
        assert len(pipe.frames_rows) <= 8 and len(pipe.columns_parts) <= 8
    assert not pipe.tables_complete and list(pipe.frames_table()["frame"]) == list(range(22, 30))
    res = track(stack, config=cfg, run_path=tmp_path / "api.h5")
    run = open_run(tmp_path / "api.h5")
    assert res.frames["frame"].tolist() == list(range(30))
    pd_equal = res.columns.reset_index(drop=True).equals(run.columns.reset_index(drop=True))
    assert pd_equal and len(res.columns) > 30
    whole = track(stack, config=cfg)  # no run file: every frame in memory
    assert whole.frames["frame"].tolist() == list(range(30)) and len(whole.columns) == len(res.columns)


def test_a_run_watched_without_a_run_file_keeps_only_the_latest_columns(tmp_path, capsys, monkeypatch):
    """`etem track` without -o ran for hours holding every frame's columns (13 KiB a frame at 85
    columns): with keep_all_columns=False only the latest keep_in_memory_frames stay, the
    per-frame rows and the statistics still cover the run, and the result says it has no columns."""
    from etem.tracker import track
    from etem.tracker.cli import main

    stack = np.asarray(make_movie(n_frames=30, shape=(96, 96), particle_radius_A=6.0, seed=3).frames, np.float32)
    cfg = PipelineConfig(keep_in_memory_frames=8, default_sampling=0.2)
    held = []
    res = track(stack, config=cfg, keep_all_columns=False,
                on_frame=lambda r, pipe: held.append(len(pipe.columns_parts)))
    assert max(held) == 8 and held[-1] == 8
    whole = track(stack, config=cfg)
    assert res.frames["frame"].tolist() == list(range(30))  # (a row a frame: small)
    assert res.sites.equals(whole.sites) and len(res.flips) == len(whole.flips)
    with pytest.raises(ValueError, match="keep_all_columns"):
        res.columns
    # the command keeps no columns it does not read back (the real pipeline, its instances noted)
    import etem.tracker.api as api

    made = []

    class Noted(Pipeline):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(api, "Pipeline", Noted)
    np.save(tmp_path / "m.npy", stack)
    (tmp_path / "c.toml").write_text("keep_in_memory_frames = 8\n")
    assert main(["replay", str(tmp_path / "m.npy"), "--sampling", "0.2", "--classical",
                 "--config", str(tmp_path / "c.toml")]) == 0
    out = capsys.readouterr().out
    assert "30 processed" in out and "sites:" in out
    assert len(made) == 1 and made[0].columns_parts.maxlen == 8 and len(made[0].columns_parts) == 8


def _frame_row(i):
    return {"frame": i, "seq": i, "t": i * 0.1, "received": i * 0.1 + 0.01, "latency_ms": 12.3 + i % 7,
            "n_columns": 957, "drift_y": 0.1 * i, "drift_x": -0.2, "sampling": 0.2, "dose": np.nan, "snr": 3.2,
            "dose_est": 300.0 + i, "resolution_A": 1.1, "confidence": 0.93, "in_range": i % 2 - (i % 5 == 0),
            "out_of_range": (i % 3) * 2}


def test_a_run_without_a_run_file_keeps_its_frame_rows_compactly():
    """Every frame's row stays (the report's trust tally reads them), in arrays of the run
    file's dtypes: a dict of 16 numbers a frame took about 620 bytes, the arrays about 140."""
    import tracemalloc

    import pandas as pd

    from etem.tracker.rows import CompactRows
    from etem.tracker.runschema import FRAMES

    rows = [_frame_row(i) for i in range(2500)]
    store = CompactRows(chunk=1000)
    for r in rows:
        store.append(r)
    assert len(store) == 2500 and store.maxlen is None
    got, want = store.table(), pd.DataFrame(rows)
    assert list(got.columns) == list(want.columns) and got.dtypes.to_dict() == {k: FRAMES[k] for k in got.columns}
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert [r["frame"] for r in store] == list(range(2500))  # the sealed chunks, then the rows after them
    odd = CompactRows()
    odd.append({"frame": 1, "note": "x"})
    assert odd.table()["note"].tolist() == ["x"] and CompactRows().table().empty

    def bytes_a_row(store):
        tracemalloc.start()
        for i in range(20000):
            store.append(_frame_row(i))
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return used / 20000

    assert bytes_a_row(CompactRows()) < 250 < 500 < bytes_a_row([])
    # the pipeline keeps them so without a run file, and keeps the latest few (a deque) with one
    assert isinstance(Pipeline(PipelineConfig(default_sampling=0.2)).frames_rows, CompactRows)


# ------------------------------------------------------------------------------ GPU out of memory
class OutOfMemoryAbove:
    """A real engine that raises the GPU's out-of-memory error on batches larger than ``limit``,
    or holding a blank image (one frame too big for the GPU). Records every call."""

    def __init__(self, engine, limit: int, error: str = "torch"):
        self.engine, self.limit, self.error = engine, limit, error
        self.calls: list[tuple[int, bool]] = []  # (batch size, raised)
        for name in ("name", "device", "n_inputs", "class_names", "sampling", "column_sigma_px",
                     "suggested_threshold", "normalization", "card"):
            if hasattr(engine, name):
                setattr(self, name, getattr(engine, name))

    def predict(self, batch):
        import torch

        blank = bool((batch.flatten(1).std(dim=1) == 0).any())
        if len(batch) > self.limit or blank:
            self.calls.append((len(batch), True))
            message = f"CUDA out of memory. Tried to allocate {len(batch) * 64} MiB"
            if self.error == "torch":
                raise torch.cuda.OutOfMemoryError(message)
            raise RuntimeError(f"CUDA error: out of memory ({message})")
        self.calls.append((len(batch), False))
        return self.engine.predict(batch)


def _oom_run(tmp_path, frames, *, limit, error="torch", max_batch=8, blank_snr_fraction=0.05):
    from etem.tracker.engines import make_engine
    from etem.tracker.sources import iter_array

    engine = OutOfMemoryAbove(make_engine("classical", device="cpu", column_sigma_px=2.0), limit, error)
    # a long wait: the in-memory source fills every batch to max_batch
    cfg = PipelineConfig(batch=BatchConfig(max_batch=max_batch, max_wait_s=1.0), default_sampling=0.2,
                         blank_snr_fraction=blank_snr_fraction)
    pipe = Pipeline(cfg, engine=engine, run_path=tmp_path / "run.h5")
    done = [r.frame for r in pipe.run_iter(iter_array(frames, counters=pipe.counters))]
    return pipe, engine, done


@pytest.mark.parametrize("error", ["torch", "runtime"])
def test_gpu_out_of_memory_halves_the_batch_and_loses_no_frame(tmp_path, error):
    frames = np.asarray(make_movie(n_frames=24, shape=(64, 64), particle_radius_A=5.0, seed=2).frames, np.float32)
    pipe, engine, done = _oom_run(tmp_path, frames, limit=2, error=error)
    c = pipe.counters.as_dict()
    accounted(c)
    assert done == list(range(24)) and c["processed"] == 24 and c["rejected"] == 0
    raised = [b for b, r in engine.calls if r]
    assert raised and max(b for b, r in engine.calls if not r) <= 2
    first = engine.calls.index((raised[0], True))
    assert all(b <= 2 for b, _ in engine.calls[first + len(raised):])  # smaller for the rest of the run
    assert pipe.detector.micro_batch == 2 and raised[0] > 2
    assert c["oom_retries"] == len(raised)  # one retry per halving
    assert open_run(tmp_path / "run.h5").counters["oom_retries"] == len(raised)


def test_a_frame_too_big_even_alone_is_rejected_and_counted(tmp_path):
    frames = np.asarray(make_movie(n_frames=12, shape=(64, 64), particle_radius_A=5.0, seed=2).frames, np.float32)
    frames[5] = 0.0  # blank: the engine "runs out of memory" on any batch holding it
    pipe, engine, done = _oom_run(tmp_path, frames, limit=8, blank_snr_fraction=0.0)  # not rejected as blank
    c = pipe.counters.as_dict()
    accounted(c)
    assert done == [i for i in range(12) if i != 5]
    assert c["rejected/oom"] == 1 and c["processed"] == 11
    assert pipe.detector.micro_batch == 1 and c["oom_retries"] >= 1
    assert (1, True) in engine.calls  # it was tried alone before it was given up
    run = open_run(tmp_path / "run.h5")
    assert 5 not in set(run.frames["frame"]) and run.counters["rejected/oom"] == 1


def test_an_engine_of_one_batch_shape_gets_padded_batches_that_shrink_with_memory(tmp_path):
    """torch.compile with CUDA graphs compiles and records once per batch size: the pipeline pads
    every micro-batch to its largest (or, after running out of memory, to the halved size), and
    the padding changes no frame's columns."""
    from etem.tracker.engines import make_engine
    from etem.tracker.sources import iter_array

    frames = np.asarray(make_movie(n_frames=11, shape=(64, 64), particle_radius_A=5.0, seed=2).frames, np.float32)
    plain, plain_engine, _ = _oom_run(tmp_path, frames, limit=64)
    assert {b for b, _ in plain_engine.calls} != {8}  # the last batch is short without padding
    engine = OutOfMemoryAbove(make_engine("classical", device="cpu", column_sigma_px=2.0), 2)
    engine.fixed_batch = True
    cfg = PipelineConfig(batch=BatchConfig(max_batch=8, max_wait_s=1.0), default_sampling=0.2)
    pipe = Pipeline(cfg, engine=engine)
    done = [r.frame for r in pipe.run_iter(iter_array(frames, counters=pipe.counters))]
    assert done == list(range(11)) and pipe.counters.as_dict()["rejected"] == 0
    assert [b for b, r in engine.calls if r] == [8, 4] and {b for b, r in engine.calls if not r} == {2}
    cols = pipe.columns_table().sort_values(["frame", "y", "x"]).reset_index(drop=True)
    ref = plain.columns_table().sort_values(["frame", "y", "x"]).reset_index(drop=True)
    np.testing.assert_allclose(cols[["frame", "y", "x"]].to_numpy(), ref[["frame", "y", "x"]].to_numpy())


@pytest.mark.gpu
def test_real_cuda_out_of_memory_shrinks_the_batch(tmp_path):
    """Fill the GPU with a ballast tensor until a batch of 16 large frames cannot fit but a few
    can: the run goes on with smaller batches and tracks every frame."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from etem.tracker.detect import Detector, EngineConfig
    from etem.tracker.frames import Frame
    from etem.tracker.sources import iter_array

    rng = np.random.default_rng(0)
    frames = (rng.random((16, 2048, 2048)) * 100).astype(np.float32)
    ecfg = EngineConfig(kind="classical", device="cuda")
    probe = Detector(ecfg)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    probe.detect([Frame(image=frames[0], frame=0, sampling=0.1)])
    one = torch.cuda.max_memory_allocated() - base  # peak of one frame
    del probe
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(free - 3 * one - (64 << 20), 0), dtype=torch.uint8, device="cuda")
    try:
        cfg = PipelineConfig(engine=ecfg, batch=BatchConfig(max_batch=16, max_wait_s=2.0), default_sampling=0.1)
        pipe = Pipeline(cfg, run_path=tmp_path / "run.h5")
        done = [r.frame for r in pipe.run_iter(iter_array(frames, counters=pipe.counters))]
    finally:
        del ballast
        torch.cuda.empty_cache()
    c = pipe.counters.as_dict()
    accounted(c)
    print(f"real CUDA OOM: one frame peaks at {one / 2**20:.0f} MiB; micro-batch {pipe.detector.micro_batch}, "
          f"{c['oom_retries']} retries")
    assert done == list(range(16)) and c["rejected"] == 0
    assert c["oom_retries"] >= 1 and pipe.detector.micro_batch < 16
