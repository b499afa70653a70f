"""ZeroMQ CURVE encryption and client authentication for streams that leave the machine.

Streams bind to 127.0.0.1 unless told otherwise. A stream across a network is encrypted and its
clients authenticated with ZeroMQ's CURVE (elliptic-curve keys; libsodium): ``etem keys DIR``
makes a key folder, copied to both machines:

    DIR/server.key, DIR/server.key_secret    the binding side's keypair (secret stays there)
    DIR/client.key, DIR/client.key_secret    the connecting side's keypair
    DIR/authorized/client.key                public keys the binding side accepts

The socket that binds is the CURVE server (it authenticates clients against
``DIR/authorized``); the socket that connects is the client (it checks the server's public
key). A client whose key is not authorized, or one without CURVE, never gets a message.
"""
from __future__ import annotations

import ipaddress
import logging
import shutil
import threading
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigError

__all__ = ["make_keys", "secure_socket", "warn_if_exposed"]

log = logging.getLogger("etem.security")
_AUTH: dict[int, ThreadAuthenticator] = {}
_LOCK = threading.Lock()


def make_keys(folder: str | Path, *, overwrite: bool = False) -> Path:
    """Create a CURVE key folder (server and client keypairs, the authorized client key)."""
    if not zmq.has("curve"):
        raise ConfigError("this ZeroMQ build has no CURVE support (libsodium); install pyzmq's wheel")
    folder = Path(folder)
    if (folder / "server.key_secret").exists() and not overwrite:
        raise ConfigError(f"{folder} already holds keys; pass overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        for suffix in (".key", ".key_secret"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
        zmq.auth.create_certificates(folder, name)
    (folder / "server.key_secret").chmod(0o600)
    (folder / "client.key_secret").chmod(0o600)
    auth = folder / "authorized"
    auth.mkdir(exist_ok=True)
    shutil.copy(folder / "client.key", auth / "client.key")
    return folder


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CURVE key {path}: {exc}; make keys with `etem keys DIR`") from None


def secure_socket(sock: zmq.Socket, keys: str | Path, *, server: bool, context: zmq.Context) -> None:
    """Make ``sock`` a CURVE server (the binding side) or client, before it binds or connects."""
    keys = Path(keys)
    if not zmq.has("curve"):
        raise ConfigError("this ZeroMQ build has no CURVE support (libsodium)")
    if server:
        public, secret = _load(keys / "server.key_secret", True)
        authorized = keys / "authorized"
        if not authorized.is_dir():
            raise ConfigError(f"{authorized} is missing: the public keys of the clients to accept")
        with _LOCK:
            auth = _AUTH.get(id(context))
            if auth is None:
                auth = ThreadAuthenticator(context)
                auth.start()
                _AUTH[id(context)] = auth
            auth.configure_curve(domain="*", location=str(authorized))
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
    else:
        public, secret = _load(keys / "client.key_secret", True)
        server_public, _ = _load(keys / "server.key", False)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public


def warn_if_exposed(address: str, secured: bool) -> None:
    """Log a warning when a socket binds beyond this machine without CURVE."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        local = host in ("localhost",) or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local and not secured:
        log.warning("%s is reachable from other machines and not encrypted; use CURVE keys "
                    "(`etem keys DIR`, then --curve DIR on both sides)", address)
