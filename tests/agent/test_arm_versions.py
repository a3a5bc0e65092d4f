"""An endpoint whose arms serve different model versions, on real agents on loopback: a request,
metadata, readiness and statistics calls naming a version agree on which arm that is, on gRPC
and REST; a digest prefix matching two arms' versions is INVALID_ARGUMENT listing both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.v1 import agent_pb2
from tests.agent.conftest import started_mesh
from tests.agent.mesh import FLAVOR, Mesh, Model, arm, code_of, infer, infer_request, route
from tests.agent.test_rest import hostport, request

NAME = "churn"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Agents serving two versions of one model, numbered 3 and 7, whose digests start alike
    (trained until two do: of 17 digests two share a first hex digit), as deployments dep-3, dep-7
    and dep-3-again (version 3 once more)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    import scoring_core
    from scoring_core import bundle

    X, y = make_classification(n_samples=300, n_features=8, random_state=2)
    X = X.astype(np.float32)
    by_first_digit: dict[str, tuple[Model, bytes]] = {}
    for i in range(17):
        estimator = LogisticRegression(C=0.01 * (i + 1), max_iter=500).fit(X[:200], y[:200])
        directory = tmp_path_factory.mktemp("bundles") / f"m{i}"
        version = scoring_core.compile(estimator).save(directory)
        found = (Model(f"m{i}", estimator, version), bundle.pack(directory))
        earlier = by_first_digit.setdefault(version[0], found)
        if earlier is not found:
            break
    compiled = {label: (Model(label, model.estimator, model.version), archive)
                for label, (model, archive) in (("v3", earlier), ("v7", found))}
    for mesh in started_mesh((compiled, X[200:]), tmp_path_factory.mktemp("agents"), http_port=0):
        for deployment, model, number in (("dep-3", "v3", 3), ("dep-7", "v7", 7), ("dep-3-again", "v3", 3)):
            mesh.control("a1").Load(agent_pb2.LoadRequest(
                deployment_id=deployment, endpoint=f"direct-{deployment}", model=NAME,
                version=mesh.models[model].version, flavor=FLAVOR, version_number=number,
            ), timeout=60)
        yield mesh


def split(mesh: Mesh, endpoint: str, second: str = "dep-7") -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route(endpoint, "split", [arm("a", "dep-3", weight=1), arm("b", second, weight=0.001)],
                          {"dep-3": [a1], second: [a1]}), agents=("a1",))


def common_prefix(a: str, b: str) -> str:
    return os.path.commonprefix([a, b])


def test_an_ambiguous_digest_prefix_is_invalid_argument_listing_both_arms(mesh: Mesh) -> None:
    split(mesh, "amb")
    v3, v7 = mesh.models["v3"].version, mesh.models["v7"].version
    shared = common_prefix(v3, v7)
    assert shared, "the fixture trains two models whose digests start alike"
    stub = mesh.inference()
    pinned = infer_request("amb", mesh.rows[:1])
    pinned.model_version = f"sha256:{shared}"
    code, message = code_of(lambda: stub.ModelInfer(pinned, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "ambiguous" in message and "arm 'a' (version 3, sha256:" in message and "arm 'b' (version 7, sha256:" in message
    assert v3[:12] in message and v7[:12] in message
    code, _ = code_of(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="amb", version=pinned.model_version),
                                                 timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    where = hostport(mesh.agents["a1"].http_url)
    body = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": mesh.rows[0].tolist()}]}
    status, _, content = request(where, "POST", f"/v2/models/amb/versions/sha256:{shared}/infer",
                                 json.dumps(body).encode())
    assert status == 400 and "ambiguous" in json.loads(content)["error"]
    # One more digit names one of them.
    pinned.model_version = f"sha256:{v7[:len(shared) + 1]}"
    assert stub.ModelInfer(pinned, timeout=10).parameters["milepost-arm"].string_param == "b"


def test_arms_serving_one_version_are_not_ambiguous(mesh: Mesh) -> None:
    split(mesh, "same", second="dep-3-again")
    pinned = infer_request("same", mesh.rows[:1])
    pinned.model_version = f"sha256:{mesh.models['v3'].version[:1]}"
    response = mesh.inference().ModelInfer(pinned, timeout=10)
    assert response.model_version == "3" and response.parameters["milepost-arm"].string_param == "a"
    stub = mesh.inference()
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="same"), timeout=10).versions) == ["3"]
    (entry,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="same"), timeout=10).model_stats
    assert entry.version == "3" and entry.inference_count == 1


def test_every_arms_version_is_described_ready_and_counted(mesh: Mesh) -> None:
    split(mesh, "sp")
    stub = mesh.inference()
    assert infer(stub, "sp", mesh.rows[:2]).version == "3"  # arm a, by weight
    for _ in range(2):
        pinned = infer_request("sp", mesh.rows[:3])
        pinned.model_version = "7"
        assert stub.ModelInfer(pinned, timeout=10).model_version == "7"

    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="sp"), timeout=10)
    assert list(metadata.versions) == ["3", "7"]
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="sp", version="7"), timeout=10).versions) == ["3", "7"]
    assert stub.ModelReady(pb.ModelReadyRequest(name="sp", version="7"), timeout=10).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="sp", version="5"), timeout=10).ready
    config = stub.ModelConfig(pb.ModelConfigRequest(name="sp", version="7"), timeout=10).config
    assert config.parameters["version"].string_value == "7"
    assert config.parameters["digest"].string_value == mesh.models["v7"].version
    assert config.parameters["routing_policy"].string_value == "split"

    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="sp"), timeout=10).model_stats
    assert {s.version: (s.inference_count, s.execution_count, s.inference_stats.success.count) for s in stats} == {
        "3": (2, 1, 1), "7": (6, 2, 2)}
    (only7,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="sp", version="7"), timeout=10).model_stats
    assert only7.version == "7" and only7.inference_count == 6 and only7.last_inference > 0

    where = hostport(mesh.agents["a1"].http_url)
    status, _, content = request(where, "GET", "/v2/models/sp")
    assert status == 200 and json.loads(content)["versions"] == ["3", "7"]
    status, _, content = request(where, "GET", "/v2/models/sp/versions/7")
    assert status == 200 and json.loads(content)["versions"] == ["3", "7"]
    status, _, _ = request(where, "GET", "/v2/models/sp/versions/7/ready")
    assert status == 200
    status, _, content = request(where, "GET", "/v2/models/sp/versions/7/stats")
    assert status == 200
    (entry,) = json.loads(content)["model_stats"]
    assert entry["version"] == "7" and int(entry["inference_count"]) == 6
