"""A served ONNX graph takes a matrix under its own input name as well as "input" (issue 15).

``torch.onnx.export(..., input_names=["x"])`` names the graph's input ``x``: a client that
reads the graph sends ``x``, and that is a right name, on the core path (the graph
compiled) and on the onnx engine (the graph as it is) alike, over gRPC and REST. A wrong
name is still INVALID_ARGUMENT, naming both."""

from __future__ import annotations

import http.client
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

N_FEATURES = 6


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """A coordinator and an agent with its REST front end, on loopback ports."""
    from tests.conftest import started_cluster

    yield from started_cluster(tmp_path, http_port=0)


def _exported(activation: Any, path: Path) -> Any:
    """A torch MLP exported by torch.onnx with its input named ``x`` and output ``y``."""
    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 8), activation, torch.nn.Linear(8, 3),
                                 torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros(4, N_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return module


def _grpc(address: str, endpoint: str, name: str, X: np.ndarray) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name=endpoint)
    request.inputs.add(name=name, datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


def _rest(port: int, endpoint: str, name: str, X: np.ndarray) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(X.shape),
                                   "data": X.reshape(-1).tolist()}]})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/v2/models/{endpoint}/infer", body, {"content-type": "application/json"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


@pytest.mark.parametrize(("activation", "flavor"), [(torch.nn.ReLU(), "scoring_core"), (torch.nn.ELU(), "onnx")],
                         ids=["core", "onnx-engine"])
def test_the_graphs_own_input_and_output_names_are_kept(servers: Any, activation: Any, flavor: str, tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    module = _exported(activation, path)
    with servers.client as client:
        assert client.push_model(path, "mlp").flavor == flavor
        assert client.deploy("mlp-api", "mlp").deployments[0].state == "READY"
    X = np.random.default_rng(7).normal(size=(5, N_FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(X)).numpy()

    for name in ("x", "input"):
        response = _grpc(servers.agent.address, "mlp-api", name, X)
        (output,), (raw,) = response.outputs, response.raw_output_contents
        assert output.name == "y"  # the graph's own output name, compiled or on onnxruntime
        values = np.frombuffer(raw, "<f4" if output.datatype == "FP32" else "<f8").reshape(len(X), 3)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5)
    status, answer = _rest(servers.agent.http_port, "mlp-api", "x", X)
    assert status == 200, answer
    assert answer["outputs"][0]["name"] == "y"
    np.testing.assert_allclose(np.asarray(answer["outputs"][0]["data"]).reshape(len(X), 3), expected, rtol=0, atol=1e-5)

    with pytest.raises(grpc.RpcError) as caught:
        _grpc(servers.agent.address, "mlp-api", "z", X)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown input 'z'; the model expects one matrix input 'input' or 'x'" in caught.value.details()
    status, answer = _rest(servers.agent.http_port, "mlp-api", "z", X)
    assert status == 400 and "'input' or 'x'" in json.dumps(answer)
