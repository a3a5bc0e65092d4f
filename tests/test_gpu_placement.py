"""GPU memory and devices in placement: a real coordinator and real agents on loopback
port 0, a real scikit-learn model, real Deploys through milepost.Client.

This machine may have no GPU, so the one thing made up is the GPU inventory each agent
reports: a fake ``nvidia-smi`` on PATH while the agent starts (agents probe their GPUs
with it, so the real probe and its parsing run). A GPU replica then loads on the
scoring core's CUDA backend on numba's CUDA simulator, which has one GPU: the fakes
below give each agent one GPU, index 0, wherever a replica actually loads.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.resources import GpuAssigner
from coordinator.placement import Candidate, choose, gpu_rooms
from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.requirements import GpuRoom, Requirements
from milepost.v1 import agent_pb2, types_pb2
from tests.chaos.nodes import Agents, client, coordinator, wait_for
from tests.test_cuda_core import cuda  # noqa: F401 - numba.cuda as the simulator: GPU replicas load on it

GiB = 2**30


def _fake_smi(directory: Path, gpus: list[tuple[str, int]]) -> Path:
    """A stand-in for nvidia-smi printing ``index, uuid, name, memory.total`` (MiB) like the real one."""
    directory.mkdir(parents=True)
    script = directory / "nvidia-smi"
    lines = "".join(f"{i}, GPU-{i}a2b3c4d-{i:04d}, {name}, {gib * 1024}\\n" for i, (name, gib) in enumerate(gpus))
    script.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


@pytest.fixture()
def cluster(tmp_path: Path, logistic_model, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A coordinator; agents "small" (one 24 GiB GPU), "big" (one 80 GiB GPU) and "cpu" (no GPU)."""
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    c = client(coord)
    try:
        for agent_id, gpus in (("small", [("Fake A10", 24)]), ("big", [("Fake H100", 80)]), ("cpu", [])):
            fake = _fake_smi(tmp_path / f"smi-{agent_id}", gpus)
            with monkeypatch.context() as m:
                m.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
                agents.start(agent_id)
        wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 3, 10, "three agents alive")
        c.push_model(logistic_model[1], "lr")
        yield coord, agents, c
    finally:
        c.close()
        agents.stop_all()
        coord.stop()


def _only(endpoint: types_pb2.Endpoint) -> types_pb2.Deployment:
    (d,) = endpoint.deployments
    return d


def _state(c, name: str) -> tuple[str, list[str]]:
    d = _only(next(e for e in c.endpoints() if e.name == name))
    return d.state, list(d.agent_ids)


def test_agents_report_each_gpus_memory_and_deploys_go_where_a_gpu_has_room(cluster) -> None:
    coord, agents, c = cluster
    reported = {a.info.agent_id: [(g.index, g.name, g.memory_bytes) for g in a.info.resources.gpus]
                for a in c.status().agents}
    assert reported == {"small": [(0, "Fake A10", 24 * GiB)], "big": [(0, "Fake H100", 80 * GiB)], "cpu": []}

    # 30 GiB fits only the 80 GiB GPU; the message says which GPU and how much it had free.
    d = _only(c.deploy("e30", "lr", gpus=1, gpu_memory_bytes=30 * GiB))
    assert (d.state, list(d.agent_ids), d.resources.gpu_memory_bytes) == ("READY", ["big"], 30 * GiB)
    assert "gpu 0: 80.00 GiB of 80.00 GiB free" in d.message and "2 agent(s) did not fit" in d.message, d.message
    # The second reservation sees the first: 40 GiB of the 50 left on big; small has 24.
    d = _only(c.deploy("e40", "lr", gpus=1, gpu_memory_bytes=40 * GiB))
    assert list(d.agent_ids) == ["big"] and "gpu 0: 50.00 GiB of 80.00 GiB free" in d.message, d.message
    # 20 GiB: big has 10 left, so the smaller GPU takes it.
    d = _only(c.deploy("e20", "lr", gpus=1, gpu_memory_bytes=20 * GiB))
    assert list(d.agent_ids) == ["small"] and "gpu 0: 24.00 GiB of 24.00 GiB free" in d.message, d.message
    # Each agent serves them on the GPU it assigned.
    devices = {h.spec.deployment_id: h.spec.device for a in ("big", "small") for h in agents.running[a].table.hosted()}
    assert sorted(devices.values()) == ["cuda:0"] * 3

    # Nothing has 30 GiB any more: the Deploy waits, saying what every GPU has free.
    d = _only(c.deploy("e30b", "lr", gpus=1, gpu_memory_bytes=30 * GiB))
    assert d.state == "PENDING" and not d.agent_ids
    assert "1 agent(s) have no GPU with 30.00 GiB unreserved (gpu 0: 10.00 GiB of 80.00 GiB free)" in d.message
    assert "1 agent(s) have no GPU with 30.00 GiB unreserved (gpu 0: 4.00 GiB of 24.00 GiB free)" in d.message
    assert "1 agent(s) have fewer than 1 GPU(s)" in d.message, d.message
    # Undeploying e40 frees its 40 GiB: the waiting deployment is placed by the next repair pass.
    c.undeploy("e40")
    wait_for(lambda: _state(c, "e30b") == ("READY", ["big"]), 15, "e30b placed on big and loaded once e40 left")


def test_agents_report_what_each_gpu_holds_and_status_shows_it(cluster, capsys, monkeypatch) -> None:
    """Each heartbeat carries the agent's GpuAssigner report; GetStatus and `milepost status` show it."""
    from milepost.cli import main

    coord, _, c = cluster
    a = _only(c.deploy("r30", "lr", gpus=1, gpu_memory_bytes=30 * GiB))
    b = _only(c.deploy("r40", "lr", gpus=1, gpu_memory_bytes=40 * GiB))

    def reported() -> dict[str, list[tuple]]:
        return {s.info.agent_id: [(g.index, g.total_bytes, g.reserved_bytes, g.replicas, sorted(g.deployment_ids))
                                  for g in s.load.gpus] for s in c.status().agents}

    expected = {"big": [(0, 80 * GiB, 70 * GiB, 2, sorted([a.deployment_id, b.deployment_id]))],
                "small": [(0, 24 * GiB, 0, 0, [])], "cpu": []}
    wait_for(lambda: reported() == expected, 10, "each agent's heartbeat reports its GPU reservations")
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    token = coord.admin_token_file.read_text().strip()
    capsys.readouterr()
    assert main(["status", "--output", "json", "--token", token]) == 0
    agents = {x["info"]["agent_id"]: x for x in json.loads(capsys.readouterr().out)["agents"]}
    (gpu,) = agents["big"]["load"]["gpus"]
    assert (gpu["index"], int(gpu["total_bytes"]), int(gpu["reserved_bytes"]), gpu["replicas"]) == (0, 80 * GiB, 70 * GiB, 2)
    assert sorted(gpu["deployment_ids"]) == sorted([a.deployment_id, b.deployment_id])
    assert main(["status", "--token", token]) == 0
    table = capsys.readouterr().out
    assert "GPU GiB RESERVED" in table and "0: 70.0/80.0" in table and "0: 0.0/24.0" in table, table
    # The console's agents page (what it renders from GetStatus) shows the same.
    from coordinator.console.serving import agents as agents_page
    from coordinator.console.source import Source

    _, page = agents_page(Source(coord.servicer, coord.canary))
    assert "Fake H100 (70.0 GiB of 80.0 GiB reserved)" in page and "Fake A10 (0 B of 24.0 GiB reserved)" in page


def test_auto_device_puts_small_batch_endpoints_on_cpu_and_large_ones_on_a_gpu(cluster) -> None:
    _, agents, c = cluster
    small = _only(c.deploy("small-batches", "lr", device="auto", max_batch_size=64))
    assert (list(small.agent_ids), small.resources.gpus) == (["cpu"], 0), small.message
    large = _only(c.deploy("large-batches", "lr", device="auto", max_batch_size=8192, gpu_memory_bytes=8 * GiB))
    assert large.state == "READY" and large.resources.gpus == 1 and large.agent_ids[0] in ("small", "big")
    hosted = agents.running[large.agent_ids[0]].table.get(large.deployment_id)
    assert hosted is not None and hosted.spec.device == "cuda:0"
    # device=gpu with no --gpus asks for one; device=cpu refuses GPU asks rather than dropping them.
    assert _only(c.deploy("on-gpu", "lr", device="gpu")).resources.gpus == 1
    with pytest.raises(InvalidArgument, match="resources.device is cpu but resources.gpus=1"):
        c.deploy("contradiction", "lr", device="cpu", gpus=1)
    with pytest.raises(InvalidArgument, match="resources.device 'tpu' is unknown"):
        c.deploy("unknown", "lr", device="tpu")
    with pytest.raises(InvalidArgument, match="gpu_memory_bytes .* is memory on a GPU"):
        c.deploy("no-gpu", "lr", gpu_memory_bytes=GiB)


def test_the_cli_deploys_with_gpu_memory_and_a_device(cluster, capsys, monkeypatch) -> None:
    from milepost.cli import main

    coord, _, c = cluster
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    token = coord.admin_token_file.read_text().strip()
    assert main(["deploy", "cli-gpu", "--model", "lr", "--device", "gpu", "--gpu-memory", "60GiB",
                 "--token", token]) == 0
    d = _only(next(e for e in c.endpoints() if e.name == "cli-gpu"))
    assert (list(d.agent_ids), d.resources.gpus, d.resources.gpu_memory_bytes) == (["big"], 1, 60 * GiB)
    capsys.readouterr()
    assert main(["deploy", "cli-bad", "--model", "lr", "--device", "gpu", "--gpu-memory", "lots",
                 "--token", token]) == 1
    assert "--gpu-memory 'lots': expected a size such as 512MiB or 4GiB" in capsys.readouterr().err


def test_an_agent_refuses_a_load_no_gpu_has_memory_for(cluster) -> None:
    """The agent checks again (the coordinator's view may be stale): FAILED_PRECONDITION, each GPU's free memory."""
    coord, agents, _ = cluster
    request = agent_pb2.LoadRequest(deployment_id="d-big", endpoint="x", model="lr", version="v", flavor="scoring_core",
                                    gpus=1, gpu_memory_bytes=30 * GiB)
    with pytest.raises(FailedPrecondition) as err:
        coord.reconciler.agents.load(agents.running["small"].address, request)
    assert err.value.message.endswith(
        " Load: resources.gpu_memory_bytes: deployment 'd-big' asks for 30.00 GiB on 1 GPU(s); no GPU of this "
        "agent has that much unreserved: gpu 0: 24.00 GiB of 24.00 GiB free"), err.value.message
    assert agents.running["small"].table.get("d-big") is None


def test_the_assigner_picks_the_gpu_with_room_and_the_coordinator_replays_it_alike() -> None:
    gpus = [types_pb2.Gpu(index=0, name="a", memory_bytes=16 * GiB), types_pb2.Gpu(index=1, name="b", memory_bytes=80 * GiB)]
    assigner = GpuAssigner(lambda: gpus)
    assert assigner.assign("d20", 1, 20 * GiB) == "cuda:1"  # only GPU 1 has 20 GiB
    assert assigner.assign("d10", 1, 10 * GiB) == "cuda:0"  # both have room: the one hosting fewer replicas
    assert assigner.assign("d8", 1, 8 * GiB) == "cuda:1"  # a tie in replicas: the most free memory
    assert [(r.index, r.free_bytes) for r in assigner.rooms()] == [(0, 6 * GiB), (1, 52 * GiB)]
    # The coordinator, replaying the same loads in order, counts them on the same GPUs and says which one is next (fewest replicas).
    hosted = [(f"d{m}", Requirements("native", gpus=1, gpu_memory_bytes=m * GiB)) for m in (20, 10, 8)]
    rooms = gpu_rooms([GpuRoom(g.index, g.memory_bytes) for g in gpus], hosted)
    assert rooms == tuple(assigner.rooms())
    assert [r.deployment_ids for r in rooms] == [("d10",), ("d20", "d8")]
    (placed,) = choose([Candidate("a", frozenset({"native"}), gpus=2, used_gpus=2, gpu_rooms=rooms)],
                       Requirements("native", gpus=1, gpu_memory_bytes=4 * GiB), 1)
    assert placed.reason == "placed on a: 0 replica(s), the fewest of 1 agent(s) (gpu 0: 6.00 GiB of 16.00 GiB free)"
    with pytest.raises(FailedPrecondition, match="gpu 0: 6.00 GiB of 16.00 GiB free; gpu 1: 52.00 GiB of 80.00 GiB free"):
        assigner.assign("d60", 1, 60 * GiB)
    assert "d60" not in assigner.held()
    assigner.release("d20")
    assert assigner.assign("d60", 1, 60 * GiB) == "cuda:1"
    # A replica naming no memory holds its GPU whole: nothing with memory goes there after it.
    whole = GpuAssigner(lambda: gpus)
    assert whole.assign("all", 1) == "cuda:1" and whole.assign("some", 1, GiB) == "cuda:0"
    with pytest.raises(FailedPrecondition, match="gpu 0: 15.00 GiB of 16.00 GiB free; gpu 1: 0.00 GiB of 80.00 GiB"):
        whole.assign("more", 1, 20 * GiB)



def test_ranking_counts_gpu_memory_reserved_not_just_gpus_in_use() -> None:
    """Both agents have a replica on their one GPU; spread goes where less GPU memory is reserved, pack the other way."""
    def agent(name: str, reserved_gib: int) -> Candidate:
        return Candidate(name, frozenset({"native"}), gpus=1, used_gpus=1, replicas=1,
                         gpu_rooms=(GpuRoom(0, 80 * GiB, reserved_gib * GiB, 1),))

    pool = [agent("a", 60), agent("b", 10)]
    req = Requirements("native", gpus=1, gpu_memory_bytes=5 * GiB)
    (spread,) = choose(pool, req, 1)
    assert spread.agent_id == "b" and "first by least reserved" in spread.reason, spread.reason
    (pack,) = choose(pool, req, 1, strategy="pack")
    assert pack.reason.startswith("placed on a: 75% reserved, the most of 2 agent(s)"), pack.reason


def test_the_store_keeps_gpu_memory_across_restarts_and_older_databases_gain_it(tmp_path: Path) -> None:
    import sqlite3

    from coordinator.store import DeploymentRecord, Store

    path = tmp_path / "milepost.db"
    store = Store(path)
    req = Requirements("native", gpus=1, gpu_memory_bytes=12 * GiB)
    store.add_deployments("e", [DeploymentRecord("d1", "e", "m", "v", 1, "READY", "", 1.0, requirements=req,
                                                 agent_ids=("big",))], 1.0)
    store.close()
    store = Store(path)  # a restarted coordinator reserves what it reserved before
    assert [d.requirements for d in store.list_deployments()] == [req]
    store.close()
    db = sqlite3.connect(path)  # as a release before GPU memory made it
    db.execute("ALTER TABLE deployments DROP COLUMN gpu_memory_bytes")
    db.commit()
    db.close()
    store = Store(path)
    try:
        assert [d.requirements.gpu_memory_bytes for d in store.list_deployments()] == [0]
    finally:
        store.close()


def test_auto_turns_on_the_gpu_at_the_crossover_and_the_setting_says_where() -> None:
    from milepost.core.settings import Settings

    assert Settings.model_fields["gpu_crossover_rows"].default == 4096  # a GPU rarely wins below a few thousand rows a batch
    ask = Requirements("native", gpu_memory_bytes=2 * GiB)
    assert ask.on_device("auto", 4096, 4096) == Requirements("native", gpus=1, gpu_memory_bytes=2 * GiB)
    assert ask.on_device("auto", 4095, 4096) == Requirements("native")
    assert Requirements("native", gpus=2).on_device("", 1, 4096).gpus == 2  # no device: as --gpus says
    assert Requirements("native", gpus=2).on_device("gpu", 1, 4096).gpus == 2
    with pytest.raises(InvalidArgument, match="is memory on a GPU"):
        ask.on_device("", 1, 4096)
