"""The live status line of `etem replay` and `etem track` (stderr)."""
from __future__ import annotations

import shutil
import sys
import time


class StatusLine:
    """A live status line on stderr: frames/s, latency, queue depths, message accounting.

    One line that fits the terminal: with a known frame count (replay), a progress counter
    then the status; otherwise the status alone, redrawn in place. Where stderr is no terminal
    (a log file, a service's journal) the status is written whole, a line every
    ``log_interval_s``, with the frame count where it is known.
    """

    def __init__(self, *, total: int | None = None, enabled: bool = True, interval_s: float = 0.5,
                 log_interval_s: float = 10.0) -> None:
        self.enabled = enabled
        self.total = total
        self._tty = sys.stderr.isatty()
        self.interval_s = interval_s if self._tty else log_interval_s
        self._last = 0.0
        self._pipe = None
        self._bar = None
        self._done = 0
        if enabled and total is not None and self._tty:
            from tqdm import tqdm

            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total, unit="frame", desc="replay", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc} {n_fmt}/{total_fmt} {percentage:3.0f}% [{elapsed}<{remaining}]{postfix}")
            # warnings while the bar is drawn go above it, not into its line
            self._logs = logging_redirect_tqdm()
            self._logs.__enter__()

    @staticmethod
    def text(s: dict) -> str:
        """The status as one compact line (frames/s; latency p50/p99; queues ingest/host; accounting;
        sites, and their class changes where there are any; frames inside the locator's trust
        ranges, where they are judged)."""
        judged = s.get("in_range", 0) + s.get("out_of_range", 0)
        trust = f" | trusted {s['in_range']}/{judged}" if judged else ""
        if s.get("trust_alert"):  # most of the latest frames are out of the locator's ranges
            trust += f" (latest {s['recent_judged']}: {s['recent_judged'] - s['recent_in_range']} out)"
        return (f"{s['fps']:.1f} frames/s | latency {s['latency_p50_ms']:.0f}/{s['latency_p99_ms']:.0f} ms "
                f"| queues {s['queue_ingest']}/{s['queue_host']} | in {s['received']} done {s['processed']} "
                f"rejected {s['rejected']} dropped {s['dropped']} missing {s['missing']} | {s['sites']} sites"
                + (f", {s['class_changes']} class changes" if s.get("class_changes") else "") + trust)

    def __call__(self, res, pipe) -> None:
        if not self.enabled:
            return
        self._pipe = pipe
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        self._draw(pipe)

    def _draw(self, pipe) -> None:
        text = self.text(pipe.status())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
        elif not self._tty:  # a whole line each time: a log keeps them all
            count = f"{self._done}/{self.total} frames | " if self.total is not None else ""
            print(count + text, file=sys.stderr, flush=True)
        else:
            width = max(20, shutil.get_terminal_size().columns - 1)
            print("\r" + text[:width].ljust(width), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self._pipe is not None:
            try:  # the last line says how the run ended, not how it stood at the last redraw
                self._draw(self._pipe)
            except Exception:  # noqa: BLE001 - a status line must never hide the run's own error
                pass
        if self._bar is not None:
            self._bar.close()
            self._logs.__exit__(None, None, None)
        elif self.enabled and self._last and self._tty:
            print(file=sys.stderr)
