"""Admission by bytes in flight: a request that would take the agent past its budget is refused at
once with RESOURCE_EXHAUSTED, while what was admitted finishes; the budget frees as requests end."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from agent.dataplane import DataPlane, InferenceRequest
from milepost.core.errors import ResourceExhausted
from tests.conftest import wait_until


def test_requests_past_the_byte_budget_are_refused_at_once(cluster, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        client.deploy("scores", "lr")
    agent = cluster.agent
    wait_until(lambda: agent.router.table.get("scores") is not None)
    core = DataPlane(agent.table, agent.router, max_inflight_bytes=1000)  # the agent's own table and router
    decoding, release = threading.Event(), threading.Event()

    def slow_decode(schema: pa.Schema) -> pa.RecordBatch:
        decoding.set()
        release.wait(10)  # holds its 600 bytes in flight meanwhile
        return pa.RecordBatch.from_arrays([pa.array(rows[:, j]) for j in range(rows.shape[1])], schema=schema)

    answers: list[int] = []
    first = threading.Thread(target=lambda: answers.append(core.serve(
        InferenceRequest("scores", slow_decode, size_bytes=600), lambda r: r.batch.num_rows)))
    first.start()
    assert decoding.wait(10)
    assert core.inflight_bytes == 600
    with pytest.raises(ResourceExhausted, match="max_inflight_bytes"):
        core.serve(InferenceRequest("scores", slow_decode, size_bytes=500), lambda r: r.batch.num_rows)
    release.set()
    first.join(10)
    assert answers == [len(rows)] and core.inflight_bytes == 0
    # Alone, even a request over the budget is served: the budget bounds concurrency, not size.
    big = core.serve(InferenceRequest("scores", slow_decode, size_bytes=5000), lambda r: r.batch.num_rows)
    assert big == len(rows) and core.inflight_bytes == 0
