"""milepost.core.memory.AfterBurst: when the heap is trimmed after a burst, and what a request costs.

malloc_trim itself is replaced by a counter (what it returns to the system cannot be told apart
from other work in a test process); the timers and the clock are real, with short quiet times.
"""

from __future__ import annotations

import threading
import time

from milepost.core.memory import AfterBurst
from tests.conftest import wait_until


class _Counted:
    """What the data plane does around an AfterBurst: each call under the lock it shares with it."""

    def __init__(self) -> None:
        self.trims: list[float] = []
        self.lock = threading.Lock()
        self.after = AfterBurst(self.lock, min_bytes=1000, quiet_s=0.2,
                                trim=lambda: bool(self.trims.append(time.monotonic())))

    def admitted(self, size: int) -> None:
        with self.lock:
            self.after.admitted(size, time.monotonic())

    def released(self, inflight_bytes: int) -> None:
        with self.lock:
            self.after.released(inflight_bytes)


def _counting() -> tuple[_Counted, list[float]]:
    counted = _Counted()
    return counted, counted.trims


def test_requests_start_no_thread_each_and_the_trim_waits_for_the_quiet() -> None:
    after, trims = _counting()
    threads_before = threading.active_count()
    started = time.monotonic()
    most_threads = 0
    while time.monotonic() - started < 0.6:  # one-request-at-a-time traffic, past min_bytes at once
        after.admitted(500)
        after.released(0)
        most_threads = max(most_threads, threading.active_count())
        time.sleep(0.001)
    last_request = time.monotonic()
    assert trims == []  # never quiet for 0.2 s while requests came every millisecond
    assert most_threads <= threads_before + 1  # one timer at a time, not one per request
    wait_until(lambda: trims, timeout=5)
    assert trims[0] - last_request >= 0.2 - 0.01
    time.sleep(0.5)
    assert len(trims) == 1  # nothing admitted since: no second trim


def test_no_trim_below_min_bytes_or_while_a_request_is_in_flight() -> None:
    after, trims = _counting()
    after.admitted(400)
    after.released(0)
    time.sleep(0.4)
    assert trims == []  # a trickle under min_bytes
    after.admitted(800)
    after.admitted(800)
    after.released(800)  # one of the two still in flight
    time.sleep(0.4)
    assert trims == []
    after.released(0)
    wait_until(lambda: trims, timeout=5)
    assert len(trims) == 1
