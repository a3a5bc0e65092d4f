"""A rolling restart of every agent under load loses no request.

Real processes: a coordinator and three `milepost agent`s; an endpoint served by two
replicas and an A/B split whose two arms have two replicas each (so some calls go
from one agent to a member on another). Scoring loops in threads of this process use
milepost.Client. Each agent in turn gets SIGTERM: it drains (the coordinator shows it
DRAINING, routes and clients move to other replicas, calls under way finish), exits 0
and is started again as itself; the next waits until every deployment is READY with
both replicas served again. Figures are printed: drain time, time until the restarted
agent's deployments serve again, requests served.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from milepost.client import Client
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2
from tests.chaos.nodes import wait_for
from tests.test_client_failover import finish, load
from tests.test_coordinator import start, stop

AGENTS = ("node-a", "node-b", "node-c")


def fully_served(client: Client) -> bool:
    """Every deployment READY and served by two live agents (as they report it)."""
    status = client.status()
    serving = [d for a in status.agents if a.state == "ALIVE" for d in a.serving_deployment_ids]
    return all(d.state == "READY" and serving.count(d.deployment_id) == 2 for e in status.endpoints for d in e.deployments)


@pytest.fixture
def cluster(tmp_path, logistic_model, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MILEPOST_ENDPOINT_CACHE_S", "0.5")  # clients re-learn often: they see a drain quickly
    monkeypatch.setenv("MILEPOST_DRAIN_TIMEOUT_S", "8")
    monkeypatch.setenv("MILEPOST_DRAIN_QUIET_S", "1")
    _, bundle_dir, _, _ = logistic_model
    coord, state = start("coordinator", tmp_path / "c", "--agent-ttl", "5", "--heartbeat-interval", "0.25")
    address = state["coordinator"]
    agents = {name: start("agent", tmp_path / name, "--coordinator", address, "--agent-id", name) for name in AGENTS}
    try:
        with Client(address) as client:
            wait_for(lambda: len([a for a in client.status().agents if a.state == "ALIVE"]) == 3, 30, "three agents")
            client.push_model(bundle_dir, "lr")
            client.push_model(bundle_dir, "lr-b")
            client.deploy("ep", "lr", replicas=2)
            client.set_policy("ab", routing_pb2.RoutingPolicy(kind="split"), [
                pb.ArmSpec(name="a", model="lr", weight=1.0), pb.ArmSpec(name="b", model="lr-b", weight=1.0)], replicas=2)
            wait_for(lambda: fully_served(client), 60, "every deployment on two agents")
        yield tmp_path, address, coord, agents
    finally:
        for process, _ in [*agents.values(), (coord, None)]:
            if process.poll() is None:
                stop(process)


def test_rolling_restart_of_every_agent_under_load_fails_no_request(cluster, logistic_model) -> None:
    root, address, _, agents = cluster
    estimator, _, _, rows = logistic_model
    expected = estimator.predict_proba(rows)
    stop_at = threading.Event()
    on_ep = load(address, rows, expected, stop_at, threads=2)
    on_ab = load(address, rows, expected, stop_at, threads=2, endpoint="ab")
    figures = []
    with Client(address) as client:
        time.sleep(1.0)
        for name in AGENTS:
            process, _ = agents[name]
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            seen: set[str] = set()
            while process.poll() is None and time.monotonic() - signalled < 30:
                seen |= {a.state for a in client.status().agents if a.info.agent_id == name}
                time.sleep(0.05)
            assert process.wait(30) == 0
            drained = time.monotonic() - signalled
            assert "DRAINING" in seen, f"{name} was never shown draining: {seen}"
            restarting = time.monotonic()
            agents[name] = start("agent", root / name, "--coordinator", address, "--agent-id", name)
            up = time.monotonic() - restarting
            back = up + wait_for(lambda: fully_served(client), 30, f"every deployment served after {name}'s restart")
            figures.append(f"{name}: drained and exited in {drained:.2f} s; restarted, its deployments served "
                           f"again {back:.2f} s after the start command ({up:.2f} s of it the process starting)")
        time.sleep(1.0)
    stop_at.set()
    errors = [on_ep.pop("_errors"), on_ab.pop("_errors")]  # filled until the loops end
    counts = {"ep": finish(on_ep), "ab": finish(on_ab)}
    errors = errors[0] + errors[1]
    print("rolling restart of 3 agents under load:", *figures, f"requests: {counts}", sep="\n  ")
    assert all(c["failed"] == 0 and c["wrong"] == 0 for c in counts.values()), (counts, errors[:5])
    assert all(c["ok"] > 100 for c in counts.values()), counts
