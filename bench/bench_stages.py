"""Stage benchmark: the detector's stages one at a time, each waited for, in one thread.

The pipeline benchmark (bench_pipeline.py) times each stage inside the running pipeline, where
the compute and host threads share one interpreter: a stage's time there includes waiting for
the other thread. Here the same stages run alone on a batch of synthetic lattice frames (those
of bench_pipeline.py), the device synchronized after each: what each costs by itself, and
therefore how much of the pipeline's per-frame time is the stage and how much is contention.

    python bench/bench_stages.py --device cuda --engine compiled --model haadf-stem --sizes 1024,4096

Prints, per frame size, ms per frame of: the host-to-device copy and normalization
(``preprocess``), the network (``engine``), peak finding and sub-pixel refinement with the copy
of the tables to the host (``locate``), and the same three as one ``Detector.detect`` call.
Speed is measured here, never in a timed test.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import lattice_frames  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--columns", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--engine", default="auto")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--link-frames", type=int, default=40, help="frames linked and mapped to sites, per size")
    p.add_argument("--no-site-image", action="store_true",
                   help="the site map without the frames' images (as [sites] intensity_radius_A = 0)")
    p.add_argument("--count-ops", action="store_true",
                   help="also count the device operations each detection stage launches per batch (what a GPU "
                        "pays Python and launch time for, whatever its speed) and the host waits among them")
    args = p.parse_args()
    import torch

    from etem.tracker.detect import Detector, EngineConfig
    from etem.tracker.frames import Frame
    from etem.tracker.locate import locate

    if args.threads:
        torch.set_num_threads(args.threads)
    sampling = 0.2
    det = Detector(EngineConfig(kind=args.engine, model=args.model, device=args.device), measure_quality=False,
                   batch_size=args.batch)
    device = det.device(sampling)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    print(f"# etem stage benchmark  {time.strftime('%Y-%m-%d')}  device: {name}  cpus: {os.cpu_count()}  "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads  engine: {det.engine.name}  "
          f"model: {args.model}  batch: {args.batch}  best of {args.repeat}")
    head = ("size", "columns", "preprocess ms", "engine ms", "locate ms", "sum ms", "detect ms", "frames/s (detect)",
            "link ms", "sites ms", "host ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    counted = []
    for size in map(int, args.sizes.split(",")):
        images = list(lattice_frames(args.batch, size, args.columns, sampling=sampling))
        frames = [Frame(image=im, frame=i, sampling=sampling) for i, im in enumerate(images)]
        det.detect(frames)  # compile / warm up at this shape
        det.detect(frames)
        times: dict[str, list[float]] = {k: [] for k in ("preprocess", "engine", "locate", "detect")}
        n_cols = 0
        for _ in range(args.repeat):
            sync()
            t0 = time.perf_counter()
            batch, _ = det._pre(images, [sampling] * len(images))
            sync()
            t1 = time.perf_counter()
            probs = det.engine.predict(batch)
            sync()
            t2 = time.perf_counter()
            cols = locate(probs, det.locate_cfg)
            sync()
            t3 = time.perf_counter()
            det.detect(frames)
            sync()
            t4 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k].append(v)
            n_cols = statistics.mean(len(c) for c in cols)
        best = {k: 1e3 * min(v) / args.batch for k, v in times.items()}
        total = best["preprocess"] + best["engine"] + best["locate"]
        link_ms, sites_ms, host_ms = host_stages(det, size, args, sampling)
        print(f"| {size}x{size} | {n_cols:.0f} | {best['preprocess']:.2f} | {best['engine']:.2f} | "
              f"{best['locate']:.2f} | {total:.2f} | {best['detect']:.2f} | {1e3 / best['detect']:.0f} | "
              f"{link_ms:.2f} | {sites_ms:.2f} | {host_ms:.2f} |", flush=True)
        if args.count_ops:
            counted.append((size, count_ops(det, frames, engine=args.engine in ("eager", "classical"))))
    if counted:
        print(f"\n# device operations and host waits per batch of {args.batch}, by stage")
        print("| size | stage | operations | host waits |\n|---|---|---|---|")
        for size, ops in counted:
            for k, (n, w) in ops.items():
                print(f"| {size}x{size} | {k} | {n} | {w} |")


#: operations after which the host waits for the device (a value or a size it must read)
_WAITS = {"aten._local_scalar_dense", "aten.nonzero", "aten._unique2", "aten.unique_dim", "aten.masked_select"}


def count_ops(det, frames, *, engine: bool = True) -> dict[str, tuple[int, int]]:
    """Operations (``aten`` calls) and host waits of one ``Detector.detect`` call on ``frames``,
    by stage, counted with a ``TorchDispatchMode``: on a GPU each is a kernel launch or more,
    tens of microseconds of Python and driver time however little it computes. ``engine``:
    count the engine's too (not for a compiled one, which a dispatch mode would make trace
    again)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    import etem.tracker.detect as detect_mod
    import etem.tracker.preprocess as pre_mod

    counts: dict[str, Counter] = {}

    class Count(TorchDispatchMode):
        def __init__(self, stage):
            super().__init__()
            self.c = counts.setdefault(stage, Counter())

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.c[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    def counted(stage, fn):
        def run(*a, **k):
            with Count(stage):
                return fn(*a, **k)
        return run

    patched = [(pre_mod.Preprocessor, "__call__"), (detect_mod, "locate"), (detect_mod, "refine_on_image"),
               (detect_mod, "suppress_close"), (det, "_judge")] + ([(det.engine, "predict")] if engine else [])
    names = {"__call__": "preprocess", "_judge": "quality", "predict": "engine"}
    saved = [(obj, name, obj.__dict__.get(name, None)) for obj, name in patched]
    quality, det.measure_quality = det.measure_quality, True  # as in the pipeline
    try:
        for obj, name in patched:
            setattr(obj, name, counted(names.get(name, name), getattr(obj, name)))
        det.detect(frames)
    finally:
        det.measure_quality = quality
        for obj, name, old in saved:
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
    return {k: (sum(c.values()), sum(c[w] for w in _WAITS)) for k, c in counts.items()}


def host_stages(det, size: int, args, sampling: float) -> tuple[float, float, float]:
    """Median ms per frame of linking (the pipeline's StreamLinker, default configuration), of
    the site map's update, and of the pipeline's whole host stage (linking, sites, the frame's
    table and its rows in a run file, with the run file's periodic sites, maps and resume
    snapshots), over ``--link-frames`` drifting frames, the first five left out. The site map
    is given each frame's image, as in the pipeline (the occupancy weighs the image at every
    site), unless ``--no-site-image``."""
    import tempfile

    from etem.tracker.config import PipelineConfig
    from etem.tracker.fastlink import warm_up
    from etem.tracker.frames import Frame
    from etem.tracker.link import StreamLinker
    from etem.tracker.sites import SiteMap

    cfg = PipelineConfig()
    warm_up(cfg.link.link_strategy)
    images = lattice_frames(args.link_frames, size, args.columns, sampling=sampling)
    cols = []
    for i in range(0, len(images), args.batch):
        cols += det.detect([Frame(image=im, frame=i + k, sampling=sampling)
                            for k, im in enumerate(images[i:i + args.batch])])
    linker, sites = StreamLinker(cfg.link, sampling), SiteMap(cfg.sites, sampling)
    link_t, sites_t = [], []
    for i, c in enumerate(cols):
        t0 = time.perf_counter()
        linked = linker.update(i, c)
        t1 = time.perf_counter()
        ref = np.column_stack([linked["y_ref"].to_numpy(), linked["x_ref"].to_numpy()])
        sites.update(i, ref, linked["cls"].to_numpy(), particles=linked["particle"].to_numpy(),
                     image=None if args.no_site_image else images[i], offset=linker.drift)
        t2 = time.perf_counter()
        link_t.append(t1 - t0)
        sites_t.append(t2 - t1)
    from etem.tracker.pipeline import Pipeline

    host_t = []
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(cfg, engine=det.engine, run_path=Path(tmp) / "run.h5")
        pipe.shape, pipe.sampling = (size, size), sampling
        for i, c in enumerate(cols):
            f = Frame(image=None if args.no_site_image else images[i], frame=i, sampling=sampling)
            f.received = time.perf_counter()
            t0 = time.perf_counter()
            pipe._host(f, c)
            host_t.append(time.perf_counter() - t0)
        pipe.finish()
    med = [1e3 * statistics.median(t[5:]) for t in (link_t, sites_t, host_t)]
    return med[0], med[1], med[2]


if __name__ == "__main__":
    main()
