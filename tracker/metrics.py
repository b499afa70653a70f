"""Prometheus text exposition of a run's figures (``/metrics``), written by hand.

Counters (frames received, processed, rejected and dropped by reason, missing, restarts), the
``etem_frame_latency_seconds`` histogram, queue depths and capacities, sites, the last frame, and
GPU memory when the engine runs on CUDA. No prometheus_client dependency.
"""
from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .wire import REJECT_REASONS

__all__ = ["LATENCY_BUCKETS_S", "LatencyHistogram", "metrics_text", "gpu_memory"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LatencyHistogram:
    """Cumulative histogram of frame latencies [s] in Prometheus' bucket convention."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, last one +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one latency [s]; NaN (unknown arrival time) is not counted."""
        if value != value:  # NaN
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of values <= le)`` per bucket, ending with ``("+Inf", count)``."""
        out, total = [], 0
        for b, n in zip(self.bounds + (math.inf,), self.counts):
            total += n
            out.append(("+Inf" if b == math.inf else _num(b), total))
        return out


def _num(v: float) -> str:
    """A number as Prometheus writes it (integers without a decimal point)."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def metrics_text(counters: dict[str, int], *, histogram: LatencyHistogram, queues: dict[str, tuple[int, int]],
                 sites: int, last_frame: int | None, gpu: dict[str, dict[str, int]], uptime_s: float,
                 view_jumps: int = 0, class_changes: int = 0, hops: int = 0) -> str:
    """The run's figures in Prometheus text exposition format (version 0.0.4).

    Parameters
    ----------
    counters
        :meth:`Counters.as_dict` of the run (``rejected/<reason>``, ``dropped/<reason>`` keys).
    queues
        ``{name: (depth, capacity)}`` of the stage queues.
    gpu
        ``{device: {"allocated": bytes, "reserved": bytes}}``; empty without CUDA.
    """
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {_num(value)}")

    def by_reason(kind: str, known: Iterable[str]) -> list[tuple[str, float]]:
        reasons = dict.fromkeys(known, 0)
        reasons.update({k.split("/", 1)[1]: v for k, v in counters.items() if k.startswith(kind + "/")})
        return [(f'{{reason="{_label(r)}"}}', v) for r, v in reasons.items()]

    family("etem_frames_received_total", "counter", "Messages taken off the socket or file.",
           [("", counters.get("received", 0))])
    family("etem_frames_processed_total", "counter", "Frames tracked to the end of the pipeline.",
           [("", counters.get("processed", 0))])
    family("etem_frames_rejected_total", "counter", "Messages that failed validation or preprocessing, by reason.",
           by_reason("rejected", REJECT_REASONS + ("preprocess",)))
    family("etem_frames_dropped_total", "counter", "Frames discarded unprocessed, by reason.",
           by_reason("dropped", ("queue_full", "stopped")))
    family("etem_frames_missing_total", "counter", "Sequence numbers that never arrived (gaps in seq).",
           [("", counters.get("missing", 0))])
    family("etem_stream_restarts_total", "counter", "Times the sender restarted its sequence numbers.",
           [("", counters.get("restarts", 0))])
    lines.append("# HELP etem_frame_latency_seconds Time from a frame's arrival to its sites being assigned.")
    lines.append("# TYPE etem_frame_latency_seconds histogram")
    for le, n in histogram.cumulative():
        lines.append(f'etem_frame_latency_seconds_bucket{{le="{le}"}} {n}')
    lines.append(f"etem_frame_latency_seconds_sum {_num(histogram.sum)}")
    lines.append(f"etem_frame_latency_seconds_count {histogram.count}")
    family("etem_queue_depth", "gauge", "Items waiting in each stage queue.",
           [(f'{{queue="{q}"}}', d) for q, (d, _) in queues.items()])
    family("etem_queue_capacity", "gauge", "Capacity of each stage queue.",
           [(f'{{queue="{q}"}}', c) for q, (_, c) in queues.items()])
    family("etem_sites", "gauge", "Sites found so far (judged occupied in at least one frame).", [("", sites)])
    family("etem_view_jumps_total", "counter", "Jumps of the view (stage, particle, re-centring) the linker followed.",
           [("", view_jumps)])
    family("etem_class_changes_total", "counter", "Changes of a site's class found so far (S2 to S and the like).",
           [("", class_changes)])
    family("etem_hops_total", "counter", "Hops between two sites found so far (a column or an atom moving to a "
           "neighbouring site).", [("", hops)])
    if last_frame is not None:
        family("etem_last_frame", "gauge", "Acquisition index of the latest processed frame.", [("", last_frame)])
    family("etem_uptime_seconds", "gauge", "Seconds since the dashboard started.", [("", uptime_s)])
    if gpu:
        family("etem_gpu_memory_allocated_bytes", "gauge", "GPU memory held by tensors (torch).",
               [(f'{{device="{_label(d)}"}}', m["allocated"]) for d, m in gpu.items()])
        family("etem_gpu_memory_reserved_bytes", "gauge", "GPU memory reserved by torch's caching allocator.",
               [(f'{{device="{_label(d)}"}}', m["reserved"]) for d, m in gpu.items()])
    return "\n".join(lines) + "\n"


def _label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def gpu_memory(engine: Any) -> dict[str, dict[str, int]]:
    """Allocated and reserved bytes on the engine's CUDA device; empty when CUDA is not in use.

    Never initializes CUDA nor imports torch: only reads what the running engine already set up.
    """
    snapshot = getattr(engine, "gpu_memory_snapshot", None)
    if snapshot is not None:  # an engine in the detection process: what it reported last
        return dict(snapshot)
    torch = sys.modules.get("torch")
    dev = getattr(engine, "device", None)
    if torch is None or getattr(dev, "type", None) != "cuda" or not torch.cuda.is_initialized():
        return {}
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return {f"cuda:{index}": {"allocated": int(torch.cuda.memory_allocated(index)),
                              "reserved": int(torch.cuda.memory_reserved(index))}}
