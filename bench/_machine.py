"""What the benchmarks print about the machine, and the devices they run on."""
from __future__ import annotations

import platform

import torch


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        return name


def devices(spec: str) -> list[torch.device]:
    """The comma-separated devices of ``spec`` that are present (a missing CUDA one is said and skipped)."""
    out = []
    for name in (n.strip() for n in spec.split(",")):
        if name.startswith("cuda") and not torch.cuda.is_available():
            print(f"({name} not available; skipped)")
            continue
        out.append(torch.device(name))
    return out
