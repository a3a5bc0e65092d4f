"""Shadows never reach the client; ensembles equal their combiner applied to the members' own answers."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.v1 import agent_pb2
from tests.agent.mesh import arm, code_of, direct, infer, route
from tests.conftest import wait_until


def arm_metrics(mesh, endpoint: str, arm_name: str):
    status = mesh.control().Status(agent_pb2.AgentStatusRequest(), timeout=5)
    return next((m for m in status.metrics if m.endpoint == endpoint and m.arm == arm_name), None)


def test_shadow_answers_never_reach_the_client_and_are_compared(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("shadowed", "shadow", [arm("live", "dep-a"), arm("dark", "dep-b")],
                          {"dep-a": [a1], "dep-b": [a1]}, shadow_fraction=1.0))
    stub = mesh.inference()
    rows = mesh.rows[:5]
    primary, shadow = direct(mesh, "dep-a", rows), direct(mesh, "dep-b", rows)
    assert not np.allclose(primary, shadow)
    n = 30
    for _ in range(n):
        answer = infer(stub, "shadowed", rows)
        np.testing.assert_array_equal(answer.values, primary)
        assert answer.arm == "live" and answer.deployment == "dep-a"
    dark = wait_until(lambda: (m := arm_metrics(mesh, "shadowed", "dark")) and m.requests == n and m.shadow_compared == n * 5 and m)
    expected = np.abs(shadow[:, -1] - primary[:, -1]).sum() * n
    assert dark.errors == 0
    assert dark.shadow_abs_diff_sum == pytest.approx(expected, rel=1e-6)
    live = arm_metrics(mesh, "shadowed", "live")
    assert live.requests == n and live.predictions == n * 5 and live.shadow_compared == 0
    assert live.prediction_sum == pytest.approx(primary[:, -1].sum() * n, rel=1e-9)


def test_a_failing_shadow_never_fails_a_request(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("shadow-broken", "shadow", [arm("live", "dep-a"), arm("broken", "dep-narrow")],
                          {"dep-a": [a1], "dep-narrow": [a1]}, shadow_fraction=1.0))
    stub = mesh.inference()
    rows = mesh.rows[:3]
    for _ in range(10):
        np.testing.assert_array_equal(infer(stub, "shadow-broken", rows).values, direct(mesh, "dep-a", rows))
    broken = wait_until(lambda: (m := arm_metrics(mesh, "shadow-broken", "broken")) and m.errors == 10 and m)
    assert broken.requests == 10 and broken.shadow_compared == 0


def ensemble(mesh, name: str, combiner: str, arms, **params):
    a1 = mesh.address("a1")
    deps = {a.deployment_id for a in arms} | ({params["stacker_deployment_id"]} if "stacker_deployment_id" in params else set())
    return route(name, "ensemble", arms, {d: [a1] for d in deps}, combiner=combiner, **params)


def test_ensemble_mean_weighted_and_vote_equal_the_combiner_over_the_members(mesh) -> None:
    members = [arm("a", "dep-a", weight=1), arm("b", "dep-b", weight=3), arm("c", "dep-c", weight=2)]
    mesh.set_routes(ensemble(mesh, "e-mean", "mean", members), ensemble(mesh, "e-weighted", "weighted", members),
                    ensemble(mesh, "e-vote", "vote", members))
    stub = mesh.inference()
    rows = mesh.rows
    outs = np.stack([direct(mesh, d, rows) for d in ("dep-a", "dep-b", "dep-c")])  # (3, n, 2)

    mean = infer(stub, "e-mean", rows)
    np.testing.assert_allclose(mean.values, outs.mean(axis=0), rtol=1e-12)
    assert mean.arm == "a,b,c" and mean.deployment == "dep-a,dep-b,dep-c"

    weights = np.array([1.0, 3.0, 2.0]) / 6.0
    np.testing.assert_allclose(infer(stub, "e-weighted", rows).values, np.tensordot(weights, outs, axes=1), rtol=1e-12)

    votes = np.argmax(outs, axis=2)  # (3, n)
    shares = np.stack([(votes == k).mean(axis=0) for k in range(outs.shape[2])], axis=1)
    voted = infer(stub, "e-vote", rows).values
    np.testing.assert_array_equal(voted, shares)
    assert set(np.unique(voted)) <= {0.0, 1 / 3, 2 / 3, 1.0}
    assert (votes.min(axis=0) != votes.max(axis=0)).any(), "the members should disagree somewhere"


def test_stacking_feeds_the_members_outputs_to_a_compiled_stacker(mesh) -> None:
    members = [arm("a", "dep-a"), arm("b", "dep-b")]
    mesh.set_routes(ensemble(mesh, "e-stack", "stacking", members, stacker_deployment_id="dep-stacker"))
    stub = mesh.inference()
    rows = mesh.rows
    features = np.hstack([direct(mesh, "dep-a", rows), direct(mesh, "dep-b", rows)]).astype(np.float32)
    stacker = mesh.models["stacker"].estimator
    answer = infer(stub, "e-stack", rows)
    np.testing.assert_allclose(answer.values, stacker.predict_proba(features), atol=1e-6)
    assert answer.deployment == "dep-a,dep-b,dep-stacker"
    config = stub.ModelConfig(oip.ModelConfigRequest(name="e-stack"), timeout=5).config
    assert config.parameters["deployment_id"].string_value == "dep-stacker"
    assert arm_metrics(mesh, "e-stack", "(stacker)").requests >= 1


def test_member_failure_policy_fail_and_skip(mesh) -> None:
    members = [arm("a", "dep-a"), arm("narrow", "dep-narrow"), arm("b", "dep-b")]
    mesh.set_routes(ensemble(mesh, "e-fail", "mean", members),
                    ensemble(mesh, "e-skip", "mean", members, on_member_failure="skip"),
                    ensemble(mesh, "e-late", "mean", [arm("a", "dep-a"), arm("b", "dep-b")],
                             on_member_failure="skip", member_timeout_s=1e-9))
    stub = mesh.inference()
    rows = mesh.rows[:4]
    code, message = code_of(lambda: infer(stub, "e-fail", rows))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "width" in message

    skipped = infer(stub, "e-skip", rows)
    np.testing.assert_allclose(skipped.values, (direct(mesh, "dep-a", rows) + direct(mesh, "dep-b", rows)) / 2, rtol=1e-12)
    assert skipped.arm == "a,b"
    assert arm_metrics(mesh, "e-skip", "narrow").errors >= 1
    # every member late: skip has nothing to combine and fails with the first member's status
    code, message = code_of(lambda: infer(stub, "e-late", rows))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "'a'" in message


def test_members_with_different_outputs_cannot_be_averaged(mesh) -> None:
    mesh.set_routes(ensemble(mesh, "e-mixed", "mean", [arm("clf", "dep-a"), arm("regressor", "dep-reg")]))
    code, message = code_of(lambda: infer(mesh.inference(), "e-mixed", mesh.rows[:2]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "regressor" in message and "clf" in message
