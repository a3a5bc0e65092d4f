"""ModelStreamInfer (Triton's bidirectional stream) against a real agent on loopback port 0 serving a real
model: tritonclient.grpc's start_stream / async_stream_infer unchanged, answers carrying their request ids,
per-request errors in error_message with the stream going on, and the values ModelInfer gives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from tests.agent.served import ENDPOINT, matrix_request, probabilities, run_triton_client, running


@pytest.fixture(scope="module")
def served(logistic_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    estimator, bundle_dir, _, rows = logistic_model
    with running(tmp_path_factory.mktemp("stream"), bundle_dir) as cluster:
        yield cluster.agent, cluster.stub, estimator, rows


def test_tritonclient_streams_and_errors_do_not_end_the_stream(served, tmp_path: Path) -> None:
    agent, stub, estimator, rows = served
    expected = probabilities(stub.ModelInfer(matrix_request(rows), timeout=10))
    np.testing.assert_allclose(expected, estimator.predict_proba(rows), atol=1e-5)
    answers = run_triton_client("stream", agent.address, rows, tmp_path)["answers"]
    assert len(answers) == 6
    good, misnamed, unknown, one_row, empty, after = answers
    assert good["id"] == "good-0" and np.array_equal(np.asarray(good["probabilities"]), expected)
    assert "'bogus'" in misnamed["error"] and "'input'" in misnamed["error"]  # names the input it expects
    assert "no-such-model" in unknown["error"]
    assert one_row["id"] == "one-row-3" and np.array_equal(np.asarray(one_row["probabilities"]), expected[:1])
    assert empty["id"] == "empty-4" and empty["shape"] == [0, 2]
    assert after["id"] == "good-5" and np.array_equal(np.asarray(after["probabilities"]), expected)


def test_each_answer_carries_its_request_id_and_error(served) -> None:
    agent, stub, _, rows = served
    before = agent.dataplane.statistics(ENDPOINT).inference_count
    sent = [matrix_request(rows[:3], "a"), matrix_request(rows[:3], "b", name="features"),
            matrix_request(rows[:3], "c", model="no-such-model"), matrix_request(rows[3:5], "d")]
    answers = list(stub.ModelStreamInfer(iter(sent), timeout=30))
    assert [a.infer_response.id for a in answers] == ["a", "b", "c", "d"]
    assert [bool(a.error_message) for a in answers] == [False, True, True, False]
    assert "'features'" in answers[1].error_message and answers[1].infer_response.model_name == ENDPOINT
    assert "not served" in answers[2].error_message
    for answer, request in ((answers[0], sent[0]), (answers[3], sent[3])):
        assert answer.infer_response.raw_output_contents == stub.ModelInfer(request, timeout=10).raw_output_contents
    assert agent.dataplane.statistics(ENDPOINT).inference_count - before == 3 + 2 + 3 + 2  # streamed, then unary


def test_answers_are_flagged_final_when_the_client_asks(served) -> None:
    """tritonclient's enable_empty_final_response=True: each request's one answer says it is the last."""
    _, stub, _, rows = served
    sent = [matrix_request(rows[:2], "asks"), matrix_request(rows[:2], "asks-bad", name="features"),
            matrix_request(rows[:2], "plain")]
    for request in sent[:2]:
        request.parameters["triton_enable_empty_final_response"].bool_param = True
    answers = list(stub.ModelStreamInfer(iter(sent), timeout=30))
    assert [a.infer_response.id for a in answers] == ["asks", "asks-bad", "plain"]  # one answer each, no empty ones
    flags = [a.infer_response.parameters["triton_final_response"].bool_param
             if "triton_final_response" in a.infer_response.parameters else None for a in answers]
    assert flags == [True, True, None] and answers[1].error_message and not answers[0].error_message


def test_a_stream_that_sends_nothing_ends_and_frees_its_worker(logistic_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MILEPOST_STREAM_IDLE_TIMEOUT_S", "0.5")
    _, bundle_dir, _, rows = logistic_model
    with running(tmp_path, bundle_dir) as cluster:

        def stalls() -> Iterator[pb.ModelInferRequest]:
            yield matrix_request(rows[:2], "first")
            time.sleep(5)  # longer than the idle timeout

        answers = cluster.stub.ModelStreamInfer(stalls(), timeout=30)
        assert next(answers).infer_response.id == "first"
        with pytest.raises(grpc.RpcError) as ended:
            next(answers)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "stream_idle_timeout_s" in ended.value.details()


def test_a_stream_needs_a_token_where_inference_does(tmp_path) -> None:
    with running(tmp_path, inference_auth=True) as cluster:
        with pytest.raises(grpc.RpcError) as refused:
            list(cluster.stub.ModelStreamInfer(iter([matrix_request(np.zeros((1, 8)))]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
