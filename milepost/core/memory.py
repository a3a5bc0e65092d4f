"""Giving memory back to the system after a burst of large requests.

glibc's malloc keeps what is freed for reuse, and after a large block served by mmap is
freed it raises its mmap threshold to that block's size (up to 32 MiB), so the next blocks
of that size come from the heap and stay resident once freed. An agent that served a burst
of 16 MiB requests kept its peak RSS for good (302 MiB before, 696 at the peak, 667 five
seconds after: benchmarks/burst_memory.py). glibc's own calls fix it: ``mallopt`` fixes the
threshold at 1 MiB (no more raising), so blocks of 1 MiB and more are mapped and unmapped
when freed, and caps the arenas (one per thread by default, each keeping its own free
pages); ``malloc_trim(0)`` returns the free pages of every arena, called once a burst is
over (``AfterBurst``). Elsewhere than glibc
both are skipped: other allocators have their own policies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def configure() -> bool:
    """Blocks of 1 MiB and more by mmap, whatever was freed before, and at most ``ARENAS``
    arenas for all threads (each arena keeps its own free pages); whether it took effect.
    Called before the server starts its threads: arenas already made stay."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and _LIBC.mallopt(M_ARENA_MAX, ARENAS))


def trim() -> bool:
    """Return free heap pages to the system; whether any were."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class AfterBurst:
    """Trims once the bytes in flight have stayed at zero for ``quiet_s``, after at least
    ``min_bytes`` were admitted since the last trim: never on the request path, never in the
    middle of a burst (each admission puts it off), not after a trickle of small requests.

    A request only moves counters: one timer at a time waits out the quiet, and when it
    fires early (requests came meanwhile) it waits again for what is left. (A timer started
    at each release and cancelled at the next admission cost a thread per request once
    ``min_bytes`` had gone by: half the throughput of one-row requests.)

    The caller holds ``lock`` while it calls ``admitted`` and ``released``: the lock it
    counts its own requests under (the data plane's admission), so that a request takes
    one lock, not two; the timer takes it too."""

    def __init__(self, lock: threading.Lock, min_bytes: int = 64 << 20, quiet_s: float = 0.5,
                 trim: Callable[[], bool] = trim) -> None:
        self.min_bytes = min_bytes
        self.quiet_s = quiet_s
        self._trim = trim
        self._admitted = 0
        self._last_admitted_at = 0.0
        self._idle = True
        self._waiting = False  # a timer is waiting out the quiet
        self._lock = lock

    def admitted(self, size: int, now: float) -> None:
        """A request of ``size`` bytes admitted at ``now`` (time.monotonic()), ``lock`` held."""
        self._admitted += size
        self._last_admitted_at = now
        self._idle = False

    def released(self, inflight_bytes: int) -> None:
        """Called, ``lock`` held, with the bytes still in flight once a request let go of its own."""
        if inflight_bytes:
            return
        self._idle = True
        if self._admitted >= self.min_bytes and not self._waiting:
            self._waiting = True
            self._wait(self.quiet_s)

    def _wait(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._quiet_over)
        timer.daemon = True
        timer.start()

    def _quiet_over(self) -> None:
        with self._lock:
            if not self._idle:  # a request is in flight: the release that ends it waits again
                self._waiting = False
                return
            left = self._last_admitted_at + self.quiet_s - time.monotonic()
            if left > 0:
                self._wait(left)
                return
            self._waiting = False
            self._admitted = 0
        self._trim()
