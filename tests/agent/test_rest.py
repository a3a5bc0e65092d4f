"""The REST front end against a real agent on loopback port 0 serving a real model: tritonclient.http
unchanged, raw HTTP for the errors, and the same values as the gRPC path, bit for bit."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.agent.served import ENDPOINT, matrix_request, probabilities, run_triton_client, running
from tests.conftest import wait_until


@dataclass
class Served:
    agent: Any
    stub: pb_grpc.GRPCInferenceServiceStub
    estimator: Any
    rows: np.ndarray
    version: str  # as the gRPC front end reports it

    @property
    def hostport(self) -> str:
        return hostport(self.agent.http_url)

    def grpc_probabilities(self, rows: np.ndarray) -> np.ndarray:
        return probabilities(self.stub.ModelInfer(matrix_request(rows), timeout=10))


@pytest.fixture(scope="module")
def served(logistic_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    estimator, bundle_dir, _, rows = logistic_model
    with running(tmp_path_factory.mktemp("rest"), bundle_dir) as cluster:
        version = cluster.stub.ModelMetadata(pb.ModelMetadataRequest(name=ENDPOINT), timeout=10).versions[0]
        yield Served(cluster.agent, cluster.stub, estimator, rows, version)


def hostport(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def request(where: str, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call to ``where`` (host:port): status, headers (lower case), body."""
    connection = http.client.HTTPConnection(where, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def infer_json(served: Served, body: dict, model: str = ENDPOINT) -> tuple[int, dict]:
    status, _, content = request(served.hostport, "POST", f"/v2/models/{model}/infer", json.dumps(body).encode())
    return status, json.loads(content)


def matrix_input(rows: np.ndarray, name: str = "input") -> dict:
    return {"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}


def test_tritonclient_http_works_unchanged(served: Served, tmp_path: Path) -> None:
    rows = served.rows
    expected = served.grpc_probabilities(rows)
    np.testing.assert_allclose(expected, served.estimator.predict_proba(rows), atol=1e-5)
    seen = run_triton_client("http", served.hostport, rows, tmp_path)

    assert seen["live"] and seen["ready"] and seen["model_ready"] and seen["model_ready_of_version"]
    assert seen["unknown_model_ready"] is False
    assert seen["server_metadata"]["name"] == "milepost"
    assert seen["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, rows.shape[1]]}]
    assert seen["metadata"]["versions"] == [served.version]
    assert seen["metadata_of_version"]["name"] == ENDPOINT
    assert seen["config"]["input"][0]["dims"] == [-1, rows.shape[1]] and seen["config"]["input"][0]["data_type"] == "TYPE_FP32"
    assert seen["binary"]["id"] == "r-1"
    for how in ("json", "gzip"):
        assert np.array_equal(np.asarray(seen[how]), expected), how
    assert np.array_equal(np.asarray(seen["binary"]["probabilities"]), expected)
    np.testing.assert_allclose(seen["named"], expected, atol=1e-6)  # FP64 features, cast to the model's float32

    assert seen["err_unknown_model"]["status"] == "404" and "no-such-model" in seen["err_unknown_model"]["message"]
    assert seen["err_unknown_metadata"]["status"] == "404"
    assert seen["err_unknown_input"]["status"] == "400" and "bogus" in seen["err_unknown_input"]["message"]
    before, after = seen["stats_before"]["model_stats"][0], seen["stats_after"]["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 4 * len(rows)
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert [s["name"] for s in seen["stats_all"]["model_stats"]] == [ENDPOINT]


def test_json_and_binary_tensors_give_the_grpc_values(served: Served) -> None:
    rows = served.rows
    expected = served.grpc_probabilities(rows)
    status, answer = infer_json(served, {"id": "j", "inputs": [matrix_input(rows)]})
    assert status == 200 and answer["id"] == "j" and answer["model_version"] == served.version
    out = answer["outputs"][0]
    assert out["name"] == "probabilities" and out["datatype"] == "FP64" and out["shape"] == list(expected.shape)
    assert np.array_equal(np.asarray(out["data"]).reshape(out["shape"]), expected)
    assert answer["parameters"]["milepost-deployment"]

    nested = {"inputs": [{**matrix_input(rows), "data": rows.tolist()}]}  # data may be nested as the shape
    assert np.array_equal(np.asarray(infer_json(served, nested)[1]["outputs"][0]["data"]).reshape(expected.shape), expected)

    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    status, headers, content = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", header + rows.tobytes(),
                                       {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    size = int(headers["inference-header-content-length"])
    out = json.loads(content[:size])["outputs"][0]
    assert out["parameters"]["binary_data_size"] == expected.nbytes and "data" not in out
    assert np.array_equal(np.frombuffer(content[size:], "<f8").reshape(out["shape"]), expected)


def test_one_row_and_an_empty_batch(served: Served) -> None:
    one = served.rows[:1]
    status, answer = infer_json(served, {"inputs": [matrix_input(one)]})
    assert status == 200 and answer["outputs"][0]["shape"] == [1, 2]
    assert np.array_equal(np.asarray(answer["outputs"][0]["data"]), served.grpc_probabilities(one).ravel())
    empty = np.zeros((0, served.rows.shape[1]), np.float32)
    status, answer = infer_json(served, {"inputs": [matrix_input(empty)]})
    assert status == 200 and answer["outputs"][0]["shape"] == [0, 2] and answer["outputs"][0]["data"] == []


def test_errors_get_their_http_status_and_a_json_body(served: Served) -> None:
    rows = served.rows
    status, answer = infer_json(served, {"inputs": [matrix_input(rows, name="features")]})
    assert status == 400 and "'features'" in answer["error"] and "'input'" in answer["error"]  # names the expected input
    status, answer = infer_json(served, {"inputs": [matrix_input(rows)]}, model="no-such-model")
    assert status == 404 and "no-such-model" in answer["error"]
    status, _, content = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", b'{"inputs": [')
    assert status == 400 and "JSON" in json.loads(content)["error"]
    short = {**matrix_input(rows), "data": rows.ravel().tolist()[:-1]}
    status, answer = infer_json(served, {"inputs": [short]})
    assert status == 400 and "'input'" in answer["error"] and str(rows.size) in answer["error"]
    text = {**matrix_input(rows), "data": ["a"] * rows.size}
    assert infer_json(served, {"inputs": [text]})[0] == 400
    status, answer = infer_json(served, {"inputs": [matrix_input(rows)], "outputs": [{"name": "logits"}]})
    assert status == 400 and "logits" in answer["error"]
    status, answer = infer_json(served, {"inputs": [matrix_input(rows)], "parameters": {"timeout": 1}})
    assert status == 504 and "deadline" in answer["error"]
    status, answer = infer_json(served, {"inputs": [{**matrix_input(rows), "parameters": {"shared_memory_region": "r"}}]})
    assert status == 400 and "shared memory" in answer["error"]
    status, _, content = request(served.hostport, "GET", f"/v2/models/{ENDPOINT}/infer")
    assert status == 405 and "POST" in json.loads(content)["error"]
    status, _, content = request(served.hostport, "GET", "/v2/repository/index")
    assert status == 404 and "/v2" in json.loads(content)["error"]
    status, _, content = request(served.hostport, "GET", f"/v2/models/{ENDPOINT}/versions/999")
    assert status == 404 and "999" in json.loads(content)["error"]
    # The agent keeps serving after all of that.
    assert np.array_equal(np.asarray(infer_json(served, {"inputs": [matrix_input(rows)]})[1]["outputs"][0]["data"]),
                          served.grpc_probabilities(rows).ravel())


def test_a_matrix_input_of_the_wrong_rank_says_it_must_be_2d_on_both_front_ends(served: Served) -> None:
    k = served.rows.shape[1]
    for shape in ([k], [1, 1, k]):
        values = served.rows[:1].ravel()
        status, answer = infer_json(served, {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                                         "data": values.tolist()}]})
        assert status == 400 and f"must be 2-D [n, {k}]" in answer["error"] and str(shape) in answer["error"]
        request_ = pb.ModelInferRequest(model_name=ENDPOINT)
        request_.inputs.add(name="input", datatype="FP32", shape=shape)
        request_.raw_input_contents.append(values.astype(np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as caught:
            served.stub.ModelInfer(request_, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and caught.value.details() == answer["error"]


def test_a_binary_input_of_the_wrong_size_is_named_by_binary_data_size(served: Served) -> None:
    rows = served.rows[:2]
    short = rows.tobytes()[:-4]
    header = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(short)}}]}).encode()
    status, _, content = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", header + short,
                                 {"Inference-Header-Content-Length": str(len(header))})
    error = json.loads(content)["error"]
    assert status == 400 and f"binary_data_size should be {rows.nbytes} bytes" in error
    assert "raw_input_contents" not in error and str(len(short)) in error


def test_an_oversized_body_is_refused_before_it_is_read(served: Served) -> None:
    limit = served.agent.rest.max_body_bytes
    connection = http.client.HTTPConnection(served.hostport, timeout=30)
    connection.putrequest("POST", f"/v2/models/{ENDPOINT}/infer")
    connection.putheader("Content-Length", str(limit + 1))
    connection.endheaders()  # no body follows: the answer must not wait for it
    response = connection.getresponse()
    assert response.status == 413 and str(limit) in json.loads(response.read())["error"]
    connection.close()
    # A chunked body (no Content-Length) is counted as it arrives: refused once it passes the limit.
    host, port = served.hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(f"POST /v2/models/{ENDPOINT}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    f"{limit + 1:x}\r\n".encode())
        raw.sendall(b" " * (limit + 1))  # and no more: what the server leaves unread would reset the connection
        answer = raw.makefile("rb").readline()
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_body_is_served(served: Served) -> None:
    body = json.dumps({"inputs": [matrix_input(served.rows)]}).encode()
    status, _, content = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", iter([body[:10], body[10:]]))
    assert status == 200 and json.loads(content)["outputs"][0]["shape"] == [len(served.rows), 2]


def test_gzip_bombs_stop_at_the_body_limit(served: Served) -> None:
    limit = served.agent.rest.max_body_bytes
    bomb = gzip.compress(b" " * (limit + 1))
    status, _, content = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    status, _, _ = request(served.hostport, "POST", f"/v2/models/{ENDPOINT}/infer", b"{}", {"Content-Encoding": "br"})
    assert status == 415


def test_not_ready_while_draining(served: Served) -> None:
    served.agent.dataplane.ready = False
    try:
        status, _, content = request(served.hostport, "GET", "/v2/health/ready")
        assert status == 503 and json.loads(content) == {"ready": False}
        assert request(served.hostport, "GET", "/v2/health/live")[0] == 200
    finally:
        served.agent.dataplane.ready = True
    assert request(served.hostport, "GET", "/v2/health/ready")[0] == 200


def test_bodies_being_received_count_against_max_inflight_bytes(logistic_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MILEPOST_MAX_INFLIGHT_BYTES", str(1 << 20))
    _, bundle_dir, _, rows = logistic_model
    with running(tmp_path, bundle_dir) as cluster:
        where = hostport(cluster.agent.http_url)
        host, port = where.rsplit(":", 1)
        stalled = socket.create_connection((host, int(port)))  # claims 900 kB and sends none of it
        stalled.sendall(f"POST /v2/models/{ENDPOINT}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n".encode())
        body = json.dumps({"inputs": [matrix_input(rows)]}).encode() + b" " * 200_000
        wait_until(lambda: request(where, "POST", f"/v2/models/{ENDPOINT}/infer", body)[0] == 429)
        stalled.close()
        wait_until(lambda: request(where, "POST", f"/v2/models/{ENDPOINT}/infer", body)[0] == 200)


def test_inference_auth_takes_a_bearer_token(tmp_path) -> None:
    from milepost.core import auth

    with running(tmp_path, inference_auth=True) as cluster:
        _, viewer = cluster.coordinator.tokens.create("reader", auth.VIEWER)
        where, as_viewer = hostport(cluster.agent.http_url), {"Authorization": f"Bearer {viewer}"}
        status, _, content = request(where, "GET", "/v2/health/ready")
        assert status == 401 and "Bearer" in json.loads(content)["error"]
        assert request(where, "GET", "/v2", headers={"Authorization": "Bearer mpt_0000_forged"})[0] == 401
        wait_until(lambda: request(where, "GET", "/v2", headers=as_viewer)[0] == 200, timeout=15)
        assert request(where, "GET", "/v2/models/nope", headers=as_viewer)[0] == 404


def test_tls_when_the_agent_has_tls(logistic_model, tmp_path) -> None:
    from milepost.cli.certs import init
    from milepost.core.tls import Tls

    certs = tmp_path / "certs"
    init(certs, ["coordinator", "agent", "client"], [])
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig

    def files(name: str) -> Tls:
        return Tls(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0, tls=files("coordinator")))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "a", port=0, agent_id="tls",
                              token=coordinator.local_agent_token(), tls=files("agent"), http_port=0))
    agent.start()
    try:
        assert agent.http_url.startswith("https://")
        hostport = urllib.parse.urlsplit(agent.http_url).netloc
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(certs / "client.pem", certs / "client.key")
        connection = http.client.HTTPSConnection(hostport, context=context, timeout=10)
        connection.request("GET", "/v2/health/live")
        assert connection.getresponse().status == 200
        connection.close()
        anonymous = ssl.create_default_context(cafile=str(certs / "ca.pem"))  # no client certificate: mutual TLS refuses
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            connection = http.client.HTTPSConnection(hostport, context=anonymous, timeout=10)
            connection.request("GET", "/v2/health/live")
            connection.getresponse().read()
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain = http.client.HTTPConnection(hostport, timeout=10)
            plain.request("GET", "/v2/health/live")
            plain.getresponse().read()
    finally:
        agent.stop(grace=0)
        coordinator.stop()


def test_milepost_up_serves_rest_and_says_where(up) -> None:
    state = json.loads((up.data_dir / "up.json").read_text())
    url = urllib.parse.urlsplit(state["http"])
    connection = http.client.HTTPConnection(url.netloc, timeout=10)
    connection.request("GET", "/v2/health/live")
    assert connection.getresponse().status == 200
    connection.close()


def test_json_tensors_of_every_kind_decode_as_their_grpc_form() -> None:
    import pyarrow as pa

    from agent import rest_tensors
    from milepost.core import tensor_codec
    from milepost.core.errors import InvalidArgument

    schema = pa.schema([("city", pa.string()), ("visits", pa.int32()), ("member", pa.bool_()), ("spend", pa.float16())])
    body = {"inputs": [
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": [["Lyon"], ["Zürich"]]},
        {"name": "visits", "shape": [2, 1], "datatype": "INT32", "data": [[3], [-7]]},
        {"name": "member", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        {"name": "spend", "shape": [2], "datatype": "FP16", "data": [1.5, 2]},
    ]}
    parsed = rest_tensors.parse(json.dumps(body).encode(), None)
    batch = tensor_codec.decode_inputs(rest_tensors.to_protobuf(parsed, "m", ""), schema)
    assert batch.to_pydict() == {"city": ["Lyon", "Zürich"], "visits": [3, -7], "member": [True, False], "spend": [1.5, 2.0]}

    def refused(inputs: list, header_length: str | None = None, binary: bytes = b"") -> str:
        raw = json.dumps({"inputs": inputs}).encode()
        with pytest.raises(InvalidArgument) as err:
            length = header_length if header_length is not None else str(len(raw)) if binary else None
            parsed = rest_tensors.parse(raw + binary, length)
            tensor_codec.decode_inputs(rest_tensors.to_protobuf(parsed, "m", ""), schema)
        return err.value.message

    assert "outside" in refused([{"name": "visits", "shape": [1], "datatype": "INT32", "data": [2**40]}])
    assert "true/false" in refused([{"name": "visits", "shape": [1], "datatype": "INT32", "data": [True]}])
    assert "fraction" in refused([{"name": "visits", "shape": [1], "datatype": "INT8", "data": [1.5]}])
    assert "strings" in refused([{"name": "city", "shape": [1], "datatype": "BYTES", "data": [7]}])
    assert "nested evenly" in refused([{"name": "visits", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3]]}])
    assert "binary_data_size 8" in refused([{"name": "visits", "shape": [2], "datatype": "INT32",
                                             "parameters": {"binary_data_size": 8}}], binary=b"\0" * 4)
    assert "4 bytes of binary data" in refused([{"name": "visits", "shape": [1], "datatype": "INT32",
                                                 "parameters": {"binary_data_size": 4}}], binary=b"\0" * 8)
    assert "neither" in refused([{"name": "visits", "shape": [1], "datatype": "INT32"}])
    assert "FP42" in refused([{"name": "visits", "shape": [1], "datatype": "FP42", "data": [1]}])
    assert "Inference-Header-Content-Length" in refused([], header_length="-3")


def test_binary_and_json_outputs_of_every_kind() -> None:
    import pyarrow as pa

    from agent import rest_tensors
    from milepost.core import tensor_codec

    batch = pa.RecordBatch.from_pydict({"label": ["yes", "no"], "score": pa.array([0.25, 0.5], pa.float32()),
                                        "flag": [True, False]})
    response = pb.ModelInferResponse(model_name="m", model_version="1", id="x")
    tensor_codec.encode_outputs(batch, response)
    parsed = rest_tensors.parse(json.dumps({"inputs": [], "outputs": [{"name": "label"}, {"name": "score", "parameters": {
        "binary_data": True}}, {"name": "flag"}]}).encode(), None)
    content, header_size = rest_tensors.render(response, parsed)
    header = json.loads(content[:header_size])
    assert header["id"] == "x" and [o["name"] for o in header["outputs"]] == ["label", "score", "flag"]
    assert header["outputs"][0]["data"] == ["yes", "no"] and header["outputs"][2]["data"] == [True, False]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(content[header_size:], "<f4").tolist() == [0.25, 0.5]
