"""A small progress bar for long work (seeding, benchmarks): a live bar on a terminal, lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts work done out of ``total`` and shows rate and time left."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.monotonic()
        self._last_line = -1.0

    def advance(self, n: int) -> None:
        """Record ``n`` more units done and redraw (at most every 2 s when not on a terminal)."""
        self.done += n
        now = time.monotonic()
        if self.live or now - self._last_line >= 2 or self.done >= self.total:
            self._last_line = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else 0.0
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * 30)
        text = (
            f"{self.label} [{bar:<30}] {share:6.1%} {self.done:,}/{self.total:,} "
            f"{rate:,.0f}/s, {left:.0f}s left"
        )
        self.stream.write(("\r" + text) if self.live else (text + "\n"))
        self.stream.flush()

    def close(self) -> float:
        """Finish the display and return the elapsed seconds."""
        elapsed = time.monotonic() - self.started
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
        return elapsed
