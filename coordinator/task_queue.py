"""A bounded queue of keyed tasks, served by a fixed set of worker threads.

Why not a ThreadPoolExecutor: its queue has no bound, and a task that submits to
the pool it runs in and waits for the result deadlocks as soon as every worker
does so (the reconciler's did: with nine loads queued at once it stopped for
good). Here a task is one step that never waits for another task; a key that is
already queued is not queued again (a burst of heartbeats asking for the same
load adds one task); and a full queue refuses a task instead of buffering it.
Refusing loses nothing for the reconciler: every task it queues is derived again
from the store by its next pass.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable

log = logging.getLogger("milepost.coordinator")


class TaskQueue:
    def __init__(self, *, workers: int, limit: int, name: str) -> None:
        if workers < 1 or limit < 1:
            raise ValueError(f"a task queue needs workers >= 1 and limit >= 1, got {workers} and {limit}")
        self.limit = limit
        self._cond = threading.Condition()
        self._queue: deque[tuple[Hashable, Callable[[], None]]] = deque()
        self._keys: set[Hashable] = set()
        self._running = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, task: Callable[[], None]) -> bool:
        """Queue ``task`` unless a task of this key is queued already; False when refused (full, closed)."""
        with self._cond:
            if key in self._keys:
                return True
            if self._closed or len(self._queue) >= self.limit:
                return False
            self._queue.append((key, task))
            self._keys.add(key)
            self._cond.notify()
            return True

    def busy(self) -> int:
        """Tasks queued or running."""
        with self._cond:
            return len(self._queue) + self._running

    def close(self, wait_s: float = 2.0) -> None:
        """Drop what is queued and let the workers end; wait up to ``wait_s`` for tasks under way
        (one in a long agent call finishes on its own, later)."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._keys.clear()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._running == 0, timeout=wait_s)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                key, task = self._queue.popleft()
                self._keys.discard(key)
                self._running += 1
            try:
                task()
            except Exception:  # noqa: BLE001 - one failed task must not take a worker with it
                log.exception("background task %s failed", key)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
