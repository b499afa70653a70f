"""The detector in a child process (``detection = "process"``): the same results as in a thread,
every frame accounted for when the child fails or the run stops, nothing left behind."""
from __future__ import annotations

import dataclasses
import glob
import os
import signal

import numpy as np
import pandas as pd
import pytest
from _procs import accounted, one_torch_thread  # noqa: F401

from etem.simulate.toy import make_movie
from etem.tracker import Pipeline, PipelineConfig
from etem.tracker.detect import EngineConfig
from etem.tracker.detect_process import DetectionProcessError
from etem.tracker.errors import ConfigError, ModelError
from etem.tracker.frames import Frame
from etem.tracker.runfile import open_run
from etem.tracker.sources import iter_array

TIMING = ["received", "latency_ms"]


@pytest.fixture(scope="module")
def stack():
    return np.asarray(make_movie(n_frames=24, shape=(96, 96), particle_radius_A=6.0, seed=4).frames, np.float32)


def _run(stack, detection, **cfg):
    pipe = Pipeline(PipelineConfig(default_sampling=0.2, detection=detection, **cfg))
    results = list(pipe.run_iter(iter_array(stack, counters=pipe.counters)))
    return pipe, results


def _segments():
    return set(glob.glob("/dev/shm/psm_*"))


def test_process_gives_the_thread_s_tables(stack):
    before = _segments()
    thread, _ = _run(stack, "thread")
    proc, results = _run(stack, "process")
    assert len(results) == len(stack)
    pd.testing.assert_frame_equal(proc.columns_table(), thread.columns_table())
    pd.testing.assert_frame_equal(proc.frames_table().drop(columns=TIMING), thread.frames_table().drop(columns=TIMING))
    assert proc.columns_table()["particle"].nunique() > 10
    accounted(proc.counters.as_dict())
    # what the engine is came back from the child; its stage times too
    assert proc.detector.engine.name == "classical" and str(proc.detector.engine.device) == "cpu"
    assert proc.detector.stage_s["engine"] > 0 and proc.detector.inline_frames == 0
    assert not proc.detector.alive and _segments() <= before  # the child ended, its ring is gone


def test_process_with_frame_averaging_matches_the_thread(stack):
    thread, _ = _run(stack, "thread", preprocess=dataclasses.replace(PipelineConfig().preprocess, average_frames=3))
    proc, _ = _run(stack, "process", preprocess=dataclasses.replace(PipelineConfig().preprocess, average_frames=3))
    pd.testing.assert_frame_equal(proc.columns_table(), thread.columns_table())
    assert proc.detector.stage_s["average"] > 0


def test_run_file_names_the_child_s_engine(stack, tmp_path):
    pipe = Pipeline(PipelineConfig(default_sampling=0.2, detection="process"), run_path=tmp_path / "run.h5")
    for _ in pipe.run_iter(iter_array(stack[:6], counters=pipe.counters)):
        pass
    with open_run(tmp_path / "run.h5") as r:
        assert r.attrs["engine"] == {"kind": "classical", "device": "cpu", "class_names": ["column"]}
        assert r.class_names == ["column"]
        assert r.attrs["config"]["detection"] == "process"
        assert r.n_rows("frames") == 6


def _frames(stack, dtypes):
    for i, (im, dt) in enumerate(zip(stack, dtypes)):
        scaled = im / im.max() * 60000 if dt == np.uint16 else im
        yield Frame(image=scaled.astype(dt), frame=i, sampling=0.2)


def test_a_frame_larger_than_a_slot_travels_pickled(stack):
    """The ring's slots fit the first frame (uint16 here); a float32 frame later does not."""
    dtypes = [np.uint16] * 4 + [np.float32] * 2 + [np.uint16] * 2
    pipes = {}
    for mode in ("thread", "process"):
        pipes[mode] = Pipeline(PipelineConfig(detection=mode))
        results = list(pipes[mode].run_iter(_frames(stack, dtypes)))
        assert [r.frame for r in results] == list(range(8))
    assert pipes["process"].detector.inline_frames == 2
    pd.testing.assert_frame_equal(pipes["process"].columns_table(), pipes["thread"].columns_table())
    assert pipes["process"].columns_table().groupby("frame").size().min() > 5


def test_without_shared_memory_every_frame_travels_pickled(stack, monkeypatch, caplog):
    real = os.statvfs

    class Full:
        def __init__(self, path):
            self.f_bavail, self.f_frsize = 0, real(path).f_frsize

    monkeypatch.setattr(os, "statvfs", Full)
    thread, _ = _run(stack[:8], "thread")
    with caplog.at_level("WARNING", logger="etem.detect_process"):
        proc, _ = _run(stack[:8], "process")
    assert "no shared memory" in caplog.text and proc.detector.inline_frames == 8
    pd.testing.assert_frame_equal(proc.columns_table(), thread.columns_table())


def test_an_error_in_the_child_reaches_the_caller_as_itself(stack):
    pipe = Pipeline(PipelineConfig(default_sampling=0.2, detection="process",
                                   engine=EngineConfig(kind="eager", model="no-such-model", device="cpu")))
    with pytest.raises(ModelError, match="no bundled model named 'no-such-model'"):
        for _ in pipe.run_iter(iter_array(stack[:6], counters=pipe.counters)):
            pass
    c = pipe.counters.as_dict()
    accounted(c)
    assert c["processed"] == 0 and c["dropped"] == 6


def test_a_killed_child_stops_the_run_and_its_frames_are_counted(stack):
    pipe = Pipeline(PipelineConfig(default_sampling=0.2, detection="process"))
    got = []
    with pytest.raises(DetectionProcessError, match=r"ended unexpectedly \(exit code -9\)"):
        for r in pipe.run_iter(iter_array(np.concatenate([stack] * 4), counters=pipe.counters)):
            got.append(r.frame)
            if len(got) == 5:
                os.kill(pipe.detector._proc.pid, signal.SIGKILL)  # noqa: SLF001
    c = pipe.counters.as_dict()
    accounted(c)
    assert c["processed"] == len(got) >= 5 and c["dropped"] > 0


def test_stopping_early_ends_the_child_and_accounts_for_its_frames(stack):
    before = _segments()
    pipe = Pipeline(PipelineConfig(default_sampling=0.2, detection="process"))
    it = pipe.run_iter(iter_array(np.concatenate([stack] * 3), counters=pipe.counters))
    for _ in range(5):
        next(it)
    depth, slots = pipe.queue_depths()["detect"]
    assert 0 <= depth <= slots == pipe.detector.n_slots == 12  # three batches of 4
    it.close()
    accounted(pipe.counters.as_dict())
    assert pipe.counters.processed == 5
    assert not pipe.detector.alive and _segments() <= before


def test_an_engine_object_cannot_go_to_the_child():
    from etem.tracker.engines import make_engine

    with pytest.raises(ConfigError, match="cannot be passed"):
        Pipeline(PipelineConfig(detection="process"), engine=make_engine("classical", None, device="cpu"))
    with pytest.raises(ConfigError, match="detection"):
        PipelineConfig(detection="processes")


@pytest.mark.gpu
@pytest.mark.parametrize("kind, model", [("classical", None), ("eager", "haadf-stem")])
def test_process_on_cuda_gives_the_thread_s_tables(stack, kind, model):
    """The child builds its own CUDA context and engine; its memory reaches the dashboard's figures."""
    import torch

    from etem.tracker.metrics import gpu_memory

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    engine = EngineConfig(kind=kind, model=model, device="cuda")
    thread, _ = _run(stack, "thread", engine=engine)
    proc, _ = _run(stack, "process", engine=engine)
    a, b = proc.columns_table(), thread.columns_table()
    assert len(a) == len(b) > 100
    np.testing.assert_allclose(a[["frame", "y", "x"]].to_numpy(), b[["frame", "y", "x"]].to_numpy(), atol=1e-3)
    assert proc.detector.engine.device.type == "cuda"
    assert gpu_memory(proc.detector.engine)  # what the child reported (this process need not touch CUDA)
