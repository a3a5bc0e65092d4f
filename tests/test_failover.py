"""Agents lost and found: SIGKILL one agent process, its replica moves, scoring continues."""

from __future__ import annotations

import signal
import time

import numpy as np

from milepost.client import Client
from tests.conftest import wait_until
from tests.test_coordinator import start, stop


def serving_agents(client: Client, endpoint: str) -> list[str]:
    (e,) = [e for e in client.endpoints() if e.name == endpoint]
    return [a for d in e.deployments if d.state == "READY" for a in d.agent_ids]


def test_killed_agent_replica_is_replaced_and_a_returning_agent_gets_no_duplicate(tmp_path, logistic_model) -> None:
    estimator, bundle_dir, _, rows = logistic_model
    coord, state = start("coordinator", tmp_path / "c", "--agent-ttl", "2", "--heartbeat-interval", "0.25")
    address = state["coordinator"]
    agents = {
        name: start("agent", tmp_path / name, "--coordinator", address, "--agent-id", name)
        for name in ("node-a", "node-b")
    }
    try:
        with Client(address) as client:
            wait_until(lambda: len([a for a in client.status().agents if a.state == "ALIVE"]) == 2)
            client.push_model(bundle_dir, "lr")
            client.deploy("ep", "lr")
            (victim,) = wait_until(lambda: serving_agents(client, "ep"))
            survivor = "node-b" if victim == "node-a" else "node-a"

            killed_at = time.monotonic()
            agents[victim][0].send_signal(signal.SIGKILL)
            agents[victim][0].wait(10)
            wait_until(lambda: {a.info.agent_id: a.state for a in client.status().agents}[victim] == "LOST")
            detected = time.monotonic() - killed_at
            wait_until(lambda: serving_agents(client, "ep") == [survivor])
            replaced = time.monotonic() - killed_at
            table = client.infer("ep", rows)
            got = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
            np.testing.assert_allclose(got, estimator.predict_proba(rows), atol=1e-5)
            assert client.agent_for("ep") == agents[survivor][1]["agent"]
            print(f"failover: detected after {detected:.2f}s, serving again after {replaced:.2f}s")

            # The victim returns (empty, same id): nothing is placed on it twice.
            agents[victim] = start("agent", tmp_path / victim, "--coordinator", address, "--agent-id", victim)
            wait_until(lambda: {a.info.agent_id: a.state for a in client.status().agents}[victim] == "ALIVE")
            time.sleep(1.0)  # a few heartbeats: any duplicate would show by now
            assert serving_agents(client, "ep") == [survivor]
            (e,) = client.endpoints()
            assert len(e.deployments) == 1 and e.deployments[0].agent_ids == [survivor]
    finally:
        for process, _ in agents.values():
            if process.poll() is None:
                stop(process)
        stop(coord)
