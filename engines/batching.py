"""Micro-batching: many small requests to one model become one engine call.

A MicroBatcher wraps any LoadedModel and is one itself, so every engine gets
batching the same way and nothing inside an engine changes. Promises:

- Bounded: at most ``max_queue_rows`` rows wait; past that predict raises
  ResourceExhausted at once instead of queueing without limit.
- A batch is cut at ``max_batch_size`` rows or ``max_delay`` after its first
  request arrived, whichever comes first.
- Each request gets exactly its own rows back, or its own error: when a merged
  call fails, its requests are retried one by one so that one bad request
  cannot fail its neighbours.
- Requests at least ``max_batch_size`` rows long gain nothing from merging and
  run directly on the caller's thread.
- Deadlines: each queued request keeps its own. A caller waits no longer than
  its deadline (DeadlineExceeded, and the request leaves the queue); the
  worker answers a request whose deadline has passed DeadlineExceeded without
  scoring it, and its neighbours are scored as usual. A merged call is given
  the latest deadline of its requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import pyarrow as pa

from engines.base import LoadedModel
from milepost.core import deadlines
from milepost.core.batching import BatchingSettings
from milepost.core.deadlines import Deadline
from milepost.core.errors import DeadlineExceeded, ResourceExhausted


@dataclass(eq=False)  # queued requests are told apart by identity, never by their batches
class _Pending:
    batch: pa.RecordBatch
    future: Future
    arrived: float
    deadline: Deadline


class MicroBatcher(LoadedModel):
    def __init__(self, model: LoadedModel, config: BatchingSettings | None = None) -> None:
        self.model = model
        self.config = config or BatchingSettings()
        self.input_schema = model.input_schema
        self.output_schema = model.output_schema
        self.version = model.version
        self.platform = model.platform
        self.drift = model.drift
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0  # engine calls made from merged batches, for statistics and tests
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        rows = batch.num_rows
        if rows >= self.config.effective_max_batch_size or rows == 0:
            return self.model.predict(batch, deadline)
        pending = _Pending(batch, Future(), time.monotonic(), deadline)
        with self._cond:
            if self._closed:
                raise ResourceExhausted("model is unloading; retry on another replica")
            if self._queued_rows + rows > self.config.effective_max_queue_rows:
                raise ResourceExhausted(
                    f"queue full ({self._queued_rows} rows waiting, limit {self.config.effective_max_queue_rows}); "
                    "retry with backoff"
                )
            self._queue.append(pending)
            self._queued_rows += rows
            self._cond.notify()
        try:
            return pending.future.result(timeout=deadlines.remaining(deadline))
        except FutureTimeout:
            with self._cond:  # the worker takes requests under this lock: it has this one, or never will
                if pending.future.cancel():
                    self._queue.remove(pending)
                    self._queued_rows -= rows
            raise DeadlineExceeded("deadline passed while the request waited for the model") from None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the model right now (bounded by max_queue_rows)."""
        with self._cond:
            return self._queued_rows

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._worker.join(timeout=10)
        self.model.close()

    # ---- the worker ----
    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            self._score(group)

    def _next_group(self) -> list[_Pending] | None:
        """Wait for a first request, then gather same-schema requests until full or late."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.arrived + self.config.effective_max_delay_s
            while True:
                rows = self._rows_ready(first.batch.schema)
                remaining = deadline - time.monotonic()
                if rows >= self.config.effective_max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            group: list[_Pending] = []
            keep: deque[_Pending] = deque()
            rows = 0
            now = time.monotonic()
            while self._queue:
                item = self._queue.popleft()
                expired = item.deadline is not None and item.deadline <= now
                if expired or item.future.cancelled():
                    self._queued_rows -= item.batch.num_rows
                    if item.future.set_running_or_notify_cancel():  # False: its caller gave up waiting
                        item.future.set_exception(DeadlineExceeded("deadline passed while the request was queued"))
                    continue
                fits = rows + item.batch.num_rows <= self.config.effective_max_batch_size
                if item.batch.schema.equals(first.batch.schema) and (fits or not group):
                    group.append(item)
                    rows += item.batch.num_rows
                else:
                    keep.append(item)
            self._queue = keep
            self._queued_rows -= rows
            # From here a caller's cancel() fails: whatever it stopped waiting for is still answered.
            return [p for p in group if p.future.set_running_or_notify_cancel()]

    def _rows_ready(self, schema: pa.Schema) -> int:
        return sum(p.batch.num_rows for p in self._queue if p.batch.schema.equals(schema))

    def _score(self, group: list[_Pending]) -> None:
        if not group:
            return
        if len(group) == 1:
            self._score_one(group[0])
            return
        try:
            merged = pa.concat_batches([p.batch for p in group])
            set_ = [p.deadline for p in group if p.deadline is not None]
            latest = max(set_) if len(set_) == len(group) else None  # None: one request waits without a deadline
            result = self.model.predict(merged, latest)
            self.batches_run += 1
        except Exception:  # noqa: BLE001 - each request is retried alone to get its own answer
            for p in group:
                self._score_one(p)
            return
        offset = 0
        for p in group:
            p.future.set_result(result.slice(offset, p.batch.num_rows))
            offset += p.batch.num_rows

    def _score_one(self, pending: _Pending) -> None:
        try:
            pending.future.set_result(self.model.predict(pending.batch, pending.deadline))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting caller
            pending.future.set_exception(err)
