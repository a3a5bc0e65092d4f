"""Remote members on a second agent, nested endpoints, and metadata of routed endpoints."""

from __future__ import annotations

import socket
import time

import grpc
import numpy as np

from milepost.inference import grpc_predict_v2_pb2 as oip
from tests.agent.mesh import arm, code_of, direct, infer, infer_request, route


def dead_address() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_remote_member_answers_through_another_agent(mesh) -> None:
    a2 = mesh.address("a2")
    mesh.set_routes(route("far", "single", [arm("remote", "dep-remote")], {"dep-remote": [a2]}))
    stub = mesh.inference("a1")
    rows = mesh.rows[:7]
    expected = direct(mesh, "dep-remote", rows, agent="a2")
    np.testing.assert_allclose(expected, mesh.models["lr_b"].estimator.predict_proba(rows), atol=1e-5)
    answer = infer(stub, "far", rows)
    np.testing.assert_array_equal(answer.values, expected)
    assert answer.arm == "remote" and answer.deployment == "dep-remote"
    assert answer.version == mesh.models["lr_b"].version

    metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name="far"), timeout=10)
    assert metadata.versions == [mesh.models["lr_b"].version]
    assert [list(t.shape) for t in metadata.inputs] == [[-1, 8]]
    assert stub.ModelReady(oip.ModelReadyRequest(name="far"), timeout=5).ready


def test_an_unreachable_replica_is_skipped_for_the_next_one(mesh) -> None:
    a2 = mesh.address("a2")
    mesh.set_routes(route("far-retry", "single", [arm("remote", "dep-remote")], {"dep-remote": [dead_address(), a2]}),
                    agents=("a1",))
    stub = mesh.inference("a1")
    rows = mesh.rows[:3]
    expected = direct(mesh, "dep-remote", rows, agent="a2")
    for _ in range(6):  # round robin starts on the dead address every other request
        np.testing.assert_array_equal(infer(stub, "far-retry", rows).values, expected)

    mesh.set_routes(route("far-dead", "single", [arm("remote", "dep-remote")], {"dep-remote": [dead_address()]}),
                    agents=("a1",))
    code, message = code_of(lambda: infer(stub, "far-dead", rows))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_every_replica_is_tried_and_dead_ones_go_last(mesh) -> None:
    """Two of three replicas dead (an agent lost, another draining away): every call still
    answers, and after the first failures the live one is tried first."""
    a2 = mesh.address("a2")
    dead = [dead_address(), dead_address()]
    mesh.set_routes(route("far-three", "single", [arm("remote", "dep-remote")], {"dep-remote": [*dead, a2]}),
                    agents=("a1",))
    stub = mesh.inference("a1")
    rows = mesh.rows[:3]
    expected = direct(mesh, "dep-remote", rows, agent="a2")
    for _ in range(9):
        np.testing.assert_array_equal(infer(stub, "far-three", rows).values, expected)
    route_table = mesh.agents["a1"].router.table.get("far-three")
    remote = route_table.remotes["dep-remote"]
    now = time.monotonic()
    assert sorted(a for a, until in remote._suspects.items() if until > now) == sorted(dead)


def test_a_local_replica_is_preferred_and_the_remote_one_is_used_when_alone(mesh) -> None:
    a1, a2 = mesh.address("a1"), mesh.address("a2")
    # dep-c runs on both agents: a1 answers it itself, a2 too; dep-b only on a1, so a2 calls a1.
    mesh.set_routes(route("mixed", "ensemble", [arm("b", "dep-b"), arm("c", "dep-c")],
                          {"dep-b": [a1], "dep-c": [a1, a2]}, combiner="mean"))
    rows = mesh.rows[:4]
    expected = (direct(mesh, "dep-b", rows) + direct(mesh, "dep-c", rows)) / 2
    for agent in ("a1", "a2"):
        answer = infer(mesh.inference(agent), "mixed", rows)
        np.testing.assert_allclose(answer.values, expected, rtol=1e-12)
    a1_agent = mesh.agents["a1"]
    remote_calls = a1_agent.dataplane.statistics(a1_agent.table.get("dep-b").spec.endpoint).execution_count
    assert remote_calls >= 1  # a2's request for dep-b reached a1 as a direct deployment call


def test_direct_deployment_calls_are_not_routed_and_unknown_ones_are_not_found(mesh) -> None:
    stub = mesh.inference("a2")
    code, message = code_of(lambda: stub.ModelInfer(
        infer_request("anything", mesh.rows[:1], **{"milepost-deployment": "dep-a"}), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "dep-a" in message
    config = stub.ModelConfig(oip.ModelConfigRequest(name="dep-remote"), timeout=5).config
    assert config.parameters["deployment_id"].string_value == "dep-remote"


def test_a_split_arm_can_be_an_ensemble_endpoint(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(
        route("outer", "split", [arm("plain", "dep-a", weight=1), arm("blend", endpoint="inner", weight=1)], {"dep-a": [a1]}),
        route("inner", "ensemble", [arm("b", "dep-b"), arm("c", "dep-c")], {"dep-b": [a1], "dep-c": [a1]}, combiner="mean"),
    )
    stub = mesh.inference()
    rows = mesh.rows[:3]
    blend = (direct(mesh, "dep-b", rows) + direct(mesh, "dep-c", rows)) / 2
    plain = direct(mesh, "dep-a", rows)
    seen = set()
    for i in range(40):
        answer = infer(stub, "outer", rows, **{"milepost-key": f"n{i}"})
        seen.add(answer.arm)
        if answer.arm == "blend":
            np.testing.assert_allclose(answer.values, blend, rtol=1e-12)
            assert answer.deployment == "dep-b,dep-c"
        else:
            np.testing.assert_array_equal(answer.values, plain)
    assert seen == {"plain", "blend"}
    assert stub.ModelReady(oip.ModelReadyRequest(name="outer"), timeout=5).ready


def test_routing_cycles_are_failed_precondition(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(
        route("ping", "split", [arm("to-pong", endpoint="pong", weight=1)], {}),
        route("pong", "single", [arm("to-ping", endpoint="ping")], {}),
        route("deep0", "single", [arm("x", endpoint="deep1")], {}),
        route("deep1", "single", [arm("x", endpoint="deep2")], {}),
        route("deep2", "single", [arm("x", endpoint="deep3")], {}),
        route("deep3", "single", [arm("x", endpoint="deep4")], {}),
        route("deep4", "single", [arm("x", "dep-a")], {"dep-a": [a1]}),
    )
    stub = mesh.inference()
    code, message = code_of(lambda: stub.ModelInfer(infer_request("ping", mesh.rows[:1]), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "ping" in message and "pong" in message
    code, _ = code_of(lambda: stub.ModelInfer(infer_request("deep0", mesh.rows[:1]), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert infer(stub, "deep1", mesh.rows[:1]).deployment == "dep-a"  # four levels are fine


def test_a_pinned_version_picks_the_arm_serving_it(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("pin", "split", [arm("a", "dep-a", weight=1), arm("b", "dep-b", weight=0.001)],
                          {"dep-a": [a1], "dep-b": [a1]}))
    stub = mesh.inference()
    request = infer_request("pin", mesh.rows[:1])
    request.model_version = mesh.models["lr_b"].version[:10]
    response = stub.ModelInfer(request, timeout=10)
    assert response.parameters["milepost-arm"].string_param == "b"
    request.model_version = "0000"
    code, _ = code_of(lambda: stub.ModelInfer(request, timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND


def test_a_deadline_shorter_than_the_work_is_deadline_exceeded_through_a_remote_member(mesh) -> None:
    a2 = mesh.address("a2")
    mesh.set_routes(route("far-slow", "single", [arm("remote", "dep-remote")], {"dep-remote": [a2]}), agents=("a1",))
    stub = mesh.inference()
    infer(stub, "far-slow", mesh.rows[:1])  # learn the schema first
    big = np.zeros((1_000_000, 8), np.float32)  # 32 MB, relayed to a2 and back: not done in 20 ms
    code, _ = code_of(lambda: stub.ModelInfer(infer_request("far-slow", big), timeout=0.02))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
