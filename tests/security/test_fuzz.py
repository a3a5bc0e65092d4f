"""Fuzzing the servers with Hypothesis: whatever arrives, the answer is a status a person can act
on (never INTERNAL or UNKNOWN), and the server answers the next call.

Bounded for CI (a fixed number of examples, no deadline per example); the status histogram
of each run is printed, for the record (`pytest -s tests/security/test_fuzz.py`).
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.v1 import coordinator_pb2

BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "fp32", "", "COMPLEX64"]


def code_of(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


tensors = st.builds(
    lambda name, datatype, shape, raw: (name, datatype, shape, raw),
    st.sampled_from(["input", "f0", "x", "", "input\x00"]),
    st.sampled_from(DATATYPES),
    st.lists(st.integers(min_value=-3, max_value=70), min_size=0, max_size=3),
    st.one_of(st.none(), st.binary(max_size=600)),
)


def infer_request(model: str, version: str, inputs, parameters) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, model_version=version)
    raws = []
    for name, datatype, shape, raw in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is None:
            tensor.contents.fp32_contents.extend([0.5] * min(64, max(0, sum(shape))))
        raws.append(raw or b"")
    if any(raw is not None for _, _, _, raw in inputs):
        request.raw_input_contents.extend(raws)
    for key, value in parameters.items():
        request.parameters[key].string_param = value
    return request


@pytest.fixture
def served(cluster, logistic_model):
    _, bundle_dir, _, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        client.deploy("scores", "lr")
    channel = grpc.insecure_channel(cluster.agent.address)
    yield oip_grpc.GRPCInferenceServiceStub(channel), channel
    channel.close()


def test_model_infer_fuzz_never_answers_internal(served) -> None:
    stub, channel = served
    seen: Counter[str] = Counter()

    @FUZZ
    @given(
        model=st.sampled_from(["scores", "nope", "", "scores/../x"]),
        version=st.sampled_from(["", "1", "abc"]),
        inputs=st.lists(tensors, max_size=3),
        parameters=st.dictionaries(st.sampled_from(["milepost-key", "milepost-deployment", "x"]),
                                   st.text(max_size=8), max_size=2),
    )
    def one(model, version, inputs, parameters) -> None:
        code = code_of(lambda: stub.ModelInfer(infer_request(model, version, inputs, parameters), timeout=10))
        seen[code.name] += 1
        assert code not in BAD, f"{code.name} for {model!r} {inputs!r}"

    one()
    undecodable = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    for raw in (b"\x10", b"\xff" * 7, b"\x0a\xff\xff\xff\xff\x0f"):
        code = code_of(lambda raw=raw: undecodable(raw, timeout=10))
        seen[code.name] += 1
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.ServerLive(oip.ServerLiveRequest(), timeout=10).live
    print(f"\nModelInfer fuzz statuses: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 150


def test_every_coordinator_request_type_fuzzed_never_answers_internal(cluster) -> None:
    """Random bytes as every request type of every coordinator RPC, sent as the admin."""
    token = cluster.coordinator.admin_token_file.read_text().strip()
    channel = grpc.insecure_channel(cluster.coordinator.address)
    metadata = [("authorization", f"Bearer {token}")]
    service = coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"]
    seen: Counter[str] = Counter()
    kinds = {"request_serializer": None, "response_deserializer": None}
    def fuzz(method) -> None:
        path = f"/milepost.v1.CoordinatorService/{method.name}"

        @settings(max_examples=12, deadline=None, derandomize=True)
        @given(payload=st.binary(max_size=200))
        def one(payload: bytes) -> None:
            def send() -> None:
                if method.client_streaming:
                    channel.stream_unary(path, **kinds)(iter([payload]), metadata=metadata, timeout=10)
                elif method.server_streaming:
                    for _ in zip(range(3), channel.unary_stream(path, **kinds)(payload, metadata=metadata, timeout=3)):
                        pass
                else:
                    channel.unary_unary(path, **kinds)(payload, metadata=metadata, timeout=10)

            code = code_of(send)
            seen[code.name] += 1
            assert code not in BAD, f"{method.name} answered {code.name} to {payload!r}"

        one()

    for method in service.methods:
        fuzz(method)
    with cluster.client as client:
        assert client.list_models() is not None  # still answering
    channel.close()
    print(f"\ncoordinator fuzz statuses: {dict(sorted(seen.items()))}")
