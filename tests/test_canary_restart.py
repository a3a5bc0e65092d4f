"""A canary's open window survives a coordinator restart: its step, its start, its counts.

A control-loop test: a real store (the same SQLite file across the restart), real
endpoints, gates and audit trail; the agents are the fake of
tests/test_canary_controller.py and the clock is a fake one, so a 60 s window
takes no time. Before, a restart opened a new window: every restart during a
canary put its judgment off by a whole window, and a coordinator restarting more
often than ``window_s`` never judged at all.
"""

from __future__ import annotations

import json

from coordinator.arm_stats import ArmStats
from coordinator.canary import CanaryController
from coordinator.endpoints import Endpoints, Placement, policy_of
from coordinator.reconciler import Reconciler
from coordinator.store import ModelRecord, Store
from milepost.core.routing.policy import Arm
from milepost.v1 import routing_pb2, types_pb2
from tests.test_canary_controller import Clock, FakeAgents, Traffic


class Coordinator:
    """The parts of a coordinator the canary loop uses, over one database file."""

    def __init__(self, path, clock: Clock) -> None:
        self.store = Store(path)
        self.reconciler = Reconciler(self.store, FakeAgents(), ttl_s=1e9, clock=clock)
        self.endpoints = Endpoints(self.store, self.reconciler, clock, on_change=lambda: None)
        self.stats = ArmStats()
        self.controller = CanaryController(self.endpoints, self.stats, clock)

    def close(self) -> None:
        self.reconciler.close()
        self.store.close()


def start_canary(tmp_path, clock: Clock) -> Coordinator:
    node = Coordinator(tmp_path / "db.sqlite", clock)
    info = types_pb2.AgentInfo(
        agent_id="a1", address="127.0.0.1:1", resources=types_pb2.Resources(cpu_cores=4, memory_bytes=1 << 34),
        engines=[types_pb2.EngineInfo(name="native", available=True)],
    )
    node.store.upsert_agent("a1", info.address, info.SerializeToString(), clock())
    for version in ("a" * 64, "b" * 64):
        node.store.add_model(ModelRecord("m", version, "scoring_core", 1, clock(), json.dumps({})))
    arms = [Arm("baseline", model="m", version="a" * 64, weight=1.0), Arm("candidate", model="m", version="b" * 64, weight=1.0)]
    node.endpoints.set_policy("ep", routing_pb2.RoutingPolicy(kind="single"), arms[:1], Placement())
    policy = routing_pb2.RoutingPolicy(
        kind="canary", steps=[10, 50, 100], window_s=60,
        gates=routing_pb2.CanaryGates(max_error_rate=0.05, max_p99_latency_ms=100, min_requests=20),
    )
    node.endpoints.set_policy("ep", policy, arms, Placement())
    return node


def test_window_keeps_its_start_and_counts_across_a_restart(tmp_path) -> None:
    clock = Clock()
    node = start_canary(tmp_path, clock)
    traffic = Traffic(node.stats)
    traffic.serve("baseline", 100)
    traffic.serve("candidate", 30)  # before the window: never counted
    assert node.controller.tick() == []  # opens the window
    opened_at = clock.now
    traffic.serve("baseline", 90)
    traffic.serve("candidate", 12)
    clock.now += 30
    assert node.controller.tick() == []
    node.close()

    # The coordinator is down; the agent keeps serving (and counting) meanwhile.
    traffic.serve("candidate", 10)
    clock.now += 20
    node = start_canary_again(tmp_path, clock)
    traffic.stats = node.stats
    window = node.controller.window("ep")
    assert window is not None and window.opened_at == opened_at and window.step == 0
    assert window.seen["candidate"].requests == 12
    traffic.serve("baseline", 1)  # the agent's first heartbeat to the new coordinator
    clock.now = opened_at + 61  # the original window's end, not the restart's plus 60 s
    (decision,) = node.controller.tick()
    assert decision.startswith("ep: step 1") and "22 requests" in decision, decision
    assert policy_of(node.store.get_endpoint("ep")).step == 1
    node.close()


def test_an_agent_that_restarted_meanwhile_counts_from_zero(tmp_path) -> None:
    clock = Clock()
    node = start_canary(tmp_path, clock)
    traffic = Traffic(node.stats)
    node.controller.tick()
    traffic.serve("candidate", 15)
    node.controller.tick()
    node.close()

    node = start_canary_again(tmp_path, clock)
    restarted = Traffic(node.stats)  # a new agent process: its counters and uptime start again
    restarted.serve("candidate", 6, errors=3)
    clock.now += 61
    (decision,) = node.controller.tick()
    assert "rolled back" in decision and "over 21 requests" in decision, decision
    assert node.store.get_endpoint("ep").policy == "single"
    assert node.store.get_canary_window("ep") is None
    node.close()


def start_canary_again(tmp_path, clock: Clock) -> Coordinator:
    return Coordinator(tmp_path / "db.sqlite", clock)
