"""`etem engine`: build engines ahead of a session, draw calibration images, list and clear the engine cache."""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser", "cmd_engine"]

BUILDABLE = ("onnxruntime", "compiled", "tensorrt")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(sub) -> None:
    """Register ``etem engine build|calibrate|list|clear`` on the subcommand set ``sub``."""
    p = sub.add_parser("engine", help="build engines ahead of a session; list or clear the engine cache")
    cmds = p.add_subparsers(dest="engine_command", required=True, metavar="ACTION")

    b = cmds.add_parser("build", help="build (or find) a model's engine in the cache; print its path")
    b.add_argument("model", help="bundled model name or model bundle path")
    b.add_argument("--engine", required=True, choices=BUILDABLE,
                   help="onnxruntime: ONNX graph (any frame size); compiled: AOTInductor package "
                        "(any frame size); tensorrt: fp16 plan for one frame size (needs --shape)")
    b.add_argument("--shape", nargs=2, type=_positive, metavar=("H", "W"),
                   help="frame size in px the engine runs at (after resampling to the model's sampling); "
                        "a batch of this size is run once to check the engine")
    b.add_argument("--batch", type=_positive, default=None,
                   help="largest batch (tensorrt: the plan's profile, default 8; others: the check run's)")
    b.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    b.add_argument("--cache-dir", type=Path, help="engine cache folder (default: $ETEM_CACHE_DIR or the user cache)")
    b.add_argument("--int8", action="store_true",
                   help="onnxruntime: the graph quantized to 8 bits (CPU), calibrated on the bundle's "
                        "NAME.calib.npz or --calibration")
    b.add_argument("--calibration", type=Path, help="with --int8: the calibration file (etem engine calibrate)")

    k = cmds.add_parser("calibrate", help="draw a model's calibration images (for its int8 graph) from simulated "
                                          "exit waves it was not trained on")
    k.add_argument("model", help="bundled model name or model bundle path")
    k.add_argument("waves", nargs="+", type=Path, help="wave set(s) from etem simulate waves (taken in turn)")
    k.add_argument("-o", "--output", type=Path, help="calibration file (default: NAME.calib.npz beside the bundle)")
    k.add_argument("--per-dose", type=_positive, default=2, help="images per dose (default 2; doses 1e2-1e4 e/Å²)")
    k.add_argument("--size", type=_positive, default=192, help="image side [px] (default 192)")
    k.add_argument("--seed", type=int, default=7, help="seed of the optics and the noise (default 7)")

    ls = cmds.add_parser("list", help="list the cached engines")
    ls.add_argument("--cache-dir", type=Path)

    c = cmds.add_parser("clear", help="remove cached engines")
    c.add_argument("--kind", choices=("onnx", "tensorrt", "aoti"), help="only this kind (default: all)")
    c.add_argument("--cache-dir", type=Path)


def cmd_engine(args) -> int:
    """Run ``etem engine ACTION``."""
    return {"build": _build, "list": _list, "clear": _clear, "calibrate": _calibrate}[args.engine_command](args)


def _build(args) -> int:
    from . import make_engine

    if args.engine == "tensorrt" and args.shape is None:
        raise ConfigError("a tensorrt plan is built for one frame size: give --shape H W")
    options: dict = {"cache_dir": args.cache_dir}
    if args.engine == "compiled":
        options["aot"] = True
    if args.engine == "tensorrt":
        options["max_batch"] = args.batch or 8
        options["shape"] = tuple(args.shape)
    if args.calibration is not None and not args.int8:
        raise ConfigError("--calibration goes with --int8.")
    if args.int8:
        if args.engine != "onnxruntime":
            raise ConfigError("--int8 builds the onnxruntime engine's int8 graph: give --engine onnxruntime.")
        options.update(int8=True, calibration=args.calibration)
    engine = make_engine(args.engine, args.model, device=args.device, **options)
    if args.shape is not None:
        engine.warm_up(*args.shape, batch=args.batch or 1)
    path = engine.cache_path
    entry = getattr(engine, "cache_entry", None)
    hit = entry.hit if entry is not None else False
    agreement = getattr(engine, "agreement", None)
    print(f"{engine.name}{' int8' if getattr(engine, 'int8', False) else ''} engine for {args.model} on "
          f"{engine.device}: {'found in the cache' if hit else 'built'}"
          + (f" (its columns match the float32 graph's with F1 {agreement:.3f} on the calibration images)"
             if agreement is not None else ""), file=sys.stderr)
    print(path)
    return 0


def _calibrate(args) -> int:
    from etem.train.calibration import write_calibration

    path = write_calibration(args.model, args.waves, args.output, per_dose=args.per_dose, size=args.size,
                             seed=args.seed)
    print(f"calibration images of {args.model} written", file=sys.stderr)
    print(path)
    return 0


def _list(args) -> int:
    from .cache import EngineCache

    cache = EngineCache(args.cache_dir)
    entries = cache.entries()
    if not entries:
        print(f"no cached engines in {cache.root}", file=sys.stderr)
        return 0
    print(f"cached engines in {cache.root}:", file=sys.stderr)
    print(f"{'kind':9} {'MB':>8}  {'created':16}  {'built with':24}  {'profile':28}  path")
    for e in entries:
        key = e.key
        lib = next((f"{lib} {key[lib]}" for lib in ("tensorrt", "torch") if lib in key), "")
        profile = key.get("profile", {})
        shape = "x".join(str(profile.get(d, "?")) for d in ("batch", "channels", "height", "width"))
        created = datetime.datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M")
        where = key.get("gpu") or key.get("device") or ""
        kind = f"{e.kind}-int8" if key.get("precision") == "int8" else e.kind
        print(f"{kind:9} {e.size / 1e6:8.2f}  {created:16}  {lib[:24]:24}  {shape[:28]:28}  {e.path}"
              + (f"  [{where}]" if where else ""))
    return 0


def _clear(args) -> int:
    from .cache import EngineCache

    cache = EngineCache(args.cache_dir)
    n = cache.clear(args.kind)
    print(f"removed {n} cached engine(s) from {cache.root}")
    return 0
