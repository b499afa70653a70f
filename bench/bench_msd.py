"""MSD-net benchmark: inference (the reference module against ``etem.train.msd_fast.FastMSDNet``)
and, with ``--train``, training steps.

For each frame size, the time of one forward pass (scores, batch of one frame) of

- ``reference``: :class:`etem.train.networks.MSDNet` as the eager engine ran it before (one
  convolution per layer into a preallocated buffer),
- ``fast-torch``: :class:`FastMSDNet` with the torch backend (grouped matrix products),
- ``fast-triton``: :class:`FastMSDNet` with the Triton kernel (CUDA with Triton only), also
  with 8 and 16 warps for the launch that sums a group of layers (the default is 4),

with the FLOP count of the network, the effective GFLOP/s and the speed-up over the reference.
The reference is skipped at sizes where it would take longer than ``--max-seconds`` (estimated
from the previous size). Speed is measured here, never in a timed test.

    python bench/bench_msd.py                                  # CPU, 256, 512, 1024
    python bench/bench_msd.py --devices cuda --sizes 1024,2048 --dtype float16

With ``--train`` it times one training step (forward, loss, backward; a batch of ``--batch``
crops of ``--sizes``, float32) of :class:`MSDNet`'s two training paths: ``checkpointed`` (one
convolution per layer, recomputed in the backward pass) and ``gemm`` (``_MSDTrunk``: matrix
products into one buffer, hand-written backward; what training on a CPU uses):

    python bench/bench_msd.py --train --sizes 128 --batch 8
"""
from __future__ import annotations

import argparse
import datetime
import time

import torch

from _machine import cpu_name, devices as machine_devices


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model, x: torch.Tensor, repeats: int, max_seconds: float) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``model(x, logits=True)`` after one warm-up run.

    Fewer repeats when a run is slow: at most about ``max_seconds`` in all. The CPU time is this
    process's (all its threads); on shared cores it is the steadier figure.
    """
    def once() -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        model(x, logits=True)
        _sync(x.device)
        return time.perf_counter() - w0, time.process_time() - c0

    with torch.inference_mode():
        warm = once()  # counts only if there is no time for another run
        runs: list[tuple[float, float]] = []
        while len(runs) < repeats and sum(r[0] for r in runs) + warm[0] < max_seconds:
            runs.append(once())
    runs = runs or [warm]
    wall = sorted(r[0] for r in runs)[len(runs) // 2]
    cpu = sorted(r[1] for r in runs)[len(runs) // 2]
    return wall, cpu


def time_step(step, repeats: int, max_seconds: float, device: torch.device) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``step()`` after one warm-up run (as :func:`time_forward`)."""
    def once() -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        return time.perf_counter() - w0, time.process_time() - c0

    warm = once()
    runs: list[tuple[float, float]] = []
    while len(runs) < repeats and sum(r[0] for r in runs) + warm[0] < max_seconds:
        runs.append(once())
    runs = runs or [warm]
    return sorted(r[0] for r in runs)[len(runs) // 2], sorted(r[1] for r in runs)[len(runs) // 2]


def bench_training(args, devices: list[torch.device]) -> None:
    from etem.train.networks import MSDNet

    print(f"{datetime.date.today()}, torch {torch.__version__}, {args.threads} CPU threads ({cpu_name()}); "
          f"MSDNet(n_inputs={args.inputs}, n_classes={args.classes}, depth={args.depth}, width={args.width}), "
          f"training step on a batch of {args.batch}, float32")
    rows = []
    for device in devices:
        torch.manual_seed(0)
        model = MSDNet(args.inputs, args.classes, depth=args.depth, width=args.width).to(device)
        for size in (int(s) for s in args.sizes.split(",")):
            x = torch.randn(args.batch, args.inputs, size, size, device=device)
            target = torch.randint(0, args.classes, (args.batch, size, size), device=device)
            times = {}
            for path in ("checkpointed", "gemm"):
                def step(path=path):
                    model.zero_grad(set_to_none=True)
                    logits = getattr(model, f"_logits_{path}")(x)
                    torch.nn.functional.cross_entropy(logits, target).backward()
                times[path] = time_step(step, args.repeats, args.max_seconds, device)
                print(f"  {device} {size}x{size} {path}: {times[path][0]:.2f} s/step", flush=True)
            ref = times["checkpointed"]
            for path, (t, cpu_t) in times.items():
                rows.append((device.type, size, path, t, cpu_t, ref[0] / t, ref[1] / cpu_t))
    print()
    print("| device | crop | path | s/step | CPU s/step | speed-up | speed-up, CPU time |")
    print("|---|---|---|---|---|---|---|")
    for dev, size, path, t, cpu_t, sp, cpu_sp in rows:
        print(f"| {dev} | {args.batch} x {size}x{size} | {path} | {t:.2f} | {cpu_t:.2f} | {sp:.1f}x | {cpu_sp:.1f}x |")
    print("Speed-up: over the checkpointed path, from wall clock and from this process's CPU time.")


def main() -> None:
    from etem.train.msd_fast import FastMSDNet, msd_flops, msd_min_bytes, triton_available
    from etem.train.networks import MSDNet

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped where absent")
    ap.add_argument("--sizes", default="256,512,1024", help="frame sizes [px], square")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--width", type=int, default=1)
    ap.add_argument("--inputs", type=int, default=3, help="input channels (focal images)")
    ap.add_argument("--classes", type=int, default=4, help="output classes, background included")
    ap.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                    help="default: float32 on the CPU, float16 on CUDA")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="skip an implementation at a size where one run is expected to take longer")
    ap.add_argument("--train", action="store_true", help="time training steps instead of inference")
    ap.add_argument("--batch", type=int, default=8, help="--train: crops per step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.train:
        bench_training(args, machine_devices(args.devices))
        return
    sizes = [int(s) for s in args.sizes.split(",")]

    devices = machine_devices(args.devices)
    cpu = cpu_name()
    print(f"{datetime.date.today()}, torch {torch.__version__}, {args.threads} CPU threads ({cpu}); "
          f"MSDNet(n_inputs={args.inputs}, n_classes={args.classes}, depth={args.depth}, width={args.width}), "
          "random weights, batch of 1 frame")
    for d in devices:
        if d.type == "cuda":
            print(f"cuda: {torch.cuda.get_device_name(d)}, triton: {'yes' if triton_available() else 'no'}")

    torch.manual_seed(0)
    base = MSDNet(args.inputs, args.classes, depth=args.depth, width=args.width).eval()
    rows = []
    for device in devices:
        dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
        reference = base.to(device, dtype)
        impls = {"reference": reference, "fast-torch": FastMSDNet(reference, backend="torch")}
        if device.type == "cuda" and triton_available():
            impls["fast-triton"] = FastMSDNet(reference, backend="triton")
            # the group launch's warps: 4 (the default) spill registers (ptxas) yet ran fastest on an H200
            # is for the GPU to say
            for warps in ((8, 4), (16, 4)):
                impls[f"fast-triton warps {warps[0]},{warps[1]}"] = FastMSDNet(reference, backend="triton",
                                                                               warps=warps)
        last: dict[str, tuple[int, float]] = {}
        for size in sizes:
            x = torch.randn(1, args.inputs, size, size, device=device, dtype=dtype)
            flops = msd_flops(args.depth, args.width, args.inputs, args.classes, size, size)
            floor = msd_min_bytes(args.depth, args.width, args.inputs, size, size, itemsize=x.element_size())
            times = {}
            for name, model in impls.items():
                if name in last:
                    prev_size, prev_t = last[name]
                    estimate = prev_t * (size / prev_size) ** 2
                    if estimate > args.max_seconds:
                        print(f"({name} at {size}x{size} on {device} skipped: about {estimate:.0f} s a frame)")
                        continue
                t, cpu_t = time_forward(model, x, args.repeats, args.max_seconds)
                print(f"  {device} {size}x{size} {name}: {1e3 * t:.1f} ms ({1e3 * cpu_t:.1f} ms CPU)", flush=True)
                last[name] = (size, t)
                times[name] = (t, cpu_t if device.type == "cpu" else float("nan"))
            for name, (t, cpu_t) in times.items():
                ref_t, ref_cpu = times.get("reference", (float("nan"), float("nan")))
                rows.append((device.type, str(dtype).removeprefix("torch."), size, name, 1e3 * t, 1e3 * cpu_t,
                             flops / 1e9, flops / t / 1e9, ref_t / t, ref_cpu / cpu_t, floor / 1e6))
            del x

    print()
    print("| device | dtype | size | implementation | ms/frame | CPU ms/frame | GFLOP | GFLOP/s | speed-up "
          "| speed-up, CPU time | layer reads MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def fmt(v: float, spec: str, suffix: str = "") -> str:
        return "–" if v != v else f"{v:{spec}}{suffix}"

    for dev, dt, size, name, ms, cpu_ms, gflop, rate, speedup, cpu_speedup, mb in rows:
        print(f"| {dev} | {dt} | {size}x{size} | {name} | {ms:.1f} | {fmt(cpu_ms, '.1f')} | {gflop:.1f} "
              f"| {rate:.1f} | {fmt(speedup, '.1f', 'x')} | {fmt(cpu_speedup, '.1f', 'x')} | {mb:.0f} |")
    print("GFLOP: multiply-adds counted as 2, 3x3 layers and the 1x1 head; GFLOP/s from wall clock. "
          "Speed-up: over the reference at the same size, from wall clock and from this process's CPU "
          "time (the steadier figure on shared cores; CPU only). Layer reads: bytes read and written "
          "when every layer reads all earlier maps once (the memory-traffic floor of a layer-by-layer "
          "implementation).")


if __name__ == "__main__":
    main()
