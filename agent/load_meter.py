"""What an agent measured since its last heartbeat, for placement (coordinator.placement).

CPU is the agent process's own CPU time (its scoring threads, not its stages, which
run in child processes with limits of their own) as a share of the node's cores, so
an agent whose few replicas are hot ranks after idle ones however many replicas they
hold. Each reading covers the time since the one before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

from milepost.v1 import types_pb2


class LoadMeter:
    def __init__(self, inflight: Callable[[], int], answered: Callable[[], int]) -> None:
        self._inflight = inflight
        self._answered = answered
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._lock = threading.Lock()
        self._process.cpu_percent(None)  # the first call starts the interval
        self._at = time.monotonic()
        self._answered_then = answered()

    def reading(self) -> types_pb2.AgentLoad:
        with self._lock:
            now, answered = time.monotonic(), self._answered()
            elapsed = max(now - self._at, 1e-6)
            rate = (answered - self._answered_then) / elapsed
            cpu = self._process.cpu_percent(None) / 100.0 / self._cores
            self._at, self._answered_then = now, answered
        return types_pb2.AgentLoad(inflight_requests=self._inflight(), requests_per_s=rate,
                                   cpu_utilization=min(max(cpu, 0.0), 1.0))
