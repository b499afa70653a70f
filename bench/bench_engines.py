"""Engine benchmark: ms per frame and frames/s of each engine on one model, per frame size.

A FusionNet (random weights: speed does not depend on them) of each width is saved as a bundle
in a temporary folder and built by every engine asked for; each is warmed up, then timed over
``--repeat`` rounds in which the engines take turns (the best and the median batch time are
reported; the best is the least disturbed by other work on a shared machine). Ratios are
against eager float32 on the same device, measured in the same run (best against best). On
CUDA, eager float16 and float16 + channels-last rows are added, the compiled engine runs
float16 + channels-last with CUDA graphs ("reduce-overhead"), and onnxruntime (with
onnxruntime-gpu) and tensorrt rows appear where those are installed. Speed is measured here, never in a timed test.

    python bench/bench_engines.py --sizes 256,512 --widths 8,16 --batch 4 --repeat 5
    python bench/bench_engines.py --device cuda --engines eager,compiled,tensorrt
    python bench/bench_engines.py --model au-hrtem --sizes 512 --batch 1 --engines onnxruntime,int8
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
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
    if "int8" in engines and not cuda:
        rows.append(("onnxruntime int8", "onnxruntime", {"int8": True}))
    if "compiled" in engines:
        if cuda:  # the real-time issue's reference: torch.compile fp16 in its default mode
            rows.append(("torch.compile fp16 default mode (reference)", "compiled",
                         {"dynamic": False, "mode": "default", "channels_last": False}))
        rows.append(("compiled fp16 channels-last CUDA graphs" if cuda else "compiled fp32 (torch.compile)",
                     "compiled", {"dynamic": False}))
    if "autotune" in engines and cuda:  # inductor tries Triton templates against cuDNN per conv
        rows.append(("compiled fp16 channels-last max-autotune", "compiled", {"dynamic": False, "mode": "max-autotune"}))
    if "aot" in engines:
        rows.append(("compiled AOTInductor", "compiled", {"aot": True}))
    if "tensorrt" in engines and cuda:
        rows.append(("tensorrt fp16", "tensorrt", {}))
    return [r for r in rows if r[1] in engines or r[1] == "eager" or r[2].get("aot") or r[2].get("mode") == "max-autotune"
            or r[2].get("int8")]


def time_engines(engines: dict, batch: torch.Tensor, warmup: int, repeat: int, cuda: bool) -> dict:
    """Seconds per batch of each engine: ``{label: (best, median, first-runs seconds)}``.

    The engines take turns, one batch each per round, so that load from other work on a shared
    machine falls on all of them alike; the best of the rounds is the least disturbed.
    """
    def sync():
        if cuda:
            torch.cuda.synchronize()

    setup, times, failed = {}, {label: [] for label in engines}, {}
    for label, engine in engines.items():
        t0 = time.perf_counter()
        try:
            for _ in range(warmup):
                engine.predict(batch)
            sync()
        except Exception as exc:  # noqa: BLE001 - a row that cannot run says why
            failed[label] = f"{type(exc).__name__}: {exc}"
        setup[label] = time.perf_counter() - t0
    for _ in range(repeat):
        for label, engine in engines.items():
            if label in failed:
                continue
            t0 = time.perf_counter()
            engine.predict(batch)
            sync()
            times[label].append(time.perf_counter() - t0)
    return {label: failed.get(label) or (min(t), statistics.median(t), setup[label]) for label, t in times.items()}


def _build(kind: str, path, device: str, options: dict) -> None:
    from etem.tracker.engines import make_engine

    make_engine(kind, path, device=device, **options)


def _build_apart(kind: str, path, device: str, options: dict) -> int:
    """Build an engine (into its cache) in a child process; its exit code (negative: the signal)."""
    import multiprocessing as mp

    child = mp.get_context("spawn").Process(target=_build, args=(kind, path, device, options))
    child.start()
    child.join()
    return child.exitcode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512", help="frame sides [px], comma-separated")
    p.add_argument("--widths", default="8,16", help="FusionNet widths, comma-separated")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--unshuffle", default="1",
                   help="FusionNet unshuffle factors, comma-separated (2: the top level on 2x2 pixel blocks)")
    p.add_argument("--batch", type=int, default=4, help="frames per batch")
    p.add_argument("--engines", default="eager,onnxruntime,compiled",
                   help="eager, onnxruntime, int8 (onnxruntime's int8 graph; CPU), compiled, aot (compiled with "
                        "AOTInductor), autotune (compiled in max-autotune mode; CUDA only), tensorrt")
    p.add_argument("--model", help="time this model (a bundled name or a bundle path) instead of random FusionNets "
                                   "(--widths, --depth and --unshuffle are then not used)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cache-dir", type=Path, help="engine cache (default: a temporary folder)")
    args = p.parse_args()

    from etem.tracker.engines import make_engine
    from etem.tracker.engines.quantize import calibration_file, save_calibration
    from etem.train.bundle import load_bundle, save_bundle
    from etem.train.networks import FusionNet, count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    widths = [(int(w), int(u)) for w in args.widths.split(",") for u in args.unshuffle.split(",")]
    gpu = torch.cuda.get_device_name(args.device) if cuda else ""
    print(f"# {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs {gpu}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch}; {args.repeat} rounds after {args.warmup} warm-up")
    print("| engine | width | params | size | ms/frame best | ms/frame median | frames/s (best) | speed vs eager fp32 "
          "| vs reference |")
    print("|---|---|---|---|---|---|---|---|---|")

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        for width, unshuffle in (widths if not args.model else [(None, None)]):
            if args.model:
                model, card = load_bundle(args.model)
                path, width, channels = args.model, str(card.get("name") or args.model), len(card["inputs"])
            else:
                torch.manual_seed(0)
                model = FusionNet(n_inputs=1, n_classes=2, width=width, depth=args.depth, unshuffle=unshuffle)
                path = save_bundle(model, Path(tmp) / f"fusionnet-w{width}-u{unshuffle}", CARD)[1]
                channels = 1
                if "int8" in engines:  # (random weights: the int8 graph's agreement check may refuse it)
                    rng = np.random.default_rng(0)
                    save_calibration(calibration_file(path), rng.poisson(100.0, (4, 128, 128)), CARD["sampling_A"])
                if unshuffle > 1:
                    width = f"{width}, unshuffle {unshuffle}"
            params = count_parameters(model)
            built = {}
            for label, kind, options in variants(engines, args.device):
                if kind in ("onnxruntime", "compiled", "tensorrt"):
                    options = {**options, "cache_dir": cache_dir}
                if kind == "onnxruntime" and args.threads:
                    options["threads"] = args.threads
                if options.get("aot"):
                    # built in a process of its own (then loaded from the cache here): a crash of
                    # the exporter or compiler costs that row, not the table
                    code = _build_apart(kind, path, args.device, options)
                    if code:
                        print(f"| {label} | {width} | {params} | - | unavailable: the build process ended "
                              f"with {code} | | | | |", flush=True)
                        continue
                try:
                    built[label] = make_engine(kind, path, device=args.device, **options)
                except Exception as exc:  # noqa: BLE001 - a row that cannot run says why
                    print(f"| {label} | {width} | {params} | - | unavailable: {exc} | | | | |")
            for size in sizes:
                batch = torch.randn(args.batch, channels, size, size)
                base = ref = None
                for label, result in time_engines(built, batch, args.warmup, args.repeat, cuda).items():
                    if isinstance(result, str):
                        print(f"| {label} | {width} | {params} | {size}² | failed: {result} | | | | |")
                        continue
                    best, median = (1e3 * v / args.batch for v in result[:2])
                    setup = result[2]
                    base = best if base is None else base
                    ref = best if label.endswith("(reference)") else ref
                    note = f" (first runs {setup:.0f} s)" if setup > 5 else ""
                    vs_ref = f"{ref / best:.2f}x" if ref else ""
                    print(f"| {label}{note} | {width} | {params} | {size}² | {best:.1f} | {median:.1f} | "
                          f"{1e3 / best:.1f} | {base / best:.2f}x | {vs_ref} |", flush=True)

if __name__ == "__main__":
    main()
