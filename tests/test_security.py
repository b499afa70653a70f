"""CURVE-encrypted, authenticated streams over real sockets, and keys made by `etem keys`."""
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from etem.tracker.accounting import Counters
from etem.tracker.cli import main
from etem.tracker.errors import ConfigError
from etem.tracker.publish import Publisher
from etem.tracker.sources import ZmqSource

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="ZeroMQ without CURVE")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(pub: Publisher, n: int, stop: threading.Event) -> None:
    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    i = 0
    while i < n and not stop.is_set():
        pub.send(img, frame=i, sampling=0.1)
        i += 1
        time.sleep(0.02)


def _receive(address: str, keys, n_max: int, timeout: float) -> list:
    ctx = zmq.Context()
    try:
        src = ZmqSource(address, mode="pull", counters=Counters(), idle_timeout_s=timeout, curve_keys=keys, context=ctx)
        got = []
        for f in src:
            got.append(f.frame)
            if len(got) >= n_max:
                break
        return got
    finally:
        ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    assert main(["keys", str(folder)]) == 0
    return folder


def test_an_authorized_client_receives_and_others_get_nothing(keys, tmp_path):
    address = f"tcp://127.0.0.1:{_port()}"
    ctx = zmq.Context()
    stop = threading.Event()
    try:
        pub = Publisher(address, mode="push", curve_keys=keys, context=ctx)
        sender = threading.Thread(target=_send, args=(pub, 400, stop), daemon=True)
        sender.start()
        # no keys: the handshake never completes, nothing arrives
        assert _receive(address, None, 5, timeout=1.5) == []
        # a client with a keypair the server does not know: nothing arrives
        other = tmp_path / "other"
        main(["keys", str(other)])
        (other / "server.key").write_bytes((keys / "server.key").read_bytes())
        assert _receive(address, other, 5, timeout=1.5) == []
        # the authorized client receives frames
        got = _receive(address, keys, 5, timeout=5.0)
        assert len(got) == 5
    finally:
        stop.set()
        ctx.destroy(linger=0)


def test_keys_are_not_overwritten_and_missing_keys_are_clear_errors(keys, tmp_path):
    with pytest.raises(ConfigError, match="already holds keys"):
        from etem.tracker.security import make_keys

        make_keys(keys)
    with pytest.raises(ConfigError, match="etem keys"):
        Publisher(f"tcp://127.0.0.1:{_port()}", mode="push", curve_keys=tmp_path / "nowhere")
