"""Optics-stage benchmark: augmented training images per second from exit waves in memory.

The full per-sample chain of ``etem.simulate.augment.training_batch``: transfer function with
partial coherence and astigmatism, intensity, scale jitter + quarter turns + mirror + crop,
MTF + blur, shot noise, and label maps. Prints one row per device and focal-series length
(images/s counts training samples, each of F focal images), then the time of each stage.
Speed is measured here, never in a timed test.

    python bench/bench_optics.py                      # CPU with 2 threads, and CUDA if present
    python bench/bench_optics.py --devices cuda --batch 256 --focal 1,3
"""
from __future__ import annotations

import argparse
import datetime
import math
import time

import torch

from _machine import cpu_name, devices as machine_devices


def honeycomb_waves(batch: int, size: int, sampling: float, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Weak-phase exit waves of rotated graphene-like lattices and their columns (two classes)."""
    g = torch.Generator().manual_seed(seed)
    a = 1.42  # bond length [Å]
    a1 = torch.tensor([1.5 * a, math.sqrt(3) / 2 * a])
    a2 = torch.tensor([1.5 * a, -math.sqrt(3) / 2 * a])
    field = size * sampling
    m = int(field / a) + 4
    i, j = torch.meshgrid(torch.arange(-m, m + 1.0), torch.arange(-m, m + 1.0), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    sites = torch.cat([cells, cells + torch.tensor([a, 0.0])])
    kinds = torch.cat([torch.zeros(len(cells), dtype=torch.long), torch.ones(len(cells), dtype=torch.long)])
    points, classes = [], []
    for _ in range(batch):
        t = float(torch.rand((), generator=g)) * math.pi
        rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        p = sites @ rot.T + field / 2
        keep = ((p >= 0) & (p < field)).all(1)
        points.append(p[keep] / sampling)
        classes.append(kinds[keep])
    n = max(len(p) for p in points)
    pts = torch.full((batch, n, 2), math.nan)
    cls = torch.full((batch, n), -1, dtype=torch.long)
    for b, (p, c) in enumerate(zip(points, classes)):
        pts[b, : len(p)], cls[b, : len(c)] = p, c
    from etem.simulate.labels import render_gaussians

    phase = render_gaussians(pts, (cls >= 0).float()[..., None], shape=(size, size), sigma_px=0.3 / sampling)[:, 0]
    return torch.polar(torch.ones_like(phase), 0.2 * phase), pts, cls


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_chain(device: torch.device, args, n_focal: int) -> dict:
    from etem.simulate.augment import AugmentConfig, training_batch

    waves, pts, cls = honeycomb_waves(args.batch, args.size, args.sampling)
    waves, pts, cls = waves.to(device), pts.to(device), cls.to(device)
    offsets = tuple(float(v) for v in torch.linspace(-50, 50, n_focal)) if n_focal > 1 else (0.0,)
    cfg = AugmentConfig(out_shape=(args.size, args.size), out_sampling_A=args.sampling, n_classes=2,
                        focal_offsets_A=offsets, focal_misalign_A=0.2 if n_focal > 1 else 0.0)
    g = torch.Generator(device).manual_seed(0)
    run = lambda: training_batch(waves, pts, cls, sampling_A=args.sampling, energy_eV=300e3, config=cfg, generator=g)
    for _ in range(args.warmup):
        run()
    _sync(device)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]  # median
    stages = bench_stages(device, args, waves, pts, cls, cfg) if args.stages else {}
    return {"device": device, "batch": args.batch, "focal": n_focal, "columns": int((cls >= 0).sum(1).float().mean()),
            "images_s": args.batch / t, "ms_batch": 1e3 * t, "stages": stages}


def bench_stages(device, args, waves, pts, cls, cfg) -> dict:
    """Median time [ms per batch] of each stage, run one after the other."""
    from etem.simulate import augment as A
    from etem.simulate.labels import render_labels
    from etem.simulate.optics import OpticsRanges, image_from_waves

    g = torch.Generator(device).manual_seed(1)
    b, n, s = args.batch, args.size, args.sampling
    params = OpticsRanges().sample(b, g)
    geo = A.sample_geometry(b, src_shape=(n, n), src_sampling_A=s, config=cfg, generator=g)
    pixel = s * geo.zoom
    state = {}
    steps = {
        "ctf+intensity": lambda: state.update(i=image_from_waves(waves, sampling_A=s, energy_eV=300e3, params=params,
                                                                 focal_offsets_A=cfg.focal_offsets_A)),
        "warp": lambda: state.update(w=A.warp(state["i"], geo, src_sampling_A=s, out_shape=cfg.out_shape,
                                              out_sampling_A=s)),
        "mtf+blur": lambda: state.update(d=A.detector_response(state["w"], pixel_size_A=pixel, params=params)),
        "noise": lambda: state.update(x=A.poisson_noise(state["d"], dose_e_per_A2=params.dose_e_per_A2,
                                                        pixel_size_A=pixel, generator=g)),
        "points": lambda: state.update(p=A.transform_points(pts, cls, geo, src_shape=(n, n), src_sampling_A=s,
                                                            out_shape=cfg.out_shape, out_sampling_A=s,
                                                            margin_px=4 * float((1 / pixel).max()))),
        "labels": lambda: render_labels(*state["p"], shape=cfg.out_shape, n_classes=2, sigma_px=1 / pixel),
    }
    out = {}
    for name, step in steps.items():
        ts = []
        for _ in range(max(3, args.repeats // 2)):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            ts.append(time.perf_counter() - t0)
        out[name] = 1e3 * sorted(ts)[len(ts) // 2]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped where absent")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256, help="source and output size [px]")
    ap.add_argument("--sampling", type=float, default=0.1, help="source and nominal output sampling [Å/px]")
    ap.add_argument("--focal", default="1,3", help="focal-series lengths to run")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-stages", dest="stages", action="store_false", help="skip the per-stage breakdown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    devices = machine_devices(args.devices)
    cpu = cpu_name()
    print(f"{datetime.date.today()}, torch {torch.__version__}, {args.threads} CPU threads ({cpu}), "
          f"{args.size}x{args.size} px at {args.sampling} Å/px, 300 kV, two column classes")
    for d in devices:
        if d.type == "cuda":
            print(f"cuda: {torch.cuda.get_device_name(d)}")
    rows = [bench_chain(d, args, int(f)) for d in devices for f in args.focal.split(",")]
    print()
    print("| device | batch | focal images | columns/image | images/s | ms/batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['batch']} | {r['focal']} | {r['columns']} | {r['images_s']:.1f} | {r['ms_batch']:.1f} |")
    print("images/s: training samples per second (each F focal images plus its label maps).")
    if args.stages:
        names = list(rows[0]["stages"])
        print()
        print("Stages, ms per batch (run one at a time):")
        print("| device | focal images | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for r in rows:
            print(f"| {r['device']} | {r['focal']} | " + " | ".join(f"{r['stages'][k]:.1f}" for k in names) + " |")


if __name__ == "__main__":
    main()
