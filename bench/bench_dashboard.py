"""Dashboard overhead: the same replay with and without the live dashboard.

A simulated movie (``etem.simulate.toy.make_movie``) is saved to HDF5 and replayed at full speed
(files push back: nothing is dropped) through the whole pipeline, alternately without and with
the dashboard; during the dashboard runs a client polls every endpoint at ``--poll-hz`` (status,
frame JSON and PNG, maps JSON and both PNGs, a site's timeline, /metrics: more than the page
itself asks for) from a separate process, as a browser would. Prints, per frame size, the
pipeline time (first frame out to last) and frames/s of the fastest run of each kind, the
overhead of the fastest runs and the median overhead of back-to-back pairs, and the dashboard's share of the tracking
process's CPU time, measured thread by thread (its hook in the pipeline's thread, its request
handlers in the server's threads) in the same runs; and the hook's time per frame. On a shared
machine wall times vary with the other load (the best of several runs is the least disturbed);
the CPU share varies much less.

    python bench/bench_dashboard.py --sizes 256,512,1024 --frames 100 --repeats 7
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def poller(url: str, hz: float, stop: threading.Event, stats: dict) -> None:
    """Fetch every endpoint ``hz`` times a second until ``stop``."""
    def get(path: str) -> bytes:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return r.read()

    period = 1.0 / hz
    while not stop.wait(period):
        try:
            get("api/status")
            frame = json.loads(get("api/frame"))
            if frame.get("frame") is not None:
                get(frame["png"])
            maps = json.loads(get("api/maps"))
            if maps.get("version") is not None:
                get(maps["occupancy"])
                get(maps["events"])
                get("api/site?y={}&x={}".format(maps["shape"][0] / 2, maps["shape"][1] / 2))
            get("metrics")
            stats["polls"] = stats.get("polls", 0) + 1
        except OSError as exc:
            stats["errors"] = stats.get("errors", 0) + 1
            stats["last_error"] = repr(exc)


def client_main(url: str, hz: float) -> None:
    """The polling client as its own process: polls until its stdin closes, then prints its counts."""
    stop, stats = threading.Event(), {}
    reader = threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True)
    reader.start()
    poller(url, hz, stop, stats)
    print(json.dumps(stats), flush=True)


class TimedHandler:
    """Adds up the CPU time the dashboard's server threads spend answering requests."""

    def __init__(self) -> None:
        from etem.tracker.dashboard_http import Handler

        self.handler, self.do_get = Handler, Handler.do_GET
        self.seconds = 0.0
        self.lock = threading.Lock()

    def __enter__(self) -> "TimedHandler":
        do_get = self.do_get

        def timed(handler) -> None:
            c0 = time.thread_time()
            try:
                do_get(handler)
            finally:
                with self.lock:
                    self.seconds += time.thread_time() - c0

        self.handler.do_GET = timed
        return self

    def __exit__(self, *exc) -> None:
        self.handler.do_GET = self.do_get


def run_one(path: Path, *, dashboard: bool, poll_hz: float) -> dict:
    """One replay: wall time and this process's CPU time (all its threads) from the first frame
    out, and the dashboard's own CPU time (its hook in the pipeline's thread, its server threads)."""
    from etem.tracker import track
    from etem.tracker.dashboard import Dashboard, DashboardConfig

    times: dict = {"hook": 0.0}
    dash = Dashboard(DashboardConfig(port=0)) if dashboard else None

    def on_frame(res, pipe) -> None:
        if "first" not in times:
            times["first"], times["cpu_first"] = time.perf_counter(), time.process_time()
        if dash is not None:
            c0 = time.thread_time()
            dash(res, pipe)
            times["hook"] += time.thread_time() - c0

    client, stats = None, {}
    with TimedHandler() as server:
        if dash is not None:
            dash.start()
            client = subprocess.Popen([sys.executable, __file__, "--client", dash.url, "--poll-hz", str(poll_hz)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            result = track(path, on_frame=on_frame)
            t_end, cpu_end = time.perf_counter(), time.process_time()
        finally:
            if client is not None:
                out, _ = client.communicate("", timeout=30)
                stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            if dash is not None:
                dash.close()
    n = result.counters["processed"]
    span = t_end - times["first"]
    return {"seconds": span, "cpu_s": cpu_end - times["cpu_first"], "fps": (n - 1) / span, "processed": n,
            "columns": float(result.frames["n_columns"].mean()), "polls": stats.get("polls", 0),
            "errors": stats.get("errors", 0), "dropped": result.counters["dropped"],
            "hook_ms": 1e3 * times["hook"] / n, "dash_cpu_s": times["hook"] + server.seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--poll-hz", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the polling client's own process
    args = p.parse_args()
    if args.client:
        client_main(args.client, args.poll_hz)
        return
    import torch

    from etem.simulate.toy import make_movie, save_movie

    print(f"# etem dashboard overhead  {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  "
          f"cpus: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  engine: classical (default)  "
          f"client: every endpoint at {args.poll_hz:g} Hz")
    head = ("size", "frames", "columns", "runs", "without: best s", "frames/s", "with: best s", "frames/s",
            "overhead best %", "overhead paired median %", "dashboard share of CPU %", "hook ms/frame", "polls")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            movie = make_movie(n_frames=args.frames, shape=(size, size), particle_radius_A=size * 0.2 * 0.3,
                               seed=args.seed)
            path = Path(tmp) / f"movie{size}.h5"
            save_movie(movie, path)
            for with_dash in (False, True):  # warm-up: imports, caches (one-time costs, not overhead)
                run_one(path, dashboard=with_dash, poll_hz=args.poll_hz)
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for i in range(args.repeats):
                for with_dash in ((False, True) if i % 2 == 0 else (True, False)):
                    runs[with_dash].append(run_one(path, dashboard=with_dash, poll_hz=args.poll_hz))
            a, b = runs[False], runs[True]
            best_a, best_b = min(a, key=lambda r: r["seconds"]), min(b, key=lambda r: r["seconds"])
            # each repeat runs the two back to back, so a pair shares the machine's load of the moment
            paired = statistics.median(rb["seconds"] / ra["seconds"] - 1 for ra, rb in zip(a, b))
            share = statistics.median(r["dash_cpu_s"] / r["cpu_s"] for r in b)
            errors = sum(r["errors"] for r in b)
            print(f"| {size}x{size} | {args.frames} | {a[0]['columns']:.0f} | {args.repeats} | "
                  f"{best_a['seconds']:.2f} | {best_a['fps']:.1f} | {best_b['seconds']:.2f} | {best_b['fps']:.1f} | "
                  f"{100 * (best_b['seconds'] / best_a['seconds'] - 1):+.1f} | {100 * paired:+.1f} | "
                  f"{100 * share:.1f} | {statistics.median(r['hook_ms'] for r in b):.3f} | "
                  f"{sum(r['polls'] for r in b)}{f' ({errors} failed)' if errors else ''} |", flush=True)


if __name__ == "__main__":
    main()
