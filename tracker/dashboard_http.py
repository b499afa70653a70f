"""The dashboard's HTTP side: the request handler, its routes, who may be answered (the
token; for a loopback server without one, requests that name a loopback host), and how other
computers name this one (:func:`public_host`).
:class:`etem.tracker.dashboard.Dashboard` serves with it."""
from __future__ import annotations

import hmac
import http.server
import ipaddress
import json
import logging
import math
import socket
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

if TYPE_CHECKING:
    from .dashboard import Dashboard

__all__ = ["STATIC", "Handler", "allowed", "public_host"]

log = logging.getLogger("etem.dashboard")

STATIC = {"/": ("dashboard.html", "text/html; charset=utf-8"),
           "/dashboard.html": ("dashboard.html", "text/html; charset=utf-8"),
           "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8")}
# what the page fetches, by the name Dashboard.served notes it under
_NOTED = {"/api/status": "status", "/api/frame": "frame", "/api/maps": "maps", "/frame.png": "frame.png",
          "/maps/occupancy.png": "occupancy", "/maps/events.png": "events", "/maps/classes.png": "classes"}
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _is_loopback(host: str) -> bool:
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _local_name(name: str) -> bool:
    """Whether a host name or address means this machine only (localhost, 127.x, ::1)."""
    return not name or name.lower().startswith("localhost") or _is_loopback(name)


def public_host(host: str) -> str:
    """How another computer names this one for a server bound to ``host``: the address itself,
    or for a wildcard (0.0.0.0, ::) the machine's fully qualified name, else its name, else the
    address it reaches other networks from (where the name is only ``localhost``, as in many
    containers)."""
    if host not in ("0.0.0.0", "::", ""):
        return f"[{host}]" if ":" in host and not host.startswith("[") else host
    for name in (socket.getfqdn, socket.gethostname):
        try:
            found = name()
        except OSError:
            continue
        if not _local_name(found):
            return found
    try:  # (no packet is sent: a UDP socket's connect only picks the route)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        if not _local_name(addr):
            return addr
    except OSError:
        pass
    return socket.gethostname() or "localhost"


def allowed(token: str | None, handler: http.server.BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
    """Whether a request may be answered (token, and Host header for a loopback server)."""
    if token is None:
        # a loopback server answers only requests that name a loopback host, which
        # refuses pages from elsewhere that rebind their own name to 127.0.0.1
        return _hostname(handler.headers.get("Host") or "") in _LOCAL_NAMES
    given = query.get("token", [None])[0]
    if given is None:
        auth = handler.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
    if given is None:
        cookie = SimpleCookie(handler.headers.get("Cookie") or "")
        given = cookie["etem_token"].value if "etem_token" in cookie else None
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _hostname(header: str) -> str:
    """The host part of a Host header (``[::1]`` kept in brackets)."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "etem-dashboard"
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection frees its thread

    def setup(self) -> None:
        super().setup()
        self.server.dashboard.connected(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.dashboard.connected(self.connection, False)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        dash: Dashboard = self.server.dashboard  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not allowed(dash.token, self, query):
            self._send(403, b"forbidden: this dashboard needs its token (see the URL printed when it started)\n",
                       "text/plain; charset=utf-8")
            return
        extra = {}
        if dash.token is not None and "token" in query:
            extra["Set-Cookie"] = f"etem_token={dash.token}; HttpOnly; SameSite=Strict; Path=/"
        try:
            self._route(dash, url.path, query, extra)
            if url.path in _NOTED:  # (once answered: the end of a run waits for them)
                dash.served(_NOTED[url.path])
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # noqa: BLE001 - a failing request must not take the run down
            log.exception("dashboard request %s failed", self.path)
            self._send(500, f"error: {type(exc).__name__}: {exc}\n".encode(), "text/plain; charset=utf-8")

    def _route(self, dash: Dashboard, path: str, query: dict[str, list[str]], extra: dict[str, str]) -> None:
        if path in STATIC:
            name, ctype = STATIC[path]
            self._send(200, dash._static[name], ctype, extra)
        elif path == "/api/status":
            if "wait" in query:  # (a hidden page: answered at the run's end, or after the wait)
                try:
                    wait_s = float(query["wait"][0])
                except ValueError:
                    self._send(400, b"give wait=SECONDS (at most 25)\n", "text/plain; charset=utf-8")
                    return
                dash.wait_for_the_end(wait_s if math.isfinite(wait_s) else 0.0)
            self._json(dash.status(), extra)
        elif path == "/api/frame":
            self._send(200, dash.frame_meta(), "application/json", extra)
        elif path == "/api/maps":
            self._json(dash.maps_meta(), extra)
        elif path == "/api/site":
            try:
                if "site" in query:
                    args: dict[str, Any] = {"site": int(query["site"][0])}
                else:
                    args = {"y": float(query["y"][0]), "x": float(query["x"][0])}
            except (KeyError, ValueError):
                self._send(400, b"give site=ID, or y=ROW&x=COL (reference-frame pixels)\n", "text/plain; charset=utf-8")
                return
            out = dash.site(**args)
            self._json(out if out is not None else {"site": None}, extra)
        elif path == "/frame.png":
            n = query.get("n", [None])[0]
            png = dash.frame_png(int(n) if n is not None and n.lstrip("-").isdigit() else None)
            self._png(png, extra)
        elif path in ("/maps/occupancy.png", "/maps/events.png", "/maps/classes.png"):
            m = dash.maps()
            self._png(None if m is None else m[path[6:-4]], extra)
        elif path == "/metrics":
            self._send(200, dash.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8", extra)
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon", extra)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", extra)

    def _json(self, obj: Any, extra: dict[str, str]) -> None:
        body = json.dumps(_json_safe(obj), allow_nan=False, separators=(",", ":")).encode()
        self._send(200, body, "application/json", extra)

    def _png(self, png: bytes | None, extra: dict[str, str]) -> None:
        if png is None:
            self._send(404, b"nothing to show yet\n", "text/plain; charset=utf-8", extra)
        else:
            self._send(200, png, "image/png", extra)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)
