"""The data plane against a real in-process agent: values, typed contents, and every error status."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc


@pytest.fixture
def served(cluster, logistic_model):
    estimator, bundle_dir, version, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        endpoint = client.deploy("lr-api", "lr")
    assert endpoint.deployments[0].state == "READY"
    channel = grpc.insecure_channel(cluster.agent.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel), estimator, rows, version
    channel.close()


def matrix_request(rows: np.ndarray, name: str = "lr-api") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    return request


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    out = response.outputs[0]
    assert out.name == "probabilities" and out.datatype == "FP64"
    return np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(list(out.shape))


def code_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_raw_matrix_matches_sklearn(served) -> None:
    stub, estimator, rows, version = served
    response = stub.ModelInfer(matrix_request(rows), timeout=10)
    assert response.model_version == "1"  # the registry's number; the digest is in ModelConfig
    np.testing.assert_allclose(probabilities(response), estimator.predict_proba(rows), atol=1e-5)


def test_typed_contents_per_feature(served) -> None:
    stub, estimator, rows, _ = served
    request = pb.ModelInferRequest(model_name="lr-api")
    for j in range(rows.shape[1]):
        tensor = request.inputs.add(name=f"f{j}", datatype="FP64", shape=[len(rows)])
        tensor.contents.fp64_contents.extend(rows[:, j].astype(np.float64).tolist())
    response = stub.ModelInfer(request, timeout=10)
    np.testing.assert_allclose(probabilities(response), estimator.predict_proba(rows), atol=1e-5)


def test_bad_requests_get_their_status_and_the_agent_keeps_serving(served) -> None:
    stub, estimator, rows, _ = served
    short = matrix_request(rows)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    code, message = code_of(lambda: stub.ModelInfer(short, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input" in message

    odd_type = matrix_request(rows)
    odd_type.inputs[0].datatype = "FP42"
    code, message = code_of(lambda: stub.ModelInfer(odd_type, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "FP42" in message

    wrong_width = matrix_request(rows[:, :-1])
    code, message = code_of(lambda: stub.ModelInfer(wrong_width, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    no_inputs = pb.ModelInferRequest(model_name="lr-api")
    code, _ = code_of(lambda: stub.ModelInfer(no_inputs, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    code, message = code_of(lambda: stub.ModelInfer(matrix_request(rows, "nope"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in message

    wrong_version = matrix_request(rows)
    wrong_version.model_version = "0000"
    code, _ = code_of(lambda: stub.ModelInfer(wrong_version, timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND

    unknown_output = matrix_request(rows)
    unknown_output.outputs.add(name="logits")
    code, message = code_of(lambda: stub.ModelInfer(unknown_output, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "logits" in message

    huge = pb.ModelInferRequest(model_name="lr-api")
    huge.inputs.add(name="input", datatype="FP32", shape=[10**12, rows.shape[1]])
    huge.raw_input_contents.append(b"\0" * 8)
    code, _ = code_of(lambda: stub.ModelInfer(huge, timeout=10))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)

    response = stub.ModelInfer(matrix_request(rows), timeout=10)
    np.testing.assert_allclose(probabilities(response), estimator.predict_proba(rows), atol=1e-5)


def test_oversized_message_is_resource_exhausted(served) -> None:
    stub, _, rows, _ = served
    n = (70 << 20) // (4 * rows.shape[1])
    code, _ = code_of(lambda: stub.ModelInfer(matrix_request(np.zeros((n, rows.shape[1]), np.float32)), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadline_shorter_than_the_work_is_deadline_exceeded(served) -> None:
    stub, estimator, rows, _ = served
    big = np.zeros((1_000_000, rows.shape[1]), np.float32)  # 32 MB: cannot arrive and be scored in 1 ms
    code, _ = code_of(lambda: stub.ModelInfer(matrix_request(big), timeout=0.001))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    response = stub.ModelInfer(matrix_request(rows), timeout=10)
    np.testing.assert_allclose(probabilities(response), estimator.predict_proba(rows), atol=1e-5)


def test_concurrent_requests_each_get_their_own_rows(served) -> None:
    stub, estimator, rows, _ = served
    expected = estimator.predict_proba(rows)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(20):
                k = (offset + i) % len(rows)
                got = probabilities(stub.ModelInfer(matrix_request(rows[k : k + 3]), timeout=10))
                np.testing.assert_allclose(got, expected[k : k + 3], atol=1e-5)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t * 7,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_health_service_reports_serving(cluster) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(cluster.agent.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
