"""Small requests are answered on the front end's event loop; whatever could block goes to a worker.

Real agent and coordinator on loopback, a real scikit-learn model. What is observed is the
agent's own count of requests answered on the loop (DataPlane.answered_on_loop), next to
the values, which must be the same either way.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pyarrow as pa
import pytest

from engines.base import LoadedModel
from engines.batching import INLINE_BUDGET_NS, MicroBatcher
from engines.native import NativeModel
from milepost.core.batching import BatchingSettings
from milepost.core.inline import WouldBlock, on_event_loop
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import wait_until
from tests.engines.test_batching import Gated, matrix, probabilities


@pytest.fixture
def served(cluster, logistic_model):
    estimator, bundle_dir, version, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        assert client.deploy("lr-api", "lr").deployments[0].state == "READY"
    wait_until(lambda: cluster.agent.router.has_route("lr-api"))
    with grpc.insecure_channel(cluster.agent.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), cluster.agent.dataplane, estimator, rows


def request_of(rows: np.ndarray, name: str = "input") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lr-api")
    request.inputs.add(name=name, datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    return request


def answer(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(list(response.outputs[0].shape))


def test_small_requests_are_answered_on_the_loop_with_the_same_values(served) -> None:
    stub, core, estimator, rows = served
    before = core.answered_on_loop
    stub.ModelInfer(request_of(rows[:1]))  # the model's first call is made on a worker (it may compile)
    assert core.answered_on_loop == before
    for i in range(20):
        np.testing.assert_allclose(answer(stub.ModelInfer(request_of(rows[i : i + 1]))),
                                   estimator.predict_proba(rows[i : i + 1]), atol=1e-6)
    assert core.answered_on_loop - before == 20


def test_a_request_past_inline_max_bytes_is_answered_on_a_worker(served) -> None:
    stub, core, estimator, rows = served
    big = np.tile(rows, (1 + (core.inline_max_bytes // rows.nbytes) * 2, 1))
    before_loop, before_all = core.answered_on_loop, core.answered
    np.testing.assert_allclose(answer(stub.ModelInfer(request_of(big))), estimator.predict_proba(big), atol=1e-6)
    assert core.answered_on_loop == before_loop
    assert core.answered == before_all + 1, "a request moved to a worker is counted once"


def test_an_error_on_the_loop_gets_its_status_and_the_agent_keeps_serving(served) -> None:
    stub, core, estimator, rows = served
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_of(rows[:1], name="wrong"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown input 'wrong'" in info.value.details()
    np.testing.assert_allclose(answer(stub.ModelInfer(request_of(rows[:1]))), estimator.predict_proba(rows[:1]),
                               atol=1e-6)


# ---- the batcher on an event loop ----
@pytest.fixture(scope="module")
def native(logistic_model):
    import scoring_core

    estimator, bundle_dir, version, rows = logistic_model
    return NativeModel(scoring_core.load(bundle_dir, version=version)), estimator, rows


def test_alone_on_the_loop_the_batcher_scores_in_place(native) -> None:
    model, estimator, rows = native
    batcher = MicroBatcher(model)
    with on_event_loop(), pytest.raises(WouldBlock, match="longer than an event loop"):
        batcher.predict(matrix(rows[:3]))  # a model's first call, which may compile, is never made on a loop
    batcher.predict(matrix(rows[:3]))
    with on_event_loop():
        out = batcher.predict(matrix(rows[:3]))
    np.testing.assert_allclose(probabilities(out), estimator.predict_proba(rows[:3]), atol=1e-5)
    assert batcher.queued_rows == 0


def test_on_the_loop_the_batcher_refuses_to_wait_for_another_batch(native) -> None:
    model, _, rows = native
    gated = Gated(model)
    gated.scores_inline = True
    batcher = MicroBatcher(gated)
    leader = threading.Thread(target=batcher.predict, args=(matrix(rows[:2]),))
    leader.start()
    wait_until(lambda: gated.entered == 2)  # a worker's batch is being scored
    with on_event_loop(), pytest.raises(WouldBlock):
        batcher.predict(matrix(rows[:1]))
    assert batcher.queued_rows == 0, "a refused request leaves nothing behind"
    gated.gate.set()
    leader.join()


class _Blocking(LoadedModel):
    """A model whose predict may block (the default of every engine but the native one)."""

    def __init__(self, inner: LoadedModel) -> None:
        self.inner = inner
        self.input_schema, self.output_schema = inner.input_schema, inner.output_schema
        self.version, self.platform = inner.version, "python"

    def predict(self, batch: pa.RecordBatch, deadline: float | None = None) -> pa.RecordBatch:
        return self.inner.predict(batch)


def test_on_the_loop_the_batcher_refuses_models_that_may_block_delays_and_costly_batches(native) -> None:
    model, estimator, rows = native
    with on_event_loop(), pytest.raises(WouldBlock, match="python model"):
        MicroBatcher(_Blocking(model)).predict(matrix(rows[:1]))
    with on_event_loop(), pytest.raises(WouldBlock, match="max_delay"):
        MicroBatcher(model, BatchingSettings(max_delay_us=1000)).predict(matrix(rows[:1]))
    batcher = MicroBatcher(model)
    batcher.predict(matrix(rows[:2]))  # measured off the loop
    batcher._cost.per_row_ns = INLINE_BUDGET_NS / 10  # as a model that costs 25 us a row would measure
    with on_event_loop(), pytest.raises(WouldBlock, match="longer than an event loop"):
        batcher.predict(matrix(rows[:20]))
    np.testing.assert_allclose(probabilities(batcher.predict(matrix(rows[:20]))), estimator.predict_proba(rows[:20]),
                               atol=1e-5)


def test_statistics_count_the_queue_as_perf_analyzer_expects(served) -> None:
    """perf_analyzer accepts a window's statistics only when inference_stats.queue.count rose."""
    stub, core, estimator, rows = served

    def queued() -> int:
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name="lr-api")).model_stats[0].inference_stats.queue.count

    before = queued()
    for i in range(3):
        stub.ModelInfer(request_of(rows[i : i + 1]))
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="lr-api")).model_stats[0]
    assert stats.inference_stats.queue.count == before + 3
    assert int(stats.version) >= 1


def test_a_models_cost_is_timed_on_every_early_call_then_one_in_eight(native) -> None:
    """Reading the thread's CPU clock is a system call: after the first 64 calls only a sample is
    timed, and the guess still follows a model that became slower."""
    model, _, rows = native
    batcher = MicroBatcher(model)
    cost = batcher._cost
    timed = [cost.timed() for _ in range(64 + 80)]
    assert all(timed[:64]) and sum(timed[64:]) == 10
    for _ in range(200):  # the matrix lane's calls, off the loop
        assert batcher.predict_matrix(rows[:1].astype(np.float32)) is not None
    assert 0 < cost.guess_ns(1) < INLINE_BUDGET_NS
    slower = cost.fixed_ns * 50
    for _ in range(400):
        if cost.timed():
            cost.measured(1, int(slower))
    assert cost.guess_ns(1) > slower * 0.9
