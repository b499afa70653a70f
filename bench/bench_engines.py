"""Engine benchmark: ms per frame and frames/s of each engine on one model, per frame size.

A FusionNet (random weights: speed does not depend on them) of each width is saved as a bundle
in a temporary folder and built by every engine asked for; each is warmed up, then timed over
``--repeat`` batches (the median batch time is reported). Ratios are against eager float32 on
the same device, measured in the same run. On CUDA, eager float16 and float16 + channels-last
rows are added, the compiled engine runs float16 + channels-last with CUDA graphs
("reduce-overhead"), and onnxruntime (with onnxruntime-gpu) and tensorrt rows appear where
those are installed. Speed is measured here, never in a timed test.

    python bench/bench_engines.py --sizes 256,512 --widths 8,16 --batch 4 --repeat 5
    python bench/bench_engines.py --device cuda --engines eager,compiled,tensorrt
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

CARD = {"inputs": [0.0], "class_names": ["column"], "sampling_A": 0.1,
        "normalization": {"method": "local", "sigma_A": 12.0}}


def variants(engines: list[str], device: str) -> list[tuple[str, str, dict]]:
    """(label, kind, options) of every row to measure, eager float32 first."""
    cuda = device.startswith("cuda")
    rows = [("eager fp32", "eager", {})]
    if cuda:
        rows += [("eager fp16", "eager", {"dtype": "float16"}),
                 ("eager fp16 channels-last", "eager", {"dtype": "float16", "channels_last": True})]
    if "onnxruntime" in engines:
        rows.append(("onnxruntime fp32", "onnxruntime", {}))
    if "compiled" in engines:
        rows.append(("compiled fp16 channels-last CUDA graphs" if cuda else "compiled fp32 (torch.compile)",
                     "compiled", {"dynamic": False}))
    if "aot" in engines:
        rows.append(("compiled AOTInductor", "compiled", {"aot": True}))
    if "tensorrt" in engines and cuda:
        rows.append(("tensorrt fp16", "tensorrt", {}))
    return [r for r in rows if r[1] in engines or r[1] == "eager"]


def time_engine(engine, batch: torch.Tensor, warmup: int, repeat: int, cuda: bool) -> float:
    """Median seconds per batch."""
    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        engine.predict(batch)
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        engine.predict(batch)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512", help="frame sides [px], comma-separated")
    p.add_argument("--widths", default="8,16", help="FusionNet widths, comma-separated")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="frames per batch")
    p.add_argument("--engines", default="eager,onnxruntime,compiled",
                   help="eager, onnxruntime, compiled, aot (compiled with AOTInductor), tensorrt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cache-dir", type=Path, help="engine cache (default: a temporary folder)")
    args = p.parse_args()

    from etem.tracker.engines import make_engine
    from etem.train.bundle import save_bundle
    from etem.train.networks import FusionNet, count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    gpu = torch.cuda.get_device_name(args.device) if cuda else ""
    print(f"# {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs {gpu}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch}, median of {args.repeat} after {args.warmup} warm-up")
    print("| engine | width | params | size | ms/frame | frames/s | speed vs eager fp32 |")
    print("|---|---|---|---|---|---|---|")

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        for width in widths:
            torch.manual_seed(0)
            model = FusionNet(n_inputs=1, n_classes=2, width=width, depth=args.depth)
            path = save_bundle(model, Path(tmp) / f"fusionnet-w{width}", CARD)[1]
            params = count_parameters(model)
            built = {}
            for label, kind, options in variants(engines, args.device):
                if kind in ("onnxruntime", "compiled", "tensorrt"):
                    options = {**options, "cache_dir": cache_dir}
                if kind == "onnxruntime" and args.threads:
                    options["threads"] = args.threads
                try:
                    built[label] = make_engine(kind, path, device=args.device, **options)
                except Exception as exc:  # noqa: BLE001 - a row that cannot run says why
                    print(f"| {label} | {width} | {params} | - | unavailable: {exc} | | |")
            for size in sizes:
                batch = torch.randn(args.batch, 1, size, size)
                base = None
                for label, engine in built.items():
                    t0 = time.perf_counter()
                    try:
                        seconds = time_engine(engine, batch, args.warmup, args.repeat, cuda)
                    except Exception as exc:  # noqa: BLE001
                        print(f"| {label} | {width} | {params} | {size}² | failed: {type(exc).__name__}: {exc} | | |")
                        continue
                    ms = 1e3 * seconds / args.batch
                    base = ms if base is None else base
                    setup = time.perf_counter() - t0 - seconds * args.repeat
                    note = f" (first runs {setup:.0f} s)" if setup > 5 else ""
                    print(f"| {label}{note} | {width} | {params} | {size}² | {ms:.1f} | {1e3 / ms:.1f} | "
                          f"{base / ms:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
