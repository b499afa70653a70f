"""End to end over real ZeroMQ sockets on 127.0.0.1 (random ports), real HDF5 run files."""
import json
import threading

import numpy as np
import pytest

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import PipelineConfig, track
from etem.tracker.diffusion import frame_rate
from etem.tracker.evaluate import score_columns, score_sites
from etem.tracker.publish import Publisher, publish_frames
from etem.tracker.runfile import open_run
from etem.tracker.wire import PROTOCOL, encode

N_FRAMES = 40


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=N_FRAMES, shape=(256, 256), seed=11)


def _stream(movie, tmp_path, *, mode, fps=None, extra=None, name="run.h5", config=None):
    """Publish ``movie`` from a thread and track it; returns (result, publish stats)."""
    pub = Publisher("tcp://127.0.0.1:0", mode="pub" if mode == "sub" else "push")
    stats = {}

    def send():
        if mode == "sub":
            assert pub.wait_for_subscribers(1, timeout_s=10)
        if extra:
            extra(pub)
        stats["pub"] = publish_frames(movie.frames, pub, fps=fps, sampling=movie.sampling, times=movie.times)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    result = track(pub.address, mode=mode, run_path=tmp_path / name, idle_timeout_s=20, config=config)
    t.join(5)
    pub.close()
    return result, stats["pub"]


def _check_quality(result, movie):
    truth = movie.truth
    radius = 1.0 / movie.sampling
    cols = score_columns(result.columns, truth.positions, radius_px=radius, sampling=movie.sampling)
    assert cols["f1"] >= 0.95, cols
    sites = score_sites(result.sites, result.flips, truth, radius_px=radius)
    assert sites["occupancy_mae"] <= 0.05, sites
    return cols, sites


def test_pull_stream_loses_nothing_and_matches_truth(movie, tmp_path):
    result, sent = _stream(movie, tmp_path, mode="pull")
    assert sent.sent == N_FRAMES
    run = open_run(tmp_path / "run.h5")
    assert len(run.frames) == N_FRAMES
    assert run.frames["frame"].tolist() == list(range(N_FRAMES))
    assert run.counters["processed"] == N_FRAMES and run.counters["dropped"] == 0
    assert run.status == "complete"
    _check_quality(result, movie)
    # the core columns never hop: their tracks run through every frame
    core = movie.truth.sites.query("kind == 'core'")
    found_core = result.columns[result.columns.site.isin(
        result.sites.site[_near(result.sites[["y", "x"]].to_numpy(), core[["y", "x"]].to_numpy(), 1.0 / movie.sampling)])]
    lengths = found_core.groupby("particle").size()
    assert (lengths == N_FRAMES).mean() > 0.95
    # stored tables equal the returned ones
    np.testing.assert_allclose(run.columns["x"].to_numpy(), result.columns["x"].to_numpy(), atol=1e-3)
    assert len(run.sites) == len(result.sites)
    assert np.isfinite(run.maps["occupancy"]).any()


def _near(a, b, r):
    from scipy.spatial import cKDTree

    d, _ = cKDTree(b).query(a)
    return d < r


def test_sub_stream_at_a_rate_it_keeps_up_with(movie, tmp_path):
    result, sent = _stream(movie, tmp_path, mode="sub", fps=15)
    c = result.counters
    assert c["processed"] == N_FRAMES, c
    assert c["missing"] == 0 and c["dropped"] == 0
    assert len(open_run(tmp_path / "run.h5").frames) == N_FRAMES


def test_malformed_messages_are_counted_and_the_run_goes_on(movie, tmp_path):
    good = movie.frames[0]

    def bad(pub):
        def hdr(seq=None):
            return {"protocol": PROTOCOL, "seq": 0 if seq is None else seq, "frame": 0, "shape": list(good.shape),
                    "dtype": "float32", "sampling": 0.2}

        def sound():  # a sound header takes the stream's next seq (a message rejected for its pixels is seen)
            pub.seq += 1
            return hdr(pub.seq - 1)

        pub.send_raw([b"{not json", b""])
        pub.send_raw([json.dumps({**hdr(), "dtype": "complex64"}).encode(), b"\0" * 8])
        pub.send_raw([json.dumps(sound()).encode(), b"\0" * 17])
        pub.send_raw([json.dumps({k: v for k, v in hdr().items() if k != "shape"}).encode(), b""])
        nan = np.full(good.shape, np.nan, np.float32)
        pub.send_raw([json.dumps(sound()).encode(), nan.tobytes()])
        pub.send(good, frame=999, sampling=movie.sampling)  # a valid frame, seq 2
        pub.send_raw([bytes(p) for p in encode(good, seq=2, frame=999, sampling=movie.sampling)])  # seq 2 again

    result, _ = _stream(movie, tmp_path, mode="pull", extra=bad)
    c = result.counters
    for reason in ("bad_json", "dtype", "payload_size", "missing_field", "nan", "seq_repeat"):
        assert c[f"rejected/{reason}"] == 1, (reason, c)
    assert c["rejected"] == 6
    assert c["processed"] == N_FRAMES + 1  # the movie and the one good extra frame
    assert c["received"] == c["processed"] + c["rejected"] + c["dropped"]
    assert c["missing"] == 0  # (the messages rejected for their pixels were seen, not missed)
    stored = open_run(tmp_path / "run.h5").counters
    assert stored["rejected/bad_json"] == 1 and stored["processed"] == N_FRAMES + 1



def test_a_stream_with_dead_pixels_is_filled_where_the_run_allows_it(movie, tmp_path):
    """Every frame of a PUSH stream with a few NaN (dead) pixels: rejected as malformed by
    default, tracked with ``[preprocess] fill_nonfinite``, the fills counted; an all-NaN frame
    is still rejected."""
    import dataclasses

    dead = movie.frames.astype(np.float32).copy()
    dead[:, 10:14, 10:14] = np.nan  # 16 of 65536 pixels
    noisy = dataclasses.replace(movie, frames=dead)

    def all_nan(pub):
        pub.send(np.full(movie.frames[0].shape, np.nan, np.float32), frame=999, sampling=movie.sampling)

    result, _ = _stream(noisy, tmp_path, mode="pull", name="a.h5")
    assert result.counters["rejected/nan"] == N_FRAMES and result.counters["processed"] == 0
    cfg = PipelineConfig()
    cfg = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, fill_nonfinite=0.01))
    result, _ = _stream(noisy, tmp_path, mode="pull", name="b.h5", config=cfg, extra=all_nan)
    c = result.counters
    assert c["processed"] == N_FRAMES and c["rejected/nan"] == 1, c
    _check_quality(result, movie)

def test_replaying_a_file_gives_the_same_result_as_streaming(movie, tmp_path):
    streamed, _ = _stream(movie, tmp_path, mode="pull")
    save_movie(movie, tmp_path / "movie.h5")
    replayed = track(tmp_path / "movie.h5", run_path=tmp_path / "replay.h5")
    a, b = streamed.columns, replayed.columns
    assert len(a) == len(b)
    np.testing.assert_allclose(a[["frame", "y", "x"]].to_numpy(), b[["frame", "y", "x"]].to_numpy(), atol=1e-4)
    assert (a["site"].to_numpy() == b["site"].to_numpy()).all()
    np.testing.assert_allclose(streamed.sites["occupancy"], replayed.sites["occupancy"])
    # both know when each frame was taken (the movie's 25 frames/s, not when it was sent or read)
    for run in (streamed, replayed):
        np.testing.assert_allclose(run.frames["t"], movie.times)
        assert frame_rate(run.frames) == pytest.approx(25.0)


def test_micro_batch_size_does_not_change_the_result(movie):
    from etem.tracker.config import BatchConfig

    one = track(movie.frames[:10], sampling=movie.sampling, config=PipelineConfig(batch=BatchConfig(max_batch=1)))
    eight = track(movie.frames[:10], sampling=movie.sampling, config=PipelineConfig(batch=BatchConfig(max_batch=8, max_wait_s=0.05)))
    np.testing.assert_allclose(one.columns[["y", "x"]].to_numpy(), eight.columns[["y", "x"]].to_numpy(), atol=1e-4)


def test_a_folder_written_by_an_acquisition_program_is_tracked(movie, tmp_path):
    import tifffile

    folder = tmp_path / "acq"
    folder.mkdir()

    def acquire():
        for i, frame in enumerate(movie.frames[:8]):
            tmp = folder / f".frame_{i:04d}.tif"
            tifffile.imwrite(tmp, frame)
            tmp.rename(folder / f"frame_{i:04d}.tif")  # appear whole, as acquisition programs do
            threading.Event().wait(0.05)

    t = threading.Thread(target=acquire, daemon=True)
    t.start()
    result = track(folder, sampling=movie.sampling, idle_timeout_s=2.0)
    t.join(5)
    assert result.counters["processed"] == 8
    assert result.frames["frame"].tolist() == list(range(8))
