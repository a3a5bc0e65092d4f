"""Progress of a long command on stderr, with its rate and time left: redrawn in place on a
terminal, a line per tenth otherwise (a log keeps ten lines, not thousands)."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, total: int | None, stream: TextIO, *, unit: str) -> None:
        """``unit``: "rows", or "bytes" (shown in MiB)."""
        self.total, self.stream, self.unit = total, stream, unit
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self.line(done))
                self.stream.flush()
        elif self.total:
            decile = min(10, done * 10 // self.total)
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line(done) + "\n")
                self.stream.flush()

    def finish(self, done: int) -> None:
        self._last_draw = 0.0
        self.update(done)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{self._amount(done / elapsed)}/s"
        if not self.total:
            return f"{self._amount(done)} {self.unit}  {rate}  {elapsed:.1f} s"
        share = min(1.0, done / self.total)
        filled = int(share * WIDTH)
        left = (self.total - done) / (done / elapsed) if done else None
        eta = f"{left:.0f} s left" if left is not None and done < self.total else f"{elapsed:.1f} s"
        return (f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self._amount(done)}/{self._amount(self.total)} "
                f"{'MiB' if self.unit == 'bytes' else self.unit} ({share:.0%})  {rate}  {eta}")

    def _amount(self, value: float) -> str:
        return f"{value / 2**20:,.1f}" if self.unit == "bytes" else f"{value:,.0f}"
