"""Numbers the coordinator takes are finite and in range: NaN and the infinities get
INVALID_ARGUMENT (never INTERNAL) and change nothing, over a real cluster."""

from __future__ import annotations

import math
import re

import pytest

from milepost.core.errors import InvalidArgument
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2

NAN, INF = math.nan, math.inf


@pytest.fixture
def served(cluster, logistic_model):
    """The cluster with model churn pushed and served as endpoint api (a single policy)."""
    _, bundle_dir, version, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("api", "churn")
    return cluster


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_feedback_that_is_not_a_finite_number_is_refused_and_not_counted(served, value) -> None:
    with served.client as client:
        with pytest.raises(InvalidArgument, match="feedback value must be a finite number"):
            client.feedback("api", "k1", value, arm="primary")
        with pytest.raises(InvalidArgument, match="feedback values must be finite numbers"):
            client.feedback("api", "k1", [1.0, value], arm="primary")  # one outcome a row
        assert client.feedback("api", "k1", 1.0, arm="primary") == "primary"
        (arm,) = client.report("api").arms
    assert arm.feedback_count == 1 and arm.feedback_mean == 1.0


def arms(*weights: float) -> list[pb.ArmSpec]:
    names = ("baseline", "candidate", "third")
    return [pb.ArmSpec(name=names[i], model="churn", weight=w) for i, w in enumerate(weights)]


@pytest.mark.parametrize("policy, arm_specs, needle", [
    (routing_pb2.RoutingPolicy(kind="split"), arms(1.0, NAN), "arm weights must be finite"),
    (routing_pb2.RoutingPolicy(kind="split"), arms(1.0, INF), "arm weights must be finite"),
    (routing_pb2.RoutingPolicy(kind="ensemble", combiner="weighted"), arms(NAN, 1.0, 2.0), "arm weights"),
    (routing_pb2.RoutingPolicy(kind="canary", steps=[5, NAN]), arms(1, 1), "canary steps must be finite"),
    (routing_pb2.RoutingPolicy(kind="canary", window_s=NAN), arms(1, 1), "window_s must be finite"),
    (routing_pb2.RoutingPolicy(kind="canary", window_s=INF), arms(1, 1), "window_s must be finite"),
    (routing_pb2.RoutingPolicy(kind="canary", gates=routing_pb2.CanaryGates(max_error_rate=NAN)), arms(1, 1),
     "gates.max_error_rate must be finite"),
    (routing_pb2.RoutingPolicy(kind="canary", gates=routing_pb2.CanaryGates(max_error_rate=5)), arms(1, 1),
     "in [0, 1]"),
    (routing_pb2.RoutingPolicy(kind="canary", gates=routing_pb2.CanaryGates(max_p99_latency_ms=INF)), arms(1, 1),
     "gates.max_p99_latency_ms must be finite"),
    (routing_pb2.RoutingPolicy(kind="canary", gates=routing_pb2.CanaryGates(max_divergence=NAN)), arms(1, 1),
     "gates.max_divergence must be finite"),
    (routing_pb2.RoutingPolicy(kind="shadow", shadow_fraction=NAN), arms(1, 1), "shadow_fraction must be finite"),
    (routing_pb2.RoutingPolicy(kind="ensemble", member_timeout_s=NAN), arms(1, 1), "member_timeout_s must be finite"),
    (routing_pb2.RoutingPolicy(kind="bandit", bandit="epsilon_greedy", epsilon=NAN), arms(1, 1),
     "epsilon must be finite"),
], ids=["split-nan", "split-inf", "ensemble-weight-nan", "steps-nan", "window-nan", "window-inf",
        "error-rate-nan", "error-rate-range", "p99-inf", "divergence-nan", "shadow-nan", "member-timeout-nan",
        "epsilon-nan"])
def test_policies_with_non_finite_numbers_are_refused_and_change_nothing(served, policy, arm_specs, needle) -> None:
    with served.client as client:
        before = client.endpoints()
        with pytest.raises(InvalidArgument, match=re.escape(needle)):
            client.set_policy("api", policy, arm_specs)
        with pytest.raises(InvalidArgument, match=re.escape(needle)):
            client.set_policy("fresh", policy, arm_specs)
        assert client.endpoints() == before  # api is still the single policy; no endpoint 'fresh'


@pytest.mark.parametrize("cpu", [NAN, INF])
def test_resources_that_are_not_finite_are_refused(served, cpu) -> None:
    with served.client as client, pytest.raises(InvalidArgument, match="finite"):
        client.deploy("other", "churn", cpu=cpu)
