"""A running pipeline stage's CPU and memory count against its agent in placement.

A real coordinator and two real agents ("a", "b") on loopback port 0, a real
scikit-learn model, real Deploys and a real pipeline run. The stage is a custom
function (python engine) that holds its agent until the test opens a gate file, so
the test decides when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milepost.core.settings import reset_settings
from milepost.pipeline_spec import spec_from_dict
from milepost.v1 import types_pb2
from tests.chaos.nodes import Agents, client, coordinator, wait_for

GiB = 2**30


def hold(inputs: dict[str, Any], gate: str = "", **params: Any) -> dict[str, Any]:
    """A stage that runs until ``gate`` exists (at most a minute)."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"released": str(Path(gate).exists())}


@pytest.fixture()
def pair(tmp_path: Path, logistic_model, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")  # the python engine runs hold()
    reset_settings()
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    c = client(coord)
    try:
        for agent_id in ("a", "b"):
            agents.start(agent_id)
        wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 2, 10, "two agents alive")
        c.push_model(logistic_model[1], "lr")
        yield c, tmp_path
    finally:
        c.close()
        agents.stop_all()
        coord.stop()
        reset_settings()


def _only(endpoint: types_pb2.Endpoint) -> types_pb2.Deployment:
    (d,) = endpoint.deployments
    return d


def test_a_running_stage_holds_its_cpu_and_memory_until_it_ends(pair) -> None:
    c, tmp_path = pair
    info = {a.info.agent_id: a.info.resources for a in c.status().agents}
    assert info["a"].cpu_cores == info["b"].cpu_cores  # one machine: the same cores
    cores, memory = float(info["a"].cpu_cores), min(info["a"].memory_bytes, info["b"].memory_bytes)
    gate = tmp_path / "gate"
    run = c.submit_pipeline(spec_from_dict({"name": "busy", "stages": [
        {"name": "hold", "kind": "custom", "engine": "python", "resources": {"cpu": cores, "memory_bytes": memory // 2},
         "params": {"entry": "tests.test_stage_resources:hold", "params": {"gate": str(gate)}}},
    ]}, base=tmp_path))
    wait_for(lambda: c.run(run.run_id).stages[0].state == "RUNNING", 30, "the stage runs")
    busy = c.run(run.run_id).stages[0].agent_id
    other = ({"a", "b"} - {busy}).pop()
    try:
        # All the stage agent's CPU is held: a replica asking for all of it goes to the other agent.
        first = _only(c.deploy("all-cpu", "lr", cpu=cores))
        assert (first.state, list(first.agent_ids)) == ("READY", [other]), first
        # Memory counts as well: half the stage agent's memory is held, so a replica asking for more than half goes to
        # the other agent, though that one hosts a replica already and spread would pick the emptier agent.
        memory_hungry = _only(c.deploy("big-memory", "lr", memory_bytes=memory // 2 + GiB))
        assert (memory_hungry.state, list(memory_hungry.agent_ids)) == ("READY", [other]), memory_hungry
        # Now both are full (a replica there, the stage here): the next one fits nowhere and waits, saying why.
        waiting = _only(c.deploy("more-cpu", "lr", cpu=cores))
        assert (waiting.state, list(waiting.agent_ids)) == ("PENDING", []), waiting
        assert f"2 agent(s) have less than {cores:g} free CPU" in waiting.message, waiting.message
    finally:
        gate.touch()
    wait_for(lambda: c.run(run.run_id).state == "SUCCEEDED", 60, "the stage ended")
    # Once it ended its agent has room again: the waiting replica is placed there.
    wait_for(lambda: _only(next(e for e in c.endpoints() if e.name == "more-cpu")).state == "READY", 60,
             "the waiting replica placed")
    placed = _only(next(e for e in c.endpoints() if e.name == "more-cpu"))
    assert list(placed.agent_ids) == [busy], placed
