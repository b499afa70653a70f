"""Dashboard overhead: the same replay with and without the live dashboard.

A simulated movie (``etem.simulate.toy.make_movie``) is saved to HDF5 and replayed at full speed
(files push back: nothing is dropped) through the whole pipeline, alternately without and with
the dashboard; during the dashboard runs a client polls every endpoint at ``--poll-hz`` (status,
frame JSON and PNG, maps JSON and both PNGs, a site's timeline, /metrics: more than the page
itself asks for) from a separate process, as a browser would. Prints, per frame size, the
pipeline time (first frame out to last), frames/s and the CPU time of the tracking process (all
its threads, the dashboard's server included) for both (median over ``--repeats`` runs, min–max
in brackets), and the overhead. On a shared machine the wall time varies with the other load;
the CPU time much less.

    python bench/bench_dashboard.py --sizes 256,512,1024 --frames 120 --repeats 3
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


def run_one(path: Path, *, dashboard: bool, poll_hz: float) -> dict:
    """One replay; wall time and this process's CPU time (all its threads) from the first frame out."""
    from etem.tracker import track
    from etem.tracker.dashboard import Dashboard, DashboardConfig, chain

    times: dict = {}

    def timing(res, pipe) -> None:
        if "first" not in times:
            times["first"], times["cpu_first"] = time.perf_counter(), time.process_time()

    dash = Dashboard(DashboardConfig(port=0)) if dashboard else None
    client = None
    if dash is not None:
        dash.start()
        client = subprocess.Popen([sys.executable, __file__, "--client", dash.url, "--poll-hz", str(poll_hz)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stats: dict = {}
    try:
        result = track(path, on_frame=chain(timing, dash))
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
            "errors": stats.get("errors", 0), "dropped": result.counters["dropped"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--repeats", type=int, default=3)
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
    head = ("size", "frames", "columns", "runs", "without: s", "frames/s", "CPU s", "with: s", "frames/s", "CPU s",
            "overhead wall %", "overhead CPU %", "polls")
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

            def med(rs, key):
                return statistics.median(r[key] for r in rs)

            def cell(rs, key, fmt):
                vals = [r[key] for r in rs]
                return f"{statistics.median(vals):{fmt}} ({min(vals):{fmt}}–{max(vals):{fmt}})"

            errors = sum(r["errors"] for r in b)
            print(f"| {size}x{size} | {args.frames} | {a[0]['columns']:.0f} | {args.repeats} | "
                  f"{cell(a, 'seconds', '.2f')} | {cell(a, 'fps', '.1f')} | {cell(a, 'cpu_s', '.2f')} | "
                  f"{cell(b, 'seconds', '.2f')} | {cell(b, 'fps', '.1f')} | {cell(b, 'cpu_s', '.2f')} | "
                  f"{100 * (med(b, 'seconds') / med(a, 'seconds') - 1):+.1f} | "
                  f"{100 * (med(b, 'cpu_s') / med(a, 'cpu_s') - 1):+.1f} | "
                  f"{sum(r['polls'] for r in b)}{f' ({errors} failed)' if errors else ''} |", flush=True)


if __name__ == "__main__":
    main()
