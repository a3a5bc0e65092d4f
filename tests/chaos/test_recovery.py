"""What a crash leaves half done is finished or rolled back at the next start.

The state below is what the coordinator itself writes up to each crash point,
written with its own Store into its real SQLite file while it is down (a kill -9
at exactly these points is a matter of luck; test_coordinator_kill.py does that
at random):
- "half": a first Deploy stored its deployment, and the agent loaded it, but the
  policy switch never came. Nobody was told it exists: it is rolled back and
  unloaded;
- an extra deployment in "live": a policy change that never answered; removed,
  "live" keeps its policy and serves throughout;
- "stalled": acknowledged, its replica placed on a1 but never loaded (a crash
  between a re-placement and its load); it must be driven to READY;
- temporary files of an interrupted push in the artifact store; removed.
"""

from __future__ import annotations

import json

from coordinator.agent_client import AgentClients
from coordinator.store import DeploymentRecord, Store
from milepost.core.requirements import Requirements
from milepost.v1 import agent_pb2, routing_pb2
from tests.chaos.nodes import TTL_S, Agents, client, coordinator, hosted, wait_for


def record(deployment_id: str, endpoint: str, version: str, state: str = "PENDING") -> DeploymentRecord:
    return DeploymentRecord(deployment_id, endpoint, "lr", version, 1, state, "", 1.0,
                            requirements=Requirements("native"), agent_ids=("a1",))


def test_start_rolls_back_unfinished_deploys_and_drives_pending_ones(tmp_path, logistic_model) -> None:
    _, bundle_dir, version, rows = logistic_model
    data_dir = tmp_path / "coordinator"
    coord = coordinator(data_dir)
    port, control_token = coord.port, coord.tokens.control_token
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    try:
        a1 = agents.start("a1")
        with client(coord) as c:
            c.push_model(bundle_dir, "lr")
            (live_id,) = [d.deployment_id for d in c.deploy("live", "lr").deployments]
        coord.stop()

        store = Store(data_dir / "milepost.db")
        store.add_deployments("half", [record("half0000", "half", version)], 2.0)
        caller = AgentClients(control_token)
        caller.load(a1.address, agent_pb2.LoadRequest(deployment_id="half0000", endpoint="half", model="lr",
                                                      version=version, flavor="scoring_core", engine="native"))
        caller.close()
        store.add_deployments("live", [record("extra000", "live", version)], 2.0)
        store.add_deployments("stalled", [record("stall000", "stalled", version)], 2.0)
        policy = routing_pb2.RoutingPolicy(kind="single")
        policy.arms.add(name="primary", deployment_id="stall000", weight=1.0)
        store.set_policy("stalled", "single", policy.SerializeToString(), {"stall000"}, 2.0, ("deploy", "single"))
        store.close()
        artifacts = data_dir / "artifacts"
        (artifacts / ".push-abc.part").write_bytes(b"half an archive")
        (artifacts / "tmpold.part").write_bytes(b"from an older version")
        (artifacts / ".push-dir" / "x").mkdir(parents=True)
        (artifacts / "..push-dir.unpack-1234").mkdir()
        assert "half0000" in hosted(a1)

        coord = coordinator(data_dir, port=port)
        assert len(coord.reconciler.recovered) == 3, coord.reconciler.recovered
        assert sorted(p.name for p in artifacts.iterdir()) == [f"{version}.tar"]
        with client(coord) as c:
            took = wait_for(lambda: {e.name: [d.state for d in e.deployments] for e in c.endpoints()}
                            == {"live": ["READY"], "stalled": ["READY"]}, 5 * TTL_S, "live and stalled READY, half gone")
            wait_for(lambda: hosted(a1) == {live_id, "stall000"}, 5 * TTL_S, "a1 hosts live and stalled only")
            assert c.infer("stalled", rows, agent=a1.address).num_rows == len(rows)
            assert c.infer("live", rows, agent=a1.address).num_rows == len(rows)
            recovered = [(e.endpoint, e.kind) for e in c.events(limit=1000) if e.kind == "recovered"]
            assert sorted(recovered) == [("half", "recovered"), ("live", "recovered")]
            print("recovery:", json.dumps(coord.reconciler.recovered), f"; PENDING driven to READY in {took:.2f} s")
    finally:
        agents.stop_all()
        coord.stop()
