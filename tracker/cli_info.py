"""`etem info`: what this installation can do, for setting up a microscope PC and for bug reports.

It says which etem-tracker and which libraries are installed, which optional parts (extras) are
there, what torch sees (CUDA, the GPUs and their memory), which engines ``--engine auto`` can
choose from on each device, the bundled models (what each is for, its pixel size, its
classes), and where built engines are cached. ``--json`` prints the same as one JSON document.
Nothing is downloaded, built or run on a device.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["collect", "cmd_info", "add_parser"]

#: optional parts: extra -> the modules it brings, and what needs it
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "simulate": (("ase", "abtem"), "simulating movies and training images; every demo movie but toy"),
    "onnx": (("onnx", "onnxruntime"), "the onnxruntime engine (the fast CPU one)"),
    "napari": (("napari",), "etem view"),
    "movie": (("imageio_ffmpeg",), "MP4 movies (etem export --movie x.mp4)"),
}
#: installed apart from the extras (their own installers): where present, engines use them
OTHERS = {"tensorrt": "the tensorrt engine (NVIDIA GPUs)", "triton": "the compiled engine on GPUs"}


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def _models() -> list[dict[str, Any]]:
    from etem.train.bundle import bundled_models

    out = []
    for name, card_path in bundled_models().items():
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            out.append({"name": name, "error": f"card unreadable: {exc}"})
            continue
        use = card.get("use") or {}
        weights = card_path.with_suffix(".safetensors")
        out.append({
            "name": name, "arch": card.get("arch"), "imaging": use.get("imaging"),
            "materials": use.get("materials") or [], "task": use.get("task", "columns"),
            "inputs": len(card.get("inputs") or [0]), "classes": card.get("class_names") or [],
            "sampling_A": card.get("sampling_A"),
            "weights_MB": round(weights.stat().st_size / 1e6, 1) if weights.is_file() else None,
        })
    return out


def _torch() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                            "cuda_build": torch.version.cuda, "cuda": torch.cuda.is_available(), "gpus": []}
    if info["cuda"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_GiB": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}"})
    return info


def collect() -> dict[str, Any]:
    """Everything `etem info` says, as a dictionary."""
    from .engines import available_kinds
    from .engines.cache import default_cache_dir
    from .engines.quantize import cpu_has_vnni
    from .versions import versions

    torch_info = _torch()
    cache = default_cache_dir()
    engines = {"cpu": available_kinds("cpu")}
    if torch_info["cuda"]:
        engines["cuda"] = available_kinds("cuda")
    return {
        "etem-tracker": versions().get("etem-tracker"),
        "python": platform.python_version(), "platform": platform.platform(),
        "executable": sys.executable, "cpus": os.cpu_count(),
        "packages": versions(),
        "extras": {name: {"installed": all(_present(m) for m in mods), "missing": [m for m in mods if not _present(m)],
                          "for": what} for name, (mods, what) in EXTRAS.items()},
        "others": {name: {"installed": _present(name), "for": what} for name, what in OTHERS.items()},
        "torch": torch_info,
        "engines": engines,
        "int8_dot_product": cpu_has_vnni(),
        "models": _models(),
        "engine_cache": {"folder": str(cache), "exists": cache.is_dir(),
                         "MB": round(_folder_size(cache) / 1e6, 1) if cache.is_dir() else 0.0},
    }


def _text(info: dict[str, Any]) -> str:
    lines = [f"etem-tracker {info['etem-tracker']}, Python {info['python']} on {info['platform']} "
             f"({info['cpus']} CPUs)", f"  {info['executable']}", "", "libraries:"]
    lines += [f"  {name:<14} {version}" for name, version in info["packages"].items() if name != "python"]
    lines += ["", "optional parts:"]
    for name, e in info["extras"].items():
        state = "installed" if e["installed"] else f"not installed (pip install 'etem-tracker[{name}]')"
        lines.append(f"  [{name}] {state}: {e['for']}")
    for name, e in info["others"].items():
        lines.append(f"  {name} {'installed' if e['installed'] else 'not installed'}: {e['for']}")
    t = info["torch"]
    lines += ["", f"torch {t['version']} ({t['threads']} CPU threads; "
                  + (f"built for CUDA {t['cuda_build']})" if t["cuda_build"] else "a CPU build)")]
    if t["gpus"]:
        lines += [f"  cuda:{g['index']}  {g['name']}, {g['memory_GiB']} GiB, compute capability {g['capability']}"
                  for g in t["gpus"]]
    else:
        lines.append("  no CUDA device: models run on the CPU" + (" (CUDA not available to this build)"
                                                                  if t["cuda_build"] else ""))
    lines += ["", "engines --engine auto chooses from (best first):"]
    lines += [f"  {device:<5} {', '.join(kinds)}" for device, kinds in info["engines"].items()]
    vnni = info.get("int8_dot_product")
    if vnni is not None and "onnxruntime" in info["engines"].get("cpu", []):
        lines.append("  --int8 (onnxruntime): " + ("this CPU has 8-bit dot-product instructions (VNNI): about 2x "
                                                   "float32's speed" if vnni else "this CPU has no 8-bit dot-product "
                                                   "instructions (VNNI): likely slower than float32 here"))
    lines += ["", "bundled models:"]
    for m in info["models"]:
        if "error" in m:
            lines.append(f"  {m['name']}: {m['error']}")
            continue
        what = ", ".join(m["materials"]) or "any material"
        images = f"{m['inputs']}-image focal series" if m["inputs"] > 1 else "single images"
        task = "" if m["task"] == "columns" else f", {m['task']}"
        lines.append(f"  {m['name']:<15} {str(m['imaging']).upper()}, {what}, {images}{task}; "
                     f"{m['sampling_A']} Å/px; classes {', '.join(m['classes']) or '-'}; "
                     f"{m['arch']}, {m['weights_MB']} MB")
    c = info["engine_cache"]
    lines += ["", f"engine cache: {c['folder']} " + (f"({c['MB']} MB)" if c["exists"] else "(empty)")
              + "; $ETEM_CACHE_DIR moves it; etem engine list|clear"]
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what this installation can do: versions, extras, GPUs, engines, bundled models")
    p.add_argument("--json", action="store_true", help="print it as one JSON document (for a bug report)")


def cmd_info(args) -> int:
    info = collect()
    print(json.dumps(info, indent=1) if args.json else _text(info))
    return 0
