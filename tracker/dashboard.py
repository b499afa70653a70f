"""A live dashboard of a tracking run over HTTP, and its Prometheus ``/metrics`` endpoint.

The dashboard is an ``on_frame`` hook plus a small web server (the standard library's
:class:`~http.server.ThreadingHTTPServer` in a daemon thread) that serves one self-contained
page (``static/dashboard.html`` and ``.js``: nothing is fetched from elsewhere, the microscope
PC may be offline) and a few endpoints it polls:

``/api/status``
    counters, frames/s, latency, queue depths, sites, GPU memory (JSON);
``/api/frame`` and ``/frame.png``
    the latest frame (downsampled for display) and its columns (class, site);
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
or an ``Authorization: Bearer`` header).

>>> from etem.tracker import track
>>> from etem.tracker.dashboard import Dashboard, DashboardConfig
>>> with Dashboard(DashboardConfig(port=0)) as dash:      # doctest: +SKIP
...     print(dash.url)
...     track("movie.h5", pace=1.0, on_frame=dash)
"""
from __future__ import annotations

import http.server
import json
import logging
import math
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import numpy as np

from .dashboard_http import STATIC, Handler, _is_loopback, _json_safe
from .errors import ConfigError
from . import pngs
from .plots import class_colours
from .sites import occupied_sites, render_site_values
from .metrics import LATENCY_BUCKETS_S, LatencyHistogram, gpu_memory, metrics_text  # noqa: F401 (re-exported)

log = logging.getLogger("etem.dashboard")

DEFAULT_PORT = 8765


def _view_jumps(pipe) -> int:
    """Jumps of the view the run's linker has followed (etem.tracker.link.find_jump)."""
    linker = getattr(pipe, "linker", None)
    return 0 if linker is None else int(linker.jumps)


def _class_changes(pipe) -> int:
    """Class changes of the run's sites found so far (an S2 column turning S …)."""
    sites = getattr(pipe, "sites", None)
    return 0 if sites is None else len(sites.class_changes)


def _site_hops(pipe) -> int:
    """Hops between two sites found so far (a column or an atom moving to a neighbouring site)."""
    sites = getattr(pipe, "sites", None)
    return 0 if sites is None else sites.n_site_hops


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
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_image_px: int = 512
    image_interval_s: float = 0.25
    snapshot_interval_s: float = 0.25
    maps_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"dashboard port must be in 0..65535 (0: any free port), got {self.port}")
        if self.max_image_px < 16:
            raise ConfigError(f"max_image_px must be at least 16, got {self.max_image_px}")


def chain(*hooks: Callable[[Any, Any], None] | None) -> Callable[[Any, Any], None]:
    """One ``on_frame`` hook that calls each of ``hooks`` (None entries skipped) in turn."""
    live = [h for h in hooks if h is not None]

    def on_frame(res, pipe) -> None:
        for h in live:
            h(res, pipe)

    return on_frame


class Dashboard:
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
        self._flips = np.zeros((0, 3), np.int64)
        self._t0 = time.perf_counter()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
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
        snap = {"table": s.table(), "n_flips": len(s.flips), "first_frame": s.first_frame,
                "radius_px": s.map_radius_px, "n_frames": s.n_frames, "flips": s.flips, "shape": pipe.shape}
        changes = s.class_changes  # per site, how often its column changed class (S2 -> S …)
        snap["class_changes"] = (np.bincount(np.asarray(changes, np.int64).reshape(-1, 4)[:, 1],
                                             minlength=len(snap["table"])) if changes else None)
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
        """The page's address (with the token, where one is needed)."""
        host = self.cfg.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def close(self) -> None:
        """Stop serving and free the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> "Dashboard":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the endpoints return (server threads) -----------------------------------------------
    def status(self) -> dict[str, Any]:
        """Live counters and queues, plus the hook's latest status snapshot."""
        with self._lock:
            pipe, snap, times = self.pipe, dict(self._status), tuple(self._times)
            latest = self._latest
            version = self._maps_version
        now = time.perf_counter()
        recent = [t for t in times if now - t <= 5.0]
        out: dict[str, Any] = {"state": "waiting", "uptime_s": now - self._t0, "maps_version": version,
                               "fps_recent": (len(recent) - 1) / (recent[-1] - recent[0])
                               if len(recent) > 2 and recent[-1] > recent[0] else 0.0}
        if pipe is None:
            return out
        out.update({k: snap.get(k) for k in ("fps", "latency_p50_ms", "latency_p99_ms", "in_range", "out_of_range",
                                             "recent_in_range", "recent_judged", "trust_alert", "trust_last_out")})
        out.update(pipe.counters.as_dict())
        queues = pipe.queue_depths()
        out["queues"] = {q: {"depth": d, "capacity": c} for q, (d, c) in queues.items()}
        out["sites"] = 0 if pipe.sites is None else pipe.sites.n_occupied_sites
        out["view_jumps"] = _view_jumps(pipe)
        out["class_changes"] = _class_changes(pipe)
        out["hops"] = _site_hops(pipe)
        out["state"] = "finished" if pipe.stop.is_set() else "running"
        out["last_frame"] = None if latest is None else latest["frame"]
        out["since_last_frame_s"] = now - times[-1] if times else None
        engine = pipe.detector.engine
        out["engine"] = None if engine is None else f"{engine.name} on {engine.device}"
        out["gpu"] = gpu_memory(engine)
        return out

    def metrics(self) -> str:
        """The ``/metrics`` text."""
        with self._lock:
            pipe, latest = self.pipe, self._latest
            hist = LatencyHistogram(self.histogram.bounds)
            hist.counts, hist.sum, hist.count = list(self.histogram.counts), self.histogram.sum, self.histogram.count
        if pipe is None:
            counters, queues, sites, gpu, jumps, changes, hops = {}, {}, 0, {}, 0, 0, 0
        else:
            counters, queues = pipe.counters.as_dict(), pipe.queue_depths()
            sites = 0 if pipe.sites is None else pipe.sites.n_occupied_sites
            gpu = gpu_memory(pipe.detector.engine)
            jumps, changes, hops = _view_jumps(pipe), _class_changes(pipe), _site_hops(pipe)
        return metrics_text(counters, histogram=hist, queues=queues, sites=sites,
                            last_frame=None if latest is None else latest["frame"], gpu=gpu,
                            uptime_s=time.perf_counter() - self._t0, view_jumps=jumps, class_changes=changes,
                            hops=hops)

    def frame(self) -> dict[str, Any] | None:
        """The latest frame's display entry (PNG and columns), encoded at most every ``image_interval_s``."""
        with self._lock:
            latest = self._latest
        if latest is None or latest["image"] is None:
            return None
        with self._render_lock:
            cache = self._frame_cache
            if latest["frame"] in cache:
                return cache[latest["frame"]]
            now = time.perf_counter()
            if cache and now - self._t_encode < self.cfg.image_interval_s:
                return next(reversed(cache.values()))
            entry = self._encode_frame(latest)
            self._t_encode = now
            cache[entry["frame"]] = entry
            while len(cache) > 4:
                cache.popitem(last=False)
            return entry

    def frame_png(self, n: int | None) -> bytes | None:
        """The PNG of frame ``n`` while cached, else of the latest frame; None before the first."""
        with self._render_lock:
            if n is not None and n in self._frame_cache:
                return self._frame_cache[n]["png"]
        entry = self.frame()
        return None if entry is None else entry["png"]

    def _encode_frame(self, latest: dict[str, Any]) -> dict[str, Any]:
        img = np.asarray(latest["image"])
        if img.ndim == 3:
            img = img[0]
        k = pngs.downsample_factor(img.shape, self.cfg.max_image_px)
        small = pngs.downsample(img.astype(np.float32, copy=False), k)
        lo, hi = np.percentile(small[:: max(1, small.shape[0] // 128), :: max(1, small.shape[1] // 128)], [0.5, 99.5])
        grey = np.clip((small - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255).astype(np.uint8)
        cols = latest["columns"]
        n = len(cols)
        table = np.zeros((n, 4))
        if n:
            table[:, 0] = cols["y"].to_numpy()
            table[:, 1] = cols["x"].to_numpy()
            table[:, 2] = cols["cls"].to_numpy() if "cls" in cols else 0
            table[:, 3] = cols["site"].to_numpy() if "site" in cols else -1
        table[:, :2] = np.round(table[:, :2], 1)
        engine = getattr(self.pipe.detector, "engine", None) if self.pipe is not None else None
        classes = getattr(self.pipe, "intensity_classes", None)
        names = classes.class_names if classes is not None else list(getattr(engine, "class_names", ()) or ())
        meta = {"frame": latest["frame"], "png": f"frame.png?n={latest['frame']}", "shape": list(img.shape),
                "display_shape": list(grey.shape), "scale": 1.0 / k,
                "drift": [round(float(d), 2) for d in latest["drift"]], "n_columns": n,
                "class_names": names, "colours": class_colours(names)}
        columns = json.dumps([[y, x, int(c), int(s)] for y, x, c, s in table.tolist()], separators=(",", ":"))
        body = json.dumps(_json_safe(meta), allow_nan=False, separators=(",", ":"))[:-1] + f',"columns":{columns}}}'
        return {"frame": latest["frame"], "png": pngs.png(grey), "json": body.encode()}

    def _catch_up(self) -> None:
        """Once the run has ended, take the sites as it left them: the hook copies them every
        ``maps_interval_s`` only, so the last frames' would be missing from the maps."""
        pipe = self.pipe
        if pipe is None or pipe.sites is None or not pipe.stop.is_set():
            return
        with self._lock:
            snap = self._sites
        if snap is None or snap["n_frames"] != pipe.sites.n_frames or snap["n_flips"] != len(pipe.sites.flips):
            try:
                self.refresh_sites(pipe)
            except Exception:  # (the run's last gaps being settled meanwhile: the next request)
                log.debug("dashboard: the final sites were not taken yet", exc_info=True)

    def maps(self) -> dict[str, Any] | None:
        """Occupancy and event maps of the latest sites snapshot (rendered once per snapshot)."""
        self._catch_up()
        with self._lock:
            snap = self._sites
        if snap is None or snap["shape"] is None:
            return None
        with self._render_lock:
            if self._maps_cache is not None and self._maps_cache["version"] == snap["version"]:
                return self._maps_cache
            tab, shape = occupied_sites(snap["table"]), tuple(snap["shape"])
            # display px per frame px: down to max_image_px, or up (at most 4x) so small discs stay round
            scale = min(self.cfg.max_image_px / max(shape), 4.0)
            dshape = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
            yx = (tab[["y", "x"]].to_numpy() + 0.5) * scale - 0.5
            radius = max(snap["radius_px"] * scale, 1.0)
            occ = render_site_values(yx, tab["occupancy"].to_numpy(), dshape, radius)
            ev = render_site_values(yx, tab["event_rate"].to_numpy(), dshape, radius)
            ev_max = float(tab["event_rate"].max()) if len(tab) else 0.0
            cc = snap.get("class_changes")
            classes = cc_max = None
            if cc is not None and len(tab):  # (the sites drawn are the occupied ones: their rows)
                rate = cc[tab["site"].to_numpy()] / max(snap["n_frames"] - 1, 1)
                cc_max = float(rate.max())
                classes = pngs.map_png(render_site_values(yx, rate, dshape, radius), 0.0, cc_max or 1.0, "magma")
            self._maps_cache = {
                "version": snap["version"], "shape": list(shape), "display_shape": list(dshape), "scale": scale,
                "n_sites": len(tab), "n_frames": snap["n_frames"], "events_max": ev_max,
                "occupancy_mean": float(tab["occupancy"].mean()) if len(tab) else None,
                "occupancy": pngs.map_png(occ, 0.0, 1.0, "viridis"),
                "events": pngs.map_png(ev, 0.0, ev_max if ev_max > 0 else 1.0, "magma"),
                "classes": classes, "classes_max": cc_max,
            }
            return self._maps_cache

    def site(self, *, site: int | None = None, y: float | None = None, x: float | None = None) -> dict[str, Any] | None:
        """A site (by id, or the one nearest ``(y, x)`` [reference px]) with its occupancy timeline."""
        self._catch_up()
        with self._lock:
            snap, latest = self._sites, self._latest
        if snap is None or not len(snap["table"]):
            return None
        tab = snap["table"]
        if site is None:
            if y is None or x is None:
                raise ValueError("give site=ID, or y and x")
            d2 = (tab["y"].to_numpy() - y) ** 2 + (tab["x"].to_numpy() - x) ** 2
            site = int(np.argmin(d2))
        if not 0 <= site < len(tab):
            return None
        row = tab.iloc[site]
        flips = self._flips_of(snap)
        mine = flips[flips[:, 1] == site]
        start = int(snap["first_frame"] or 0)
        end = max(start, latest["frame"] if latest else start)
        state = bool(row["first_frame"] == start)
        changes = [[start, int(state)]] + [[int(f), int(k > 0)] for f, _, k in mine.tolist()]
        cc = snap.get("class_changes")
        return {"site": site, "y": float(row["y"]), "x": float(row["x"]), "cls": int(row["cls"]),
                "occupancy": float(row["occupancy"]), "event_rate": float(row["event_rate"]),
                "n_events": int(row["n_events"]), "first_frame": int(row["first_frame"]),
                "n_class_changes": None if cc is None else int(cc[site]) if site < len(cc) else 0,
                "start": start, "end": end, "changes": changes[-20000:]}

    def _flips_of(self, snap: dict[str, Any]) -> np.ndarray:
        """The flips list as an array up to the snapshot's length, converted incrementally."""
        with self._render_lock:
            have, want = len(self._flips), snap["n_flips"]
            if want > have:
                new = np.asarray(snap["flips"][have:want], dtype=np.int64).reshape(-1, 3)
                self._flips = np.concatenate([self._flips, new])
            return self._flips[:want]

    def frame_meta(self) -> bytes:
        """``/api/frame`` (JSON, made once per frame): the shown frame's number, shapes, scale,
        class names and colours, PNG address, and ``columns`` as ``[y, x, cls, site]`` rows."""
        entry = self.frame()
        return b'{"frame":null}' if entry is None else entry["json"]

    def maps_meta(self) -> dict[str, Any]:
        """``/api/maps``: the maps' version, shapes, scale, figures and PNG addresses."""
        m = self.maps()
        if m is None:
            return {"version": None}
        v = m["version"]
        return {**{k: val for k, val in m.items() if k not in ("occupancy", "events", "classes")},
                "occupancy": f"maps/occupancy.png?v={v}", "events": f"maps/events.png?v={v}",
                "classes": f"maps/classes.png?v={v}" if m.get("classes") is not None else None}
