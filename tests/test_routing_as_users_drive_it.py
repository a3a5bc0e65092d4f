"""Routing as a user drives it, over a real coordinator and agent in this process: the CLI's
weights mean what they say, feedback by key credits the arm that served the key, and a
pipeline's deploy stage never replaces a policy it cannot compose with."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from milepost.cli import main
from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.routing import spec as routing_spec
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.pipeline_spec import spec_from_dict
from tests.agent.mesh import infer
from tests.conftest import wait_until


@pytest.fixture
def served(cluster, logistic_model):
    """The cluster with one model pushed as m, m2 and m3, and endpoint ep serving m (single)."""
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        for name in ("m", "m2", "m3"):
            client.push_model(bundle_dir, name)
        client.deploy("ep", "m")
    channel = grpc.insecure_channel(cluster.agent.address)
    yield cluster, oip_grpc.GRPCInferenceServiceStub(channel), rows[:1]
    channel.close()


def cli(cluster, *args: str) -> int:
    return main([*args, "--coordinator", cluster.coordinator.address])


def served_arm(stub, rows, key: str) -> str:
    """The arm of ep that answered a request with this key (the milepost-arm response parameter)."""
    return infer(stub, "ep", rows, **{"milepost-key": key}).arm


def wait_for_arms(stub, rows, arms: set[str]) -> None:
    """Until the agent routes ep by the new policy (the coordinator pushes it in the background)."""
    wait_until(lambda: served_arm(stub, rows, "probe") in arms, timeout=30)


# ---- 1. weights ----
def test_an_arm_of_weight_zero_gets_no_traffic_and_is_shown_as_zero(served, capsys) -> None:
    cluster, stub, rows = served
    assert cli(cluster, "split", "ep", "--arm", "a=m::0", "--arm", "b=m2::1") == 0
    shown = capsys.readouterr().out
    wait_for_arms(stub, rows, {"a", "b"})
    got = Counter(served_arm(stub, rows, f"user-{i}") for i in range(200))
    assert got == {"b": 200}
    assert "a(0), b(1)" in shown
    with cluster.client as client:
        (endpoint,) = client.endpoints()
    assert [(a.name, a.weight) for a in endpoint.routing.arms] == [("a", 0.0), ("b", 1.0)]


def test_weights_are_shown_as_the_user_gave_them(served, capsys) -> None:
    cluster, _, _ = served
    assert cli(cluster, "split", "ep", "--arm", "a=m::3", "--arm", "b=m2::1") == 0
    assert "a(3), b(1)" in capsys.readouterr().out
    assert cli(cluster, "endpoints") == 0
    assert "a(3)" in capsys.readouterr().out


@pytest.mark.parametrize("weights, needle", [
    ((0.0, 0.0), r"arm weights are all 0 \('a', 'b'\)"),
    ((math.nan, 1.0), r"arm 'a' has weight nan"),
    ((1.0, math.inf), r"arm 'b' has weight inf"),
    ((1.0, -1.0), r"arm 'b' has weight -1"),
], ids=["all-zero", "nan", "inf", "negative"])
def test_weights_that_share_no_traffic_are_refused_naming_the_arm(served, capsys, weights, needle) -> None:
    cluster, stub, rows = served
    a, b = weights
    assert cli(cluster, "split", "ep", "--arm", f"a=m::{a}", "--arm", f"b=m2::{b}") == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and re.search(needle, err), err
    with cluster.client as client:
        with pytest.raises(InvalidArgument, match=needle):
            client.split("ep", {"a": ("m", "", a), "b": ("m2", "", b)})
        assert [e.policy for e in client.endpoints()] == ["single"]  # nothing changed
    assert served_arm(stub, rows, "k") == "primary"


# ---- 2. bandit feedback ----
def test_feedback_by_key_credits_the_arm_that_served_the_key(served, capsys) -> None:
    cluster, stub, rows = served
    assert cli(cluster, "bandit", "ep", "--arm", "a=m", "--arm", "b=m2", "--algorithm", "thompson") == 0
    wait_for_arms(stub, rows, {"a", "b"})
    keys = [f"user-{i}" for i in range(16)]
    served_by = {key: served_arm(stub, rows, key) for key in keys}
    capsys.readouterr()
    for key in keys:  # every feedback pushes new rewards (a new route generation) to the agent
        value = "1" if served_by[key] == "b" else "0"
        assert cli(cluster, "feedback", "ep", "--key", key, "--value", value) == 0
        assert capsys.readouterr().out.strip().endswith(f"credited to arm {served_by[key]}"), key
    # Served after some feedback, credited after more.
    later = {f"late-{i}": served_arm(stub, rows, f"late-{i}") for i in range(8)}
    with cluster.client as client:
        for key, arm in later.items():
            assert client.feedback("ep", key, 1.0) == arm, key
        report = {a.arm: a.feedback_count for a in client.report("ep").arms}
    expected = Counter([*served_by.values(), *later.values()])
    assert {arm: report.get(arm, 0) for arm in ("a", "b")} == {arm: expected.get(arm, 0) for arm in ("a", "b")}


def test_feedback_for_a_key_no_agent_served_is_refused_for_a_bandit(served) -> None:
    cluster, stub, rows = served
    assert cli(cluster, "bandit", "ep", "--arm", "a=m", "--arm", "b=m2") == 0
    wait_for_arms(stub, rows, {"a", "b"})
    with cluster.client as client:
        with pytest.raises(FailedPrecondition, match="--arm"):
            client.feedback("ep", "never-seen", 1.0)
        assert client.feedback("ep", "never-seen", 1.0, arm="a") == "a"


def test_feedback_asks_every_agent_which_arm_served_the_key(served, tmp_path) -> None:
    from agent.server import Agent, AgentConfig

    cluster, _, rows = served
    assert cli(cluster, "bandit", "ep", "--arm", "a=m", "--arm", "b=m2") == 0
    other = Agent(AgentConfig(coordinator=cluster.coordinator.address, data_dir=tmp_path / "a2", port=0, agent_id="a2",
                              token=cluster.coordinator.local_agent_token()))
    other.start()
    try:
        wait_until(lambda: other.router.has_route("ep"), timeout=30)
        with grpc.insecure_channel(other.address) as channel:  # a2 serves ep from a1's replicas
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            wait_for_arms(stub, rows, {"a", "b"})
            served_by = {f"k{i}": served_arm(stub, rows, f"k{i}") for i in range(6)}
        with cluster.client as client:
            assert {key: client.feedback("ep", key, 1.0) for key in served_by} == served_by
    finally:
        other.stop()


# ---- 3. pipeline deploy stages ----
def run_deploy_stage(cluster, **params) -> tuple[str, str]:
    """Submit a one-stage pipeline deploying to ep; the stage's final state and message."""
    spec = spec_from_dict({"name": "p", "stages": [{"name": "ship", "kind": "deploy", "params": params}]}, base=Path("."))
    with cluster.client as client:
        run = client.submit_pipeline(spec)
        deadline = time.monotonic() + 60
        while run.state not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.1)
            run = client.run(run.run_id)
    (stage,) = run.stages
    return stage.state, stage.message


@pytest.mark.parametrize("policy", ["canary", "single"])
def test_a_deploy_stage_never_replaces_a_bandit(served, policy) -> None:
    cluster, stub, rows = served
    assert cli(cluster, "bandit", "ep", "--arm", "a=m", "--arm", "b=m2") == 0
    state, message = run_deploy_stage(cluster, endpoint="ep", model="m3", policy=policy)
    assert state == "FAILED"
    assert "bandit" in message and "promote" in message, message
    with cluster.client as client:
        (endpoint,) = client.endpoints()
    assert endpoint.policy == "bandit" and sorted(d.model for d in endpoint.deployments) == ["m", "m2"]
    assert served_arm(stub, rows, "k") in ("a", "b")


def test_a_canary_deploy_stage_takes_the_same_gate_defaults_as_the_cli(served) -> None:
    cluster, _, _ = served
    state, message = run_deploy_stage(cluster, endpoint="ep", model="m3", policy="canary")
    assert state == "SUCCEEDED", message
    with cluster.client as client:
        client.deploy("other", "m")
        assert cli(cluster, "canary", "other", "--candidate", "m3") == 0
        by_name = {e.name: e.routing for e in client.endpoints()}
    pipeline, by_cli = by_name["ep"], by_name["other"]
    assert [a.name for a in pipeline.arms] == ["baseline", "candidate"]
    assert pipeline.gates == by_cli.gates
    assert list(pipeline.steps) == list(by_cli.steps) == list(routing_spec.DEFAULT_CANARY_STEPS)
    assert pipeline.window_s == by_cli.window_s == routing_spec.DEFAULT_CANARY_WINDOW_S
    assert pipeline.gates.min_requests == routing_spec.DEFAULT_MIN_REQUESTS
    assert pipeline.gates.max_error_rate == routing_spec.DEFAULT_MAX_ERROR_RATE


def test_an_explicit_zero_error_rate_gate_is_kept(served) -> None:
    cluster, _, _ = served
    state, message = run_deploy_stage(cluster, endpoint="ep", model="m3", policy="canary", max_error_rate=0)
    assert state == "SUCCEEDED", message
    with cluster.client as client:
        (endpoint,) = client.endpoints()
    assert endpoint.routing.gates.HasField("max_error_rate") and endpoint.routing.gates.max_error_rate == 0
