"""Agents report their GPU reservations; placement starts from the report.

The coordinator's parts are real (store on SQLite, reconciler, endpoints, placement,
Deploys through Endpoints.set_policy). The agent is the one thing faked: ``GpuAgent``
stands in for AgentClients and assigns each Load to a GPU with a real
``agent.resources.GpuAssigner`` (the agent's own code), and a "heartbeat" hands the
assigner's report to the reconciler as a real heartbeat does (AgentLoad.gpus). This
way the heartbeat timing is the test's: two Deploys between heartbeats, a report
that lags an undeploy. The end-to-end path (real agents reporting over gRPC, status,
the CLI) is in tests/test_gpu_placement.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.resources import GpuAssigner
from coordinator.endpoints import Endpoints, Placement
from coordinator.reconciler import Reconciler
from coordinator.store import ModelRecord, Store
from milepost.core.errors import FailedPrecondition
from milepost.core.requirements import Requirements, stage_holder
from milepost.core.routing.policy import Arm
from milepost.v1 import routing_pb2, types_pb2
from tests.conftest import wait_until

GiB = 2**30
VERSION = "a" * 64


class GpuAgent:
    """AgentClients for one agent: a Load reserves the GPU its GpuAssigner picks; an
    Unload is taken in and done when the test says (``finish_unloads``), like a slow agent."""

    def __init__(self, gpus: list[types_pb2.Gpu]) -> None:
        self.assigner = GpuAssigner(lambda: gpus)
        self.devices: dict[str, str] = {}
        self.unloads: list[str] = []

    def load(self, address: str, request, timeout: float | None = None) -> None:
        self.devices[request.deployment_id] = self.assigner.assign(
            request.deployment_id, request.gpus, request.gpu_memory_bytes)

    def unload(self, address: str, deployment_id: str, timeout: float | None = None) -> None:
        self.unloads.append(deployment_id)

    def finish_unloads(self) -> None:
        for d in self.unloads:
            self.assigner.release(d)
            self.devices.pop(d, None)
        self.unloads.clear()

    def set_routes(self, address: str, table, timeout: float | None = None) -> None:
        pass


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _world(tmp_path: Path, gpus: list[int]):
    """A coordinator's store, reconciler and endpoints, and agent "a" with GPUs of ``gpus`` GiB."""
    clock = Clock()
    store = Store(tmp_path / "db.sqlite")
    inventory = [types_pb2.Gpu(index=i, name="Fake", memory_bytes=g * GiB) for i, g in enumerate(gpus)]
    agent = GpuAgent(inventory)
    reconciler = Reconciler(store, agent, ttl_s=1e9, clock=clock)  # type: ignore[arg-type]
    endpoints = Endpoints(store, reconciler, clock, on_change=lambda: None)
    info = types_pb2.AgentInfo(
        agent_id="a", address="127.0.0.1:1",
        resources=types_pb2.Resources(cpu_cores=8, memory_bytes=64 * GiB, gpus=inventory),
        engines=[types_pb2.EngineInfo(name="native", available=True)],
    )
    store.upsert_agent("a", info.address, info.SerializeToString(), clock())
    store.add_model(ModelRecord("m", VERSION, "scoring_core", 1, clock(), json.dumps({})))
    return store, reconciler, endpoints, agent, clock


def _deploy(endpoints: Endpoints, name: str, memory_gib: int):
    placement = Placement(requirements=Requirements(gpus=1, gpu_memory_bytes=memory_gib * GiB))
    record = endpoints.set_policy(name, routing_pb2.RoutingPolicy(kind="single"),
                                  [Arm("primary", model="m", version=VERSION, weight=1.0)], placement)
    (d,) = record.deployments
    return d


def _heartbeat(reconciler: Reconciler, agent: GpuAgent) -> None:
    """What agent/registration.py sends: the deployments served and the assigner's report."""
    reconciler.reports.record("a", list(agent.devices), draining=False,
                              load=types_pb2.AgentLoad(gpus=agent.assigner.report()))


def _rooms(reconciler: Reconciler) -> list[tuple[int, float, int]]:
    (c,) = reconciler.candidates()
    return [(r.index, r.reserved_bytes / GiB, r.replicas) for r in c.gpu_rooms]


def test_deploys_between_heartbeats_count_each_other_and_a_report_does_not_count_them_twice(tmp_path: Path) -> None:
    _, reconciler, endpoints, agent, _ = _world(tmp_path, [80])
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 0, 0)]
    a = _deploy(endpoints, "e30", 30)
    # No heartbeat since: the 30 GiB the coordinator placed counts on top of the report.
    b = _deploy(endpoints, "e40", 40)
    assert b.agent_ids == ("a",) and "gpu 0: 50.00 GiB of 80.00 GiB free" in b.message, b.message
    assert _rooms(reconciler) == [(0, 70, 2)]
    waiting = _deploy(endpoints, "e20", 20)
    assert waiting.state == "PENDING" and not waiting.agent_ids
    assert "have no GPU with 20.00 GiB unreserved (gpu 0: 10.00 GiB of 80.00 GiB free)" in waiting.message
    # Once the report holds both, they count once: the ids it names are not counted again.
    _heartbeat(reconciler, agent)
    report = reconciler.reports.load("a").gpus
    assert [(g.reserved_bytes, sorted(g.deployment_ids)) for g in report] == [
        (70 * GiB, sorted([a.deployment_id, b.deployment_id]))]
    assert _rooms(reconciler) == [(0, 70, 2)]


def _undeploy(reconciler: Reconciler, endpoints: Endpoints, agent: GpuAgent, name: str) -> None:
    endpoints.undeploy(name)
    wait_until(lambda: agent.unloads and reconciler.busy() == 0, 10)
    agent.finish_unloads()


def test_what_the_agent_holds_outside_the_store_counts_until_it_reports_it_gone(tmp_path: Path) -> None:
    _, reconciler, endpoints, agent, _ = _world(tmp_path, [80])
    _deploy(endpoints, "e40", 40)
    # A stage holds 16 GiB (agent/stage_runner.py): the store has no deployment for it.
    agent.assigner.assign("stage:run1/score", 1, 16 * GiB)
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 56, 2)]
    # Undeployed: the store forgets it at once, the agent holds it until it has unloaded
    # and said so, and placement counts it until then (a replay would not).
    endpoints.undeploy("e40")
    wait_until(lambda: agent.unloads and reconciler.busy() == 0, 10)
    assert _rooms(reconciler) == [(0, 56, 2)]
    agent.finish_unloads()
    agent.assigner.release("stage:run1/score")
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 0, 0)]


def test_on_a_multi_gpu_agent_placement_follows_the_report_where_a_replay_is_wrong(tmp_path: Path) -> None:
    """GPU 0 has 24 GiB, GPU 1 32 GiB. The agent put A (20) on GPU 1, B (20) on GPU 0;
    A left, then C (10) went to GPU 1. Replaying B, C oldest first says B on GPU 1, C on
    GPU 0: no GPU with 20 GiB. The agent has 22 GiB free on GPU 1."""
    _, reconciler, endpoints, agent, _ = _world(tmp_path, [24, 32])
    _deploy(endpoints, "a", 20)
    b = _deploy(endpoints, "b", 20)
    _undeploy(reconciler, endpoints, agent, "a")
    c = _deploy(endpoints, "c", 10)
    assert (agent.devices[b.deployment_id], agent.devices[c.deployment_id]) == ("cuda:0", "cuda:1")
    # Before any report the coordinator can only replay, and the replay refuses 20 GiB ...
    with pytest.raises(FailedPrecondition, match=r"gpu 0: 14.00 GiB of 24.00 GiB free; gpu 1: 12.00 GiB of 32.00"):
        reconciler.choose(Requirements("native", gpus=1, gpu_memory_bytes=20 * GiB), 1)
    # ... the report says where things are, and the agent takes it on the GPU the reason names.
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 20, 1), (1, 10, 1)]
    d = _deploy(endpoints, "d", 20)
    assert d.state == "READY" and "gpu 1: 22.00 GiB of 32.00 GiB free" in d.message, d.message
    assert agent.devices[d.deployment_id] == "cuda:1"


def test_a_running_stage_counts_where_it_was_placed_until_it_ends(tmp_path: Path) -> None:
    """Stages are not deployments in the store: the pipeline driver tells the reconciler where one runs,
    and when it ended (the agent released its GPUs before answering, so a report naming it is stale)."""
    _, reconciler, _, agent, _ = _world(tmp_path, [24])
    _heartbeat(reconciler, agent)
    holder = stage_holder("run1", "score")
    reconciler.stage_started(holder, "a", Requirements("native", gpus=1))  # no memory named: the whole GPU
    with pytest.raises(FailedPrecondition, match="gpu 0: 0.00 GiB of 24.00 GiB free"):
        reconciler.choose(Requirements("native", gpus=1, gpu_memory_bytes=GiB), 1)
    agent.assigner.assign(holder, 1)  # the agent holds it and reports it: counted once
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 24, 1)]
    agent.assigner.release(holder)  # the agent releases, then answers: the last report still names the stage
    reconciler.stage_ended(holder)
    assert _rooms(reconciler) == [(0, 0, 0)]  # so the next stage (train, then score) finds the GPU free
    (choice,) = reconciler.choose(Requirements("native", gpus=1, gpu_memory_bytes=GiB), 1)
    assert choice.agent_id == "a"
    _heartbeat(reconciler, agent)
    assert _rooms(reconciler) == [(0, 0, 0)]
