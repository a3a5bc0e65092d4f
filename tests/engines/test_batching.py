"""The micro-batcher around a real compiled model: merging, per-request answers and errors, bounds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from engines.base import LoadedModel
from engines.batching import MicroBatcher
from engines.native import NativeModel
from milepost.core.batching import BatchingSettings
from milepost.core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def native(logistic_model):
    import scoring_core

    estimator, bundle_dir, version, rows = logistic_model
    return NativeModel(scoring_core.load(bundle_dir, version=version)), estimator, rows


def matrix(rows: np.ndarray) -> pa.RecordBatch:
    values = pa.array(rows.astype(np.float32).reshape(-1))
    return pa.record_batch([pa.FixedSizeListArray.from_arrays(values, rows.shape[1])], names=["input"])


def probabilities(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column(0)
    return column.flatten().to_numpy().reshape(len(column), -1)


class Gated(LoadedModel):
    """A real model whose calls wait on a gate, so a test can let requests pile up first."""

    def __init__(self, inner: LoadedModel) -> None:
        self.inner = inner
        self.input_schema, self.output_schema = inner.input_schema, inner.output_schema
        self.version, self.platform = inner.version, inner.platform
        self.gate = threading.Event()
        self.calls: list[int] = []
        self.entered = 0  # rows that reached the model (and may be waiting at the gate)

    def predict(self, batch: pa.RecordBatch, deadline: float | None = None) -> pa.RecordBatch:
        self.entered += batch.num_rows
        self.gate.wait(10)
        self.calls.append(batch.num_rows)
        return self.inner.predict(batch)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(native) -> None:
    model, estimator, rows = native
    gated = Gated(model)
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=64))
    expected = estimator.predict_proba(rows)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = probabilities(batcher.predict(matrix(rows[i : i + 2])))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    # All 20 requests are in: queued, or in the first call, which waits on the gate.
    wait_until(lambda: gated.entered + batcher.queued_rows == 40)
    gated.gate.set()
    for t in threads:
        t.join()
    batcher.close()
    for i in range(20):
        np.testing.assert_allclose(results[i], expected[i : i + 2], atol=1e-5)
    assert sum(gated.calls) == 40
    assert len(gated.calls) < 20, f"no merging happened: {gated.calls}"
    assert max(gated.calls) <= 64


def test_a_bad_request_fails_alone(native) -> None:
    model, estimator, rows = native
    gated = Gated(model)
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=64))
    outcomes: dict[str, object] = {}

    def good() -> None:
        outcomes["good"] = probabilities(batcher.predict(matrix(rows[:3])))

    def bad() -> None:
        wrong = pa.record_batch([pa.array([1.0, 2.0], pa.float32())], names=["not_a_feature"])
        try:
            batcher.predict(wrong)
        except InvalidArgument as err:
            outcomes["bad"] = err

    threads = [threading.Thread(target=f) for f in (good, bad, good)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gated.gate.set()
    for t in threads:
        t.join()
    batcher.close()
    np.testing.assert_allclose(outcomes["good"], estimator.predict_proba(rows[:3]), atol=1e-5)
    assert "not_a_feature" in str(outcomes["bad"])


def test_full_queue_is_refused_at_once(native) -> None:
    model, _, rows = native
    gated = Gated(model)
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=4, max_queue_rows=4))
    threads = [threading.Thread(target=batcher.predict, args=(matrix(rows[:2]),)) for _ in range(3)]
    threads[0].start()
    wait_until(lambda: gated.entered == 2)  # the worker holds the first request in the model
    for t in threads[1:]:
        t.start()
    wait_until(lambda: batcher.queued_rows == 4)  # the next two wait: the queue is full
    with pytest.raises(ResourceExhausted, match="queue full"):
        batcher.predict(matrix(rows[:2]))
    gated.gate.set()
    for t in threads:
        t.join()
    batcher.close()


def test_large_requests_bypass_the_queue_and_delay_fills_batches(native) -> None:
    model, estimator, rows = native
    gated = Gated(model)
    gated.gate.set()
    # Four single rows fill a batch of 4; the generous delay only has to outlast their arrival.
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=4, max_delay_us=5_000_000))
    big = batcher.predict(matrix(rows[:50]))  # >= max_batch_size: straight through
    np.testing.assert_allclose(probabilities(big), estimator.predict_proba(rows[:50]), atol=1e-5)
    threads = [threading.Thread(target=batcher.predict, args=(matrix(rows[i : i + 1]),)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    batcher.close()
    assert gated.calls[0] == 50
    assert gated.calls[1:] == [4], "the delay should have gathered the four single rows"


def test_an_expired_queued_request_is_answered_deadline_exceeded_and_its_neighbours_are_scored(native) -> None:
    model, estimator, rows = native
    gated = Gated(model)
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=64))
    outcomes: dict[str, object] = {}

    def call(name: str, start: int, deadline: float | None) -> None:
        try:
            outcomes[name] = probabilities(batcher.predict(matrix(rows[start : start + 2]), deadline))
        except DeadlineExceeded as err:
            outcomes[name] = err

    first = threading.Thread(target=call, args=("first", 0, None))
    first.start()
    wait_until(lambda: gated.entered == 2)  # the worker is busy with the first request: the others queue
    late = threading.Thread(target=call, args=("late", 4, time.monotonic() + 0.2))
    neighbours = [threading.Thread(target=call, args=("before", 2, None)), late,
                  threading.Thread(target=call, args=("after", 6, time.monotonic() + 60))]
    for t in neighbours:
        t.start()
    wait_until(lambda: batcher.queued_rows == 6)
    late.join(10)  # its deadline passes while it waits in the queue
    gated.gate.set()
    for t in (first, *neighbours):
        t.join()
    batcher.close()
    assert isinstance(outcomes["late"], DeadlineExceeded)
    for name, start in (("first", 0), ("before", 2), ("after", 6)):
        np.testing.assert_allclose(outcomes[name], estimator.predict_proba(rows[start : start + 2]), atol=1e-5)
    assert gated.calls == [2, 4], "the late request is not scored; its neighbours are, merged"


def test_a_request_with_a_future_deadline_is_served(native) -> None:
    model, estimator, rows = native
    batcher = MicroBatcher(model, BatchingSettings(max_batch_size=64))
    try:
        served = batcher.predict(matrix(rows[:3]), time.monotonic() + 60)
        np.testing.assert_allclose(probabilities(served), estimator.predict_proba(rows[:3]), atol=1e-5)
        with pytest.raises(DeadlineExceeded):
            batcher.predict(matrix(rows[:3]), time.monotonic() - 1)
    finally:
        batcher.close()


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        BatchingSettings(max_batch_size=-1)
    with pytest.raises(InvalidArgument):
        BatchingSettings(max_delay_us=-1)
