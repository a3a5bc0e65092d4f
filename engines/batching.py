"""Micro-batching: many small requests to one model become one engine call.

A MicroBatcher wraps any LoadedModel and is one itself, so every engine gets
batching the same way and nothing inside an engine changes. It is a
leader-follower queue: the caller that finds no batch being scored scores one
itself, on its own thread, and requests that arrive meanwhile queue; when the
leader is done it hands the lead to the first of them, which scores everything
that queued as one batch. A lone request therefore never changes threads (a
hand-off to a worker thread cost four times the scoring of one row), and under
load batches form by themselves. Promises:

- Bounded: at most ``max_queue_rows`` rows wait; past that predict raises
  ResourceExhausted at once instead of queueing without limit.
- A batch is cut at ``max_batch_size`` rows, or, with a positive
  ``max_delay``, when that much time has passed since its first request
  arrived, whichever comes first.
- Each request gets exactly its own rows back, or its own error: when a merged
  call fails, its requests are retried one by one so that one bad request
  cannot fail its neighbours.
- Requests at least ``max_batch_size`` rows long gain nothing from merging and
  run directly on the caller's thread.
- Deadlines: each queued request keeps its own. A caller waits no longer than
  its deadline (DeadlineExceeded, and the request leaves the queue); the
  leader answers a request whose deadline has passed DeadlineExceeded without
  scoring it, and its neighbours are scored as usual. A merged call is given
  the latest deadline of its requests.
- On an event loop (milepost.core.inline) it never waits: a request is scored
  there only when the model may score inline (LoadedModel.scores_inline), no
  other batch is under way or queued, no delay is configured, and the model's
  measured cost for that many rows is within INLINE_BUDGET_NS; otherwise it
  refuses (WouldBlock) and the front end calls again from a worker thread.
"""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from engines.base import LoadedModel
from milepost.core import deadlines, tracing
from milepost.core.batching import BatchingSettings
from milepost.core.deadlines import Deadline
from milepost.core.errors import DeadlineExceeded, ResourceExhausted
from milepost.core.inline import must_not_block, refuse_blocking

# Nanoseconds the current request waited in a batcher's queue, summed over the batchers it went
# through; the data plane reads it for Triton's queue statistic (perf_analyzer needs it to rise).
queue_wait_ns: contextvars.ContextVar[int] = contextvars.ContextVar("milepost_queue_wait_ns", default=0)
INLINE_BUDGET_NS = 250_000  # the longest a batch may hold an event loop (other requests wait behind it)
_SMALL_ROWS = 4  # calls of at most this many rows measure the fixed cost of a call


@dataclass(eq=False)  # queued requests are told apart by identity, never by their batches
class _Pending:
    batch: pa.RecordBatch
    arrived: float
    deadline: Deadline
    wake: threading.Event = field(default_factory=threading.Event)  # set when answered or given the lead
    lead: bool = False
    taken: bool = False  # in a batch being scored
    done: bool = False
    result: pa.RecordBatch | None = None
    error: BaseException | None = None

    def answer(self, result: pa.RecordBatch | None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.wake.set()

    def outcome(self) -> pa.RecordBatch:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Cost:
    """The model's measured cost of a call: a fixed part and a part per row (moving averages),
    so that the cost of a batch of any size can be guessed before scoring it.

    Costs are the scoring thread's CPU time: time spent waiting for the CPU or the GIL is not
    the model's, and counting it would send calls to workers exactly when the process is
    busiest. A sample is also clipped at four times the current guess (the first call, which
    compiles or warms caches, and page faults); a model that really is slower gets there in a
    few calls.

    Not every call is timed: reading a thread's CPU clock is a system call (~0.4 us, a tenth
    of a one-row call here), so after the first ``_SAMPLED_FROM`` calls one in ``_SAMPLE_EVERY``
    is (``timed``), which the moving averages need no more than."""

    def __init__(self) -> None:
        self.fixed_ns = 0.0
        self.per_row_ns = 0.0
        self.known = False  # until a first call is measured, every guess is "too long"
        self._calls = 0

    def timed(self) -> bool:
        """Whether to time the call about to be made (and give it to ``measured``)."""
        self._calls += 1  # a count lost in a race only moves which call is timed
        return self._calls <= _SAMPLED_FROM or not self._calls % _SAMPLE_EVERY

    def measured(self, rows: int, elapsed_ns: int) -> None:
        self.known = True
        if rows <= _SMALL_ROWS:
            self.fixed_ns = _moved(self.fixed_ns, elapsed_ns)
        else:
            self.per_row_ns = _moved(self.per_row_ns, max(elapsed_ns - self.fixed_ns, 0.0) / rows)

    def guess_ns(self, rows: int) -> float:
        """The guessed cost of ``rows``; infinite before any call was measured, so that a model's
        first call (which may compile kernels) is never made on an event loop."""
        return self.fixed_ns + self.per_row_ns * rows if self.known else float("inf")


_SAMPLED_FROM, _SAMPLE_EVERY = 64, 8


def _moved(average: float, sample: float) -> float:
    if not average:
        return min(sample, INLINE_BUDGET_NS / 2)  # the first call compiles or warms caches: not its cost
    return average + (min(sample, 4 * average) - average) * 0.2


BATCH_BOUNDS = tuple(1 << i for i in range(17))  # 1, 2, 4 ... 65536 rows an engine call


class MicroBatcher(LoadedModel):
    def __init__(self, model: LoadedModel, config: BatchingSettings | None = None) -> None:
        self.model = model
        self.config = config or BatchingSettings()
        self.input_schema = model.input_schema
        self.output_schema = model.output_schema
        self.version = model.version
        self.platform = model.platform
        self.drift = model.drift
        self.scores_inline = model.scores_inline
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        # The condition's own lock, for the matrix lane's short sections: ``with`` on a plain lock
        # runs in C, on a Condition through two Python calls (a one-row request takes both twice).
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._max_delay_s = self.config.effective_max_delay_s  # the settings are frozen
        self._leading = False  # a caller is scoring a batch now
        self._closed = False
        self._cost = _Cost()
        self.batches_run = 0  # engine calls made from merged batches, for statistics and tests
        # Engine calls by rows, bucket b counting calls of at most BATCH_BOUNDS[b] rows (the last: more).
        self.batch_rows = [0] * (len(BATCH_BOUNDS) + 1)
        self.rows_scored = 0

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        rows = batch.num_rows
        if must_not_block():
            self._refuse_unless_inline(rows)
        if rows >= self.config.effective_max_batch_size or rows == 0:
            return self._timed(batch, deadline)
        with self._cond:
            if self._closed:
                raise ResourceExhausted("model is unloading; retry on another replica")
            alone = not self._leading and not self._queue and not self.config.effective_max_delay_s
            if alone:
                self._leading = True
            else:
                pending = self._queued(batch, deadline)
        if alone:  # nothing to merge with: score it here and now, without queueing it
            try:
                return self._timed(batch, deadline)
            finally:
                self._pass_lead()
        if not pending.lead:
            self._follow(pending)
        if pending.lead:
            self._lead()
        return pending.outcome()

    def _queued(self, batch: pa.RecordBatch, deadline: Deadline) -> _Pending:
        """Queue a request (the lock held); it leads when no batch is being scored."""
        rows = batch.num_rows
        if must_not_block():
            refuse_blocking("another batch of this model is being scored")
        if self._queued_rows + rows > self.config.effective_max_queue_rows:
            raise ResourceExhausted(
                f"queue full ({self._queued_rows} rows waiting, limit {self.config.effective_max_queue_rows}); "
                "retry with backoff"
            )
        pending = _Pending(batch, time.monotonic(), deadline)
        self._queue.append(pending)
        self._queued_rows += rows
        if not self._leading:
            self._leading = pending.lead = True
        elif self.config.effective_max_delay_s:
            self._cond.notify()  # a leader waiting to fill its batch counts the rows again
        return pending

    def predict_matrix(self, X: np.ndarray) -> np.ndarray | None:
        """``X`` scored here and now, as ``predict`` scores a batch that has nothing to merge
        with; None, before anything is scored, where ``predict`` must serve it instead: a
        batch is queued or being scored, the deployment waits to fill batches, the event
        loop may not take it, or the model takes Arrow only."""
        rows = X.shape[0]
        if self._max_delay_s or (must_not_block() and self._inline_refusal(rows)):
            return None
        with self._mutex:
            if self._closed or self._leading or self._queue:
                return None
            self._leading = True
        try:
            started = time.thread_time_ns() if self._cost.timed() else None
            out = self.model.predict_matrix(X)
            if out is not None:
                self._count(rows, started)
            return out
        finally:
            self._pass_lead()

    def _inline_refusal(self, rows: int) -> str | None:
        """Why a batch of ``rows`` may not be scored on an event loop; None when it may."""
        if not self.model.scores_inline:
            return f"a {self.platform} model scores on a worker thread"
        if self._max_delay_s:
            return "this deployment waits max_delay to fill its batches"
        if self._cost.guess_ns(rows) > INLINE_BUDGET_NS:
            return f"{rows} rows take longer than an event loop may be held"
        return None

    def _refuse_unless_inline(self, rows: int) -> None:
        why = self._inline_refusal(rows)
        if why:
            refuse_blocking(why)

    def _follow(self, pending: _Pending) -> None:
        """Wait until ``pending`` is answered or given the lead; DeadlineExceeded when its deadline comes first."""
        pending.wake.wait(deadlines.remaining(pending.deadline))
        waited = int((time.monotonic() - pending.arrived) * 1e9)
        queue_wait_ns.set(queue_wait_ns.get() + waited)
        with self._cond:
            if pending.done or pending.lead:
                if tracing.enabled():
                    tracing.finished("milepost.batch.queue", waited, {"milepost.rows": pending.batch.num_rows,
                                                                      "milepost.lead": pending.lead})
                return
            if not pending.taken:
                self._queue.remove(pending)
                self._queued_rows -= pending.batch.num_rows
        error = "deadline passed while the request waited for the model"
        if tracing.enabled():
            tracing.finished("milepost.batch.queue", waited, {"milepost.rows": pending.batch.num_rows}, error=error)
        raise DeadlineExceeded(error)

    def _lead(self) -> None:
        """Score the next batch from the head of the queue (which holds this caller's request),
        then pass the lead to the first request still queued."""
        try:
            self._score(self._next_group())
        finally:
            self._pass_lead()

    def _pass_lead(self) -> None:
        """The batch is scored: the first request still queued leads next, or nobody does."""
        with self._mutex:
            if self._queue:
                following = self._queue[0]
                following.lead = True
                following.wake.set()
            else:
                self._leading = False

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the model right now (bounded by max_queue_rows)."""
        with self._cond:
            return self._queued_rows

    def close(self) -> None:
        with self._cond:
            self._closed = True
        self.model.close()

    # ---- the leader ----
    def _next_group(self) -> list[_Pending]:
        """Same-schema requests from the head of the queue, up to max_batch_size rows (waiting up
        to max_delay after the first arrived for the batch to fill, when one is set)."""
        with self._cond:
            first = self._queue[0]
            if self.config.effective_max_delay_s:
                cut = first.arrived + self.config.effective_max_delay_s
                while not self._closed:
                    remaining = cut - time.monotonic()
                    if remaining <= 0 or self._rows_ready(first.batch.schema) >= self.config.effective_max_batch_size:
                        break
                    self._cond.wait(remaining)
            group: list[_Pending] = []
            keep: deque[_Pending] = deque()
            rows = 0
            now = time.monotonic()
            while self._queue:
                item = self._queue.popleft()
                if item.deadline is not None and item.deadline <= now:
                    self._queued_rows -= item.batch.num_rows
                    item.answer(None, DeadlineExceeded("deadline passed while the request was queued"))
                    continue
                fits = rows + item.batch.num_rows <= self.config.effective_max_batch_size
                if item.batch.schema.equals(first.batch.schema) and (fits or not group):
                    item.taken = True
                    group.append(item)
                    rows += item.batch.num_rows
                else:
                    keep.append(item)
            self._queue = keep
            self._queued_rows -= rows
            return group

    def _rows_ready(self, schema: pa.Schema) -> int:
        return sum(p.batch.num_rows for p in self._queue if p.batch.schema.equals(schema))

    def _score(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            self._score_one(group[0])
            return
        if not group:
            return
        try:
            merged = pa.concat_batches([p.batch for p in group])
            set_ = [p.deadline for p in group if p.deadline is not None]
            latest = max(set_) if len(set_) == len(group) else None  # None: one request waits without a deadline
            result = self._timed(merged, latest)
            self.batches_run += 1
        except Exception:  # noqa: BLE001 - each request is retried alone to get its own answer
            for p in group:
                self._score_one(p)
            return
        offset = 0
        for p in group:
            p.answer(result.slice(offset, p.batch.num_rows))
            offset += p.batch.num_rows

    def _score_one(self, pending: _Pending) -> None:
        try:
            pending.answer(self._timed(pending.batch, pending.deadline))
        except Exception as err:  # noqa: BLE001 - handed to the waiting caller
            pending.answer(None, err)

    def _timed(self, batch: pa.RecordBatch, deadline: Deadline) -> pa.RecordBatch:
        if tracing.enabled():
            with tracing.span("milepost.engine") as span:  # the engine call, in the trace of the caller that scores
                span.set_attribute("milepost.rows", batch.num_rows)
                span.set_attribute("milepost.platform", self.platform)
                return self._measured(batch, deadline)
        return self._measured(batch, deadline)

    def _measured(self, batch: pa.RecordBatch, deadline: Deadline) -> pa.RecordBatch:
        started = time.thread_time_ns() if self._cost.timed() else None
        out = self.model.predict(batch, deadline)
        self._count(batch.num_rows, started)
        return out

    def _count(self, rows: int, started_ns: int | None) -> None:
        """An engine call of ``rows`` that began at ``started_ns`` (thread time; None: not timed) is over."""
        if started_ns is not None:
            self._cost.measured(rows, time.thread_time_ns() - started_ns)
        self.batch_rows[bisect.bisect_left(BATCH_BOUNDS, rows)] += 1  # a lost count in a race is a count, not a fault
        self.rows_scored += rows
