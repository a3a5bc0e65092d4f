"""Which arm served each request key: the agent's memory behind feedback by key.

``milepost feedback --key K`` reaches the coordinator later, naming only the key. A
bandit's choice for a key depends on the rewards the agent held when it served, and every
feedback changes them, so no one can recompute that choice afterwards: the arm that
served is remembered instead, here, and the coordinator asks (AgentService.ServedArm).

Bounded: the ``capacity`` (endpoint, key) pairs served most recently; the oldest is
forgotten first. A key served again is remembered with its newest arm.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class ServedKeys:
    def __init__(self, capacity: int, clock: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._served: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def record(self, endpoint: str, key: str, arm: str) -> None:
        if self._capacity <= 0:
            return
        entry = (endpoint, key)
        with self._lock:
            self._served[entry] = (arm, self._clock())
            self._served.move_to_end(entry)
            if len(self._served) > self._capacity:
                self._served.popitem(last=False)

    def arm_for(self, endpoint: str, key: str) -> tuple[str, float] | None:
        """(arm, when it served: seconds since the epoch), or None if not remembered."""
        with self._lock:
            return self._served.get((endpoint, key))

    def __len__(self) -> int:
        with self._lock:
            return len(self._served)
