"""Pipeline benchmark: a ZeroMQ publisher on loopback drives the whole pipeline.

Prints, per frame size and column count: frames/s, Mpx/s, latency p50/p99, per-stage
times (ms per frame) and the CPU time per frame of the tracker's process and, with
``--detection process``, of the detection process (all their threads; what bounds the rate
where one interpreter does all the Python work). Speed is measured here, never in a timed test.

    python bench/bench_pipeline.py --sizes 256,512,1024 --columns 1000 --frames 100
    python bench/bench_pipeline.py --engine eager --model NAME --device cuda
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import numpy as np


def lattice_frames(n_frames: int, size: int, n_columns: int, *, seed: int = 0, sampling: float = 0.2) -> np.ndarray:
    """A drifting hexagonal lattice of Gaussian columns with ~n_columns in view, Poisson noise.

    The spacing spreads the columns over the frame, within 2.5-3.5 Å (metal-like); where the
    frame is larger than ``n_columns`` need at 3.5 Å, they fill a central disc (a particle)
    and the rest is vacuum. (Columns 7 Å apart with flat noise between them are no image a
    network is trained on: the bundled HRTEM model reads such gaps as columns.)"""
    rng = np.random.default_rng(seed)
    a = size * np.sqrt(2 / (np.sqrt(3) * n_columns))  # hexagonal lattice spacing for n_columns per frame
    particle = a > 3.5 / sampling
    a = min(max(a, 2.5 / sampling), 3.5 / sampling)
    disc_r2 = n_columns * np.sqrt(3) / 2 * a**2 / np.pi  # radius² of a disc holding n_columns
    rows = np.arange(-2, size / (a * np.sqrt(3) / 2) + 2)
    cols = np.arange(-2, size / a + 2)
    yy, xx = np.meshgrid(rows * a * np.sqrt(3) / 2, cols * a, indexing="ij")
    xx = xx + (np.arange(len(rows))[:, None] % 2) * a / 2
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    sigma = 0.45 / sampling
    r = int(np.ceil(3 * sigma))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    out = np.empty((n_frames, size, size), np.float32)
    for f in range(n_frames):
        p = pos + np.array([0.05, 0.08]) * f
        p = p[(p[:, 0] >= 0) & (p[:, 0] < size - 1) & (p[:, 1] >= 0) & (p[:, 1] < size - 1)]
        if particle:
            p = p[((p - size / 2) ** 2).sum(1) <= disc_r2]
        img = np.zeros((size + 2 * r + 2, size + 2 * r + 2), np.float32)
        iy, ix = np.floor(p).astype(int).T
        fy, fx = (p - np.floor(p)).T
        g = np.exp(-((oy[None] - fy[:, None, None]) ** 2 + (ox[None] - fx[:, None, None]) ** 2) / (2 * sigma**2))
        for k in range(len(p)):
            img[iy[k] : iy[k] + 2 * r + 1, ix[k] : ix[k] + 2 * r + 1] += g[k]
        img = img[r : r + size, r : r + size]
        lam = 300 * sampling**2 * (img + 0.3)
        out[f] = rng.poisson(lam * 20).astype(np.float32)
    return out


def _publish(address_q, go, ready, n_frames: int, size: int, n_columns: int, sampling: float, fps,
             unique: int) -> None:
    """The camera: its own process (as at the microscope), PUSH on a random loopback port.

    It sends one frame, waits until the pipeline has processed it (engine built and warmed up),
    then sends the rest, at a set rate (``fps``) or as fast as they are taken: the latencies are
    those of a running pipeline, not of a queue filled while the engine was being built.
    ``unique`` distinct frames are drawn and sent in turn (drawing a 4096² frame takes longer
    than the pipeline takes to analyse it)."""
    from etem.tracker.publish import Publisher, publish_frames

    frames = lattice_frames(min(unique, n_frames), size, n_columns, sampling=sampling)
    pub = Publisher("tcp://127.0.0.1:0", mode="push")
    address_q.put(pub.address)
    go.wait()
    publish_frames(frames[:1], pub, sampling=sampling, end=False)
    ready.wait()
    publish_frames((frames[i % len(frames)] for i in range(1, n_frames)), pub, fps=fps, sampling=sampling)
    pub.sock.close(linger=-1)  # the process ends only when every frame has been taken
    pub.sock.context.term()


def run_one(n_frames: int, size: int, n_columns: int, sampling: float, fps: float | None, args) -> dict:
    import multiprocessing as mp

    from etem.tracker import PipelineConfig, track
    from etem.tracker.detect import EngineConfig
    from etem.tracker.config import BatchConfig

    from etem.tracker.locate import LocateConfig
    from etem.tracker.preprocess import PreprocessConfig

    cfg = PipelineConfig(
        engine=EngineConfig(kind=args.engine, model=args.model, device=args.device,
                            options={"int8": True} if args.int8 else {}),
        batch=BatchConfig(max_batch=args.max_batch, max_wait_s=args.max_wait),
        preprocess=PreprocessConfig(average_frames=args.average),
        locate=LocateConfig(intensity_radius_A=args.intensity_radius or None),
        detection=args.detection,
    )
    ctx = mp.get_context("spawn")
    address_q, go, ready = ctx.Queue(), ctx.Event(), ctx.Event()
    camera = ctx.Process(target=_publish, args=(address_q, go, ready, n_frames, size, n_columns, sampling, fps, args.unique),
                         daemon=True)
    camera.start()
    address = address_q.get(timeout=300)
    timing = {}

    def stages(pipe) -> dict:
        return {**pipe.detector.stage_s, **pipe.stage_s}

    def on_frame(res, pipe):
        if "first" not in timing:  # the stage times of the first batch hold the engine's compilation
            timing["first"], timing["first_stages"] = time.perf_counter(), stages(pipe)
            timing["first_frames"] = pipe.counters.as_dict()["processed"]
            timing["first_cpu"] = (time.process_time(), getattr(pipe.detector, "cpu_s", 0.0))
        timing["pipe"] = pipe
        ready.set()

    t0 = time.perf_counter()
    go.set()
    result = track(address, mode="pull", config=cfg, idle_timeout_s=30, on_frame=on_frame)
    t1 = time.perf_counter()
    cpu_end = time.process_time()
    camera.join(30)
    pipe = timing["pipe"]
    n = result.counters["processed"]
    # throughput over the frames after the first (engine construction and warm-up excluded)
    span = t1 - timing["first"]
    rate = (n - 1) / span if span > 0 else float("nan")
    lat = result.frames["latency_ms"].to_numpy()[min(5, n - 1):]
    after = n - timing["first_frames"]
    spent = {k: v - timing["first_stages"].get(k, 0.0) for k, v in stages(pipe).items()}
    return {
        "fps": rate,
        "mpx_s": rate * size * size / 1e6,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "columns": float(result.frames["n_columns"].mean()),
        "dropped": result.counters["dropped"],
        "processed": n,
        # per frame, after the first batch
        **{f"{k}_ms": 1e3 * v / max(after, 1) for k, v in spent.items()},
        "total_s": t1 - t0,
        # CPU time per frame after the first batch, all threads: the tracker's process, and the
        # detection process where there is one
        "cpu_ms": 1e3 * (cpu_end - timing["first_cpu"][0]) / max(after, 1),
        "child_cpu_ms": 1e3 * (getattr(pipe.detector, "cpu_s", 0.0) - timing["first_cpu"][1]) / max(after, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--columns", default="1000", help="comma-separated column counts per frame")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--engine", default="auto")
    p.add_argument("--int8", action="store_true", help="the onnxruntime engine's int8 graph (CPU; the model's "
                                                       "calibration images)")
    p.add_argument("--detection", choices=("thread", "process"), default="thread",
                   help="the detector in a thread of the pipeline or in a process of its own")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--max-wait", type=float, default=0.01)
    p.add_argument("--fps", default="0", help="comma-separated publisher rates, a run each; 0: as fast as taken "
                   "(the latency then includes the queue that builds up)")
    p.add_argument("--unique", type=int, default=16, help="distinct frames drawn, sent in turn")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--average", type=int, default=1, help="frames averaged (registered) before the detector")
    p.add_argument("--intensity-radius", type=float, default=0.5, metavar="Å",
                   help="radius of each column's intensity disk (locate.intensity_radius_A); 0: no intensities")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else platform.processor() or platform.machine()
    print(f"# etem pipeline benchmark  {time.strftime('%Y-%m-%d')}  device: {dev}  cpus: {os.cpu_count()}  "
          f"torch threads: {torch.get_num_threads()}  engine: {args.engine}{' int8' if args.int8 else ''}  model: {args.model}  average: {args.average}  "
          f"intensity radius: {args.intensity_radius or 'off'}  "
          f"detection: {args.detection}")
    head = ("size", "columns", "sent at", "frames/s", "Mpx/s", "lat p50 ms", "lat p99 ms", "average ms", "prep ms", "engine ms",
            "locate ms", "link ms", "sites ms", "write ms", "tracker CPU ms", "detection CPU ms", "dropped")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    sampling = 0.2
    for size in map(int, args.sizes.split(",")):
        for n_cols, rate in itertools.product(map(int, args.columns.split(",")), map(float, args.fps.split(","))):
            r = run_one(args.frames, size, n_cols, sampling, rate or None, args)
            sent = f"{rate:g}/s" if rate else "max"
            print(f"| {size}x{size} | {r['columns']:.0f} | {sent} | {r['fps']:.1f} | {r['mpx_s']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                  f"{r.get('average_ms', 0.0):.1f} | {r['preprocess_ms']:.1f} | {r['engine_ms']:.1f} | {r['locate_ms']:.1f} | {r['link_ms']:.1f} | "
                  f"{r['sites_ms']:.1f} | {r['write_ms']:.1f} | {r['cpu_ms']:.1f} | "
                  f"{r['child_cpu_ms']:.1f} | {r['dropped']} |", flush=True)


if __name__ == "__main__":
    main()
