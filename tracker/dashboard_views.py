"""What the dashboard's endpoints return (they run in the server's threads): the status, the
Prometheus metrics, the latest frame with its columns, the maps, one site's timeline. The
state they read is kept by :class:`etem.tracker.dashboard.Dashboard`'s on_frame hook."""
from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import numpy as np

from . import pngs
from .dashboard_http import _json_safe
from .frames import class_label
from .metrics import LatencyHistogram, gpu_memory, metrics_text
from .plots import class_colours
from .site_counts import counts_so_far, final_upto
from .sites import min_frames_in_view, occupied_sites, render_site_values, seen_too_little

log = logging.getLogger("etem.dashboard")

def _class_notes(names: list[str], intensity: bool) -> tuple[str, str]:
    """A line that says what a run's classes are (under the frame's legend), and an example of
    a class change (the class-change map's subtitle), from the class names.

    Intensity classes (:class:`etem.tracker.intensity.IntensityClasses`) are named by sublattice
    (A the brighter, B; I where the columns form no honeycomb) and intensity group there,
    faintest first (B0, B1): on a MoS2 ADF movie A is Mo, B0 a single S and B1 an S2 column,
    so that B1 → B0 is the S2 → S of an S2 column losing an atom."""
    if not intensity or not names:
        return "", "e.g. S2 → S" if "S2" in names and "S" in names else "a site's column changing class"
    groups: dict[str, list[str]] = {}
    for n in names:
        if n != "no sublattice":
            groups.setdefault(n.rstrip("0123456789"), []).append(n)
    note = "classes by column intensity"
    if sorted(groups) == ["A", "B"]:
        note += ": A, B the two sublattices, A the brighter"
    several = {k: g for k, g in groups.items() if len(g) > 1}
    if len(several) == 1:
        (letter, g), = several.items()
        where = f"of sublattice {letter}" if letter in "AB" else "of the columns"
        note += f"; {'/'.join(g)} the intensity groups {where}, {g[0]} the faint{'er' if len(g) == 2 else 'est'}"
    elif several:
        note += "; the digit: the intensity group on the sublattice, 0 the faintest"
    if not several:
        return note, "a site's column changing class"
    g = several.get("B") or next(iter(several.values()))
    return note, f"e.g. {g[-1]} → {g[-2]}" + (" (S2 → S on MoS2)" if groups == {"A": ["A"], "B": ["B0", "B1"]} else " (fainter)")


def _view_jumps(pipe) -> int:
    """Jumps of the view the run's linker has followed (etem.tracker.link.find_jump)."""
    linker = getattr(pipe, "linker", None)
    return 0 if linker is None else int(linker.jumps)


def _sites_state(pipe) -> dict[str, Any]:
    """Whether the sites are still building (no frame final yet), and up to which frame they are final."""
    sites = getattr(pipe, "sites", None)
    if sites is None:
        return {"sites_building": False, "sites_final_frame": None, "look_ahead_frames": None}
    upto = final_upto(sites)
    return {"sites_building": int(sites.n_frames) == 0, "look_ahead_frames": int(sites.cfg.look_ahead),
            "sites_final_frame": None if not math.isfinite(upto) or upto < 0 else int(upto)}


class DashboardViews:
    """The endpoints of :class:`etem.tracker.dashboard.Dashboard` (its state: see there)."""

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
        out.update(self._run_names(pipe))
        out.update({k: snap.get(k) for k in ("fps", "latency_p50_ms", "latency_p99_ms", "in_range", "out_of_range",
                                             "recent_in_range", "recent_judged", "trust_alert", "trust_last_out")})
        out.update(pipe.counters.as_dict())
        queues = pipe.queue_depths()
        out["queues"] = {q: {"depth": d, "capacity": c} for q, (d, c) in queues.items()}
        out["sites"] = 0 if pipe.sites is None else pipe.sites.n_occupied_sites
        out["view_jumps"] = _view_jumps(pipe)
        # the class changes and hops of the frames whose sites are final, as the site count
        out["class_changes"], out["hops"] = counts_so_far(pipe.sites)
        out.update(_sites_state(pipe))
        out["state"] = "finished" if pipe.stop.is_set() else "running"
        with self._lock:
            out["outcome"], out["exiting"] = self._outcome, self._exiting
        out["last_frame"] = None if latest is None else latest["frame"]
        out["since_last_frame_s"] = now - times[-1] if times else None
        engine = pipe.detector.engine
        out["engine"] = None if engine is None else f"{engine.name} on {engine.device}"
        out["gpu"] = gpu_memory(engine)
        return out

    def _run_names(self, pipe) -> dict[str, Any]:
        """Where the run's frames come from (a stream's address, a file) and its run file."""
        path = getattr(pipe, "run_path", None)
        attrs = getattr(pipe, "attrs", None) or {}
        return {"source": attrs.get("source"), "run_file": None if path is None else str(path)}

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
            jumps = _view_jumps(pipe)
            changes, hops = counts_so_far(pipe.sites)
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
            ended = self.pipe is not None and self.pipe.stop.is_set()
            if cache and not ended and now - self._t_encode < self.cfg.image_interval_s:
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
        names = self._class_names()
        note, example = _class_notes(names, getattr(self.pipe, "intensity_classes", None) is not None)
        labels = self._class_labels(names)
        sampling = getattr(self.pipe, "sampling", None)
        meta = {"frame": latest["frame"], "png": f"frame.png?n={latest['frame']}", "shape": list(img.shape),
                "display_shape": list(grey.shape), "scale": 1.0 / k,
                "drift": [round(float(d), 2) for d in latest["drift"]], "n_columns": n,
                "class_names": names, "class_labels": labels, "class_note": note, "class_change_example": example,
                "sampling_A": float(sampling) if sampling else None, "colours": class_colours(labels)}
        columns = json.dumps([[y, x, int(c), int(s)] for y, x, c, s in table.tolist()], separators=(",", ":"))
        body = json.dumps(_json_safe(meta), allow_nan=False, separators=(",", ":"))[:-1] + f',"columns":{columns}}}'
        return {"frame": latest["frame"], "png": pngs.png(grey), "json": body.encode()}

    def _class_names(self) -> list[str]:
        """The run's class names: its intensity classes' (A, B0, B1 …), else its model's."""
        pipe = self.pipe
        if pipe is None:
            return []
        classes = getattr(pipe, "intensity_classes", None)
        if classes is not None:
            return list(classes.class_names)
        return list(getattr(getattr(pipe.detector, "engine", None), "class_names", ()) or ())

    def _material(self) -> str | None:
        """The material in view, where the run knows it: its config's, or the demo movie's."""
        from .intensity import material_in_view

        pipe = self.pipe
        return material_in_view(getattr(getattr(pipe, "cfg", None), "material", None),
                                (getattr(pipe, "attrs", None) or {}).get("demo"))

    def _class_labels(self, names: list[str]) -> list[str]:
        """The class names as shown (:func:`etem.tracker.intensity.display_names`: MoS2's
        intensity classes with their species, A (Mo), B0 (S), B1 (S2), by the groups' intensities)."""
        from .intensity import display_names

        classes = getattr(self.pipe, "intensity_classes", None)
        if classes is None:
            return list(names)
        try:
            ratios = classes.ratios()
        except (KeyError, TypeError, ValueError):  # (groups not learned yet)
            ratios = None
        return display_names(names, self._material(), ratios if ratios and len(ratios) == len(names) else None)

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
            # sites in view in too few frames (one lucky frame at the edge: occupancy 1.0) are left
            # out, by the rule the exported maps draw them hollow by
            few = seen_too_little(tab, snap["n_frames"])
            keep = lambda v: np.where(few, np.nan, np.asarray(v, float))  # noqa: E731
            occ = render_site_values(yx, keep(tab["occupancy"]), dshape, radius)
            ev = render_site_values(yx, keep(tab["event_rate"]), dshape, radius)
            ev_max = float(np.nanmax(keep(tab["event_rate"]), initial=0.0)) if len(tab) else 0.0
            cc = snap.get("class_changes")
            classes = cc_max = None
            if cc is not None and len(tab):  # (the sites drawn are the occupied ones: their rows)
                rate = keep(cc[tab["site"].to_numpy()] / max(snap["n_frames"] - 1, 1))
                cc_max = float(np.nanmax(rate, initial=0.0))
                classes = pngs.map_png(render_site_values(yx, rate, dshape, radius), 0.0, cc_max or 1.0, "magma")
            self._maps_cache = {
                "version": snap["version"], "shape": list(shape), "display_shape": list(dshape), "scale": scale,
                "n_sites": len(tab), "n_frames": snap["n_frames"], "events_max": ev_max,
                "occupancy_mean": float(tab["occupancy"].mean()) if len(tab) else None,
                "occupancy": pngs.map_png(occ, 0.0, 1.0, "viridis"),
                "events": pngs.map_png(ev, 0.0, ev_max if ev_max > 0 else 1.0, "magma"),
                "classes": classes, "classes_max": cc_max,
                "sites_left_out": int(few.sum()), "min_frames_in_view": min_frames_in_view(snap["n_frames"]),
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
        flips = snap["flips"]
        mine = flips[flips[:, 1] == site]
        start = int(snap["first_frame"] or 0)
        end = max(start, latest["frame"] if latest else start)
        state = bool(row["first_frame"] == start)
        changes = [[start, int(state)]] + [[int(f), int(k > 0)] for f, _, k in mine.tolist()]
        cc = snap.get("class_changes")
        log_ = snap.get("class_change_log")
        classes = None  # the site's class over time, [frame, class] from each change (a class-change run)
        if cc is not None and log_ is not None:
            own = log_[log_[:, 1] == site]
            classes = ([[start, int(own[0, 2]) if len(own) else int(row["cls"])]]
                       + [[int(f), int(to)] for f, _, _, to in own.tolist()])[-20000:]
        sampling = getattr(self.pipe, "sampling", None)
        labels = self._class_labels(self._class_names())
        return {"site": site, "y": float(row["y"]), "x": float(row["x"]), "cls": int(row["cls"]),
                "y_A": float(row["y"]) * sampling if sampling else None,
                "x_A": float(row["x"]) * sampling if sampling else None,
                "class_name": class_label(labels, int(row["cls"])), "classes": classes,
                "class_labels": labels, "colours": class_colours(labels),
                "occupancy": float(row["occupancy"]), "event_rate": float(row["event_rate"]),
                "n_events": int(row["n_events"]), "first_frame": int(row["first_frame"]),
                "n_class_changes": None if cc is None else int(cc[site]) if site < len(cc) else 0,
                "start": start, "end": end, "changes": changes[-20000:]}

    def frame_meta(self) -> bytes:
        """``/api/frame`` (JSON, made once per frame): the shown frame's number, shapes, scale,
        pixel size (``sampling_A``, None where unknown), class names, what they mean and an
        example of a class change (``class_note``, ``class_change_example``), colours, PNG
        address, and ``columns`` as ``[y, x, cls, site]`` rows."""
        entry = self.frame()
        return b'{"frame":null}' if entry is None else entry["json"]

    def maps_meta(self) -> dict[str, Any]:
        """``/api/maps``: the maps' version, shapes, scale, figures and PNG addresses, and
        ``look_ahead_frames``: how many frames the sites wait for before they are final (the maps
        start after them); ``quiet_sites``: ``[y, x]`` [frame px] of the sites with no event, and
        ``site_radius_px``, the radius of their discs (the page rings them on the events map)."""
        m = self.maps()
        sites = getattr(self.pipe, "sites", None)
        # the maps' first sites are final this many frames after they were seen (said while none are)
        lag = {"look_ahead_frames": int(sites.cfg.look_ahead) if sites is not None else None}
        if m is None:
            return {"version": None, **lag}
        v = m["version"]
        with self._lock:
            snap = self._sites
        quiet = []  # the sites with no event, where the events map draws them dark on dark: ringed
        if snap is not None and snap["version"] == v:
            tab = occupied_sites(snap["table"])
            calm = tab[tab["event_rate"].to_numpy() <= 0]
            quiet = np.round(calm[["y", "x"]].to_numpy(np.float64), 1).tolist()
            lag["site_radius_px"] = float(snap["radius_px"])
        return {**{k: val for k, val in m.items() if k not in ("occupancy", "events", "classes")}, **lag,
                "quiet_sites": quiet,
                "occupancy": f"maps/occupancy.png?v={v}", "events": f"maps/events.png?v={v}",
                "classes": f"maps/classes.png?v={v}" if m.get("classes") is not None else None}
