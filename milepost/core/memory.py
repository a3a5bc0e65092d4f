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
    middle of a burst (each admission puts it off), not after a trickle of small requests."""

    def __init__(self, min_bytes: int = 64 << 20, quiet_s: float = 0.5) -> None:
        self.min_bytes = min_bytes
        self.quiet_s = quiet_s
        self._admitted = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def admitted(self, size: int) -> None:
        with self._lock:
            self._admitted += size
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def released(self, inflight_bytes: int) -> None:
        """Called with the bytes still in flight once a request let go of its own."""
        with self._lock:
            if inflight_bytes == 0 and self._admitted >= self.min_bytes and self._timer is None:
                self._timer = threading.Timer(self.quiet_s, self._trim)
                self._timer.daemon = True
                self._timer.start()

    def _trim(self) -> None:
        with self._lock:
            self._admitted = 0
            self._timer = None
        trim()
