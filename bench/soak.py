"""Soak run: a camera process publishes for a set time, the pipeline tracks; prints a table of
memory and accounting over time.

Per interval: resident memory (RSS) of the tracker, frames sent / received / processed /
dropped / missing so far, frames/s processed in the interval, latency p50/p99 of the frames
finished in it (drift shows as a trend down the column), the frames whose tables the pipeline
holds in memory (``keep_in_memory_frames``; the run file has them all) and the site records it
holds (flips, hops and residence runs, kept for the statistics written at the end). At the end:
totals and whether every frame is accounted for (received = processed + rejected + dropped;
sent = received + missing).

    python bench/soak.py --seconds 60 --fps 40                 # PUB/SUB at 40 frames/s
    python bench/soak.py --seconds 60 --fps 80 --mode pull     # PUSH/PULL: the camera is slowed down
    python bench/soak.py --seconds 60 --fps 20 --keep 300      # a smaller in-memory window
    python bench/soak.py --seconds 60 --fps 20 --keep 0        # keep every frame in memory (as before)

The camera is a separate process (numpy + pyzmq, wire format v1) cycling a simulated
nanoparticle movie; the tracker writes its run file to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CAMERA = r"""
import json, sys, time
import numpy as np, zmq
cfg = json.loads(sys.argv[1])
frames = np.load(cfg["frames"], mmap_mode="r")
ctx = zmq.Context()
sock = ctx.socket(zmq.XPUB if cfg["mode"] == "sub" else zmq.PUSH)
sock.setsockopt(zmq.SNDHWM, cfg["sndhwm"])
sock.setsockopt(zmq.LINGER, 10000)
port = sock.bind_to_random_port("tcp://127.0.0.1")
print(json.dumps({"port": port}), flush=True)
if cfg["mode"] == "sub":
    sock.poll(60000)
    sock.recv()
fps, seconds = cfg["fps"], cfg["seconds"]
sent, t0, last_report = 0, time.perf_counter(), 0.0
while True:
    now = time.perf_counter() - t0
    if now >= seconds:
        break
    if now - last_report >= 0.2:
        print(json.dumps({"t": now, "sent": sent}), flush=True)
        last_report = now
    delay = sent / fps - now
    if delay > 0:
        time.sleep(min(delay, 0.2))
        continue
    img = np.ascontiguousarray(frames[sent % len(frames)], "<f4")
    header = {"protocol": "etem-frame/1", "seq": sent, "frame": sent, "shape": list(img.shape),
              "dtype": "float32", "sampling": cfg["sampling"], "t": time.time()}
    sock.send_multipart([json.dumps(header).encode(), img])
    sent += 1
print(json.dumps({"t": time.perf_counter() - t0, "sent": sent, "done": True}), flush=True)
time.sleep(1.0)
sock.send_multipart([json.dumps({"protocol": "etem-frame/1", "seq": sent, "frame": sent, "end": True}).encode()])
sock.close()
ctx.term()
"""


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the camera sends (default 60)")
    ap.add_argument("--fps", type=float, default=40.0, help="camera frame rate")
    ap.add_argument("--mode", choices=("sub", "pull"), default="sub")
    ap.add_argument("--size", type=int, default=256, help="frame size in px (square)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds per table row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the camera needs a core)")
    ap.add_argument("--queue", type=int, default=64, help="ingest queue length (frames)")
    ap.add_argument("--keep", type=int, help="frames kept in memory (keep_in_memory_frames; default: the "
                                             "config's default; 0: every frame)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from etem.simulate.toy import make_movie
    from etem.tracker import Pipeline, PipelineConfig
    from etem.tracker.accounting import Counters
    from etem.tracker.sources import ZmqSource

    tmp = Path(tempfile.mkdtemp(prefix="etem-soak-"))
    movie = make_movie(n_frames=50, shape=(args.size, args.size), particle_radius_A=0.28 * args.size * 0.2, seed=1)
    np.save(tmp / "frames.npy", np.asarray(movie.frames, np.float32))
    cfg = {"frames": str(tmp / "frames.npy"), "mode": args.mode, "fps": args.fps, "seconds": args.seconds,
           "sampling": movie.sampling, "sndhwm": 1000 if args.mode == "sub" else 16}
    cam = subprocess.Popen([sys.executable, "-c", CAMERA, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    port = json.loads(cam.stdout.readline())["port"]
    camera = {"sent": 0}

    def read_camera():
        for line in cam.stdout:
            camera.update(json.loads(line))

    threading.Thread(target=read_camera, daemon=True).start()

    counters = Counters()
    keep = {} if args.keep is None else {"keep_in_memory_frames": args.keep or None}
    pcfg = PipelineConfig(overflow="drop" if args.mode == "sub" else "block", queue_frames=args.queue,
                          default_sampling=movie.sampling, **keep)
    pipe = Pipeline(pcfg, run_path=tmp / "run.h5", counters=counters)
    src = ZmqSource(f"tcp://127.0.0.1:{port}", mode=args.mode, counters=counters, stop=pipe.stop,
                    idle_timeout_s=30)
    rows: list[dict] = []
    lat: list[float] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    rss0 = rss_mib()

    def row(t: float, final: bool = False) -> None:
        with lock:
            window, lat[:] = list(lat), []
        c = counters.as_dict()
        prev = rows[-1]["processed"] if rows else 0
        prev_t = rows[-1]["t"] if rows else 0.0
        ms = np.asarray(window) * 1e3
        rows.append({"t": t, "rss": rss_mib(), "sent": camera.get("sent", 0), "received": c["received"],
                     "processed": c["processed"], "dropped": c["dropped"], "missing": c["missing"],
                     "fps": (c["processed"] - prev) / max(t - prev_t, 1e-9),
                     "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                     "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
                     "queue": pipe.queue_depths()["ingest"][0], "final": final,
                     "in_memory": len(pipe.frames_rows),
                     "records": 0 if pipe.sites is None else len(pipe.sites.flips) + len(pipe.sites.hops)
                     + len(pipe.sites.runs)})

    stop_sampling = threading.Event()

    def sample():
        k = 1
        while not stop_sampling.wait(max(t0 + k * args.interval - time.monotonic(), 0)):
            row(k * args.interval)
            k += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for res in pipe.run_iter(src):
        with lock:
            lat.append(res.latency_s)
    stop_sampling.set()
    sampler.join()
    row(time.monotonic() - t0, final=True)
    cam.wait(30)

    c = counters.as_dict()
    sent = camera["sent"]
    print(f"# soak: {args.mode.upper()} at {args.fps:g} frames/s for {args.seconds:g} s, {args.size}x{args.size} "
          f"float32 frames, ingest queue {args.queue}, torch {args.threads} thread(s), frames kept in memory "
          f"{pcfg.keep_in_memory_frames or 'all'}; "
          f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}")
    print()
    print("| t s | RSS MiB | sent | received | processed | dropped | missing | frames/s | lat p50 ms | lat p99 ms "
          "| queue | in memory | site records |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = f"{r['t']:.0f}" + (" (end)" if r["final"] else "")
        print(f"| {t} | {r['rss']:.0f} | {r['sent']} | {r['received']} | {r['processed']} | {r['dropped']} | "
              f"{r['missing']} | {r['fps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['queue']} | "
              f"{r['in_memory']} | {r['records']} |")
    print()
    ok_in = c["received"] == c["processed"] + c["rejected"] + c["dropped"]
    ok_out = sent == c["received"] + c["missing"]
    rss = [r["rss"] for r in rows]
    print(f"sent {sent}, received {c['received']}, processed {c['processed']}, rejected {c['rejected']}, "
          f"dropped {c['dropped']}, missing {c['missing']}; received = processed + rejected + dropped: {ok_in}; "
          f"sent = received + missing: {ok_out}")
    print(f"RSS: {rss0:.0f} MiB before, {rss[0]:.0f} MiB after {args.interval:g} s, peak {max(rss):.0f} MiB, "
          f"end {rss[-1]:.0f} MiB; run file {os.path.getsize(tmp / 'run.h5') / 2**20:.1f} MiB")
    full = [r for r in rows if not r["final"] and pcfg.keep_in_memory_frames
            and r["in_memory"] >= pcfg.keep_in_memory_frames]
    if len(full) >= 2:
        growth = (full[-1]["rss"] - full[0]["rss"]) * 1024 / max(full[-1]["processed"] - full[0]["processed"], 1)
        print(f"once the in-memory window was full (t = {full[0]['t']:.0f} s on): RSS {full[0]['rss']:.0f} -> "
              f"{full[-1]['rss']:.0f} MiB over {full[-1]['processed'] - full[0]['processed']} frames "
              f"({growth:.1f} KiB per processed frame)")
    rows_mid = [r for r in rows if not r["final"]]
    if len(rows_mid) >= 2:
        first, last = rows_mid[0], rows_mid[-1]
        per = (last["rss"] - first["rss"]) * 1024 / max(last["processed"] - first["processed"], 1)
        print(f"from t = {first['t']:.0f} s to {last['t']:.0f} s: {per:.1f} KiB per processed frame")


if __name__ == "__main__":
    main()
