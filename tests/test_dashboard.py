"""The live dashboard: its HTTP endpoints on real sockets, /metrics and the CLI options (the
page in a browser: test_dashboard_browser.py)."""
import http.client
import io
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
import pytest

from etem.simulate.toy import make_movie, save_movie
from etem.tracker.cli import main
from etem.tracker.dashboard import Dashboard, DashboardConfig, LatencyHistogram, metrics_text, public_host
from etem.tracker.dashboard_views import _class_notes
from etem.tracker.errors import ConfigError
from etem.tracker.pipeline import Pipeline, PipelineConfig
from etem.tracker.sources import iter_array


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=16, shape=(128, 128), particle_radius_A=8.0, seed=3)


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def _json(url: str):
    code, _, body = _get(url)
    assert code == 200, body
    return json.loads(body)


# -- a small parser of the Prometheus text exposition format (version 0.0.4) ------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf'^({_NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\}})? '
                     r"([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|Inf))$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """``{(name, ((label, value), ...)): value}``; asserts every line follows the format."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, tuple], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if re.sub(r"_(bucket|sum|count)$", "", name) in types else name
        assert family in types, f"{name} has no # TYPE line"
        if types[family] == "counter":
            assert name.endswith("_total"), name
        key = (name, tuple(_LABEL.findall(labels or "")))
        assert key not in samples, f"sample repeated: {line!r}"
        samples[key] = float(value)
    for name, kind in types.items():
        if kind == "histogram":
            buckets = sorted(((math.inf if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"])), v)
                             for k, v in samples.items() if k[0] == name + "_bucket")
            counts = [v for _, v in buckets]
            assert buckets[-1][0] == math.inf and counts == sorted(counts), f"{name}: buckets not cumulative"
            assert counts[-1] == samples[(name + "_count", ())]
    return samples


def test_metrics_text_is_valid_exposition_format():
    hist = LatencyHistogram()
    for v in (0.003, 0.02, 0.02, 0.7, 100.0, float("nan")):
        hist.observe(v)
    text = metrics_text({"received": 7, "processed": 5, "rejected": 1, "dropped": 1, "rejected/bad_json": 1,
                         "dropped/queue_full": 1, "missing": 2, "restarts": 0},
                        histogram=hist, queues={"ingest": (3, 64), "host": (0, 4)}, sites=12, last_frame=9,
                        gpu={"cuda:0": {"allocated": 1024, "reserved": 2048}}, uptime_s=1.5)
    m = parse_metrics(text)
    assert m[("etem_frames_received_total", ())] == 7
    assert m[("etem_frames_rejected_total", (("reason", "bad_json"),))] == 1
    assert m[("etem_frames_rejected_total", (("reason", "payload_size"),))] == 0  # every known reason, from the start
    assert m[("etem_frames_dropped_total", (("reason", "queue_full"),))] == 1
    assert m[("etem_frame_latency_seconds_count", ())] == 5  # NaN (unknown arrival) not counted
    assert m[("etem_frame_latency_seconds_bucket", (("le", "0.025"),))] == 3
    assert m[("etem_frame_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert m[("etem_frame_latency_seconds_sum", ())] == pytest.approx(100.743)
    assert m[("etem_queue_depth", (("queue", "ingest"),))] == 3
    assert m[("etem_queue_capacity", (("queue", "host"),))] == 4
    assert m[("etem_gpu_memory_allocated_bytes", (("device", "cuda:0"),))] == 1024
    no_gpu = parse_metrics(metrics_text({}, histogram=LatencyHistogram(), queues={}, sites=0, last_frame=None,
                                        gpu={}, uptime_s=0.0))
    assert not any(k[0].startswith("etem_gpu") for k in no_gpu)


def test_a_jump_of_the_view_is_shown_and_counted():
    """The view jumps by 3 Å (the stage moved): /api/status and /metrics say it was followed."""
    from etem.simulate.toy import make_movie

    m = make_movie(n_frames=14, shape=(160, 160), seed=2)
    frames = np.asarray(m.frames, np.float32)
    frames[7:] = np.roll(frames[7:], (15, -8), axis=(1, 2))
    pipe = Pipeline(PipelineConfig())
    src = iter_array(frames, sampling=m.sampling, counters=pipe.counters)
    with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
            if res.frame == 5:
                assert _json(dash.url + "api/status")["view_jumps"] == 0
        assert _json(dash.url + "api/status")["view_jumps"] == 1
        assert parse_metrics(_get(dash.url + "metrics")[2].decode())[("etem_view_jumps_total", ())] == 1


def test_class_changes_are_shown_and_counted():
    """An ADF MoS2 movie whose S2 columns lose atoms and whose vacancies hop, classed by
    intensity: /api/status and /metrics count the sites' class changes and the hops between
    sites as they are found."""
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker.config import config_from_dict

    m = mos2_movie(n_frames=16, shape=(192, 192), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                   flake_radius_A=7.0, sputter_rate=0.05, refill_rate=0.1, seed=3)
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem"}},
                           PipelineConfig(default_sampling=0.1))
    pipe = Pipeline(cfg)
    src = iter_array(m.frames, sampling=0.1, counters=pipe.counters)
    with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
            if res.frame == 0:
                assert _json(dash.url + "api/status")["class_changes"] == 0
                assert _json(dash.url + "api/status")["hops"] == 0
                assert _json(dash.url + "api/maps")["classes"] is None  # (no panel for it yet)
                assert _get(dash.url + "maps/classes.png")[0] == 404
        found = len(pipe.sites.class_changes)
        assert found > 0
        # the class-change map: the sites coloured by their changes per frame, and each site's count
        maps = _json(dash.url + "api/maps")
        assert maps["classes"] and maps["classes_max"] > 0
        code, _, png = _get(dash.url + maps["classes"])
        assert code == 200 and Image.open(io.BytesIO(png)).size == tuple(maps["display_shape"][::-1])
        per_site = [_json(dash.url + f"api/site?site={k}")["n_class_changes"] for k in range(len(pipe.sites.table()))]
        assert sum(per_site) == found
        # the site's class by the names the frame's columns carry (A, B0, B1 …), and what they mean
        frame = _json(dash.url + "api/frame")
        names = frame["class_names"]
        assert names == pipe.intensity_classes.class_names and len(names) > 1
        site = _json(dash.url + "api/site?site=0")
        assert site["class_name"] == names[site["cls"]]
        assert frame["class_note"].startswith("classes by column intensity") and "→" in frame["class_change_example"]
        assert frame["sampling_A"] == pytest.approx(0.1)  # (the scale bar's)
        busiest = int(np.argmax(per_site))
        assert maps["classes_max"] == pytest.approx(per_site[busiest] / (pipe.sites.n_frames - 1))
        hops = pipe.sites.hops_table()
        n_hops = int(((hops["from_site"] >= 0) & (hops["to_site"] >= 0)).sum())
        assert n_hops > 0
        status = _json(dash.url + "api/status")
        assert status["class_changes"] == found and status["hops"] == n_hops
        metrics = parse_metrics(_get(dash.url + "metrics")[2].decode())
        assert metrics[("etem_class_changes_total", ())] == found and metrics[("etem_hops_total", ())] == n_hops


def test_class_notes_explain_the_intensity_classes():
    note, example = _class_notes(["A", "B0", "B1"], True)
    assert note == ("classes by column intensity: A, B the two sublattices, A the brighter; "
                    "B0/B1 the intensity groups of sublattice B, B0 the fainter")
    assert example == "e.g. B1 → B0 (S2 → S on MoS2)"
    assert _class_notes(["A0", "A1", "B0", "B1", "B2"], True)[1] == "e.g. B2 → B1 (fainter)"
    assert _class_notes(["A0", "A1", "B0", "B1"], True)[1] == "e.g. B1 → B0 (fainter)"  # (not the MoS2 three)
    assert _class_notes(["I0", "I1"], True)[0].endswith("I0/I1 the intensity groups of the columns, I0 the fainter")
    assert _class_notes(["Mo", "S", "S2"], False) == ("", "e.g. S2 → S")  # a model's own names
    assert _class_notes([], False) == ("", "a site's column changing class")


def _page_poller(url: str, seen: list, stop: threading.Event) -> threading.Thread:
    """Poll as the page does (status, frame, and the maps with their PNGs when they change)
    until the server is gone or ``stop``; each status answered goes into ``seen``."""
    def poll():
        version = None
        while not stop.is_set():
            try:
                status = _json(url + "api/status")
                seen.append({"status": status})
                _get(url + "api/frame")
                maps = _json(url + "api/maps")
                if maps["version"] != version and maps["version"] is not None:
                    for name in ("occupancy", "events"):
                        _get(url + maps[name])
                    version = maps["version"]
                    seen.append({"maps": maps})
            except (OSError, AssertionError):
                return
            time.sleep(0.2)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    return t


def test_an_open_page_gets_the_run_s_end_before_the_server_goes(movie):
    """After the run, close() takes the final sites and keeps serving (at most linger_s) until
    a page polling has them and has seen how the run ended; with no page open it closes at once."""
    pipe = Pipeline(PipelineConfig())
    src = iter_array(movie.frames, sampling=movie.sampling, counters=pipe.counters)
    dash = Dashboard(DashboardConfig(port=0, maps_interval_s=1e6, linger_s=3.0))
    dash.start()
    seen: list = []
    stop = threading.Event()
    try:
        poller = _page_poller(dash.url, seen, stop)
        for res in pipe.run_iter(src):
            dash(res, pipe)
        assert not any(s.get("status", {}).get("outcome") for s in seen)  # (said at close only)
        t0 = time.perf_counter()
        dash.close()
        took = time.perf_counter() - t0
        poller.join(5)
    finally:
        stop.set()
        dash.close()
    assert took < 3.5
    ends = [s["status"] for s in seen if "status" in s and s["status"].get("outcome")]
    assert ends and ends[-1]["outcome"] == "complete" and ends[-1]["state"] == "finished" and ends[-1]["exiting"]
    final = [s["maps"] for s in seen if "maps" in s][-1]
    assert final["n_frames"] == len(movie.frames) and final["n_sites"] == pipe.sites.n_occupied_sites
    assert final["version"] == ends[-1]["maps_version"]  # (what the page says "its final maps" by)

    # no page open: no wait
    pipe = Pipeline(PipelineConfig())
    with Dashboard(DashboardConfig(port=0, linger_s=3.0)) as dash:
        for res in pipe.run_iter(iter_array(movie.frames[:4], sampling=movie.sampling, counters=pipe.counters)):
            dash(res, pipe)
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 1.0 and dash._outcome == "complete"


def test_a_status_request_that_waits_is_answered_at_the_run_s_end(movie):
    """/api/status?wait=S, as a hidden browser tab asks (its timers slowed, it polls no more):
    answered after S seconds while the run goes on, and at once when close() gives the run's
    end; a page waiting so is open, so close() waits for it instead of going at once."""
    pipe = Pipeline(PipelineConfig())
    dash = Dashboard(DashboardConfig(port=0, maps_interval_s=1e6, linger_s=3.0))
    dash.start()
    try:
        assert _get(dash.url + "api/status?wait=soon")[0] == 400
        t0 = time.perf_counter()
        assert _json(dash.url + "api/status?wait=0.4")["state"] == "waiting"
        assert 0.4 <= time.perf_counter() - t0 < 2.0
        for res in pipe.run_iter(iter_array(movie.frames, sampling=movie.sampling, counters=pipe.counters)):
            dash(res, pipe)
        answer: dict = {}

        def hidden_page():  # then the last frame and the final maps, as the page fetches them
            answer["status"] = _json(dash.url + "api/status?wait=20")
            answer["at"] = time.perf_counter()
            maps = _json(dash.url + "api/maps")
            answer["codes"] = [_get(dash.url + u)[0] for u in ("api/frame", maps["occupancy"], maps["events"])]

        waiter = threading.Thread(target=hidden_page, daemon=True)
        waiter.start()
        time.sleep(2.5)  # (no page has polled the status for longer than counts as open)
        assert "status" not in answer  # the run has stopped, but it is not over until close()
        t0 = time.perf_counter()
        dash.close()
        took = time.perf_counter() - t0
        waiter.join(5)
    finally:
        dash.close()
    assert answer["status"]["state"] == "finished" and answer["status"]["outcome"] == "complete"
    assert answer["at"] - t0 < 1.0  # answered as soon as the end was there
    assert answer["codes"] == [200, 200, 200] and took < 2.5  # served until the page had the end, no longer


def test_how_the_run_ended_is_taken_from_its_run_file_or_exception(movie, tmp_path):
    pipe = Pipeline(PipelineConfig(), run_path=tmp_path / "run.h5")
    with Dashboard(DashboardConfig(port=0)) as dash:
        for res in pipe.run_iter(iter_array(movie.frames[:4], sampling=movie.sampling, counters=pipe.counters)):
            dash(res, pipe)
        status = _json(dash.url + "api/status")
        assert status["run_file"] == str(tmp_path / "run.h5") and status["outcome"] is None
    assert dash._outcome == "complete"  # (the run file's status)
    pipe = Pipeline(PipelineConfig())
    with pytest.raises(KeyboardInterrupt):
        with Dashboard(DashboardConfig(port=0)) as dash:
            for res in pipe.run_iter(iter_array(movie.frames[:4], sampling=movie.sampling, counters=pipe.counters)):
                dash(res, pipe)
            raise KeyboardInterrupt
    assert dash._outcome == "interrupted"
    with pytest.raises(ValueError, match="complete, stopped, interrupted, failed"):
        Dashboard(DashboardConfig(port=0)).close("done")


def test_the_maps_show_the_run_as_it_ended(movie):
    # the hook copies the sites every maps_interval_s only; once the run has ended, the maps and
    # the sites' timelines are of all its frames, not of the last copy
    pipe = Pipeline(PipelineConfig())
    src = iter_array(movie.frames, sampling=movie.sampling, counters=pipe.counters)
    with Dashboard(DashboardConfig(port=0, maps_interval_s=1e6)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
        n = len(movie.frames)
        assert dash._sites["n_frames"] <= 1  # (copied at the first frame only)
        maps = _json(dash.url + "api/maps")
        assert maps["n_frames"] == n and maps["n_sites"] == pipe.sites.n_occupied_sites
        site = _json(dash.url + "api/site?site=0")
        assert site["end"] == n - 1 and site["n_events"] == int(pipe.sites.table()["n_events"][0])


def test_endpoints_follow_the_run(movie):
    pipe = Pipeline(PipelineConfig())
    src = iter_array(movie.frames, sampling=movie.sampling, counters=pipe.counters)
    cfg = DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)
    with Dashboard(cfg) as dash:
        url = dash.url
        assert url.startswith("http://127.0.0.1:") and dash.port > 0
        assert _json(url + "api/status")["state"] == "waiting"
        assert _get(url + "frame.png")[0] == 404
        assert parse_metrics(_get(url + "metrics")[2].decode()) is not None
        seen, last = [], None
        for res in pipe.run_iter(src):
            dash(res, pipe)
            last = res
            if res.frame in (3, 11):
                seen.append(parse_metrics(_get(url + "metrics")[2].decode()))
        # /metrics counts the run as it goes
        a, b = seen
        for key in (("etem_frames_processed_total", ()), ("etem_frame_latency_seconds_count", ())):
            assert a[key] == 4 and b[key] == 12, key
        assert b[("etem_frames_received_total", ())] >= 12  # the ingest thread reads ahead
        assert b[("etem_sites", ())] > 0
        assert ("etem_queue_depth", (("queue", "ingest"),)) in b
        assert b[("etem_frames_dropped_total", (("reason", "queue_full"),))] == 0
        final = parse_metrics(_get(url + "metrics")[2].decode())
        assert final[("etem_frames_processed_total", ())] == 16 == final[("etem_frames_received_total", ())]
        assert final[("etem_last_frame", ())] == 15

        status = _json(url + "api/status")
        assert status["state"] == "finished"
        assert status["processed"] == 16 and status["dropped"] == 0
        assert status["queues"]["ingest"]["capacity"] == 64
        assert status["sites"] > 0 and status["latency_p50_ms"] > 0
        assert status["in_range"] + status["out_of_range"] == 16  # every frame judged (trust flag)
        # a run shorter than the window: the latest frames are all of them
        assert status["recent_judged"] == 16 and status["recent_in_range"] == status["in_range"]
        assert status["trust_alert"] == (2 * status["out_of_range"] > 16)
        # and why the latest frame out of range was, where one was
        assert (status["trust_last_out"].startswith("out of range: ") if status["out_of_range"]
                else status["trust_last_out"] == "")

        frame = _json(url + "api/frame")
        assert frame["frame"] == 15 and frame["n_columns"] == len(last.columns) > 0
        assert frame["columns"][0][3] >= 0  # columns carry their site
        code, headers, png = _get(url + frame["png"])
        assert code == 200 and headers["Content-Type"] == "image/png"
        from PIL import Image

        img = Image.open(io.BytesIO(png))
        assert img.size == (128, 128) and img.mode == "L"

        dash.refresh_sites()
        maps = _json(url + "api/maps")
        from etem.tracker.sites import occupied_sites

        # the maps draw the sites ever judged occupied
        assert maps["n_sites"] == len(occupied_sites(pipe.sites.table())) > 0 and maps["n_frames"] == 16
        sites = pipe.sites.table()
        top = sites.loc[sites.occupancy.idxmax()]
        k = maps["scale"]
        for name in ("occupancy", "events"):
            img = Image.open(io.BytesIO(_get(url + maps[name])[2]))
            assert img.size == (512, 512) and img.mode == "P"  # small frames: maps drawn at up to 4x
            rgb = np.asarray(img.convert("RGB"))
            assert tuple(rgb[0, 0]) == (24, 24, 28)  # off-site
            assert tuple(rgb[round((top.y + 0.5) * k - 0.5), round((top.x + 0.5) * k - 0.5)]) != (24, 24, 28)
        if top.occupancy == 1.0:  # the top of viridis
            rgb = np.asarray(Image.open(io.BytesIO(_get(url + maps["occupancy"])[2])).convert("RGB"))
            assert tuple(rgb[round((top.y + 0.5) * k - 0.5), round((top.x + 0.5) * k - 0.5)]) == (253, 231, 37)

        s = sites.iloc[len(sites) // 2]
        near = _json(url + f"api/site?y={s.y + 0.3}&x={s.x - 0.2}")
        assert near["site"] == s.site and near["occupancy"] == pytest.approx(s.occupancy)
        # the timeline's occupied frames agree with the site's occupancy
        ch, end = near["changes"] + [[near["end"] + 1, 0]], near["end"]
        occupied = sum(b[0] - a[0] for a, b in zip(ch, ch[1:]) if a[1])
        assert occupied == s.n_occupied and near["start"] == 0 and end == 15
        assert _get(url + "api/site?y=oops")[0] == 400
        assert _get(url + "nothing-here")[0] == 404
        page = _get(url)[2].decode()
        assert "dashboard.js" in page and "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
        assert b"fetch(" in _get(url + "dashboard.js")[2]
    with pytest.raises(OSError):  # closed: the port is free again
        urllib.request.urlopen(url + "api/status", timeout=2)


def test_frames_are_downsampled_for_display():
    frames = np.random.default_rng(0).poisson(5.0, size=(3, 300, 200)).astype(np.float32)
    pipe = Pipeline(PipelineConfig())
    with Dashboard(DashboardConfig(port=0, max_image_px=150)) as dash:
        for res in pipe.run_iter(iter_array(frames, sampling=0.2, counters=pipe.counters)):
            dash(res, pipe)
        frame = _json(dash.url + "api/frame")
        assert frame["display_shape"] == [150, 100] and frame["scale"] == 0.5 and frame["shape"] == [300, 200]


def test_loopback_server_refuses_other_host_names(movie):
    with Dashboard(DashboardConfig(port=0)) as dash:
        for host, want in ((f"127.0.0.1:{dash.port}", 200), (f"localhost:{dash.port}", 200),
                           (f"evil.example:{dash.port}", 403)):
            conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=5)
            conn.request("GET", "/api/status", headers={"Host": host})
            assert conn.getresponse().status == want, host
            conn.close()


def test_token_is_required_when_set():
    assert Dashboard(DashboardConfig(host="0.0.0.0")).token  # another address: a token is made
    with Dashboard(DashboardConfig(port=0, token="s3cret")) as dash:
        base = f"http://127.0.0.1:{dash.port}/"
        assert dash.url == base + "?token=s3cret"
        assert _get(base + "api/status")[0] == 403
        assert _get(base + "metrics?token=wrong")[0] == 403
        code, headers, _ = _get(base + "?token=s3cret")
        assert code == 200 and "etem_token=s3cret" in headers["Set-Cookie"]
        assert _get(base + "api/status", {"Cookie": "etem_token=s3cret"})[0] == 200
        assert _get(base + "metrics", {"Authorization": "Bearer s3cret"})[0] == 200


def test_urls_for_other_computers(monkeypatch):
    """Bound to all addresses: the URLs name this machine as others reach it, not localhost,
    and the /metrics URL carries the token (it answers)."""
    monkeypatch.setattr("socket.getfqdn", lambda *a: "labpc.example.org")
    assert public_host("0.0.0.0") == "labpc.example.org"
    monkeypatch.setattr("socket.getfqdn", lambda *a: "localhost")  # (as in many containers)
    monkeypatch.setattr("socket.gethostname", lambda: "labpc")
    assert public_host("0.0.0.0") == public_host("::") == "labpc"
    monkeypatch.setattr("socket.gethostname", lambda: "localhost.localdomain")
    assert public_host("0.0.0.0") not in ("localhost", "localhost.localdomain", "127.0.0.1")
    assert public_host("192.168.1.5") == "192.168.1.5" and public_host("fe80::1") == "[fe80::1]"
    monkeypatch.setattr("socket.gethostname", lambda: "labpc")
    with Dashboard(DashboardConfig(host="0.0.0.0", port=0)) as dash:
        assert dash.url == f"http://labpc:{dash.port}/?token={dash.token}"
        assert dash.metrics_url == f"http://labpc:{dash.port}/metrics?token={dash.token}"
        local = dash.metrics_url.replace("labpc", "127.0.0.1")
        code, _, body = _get(local)
        assert code == 200 and parse_metrics(body.decode())
        assert _get(local.split("?")[0])[0] == 403
    with Dashboard(DashboardConfig(port=0)) as dash:  # this PC only: no token
        assert dash.metrics_url == f"http://127.0.0.1:{dash.port}/metrics"


def test_cli_prints_urls_other_computers_can_open(movie, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("socket.getfqdn", lambda *a: "labpc.example.org")
    save_movie(movie, tmp_path / "movie.h5")
    assert main(["replay", str(tmp_path / "movie.h5"), "--quiet", "--dashboard-host", "0.0.0.0",
                 "--dashboard-port", "0"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("dashboard: "))
    m = re.fullmatch(r"dashboard: http://labpc\.example\.org:(\d+)/\?token=(\S+)  "
                     r"\(metrics: http://labpc\.example\.org:(\d+)/metrics\?token=(\S+)\)", line)
    assert m and m.group(1) == m.group(3) and m.group(2) == m.group(4), line


def test_port_in_use_is_a_clear_error():
    with Dashboard(DashboardConfig(port=0)) as first:
        with pytest.raises(ConfigError, match="another port"):
            Dashboard(DashboardConfig(port=first.port)).start()
    with pytest.raises(ConfigError, match="0..65535"):
        DashboardConfig(port=70000)


def test_mos2_classes_sites_and_early_maps_are_said_plainly():
    """The dashboard of an ADF MoS2 run classed by intensity: the classes are shown with their
    species and coloured as the species are in a model's run; a site's position is in Å (px
    beside it) and its timeline carries its class over time; until the first site is final the
    maps say after how many frames they start; the sites with no event are listed for the page
    to ring (drawn dark on dark on the events map)."""
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker.config import config_from_dict
    from etem.tracker.plots import class_colours

    m = mos2_movie(n_frames=16, shape=(192, 192), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                   flake_radius_A=7.0, sputter_rate=0.05, refill_rate=0.1, seed=3)
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem"}},
                           PipelineConfig(default_sampling=0.1, material="mos2"))
    pipe = Pipeline(cfg)
    src = iter_array(m.frames, sampling=0.1, counters=pipe.counters)
    early = []
    with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
            if res.frame == 0:
                early.append(_json(dash.url + "api/maps"))
        lag = pipe.sites.cfg.look_ahead
        assert lag > 0 and early[0]["look_ahead_frames"] == lag
        assert early[0]["version"] is None or early[0]["n_sites"] == 0  # (what the page says "start after" for)
        frame = _json(dash.url + "api/frame")
        names, labels = frame["class_names"], frame["class_labels"]
        assert names == pipe.intensity_classes.class_names  # (the names stored are unchanged)
        assert labels[0] == "A (Mo)" and all(lab.startswith(n) for n, lab in zip(names, labels))
        model = dict(zip(["Mo", "S2", "S"], class_colours(["Mo", "S2", "S"])))
        for lab, colour in zip(labels, frame["colours"]):
            species = lab[lab.index("(") + 1:-1] if "(" in lab else None
            if species in model:
                assert colour == model[species]
        # a site that changed class: Å and px, and its classes from frame to frame
        changes = np.asarray(pipe.sites.class_changes, np.int64).reshape(-1, 4)
        assert len(changes)
        k = int(changes[0, 1])
        site = _json(dash.url + f"api/site?site={k}")
        assert site["y_A"] == pytest.approx(site["y"] * 0.1) and site["x_A"] == pytest.approx(site["x"] * 0.1)
        mine = changes[changes[:, 1] == k]
        assert site["classes"][0] == [site["start"], int(mine[0, 2])]
        assert site["classes"][1:] == [[int(f), int(to)] for f, _, _, to in mine.tolist()]
        assert site["class_name"] == labels[site["cls"]]
        # the sites with no event: exactly those the events map draws at 0
        maps = _json(dash.url + "api/maps")
        table = pipe.sites.table()
        from etem.tracker.sites import occupied_sites

        tab = occupied_sites(table)
        calm = tab[tab["event_rate"] <= 0]
        assert len(maps["quiet_sites"]) == len(calm) > 0
        assert maps["site_radius_px"] > 0
