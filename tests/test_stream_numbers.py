"""A live stream's numbers over a real socket: a stale end marker, messages rejected for their
pixels, a camera that counts again from 0, frames too narrow to be images."""
import threading

import numpy as np
import zmq

from _procs import free_port
from etem.tracker.sources import ZmqSource
from etem.tracker.wire import encode


def _send(address: str, messages: list) -> threading.Thread:
    def run():
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 5000)
        sock.connect(address)
        for parts in messages:
            sock.send_multipart(parts)
        sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _frame(seq: int, frame: int, nan: bool = False, shape=(16, 16)):
    image = np.full(shape, 100.0, np.float32) + seq
    if nan:
        image[3, 3] = np.nan
    return encode(image, seq=seq, frame=frame, sampling=0.2)


def test_stale_end_rejected_pixels_and_a_camera_counting_again_keep_the_stream_whole():
    """Before, a stale end marker (seq 3 after seq 9) ended the run and the 10 frames after it
    were lost uncounted; a frame rejected for a NaN pixel was also counted as missing (a 'seq
    gap' that never was); and a camera counting from 0 again gave the run its frame numbers a
    second time (per-frame tables merged two frames)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    messages = [_frame(s, s) for s in range(10)]
    messages.append(encode(None, seq=3, frame=3, sampling=None, end=True))  # stale: rejected, not the end
    messages.append(_frame(10, 10, nan=True))  # rejected (nan): seen, not missing
    messages += [_frame(s, s) for s in range(11, 15)]
    messages.append(_frame(15, 15, shape=(16, 16, 1)))  # [H, W, 1]: passed on (the pipeline rejects it)
    messages += [_frame(s, s) for s in range(5)]  # the camera restarts: seq and frame from 0
    messages.append(encode(None, seq=5, frame=5, sampling=None, end=True))
    sender = _send(address, messages)  # (a PUSH that connects first: ZeroMQ holds the messages till the bind)
    src = ZmqSource(address, mode="pull", bind=True, idle_timeout_s=20)
    got = list(src)
    sender.join(10)
    frames = [f.frame for f in got]
    assert frames == list(range(10)) + list(range(11, 16)) + list(range(16, 21)), frames
    assert [f.meta.get("camera_frame") for f in got[-5:]] == [0, 1, 2, 3, 4]
    c = src.counters.as_dict()
    assert src.ended
    assert c["received"] == 22 and c["rejected"] == 2, c
    assert c["rejected/seq_repeat"] == 1 and c["rejected/nan"] == 1, c
    assert c["missing"] == 0 and c["restarts"] == 1, c


def test_a_gap_is_still_counted_where_messages_did_go_missing():
    address = f"tcp://127.0.0.1:{free_port()}"
    messages = [_frame(s, s) for s in (0, 1, 4, 5)] + [encode(None, seq=8, frame=8, sampling=None, end=True)]
    sender = _send(address, messages)
    src = ZmqSource(address, mode="pull", bind=True, idle_timeout_s=20)
    got = list(src)
    sender.join(10)
    assert [f.frame for f in got] == [0, 1, 4, 5]
    assert src.counters.as_dict()["missing"] == 2 + 2


def test_a_rejected_first_frame_does_not_set_the_runs_frame_size():
    """A blank first frame of another size (the camera's first read-out), then the movie: the
    movie is tracked. Before, the rejected frame set the run's size and every frame after it was
    rejected as a mismatch."""
    from etem.simulate.toy import make_movie
    from etem.tracker import track

    movie = make_movie(n_frames=4, shape=(64, 64), particle_radius_A=5.0, seed=1)
    frames = [np.zeros((32, 32), np.float32), *[np.asarray(f, np.float32) for f in movie.frames]]
    res = track(frames, sampling=movie.sampling, classical=True)
    c = res.counters
    assert c["processed"] == 4 and c["rejected/blank"] == 1 and c.get("rejected/preprocess", 0) == 0, c


def test_a_connecting_camera_that_starts_before_the_tracker_loses_nothing():
    """`etem publish FILE --mode push --connect` started before `etem track --mode pull --bind`
    had bound: its frames were queued for a connection not yet made, and lost when it closed
    (its linger of 2 s). Now it waits for the tracker, and delivers what it queued."""
    import time

    from etem.tracker.publish import Publisher, publish_frames

    address = f"tcp://127.0.0.1:{free_port()}"
    frames = np.random.default_rng(0).poisson(50, (10, 16, 16)).astype(np.float32)

    def camera():
        with Publisher(address, mode="push", bind=False) as pub:
            publish_frames(frames, pub, sampling=0.2)

    t = threading.Thread(target=camera, daemon=True)
    t.start()
    time.sleep(3.0)  # the camera has "sent" everything and would have closed by now
    src = ZmqSource(address, mode="pull", bind=True, idle_timeout_s=5)
    got = list(src)
    t.join(10)
    assert [f.frame for f in got] == list(range(10)) and src.ended
