"""A small progress bar for long work (training epochs, downloads, benchmarks).

Draws on a terminal; prints nothing per step elsewhere (logs stay readable in CI), while
``log`` lines are always printed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(
        self, total: int, label: str = "", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, info: str = "") -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total} {info} "
            f"{elapsed:5.1f}s eta {eta:5.1f}s\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def log(message: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(message + "\n")
    stream.flush()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m03s``."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
