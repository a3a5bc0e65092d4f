"""The canary control loop without a cluster: a real store, fake agents, a fake clock.

Agents are the one thing faked here: their Load/Unload/SetRoutes calls are
recorded, and their per-arm counters are fed to ArmStats as heartbeats would.
Everything else (store, placement, endpoints, gates, the audit trail) is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.arm_stats import ArmStats
from coordinator.canary import CanaryController
from coordinator.endpoints import Endpoints, Placement, policy_of
from coordinator.reconciler import Reconciler
from coordinator.store import ModelRecord, Store
from milepost.core.arm_counters import LATENCY_BOUNDS_MS
from milepost.core.routing.policy import Arm
from milepost.v1 import routing_pb2, types_pb2
from tests.conftest import wait_until


class FakeAgents:
    """Stands in for AgentClients: records what the coordinator asked agents to do."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []
        self.unloaded: list[tuple[str, str]] = []

    def load(self, address: str, request, timeout: float = 0) -> None:
        self.loaded.append((address, request.deployment_id))

    def unload(self, address: str, deployment_id: str, timeout: float = 0) -> None:
        self.unloaded.append((address, deployment_id))

    def set_routes(self, address: str, table, timeout: float = 0) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path):
    clock = Clock()
    store = Store(tmp_path / "db.sqlite")
    fake = FakeAgents()
    reconciler = Reconciler(store, fake, ttl_s=1e9, clock=clock)
    endpoints = Endpoints(store, reconciler, clock, on_change=lambda: None)
    stats = ArmStats()
    controller = CanaryController(endpoints, stats, clock)
    info = types_pb2.AgentInfo(
        agent_id="a1", address="127.0.0.1:1", resources=types_pb2.Resources(cpu_cores=4, memory_bytes=1 << 34),
        engines=[types_pb2.EngineInfo(name="native", available=True)],
    )
    store.upsert_agent("a1", info.address, info.SerializeToString(), clock())
    for version in ("a" * 64, "b" * 64):
        store.add_model(ModelRecord("m", version, "scoring_core", 1, clock(), json.dumps({})))
    endpoints.set_policy("ep", routing_pb2.RoutingPolicy(kind="single"), [Arm("primary", model="m", version="a" * 64, weight=1.0)], Placement())
    policy = routing_pb2.RoutingPolicy(
        kind="canary", steps=[10, 50, 100], window_s=60,
        gates=routing_pb2.CanaryGates(max_error_rate=0.05, max_p99_latency_ms=100, min_requests=20),
    )
    endpoints.set_policy(
        "ep", policy, [Arm("baseline", model="m", version="a" * 64, weight=1.0), Arm("candidate", model="m", version="b" * 64, weight=1.0)], Placement()
    )
    yield clock, store, stats, controller, fake
    reconciler.close()
    store.close()


class Traffic:
    """Cumulative per-arm counters of one agent, reported like heartbeats do."""

    def __init__(self, stats: ArmStats) -> None:
        self.stats = stats
        self.arms: dict[str, routing_pb2.ArmMetrics] = {}
        self.uptime = 0.0

    def serve(self, arm: str, requests: int, errors: int = 0, latency_ms: float = 3.0, prediction: float = 0.5) -> None:
        m = self.arms.setdefault(arm, routing_pb2.ArmMetrics(
            endpoint="ep", arm=arm, latency_buckets=[0] * len(LATENCY_BOUNDS_MS)))
        m.requests += requests
        m.errors += errors
        bucket = next(i for i, bound in enumerate(LATENCY_BOUNDS_MS) if latency_ms <= bound)
        m.latency_buckets[bucket] += requests
        m.latency_sum_ms += latency_ms * requests
        m.predictions += requests
        m.prediction_sum += prediction * requests
        m.prediction_sum_squares += prediction * prediction * requests
        self.uptime += 1
        self.stats.record("a1", self.uptime, list(self.arms.values()))


def kinds(store: Store) -> list[str]:
    return [e.kind for e in store.list_events("ep")]


def test_healthy_candidate_steps_up_and_is_promoted(world) -> None:
    clock, store, stats, controller, fake = world
    traffic = Traffic(stats)
    assert controller.tick() == []  # opens the first window
    for expected_step in (1, 2):
        traffic.serve("baseline", 180)
        traffic.serve("candidate", 20)
        clock.now += 61
        decisions = controller.tick()
        assert decisions and f"step {expected_step}" in decisions[0]
        assert policy_of(store.get_endpoint("ep")).step == expected_step
        controller.tick()  # opens the window of the new step
    traffic.serve("candidate", 50)
    clock.now += 61
    assert "promoted" in controller.tick()[0]
    endpoint = store.get_endpoint("ep")
    assert endpoint.policy == "single"
    assert [d.version for d in endpoint.deployments] == ["b" * 64]
    assert kinds(store)[-4:] == ["policy", "canary_step", "canary_step", "promote"]


def test_erroring_candidate_is_rolled_back_with_the_reason(world) -> None:
    clock, store, stats, controller, fake = world
    traffic = Traffic(stats)
    controller.tick()
    traffic.serve("baseline", 180)
    traffic.serve("candidate", 20, errors=5)
    clock.now += 61
    (decision,) = controller.tick()
    assert "rolled back" in decision and "error rate 0.250" in decision
    endpoint = store.get_endpoint("ep")
    assert endpoint.policy == "single" and [d.version for d in endpoint.deployments] == ["a" * 64]
    last = store.list_events("ep")[-1]
    assert last.kind == "rollback" and "gate failed at 10%" in last.message
    wait_until(lambda: fake.unloaded)  # the candidate's deployment is unloaded, in the background


def test_slow_candidate_fails_the_latency_gate_and_idle_windows_wait(world) -> None:
    clock, store, stats, controller, _ = world
    traffic = Traffic(stats)
    controller.tick()
    traffic.serve("candidate", 5, latency_ms=300)
    clock.now += 120
    assert controller.tick() == []  # 5 requests < min_requests: not judged yet
    traffic.serve("candidate", 20, latency_ms=300)
    (decision,) = controller.tick()
    assert "p99 latency 500 ms > 100 ms" in decision
    assert store.get_endpoint("ep").policy == "single"
