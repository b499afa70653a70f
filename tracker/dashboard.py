"""A live dashboard of a tracking run over HTTP, and its Prometheus ``/metrics`` endpoint.

The dashboard is an ``on_frame`` hook plus a small web server (the standard library's
:class:`~http.server.ThreadingHTTPServer` in a daemon thread) that serves one self-contained
page (``static/dashboard.html`` and ``.js``: nothing is fetched from elsewhere, the microscope
PC may be offline) and a few endpoints it polls:

``/api/status``
    counters, frames/s, latency, queue depths, sites, GPU memory, where the frames come from
    and the run file; once the run has ended, how (JSON). ``?wait=S`` answers when the run
    ends, or after ``S`` seconds (at most 25): a hidden browser tab, whose timers the browser
    slows to a minute, keeps such a request open instead of polling;
``/api/frame`` and ``/frame.png``
    the latest frame (downsampled for display), its pixel size, its columns (class, site) and
    what the class names mean;
``/api/maps``, ``/maps/occupancy.png``, ``/maps/events.png``, ``/maps/classes.png``
    the occupancy and event maps (Madsen et al. 2018, Fig. 10) as they build up, and where
    sites change class (an S2 column losing an atom), the class-change map;
``/api/site?y=&x=`` or ``?site=``
    the site nearest a point of the maps (reference-frame pixels) and its occupancy timeline;
``/metrics``
    Prometheus text exposition format.

The hook keeps the pipeline fast: per frame it only stores references (the frame's image and
columns table) and adds the latency to a histogram, under a lock; every ``snapshot_interval_s``
it copies ``pipe.status()`` and every ``maps_interval_s`` the sites table. PNGs are encoded in
the server's threads on request, at most once per ``image_interval_s`` and cached.

The server binds to 127.0.0.1 by default: only this PC can connect. Bound to another address,
it requires a token (printed in its URL; sent as ``?token=``, a cookie the page then carries,
or an ``Authorization: Bearer`` header), and its URLs name this machine as other computers
reach it (its host name, else its address; :attr:`Dashboard.url`, :attr:`Dashboard.metrics_url`).

When the run ends, :meth:`Dashboard.close` takes the run's final sites and status, and where a
page is open (it polled in the last seconds) keeps serving until it has fetched them, for at
most ``linger_s``: the page then says how the run ended and shows its final maps once the
tracker has exited, where it would otherwise only see the connection lost. A page waiting on
``/api/status?wait=`` (a hidden tab) counts as open, and is answered at once.

>>> from etem.tracker import track
>>> from etem.tracker.dashboard import Dashboard, DashboardConfig
>>> with Dashboard(DashboardConfig(port=0)) as dash:      # doctest: +SKIP
...     print(dash.url)
...     track("movie.h5", pace=1.0, on_frame=dash)
"""
from __future__ import annotations

import http.server
import logging
import math
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import numpy as np

from .dashboard_views import DashboardViews
from .dashboard_http import STATIC, Handler, _is_loopback, public_host
from .errors import ConfigError
from .metrics import LATENCY_BUCKETS_S, LatencyHistogram, gpu_memory, metrics_text  # noqa: F401 (re-exported)

log = logging.getLogger("etem.dashboard")

DEFAULT_PORT = 8765
OUTCOMES = ("complete", "stopped", "interrupted", "failed")  # how a run ends (its run file's status)
_PAGE_OPEN_S = 2.0  # a page that polled the status this recently is open (it polls every 0.5 s)
WAIT_MAX_S = 25.0  # longest wait of /api/status?wait= (under the handler's 30 s idle timeout)


@dataclass(frozen=True)
class DashboardConfig:
    """Dashboard server options.

    host
        Address to bind; 127.0.0.1 (default) serves this PC only. Any other address requires
        the token from every client.
    port
        TCP port; 0 picks a free one (see :attr:`Dashboard.url`).
    token
        Access token; None makes one when ``host`` is not a loopback address. When set, it is
        required from every client.
    max_image_px
        Frames and maps are downsampled by an integer factor to at most this many pixels a side.
    image_interval_s
        Shortest time between two frame PNG encodings (more clients get the cached one).
    snapshot_interval_s
        How often the hook copies ``pipe.status()``.
    maps_interval_s
        How often the hook copies the sites table for the maps and timelines.
    linger_s
        After the run, how long :meth:`Dashboard.close` keeps serving at most, until a page
        open gets the run's final state (0: close at once; no page open: at once).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_image_px: int = 512
    image_interval_s: float = 0.25
    snapshot_interval_s: float = 0.25
    maps_interval_s: float = 1.0
    linger_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"dashboard port must be in 0..65535 (0: any free port), got {self.port}")
        if self.max_image_px < 16:
            raise ConfigError(f"max_image_px must be at least 16, got {self.max_image_px}")
        if not 0 <= self.linger_s <= 30:
            raise ConfigError(f"linger_s must be in 0..30 s, got {self.linger_s}")


def chain(*hooks: Callable[[Any, Any], None] | None) -> Callable[[Any, Any], None]:
    """One ``on_frame`` hook that calls each of ``hooks`` (None entries skipped) in turn."""
    live = [h for h in hooks if h is not None]

    def on_frame(res, pipe) -> None:
        for h in live:
            h(res, pipe)

    return on_frame


class Dashboard(DashboardViews):
    """Live dashboard of one run: an ``on_frame`` hook and the web server that shows it.

    Parameters
    ----------
    cfg
        Server and refresh options.

    Use it as ``track(..., on_frame=dash)`` between :meth:`start` and :meth:`close` (or in a
    ``with`` block); :attr:`url` is the address to open.
    """

    def __init__(self, cfg: DashboardConfig | None = None) -> None:
        self.cfg = cfg or DashboardConfig()
        self.token = self.cfg.token
        if self.token is None and not _is_loopback(self.cfg.host):
            self.token = secrets.token_urlsafe(16)
        self._lock = threading.Lock()  # guards what the hook writes
        self._render_lock = threading.Lock()  # guards the PNG caches
        self.pipe = None
        self.histogram = LatencyHistogram()
        self._times: deque[float] = deque(maxlen=4096)  # arrival of processed frames (perf_counter)
        self._latest: dict[str, Any] | None = None  # image, columns, frame, drift
        self._status: dict[str, Any] = {}
        self._t_status = -math.inf
        self._sites: dict[str, Any] | None = None  # table, n_flips, first_frame, radius, version
        self._t_sites = -math.inf
        self._maps_version = 0
        self._frame_cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._t_encode = -math.inf
        self._maps_cache: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._host_name: str | None = None  # how other computers name this one (start)
        self._outcome: str | None = None  # how the run ended (close)
        self._exiting = False  # close() is giving the pages the end
        self._t_page = -math.inf  # when a page last polled the status
        self._waiting = 0  # status requests waiting for the run's end (hidden pages)
        self._closing = False  # close() has begun: waiting requests are answered
        self._final: set[str] = set()  # what pages fetched since the end (status, frame, maps …)
        self._final_changed = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()  # open (keep-alive) connections
        self._static = {name: resources.files("etem.tracker").joinpath("static", name).read_bytes()
                        for name, _ in STATIC.values()}

    # -- the on_frame hook (the pipeline's host thread) ----------------------------------------
    def __call__(self, res, pipe) -> None:
        """Record a processed frame: references and cheap figures only."""
        now = time.perf_counter()
        frame = pipe.last_frame
        with self._lock:
            self.pipe = pipe
            self.histogram.observe(res.latency_s)
            self._times.append(now)
            self._latest = {"image": None if frame is None else frame.image, "columns": res.columns,
                            "frame": int(res.frame), "drift": res.drift, "shape": pipe.shape}
        if now - self._t_status >= self.cfg.snapshot_interval_s:
            self._t_status = now
            status = pipe.status()
            with self._lock:
                self._status = status
        if now - self._t_sites >= self.cfg.maps_interval_s:
            self._t_sites = now
            self.refresh_sites(pipe)

    def refresh_sites(self, pipe=None) -> None:
        """Copy the sites table now; call from the pipeline's thread or after the run."""
        pipe = pipe or self.pipe
        if pipe is None or pipe.sites is None:
            return
        s = pipe.sites
        flips = s.flips.rows()  # (a view of the rows so far: the log only grows)
        snap = {"table": s.table(), "n_flips": len(flips), "first_frame": s.first_frame,
                "radius_px": s.map_radius_px, "n_frames": s.n_frames, "flips": flips, "shape": pipe.shape}
        log_ = s.class_changes.rows()  # (frame, site, from class, to class)
        # per site, how often its column changed class (S2 -> S …)
        snap["class_changes"] = np.bincount(log_[:, 1], minlength=len(snap["table"])) if len(log_) else None
        snap["class_change_log"] = log_  # (a site's classes over time: its timeline)
        with self._lock:
            self._maps_version += 1
            snap["version"] = self._maps_version
            self._sites = snap
            if pipe.stop.is_set():  # the run has ended: the status will not move again
                self._status = pipe.status()

    # -- server -----------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving in a daemon thread; returns :attr:`url`."""
        if self._server is not None:
            return self.url
        host = self.cfg.host

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        try:
            self._server = Server((host.strip("[]"), self.cfg.port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve the dashboard on {host}:{self.cfg.port}: {exc.strerror or exc}; "
                              "choose another port (--dashboard-port, 0: any free port)") from None
        self._server.dashboard = self  # type: ignore[attr-defined]
        self._host_name = public_host(host)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="etem-dashboard", daemon=True)
        self._thread.start()
        if not _is_loopback(self.cfg.host):
            log.warning("dashboard served on %s: other computers can connect with the token in %s", host, self.url)
        return self.url

    @property
    def port(self) -> int:
        """The port served on (the one picked when ``port=0``)."""
        if self._server is None:
            raise RuntimeError("the dashboard is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The page's address (with the token, where one is needed); bound to all addresses,
        with the name other computers reach this one by (:func:`public_host`)."""
        return self._base() + (f"?token={self.token}" if self.token else "")

    @property
    def metrics_url(self) -> str:
        """The ``/metrics`` address, with the token where one is needed (a scraper may send it
        as an ``Authorization: Bearer`` header instead)."""
        return self._base() + "metrics" + (f"?token={self.token}" if self.token else "")

    def _base(self) -> str:
        host = self._host_name or public_host(self.cfg.host)
        return f"http://{host}:{self.port}/"

    def close(self, outcome: str | None = None) -> None:
        """Stop serving and free the port.

        After a run, first take its final sites and status, and where a page is open keep
        serving until it has fetched them (at most ``linger_s``). ``outcome`` is how the run
        ended (one of :data:`OUTCOMES`); None: as its run file says, else as the exception being
        handled says (a Ctrl-C: interrupted), else complete (stopped where the pipeline
        dropped frames as it stopped)."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        if self._server is not None and self.pipe is not None and self.pipe.stop.is_set():
            try:
                self._give_the_end(outcome or self._outcome_of_run(sys.exc_info()[1]))
            except Exception:  # noqa: BLE001 - the end shown or not, the port is freed
                log.warning("dashboard: the run's end was not shown", exc_info=True)
        server, self._server = self._server, None
        with self._final_changed:  # (requests still waiting for the end are answered as it is)
            self._closing = True
            self._final_changed.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()
            with self._lock:  # the pages' keep-alive connections would go on being answered
                connections, self._connections = list(self._connections), set()
            for conn in connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> "Dashboard":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(None if exc is None else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")

    # -- the run's end (close) ----------------------------------------------------------------
    def _outcome_of_run(self, exc: BaseException | None) -> str:
        """How the run ended: its run file's status, else the exception, else the pipeline's."""
        pipe = self.pipe
        path = getattr(pipe, "run_path", None)
        if path is not None:
            try:
                from .run import open_run

                with open_run(path) as run:
                    if run.status in OUTCOMES:
                        return run.status
            except Exception:  # noqa: BLE001 - (not written: judged from here)
                log.debug("dashboard: run file %s unread", path, exc_info=True)
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted"
        if exc is not None or getattr(pipe, "error", None):
            return "failed"
        return "stopped" if pipe.counters.as_dict().get("dropped/stopped") else "complete"

    def _give_the_end(self, outcome: str) -> None:
        """Take the run's final sites, status and frame, and wait (at most ``linger_s``) for an
        open page to fetch them."""
        self.refresh_sites(self.pipe)  # (also the final status)
        with self._final_changed:
            self._outcome, self._exiting, self._final = outcome, True, set()
            page_open = time.perf_counter() - self._t_page < _PAGE_OPEN_S or self._waiting > 0
            self._final_changed.notify_all()  # (the hidden pages' requests waiting for the end)
        maps = self.maps()  # encoded now, not in the page's wait
        self.frame()
        if not page_open or self.cfg.linger_s <= 0:
            return
        want = {"status", "frame", "maps", "occupancy", "events"} | ({"classes"} if maps and maps["classes"] else set())
        deadline = time.perf_counter() + self.cfg.linger_s
        with self._final_changed:
            while not want <= self._final and (left := deadline - time.perf_counter()) > 0:
                self._final_changed.wait(left)
        log.debug("dashboard: the pages fetched %s of the run's end", sorted(self._final))

    def wait_for_the_end(self, timeout_s: float) -> None:
        """Hold a status request until the run ends (:meth:`close` gives its end) or
        ``timeout_s`` (at most :data:`WAIT_MAX_S`) has passed. A hidden browser tab asks so:
        its timers are slowed (to once a minute), an answer to a request is not; and a page
        waiting is open, so :meth:`close` waits for it to fetch the run's end."""
        deadline = time.perf_counter() + min(max(timeout_s, 0.0), WAIT_MAX_S)
        with self._final_changed:
            self._waiting += 1
            try:
                while not (self._exiting or self._closing) and (left := deadline - time.perf_counter()) > 0:
                    self._final_changed.wait(left)
            finally:
                self._waiting -= 1

    def connected(self, conn: socket.socket, is_open: bool) -> None:
        """Note a connection opened or closed (the request handler); :meth:`close` ends those open."""
        with self._lock:
            if is_open:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def served(self, what: str) -> None:
        """Note a request answered (the request handler): ``status``, ``frame``, ``maps``,
        ``occupancy`` …; once the run has ended, :meth:`close` waits for them."""
        with self._final_changed:
            if what == "status":
                self._t_page = time.perf_counter()
            if self._exiting:
                self._final.add(what)
                self._final_changed.notify_all()
