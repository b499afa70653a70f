"""Every message is accounted for: received = processed + rejected + dropped (+ in flight)."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Thread-safe message counters of one run.

    ``received`` counts messages taken off the socket or file; each ends up ``processed``,
    ``rejected`` (by reason: it failed validation or preprocessing) or ``dropped`` (by reason:
    discarded unprocessed, e.g. a full queue in SUB mode). ``missing`` counts sequence numbers
    that never arrived (gaps in ``seq``: dropped by the publisher or the network before us).
    """

    received: int = 0
    processed: int = 0
    missing: int = 0
    restarts: int = 0
    oom_retries: int = 0  # batches run again, halved, after the GPU ran out of memory
    rejected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1, reason: str | None = None) -> None:
        with self._lock:
            if reason is None:
                setattr(self, name, getattr(self, name) + n)
            else:
                getattr(self, name)[reason] += n

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self.received - self.processed - sum(self.rejected.values()) - sum(self.dropped.values())

    def as_dict(self) -> dict[str, int]:
        """Flat dict: received, processed, missing, restarts, rejected/<reason>, dropped/<reason>."""
        with self._lock:
            out = {
                "received": self.received,
                "processed": self.processed,
                "missing": self.missing,
                "restarts": self.restarts,
                "oom_retries": self.oom_retries,
                "rejected": sum(self.rejected.values()),
                "dropped": sum(self.dropped.values()),
            }
            out.update({f"rejected/{k}": v for k, v in sorted(self.rejected.items())})
            out.update({f"dropped/{k}": v for k, v in sorted(self.dropped.items())})
        return out
