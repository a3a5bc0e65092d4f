"""Coordinators and agents for the chaos tests: real servers on loopback ports, in this process.

A stopped agent here stops answering at once (its server is stopped with no grace),
as a killed one would; tests that need a real SIGKILL or kill -9 run processes.
Heartbeats are fast and the TTL short so that a test sees an agent lost in about
a second; none of this uses a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.server import Agent, AgentConfig
from coordinator.server import Coordinator, CoordinatorConfig
from milepost.client import Client

HEARTBEAT_S = 0.25
TTL_S = 1.5


def coordinator(data_dir: Path, *, port: int = 0, ttl_s: float = TTL_S) -> Coordinator:
    node = Coordinator(CoordinatorConfig(data_dir=data_dir, port=port, heartbeat_interval_s=HEARTBEAT_S, agent_ttl_s=ttl_s))
    node.start()
    return node


def client(node: Coordinator) -> Client:
    return Client(node.address, token=node.admin_token_file.read_text().strip())


class Agents:
    """Agents by id, each with its own token (bound to its id) kept across restarts."""

    def __init__(self, coordinator_address: str, root: Path, make_token: Callable[[str], str]) -> None:
        self.coordinator_address = coordinator_address
        self.root = root
        self._make_token = make_token
        self._tokens: dict[str, str] = {}
        self.running: dict[str, Agent] = {}

    def start(self, agent_id: str) -> Agent:
        token = self._tokens.get(agent_id) or self._tokens.setdefault(agent_id, self._make_token(agent_id))
        node = Agent(AgentConfig(coordinator=self.coordinator_address, data_dir=self.root / agent_id, port=0,
                                 agent_id=agent_id, token=token))
        node.start()
        assert node.registration.registered.wait(15), f"agent {agent_id} did not register"
        self.running[agent_id] = node
        return node

    def kill(self, agent_id: str) -> None:
        """Gone at once: no grace for calls under way, no goodbye to the coordinator."""
        self.running.pop(agent_id).stop(grace=0)

    def stop_all(self) -> None:
        for agent_id in list(self.running):
            self.kill(agent_id)


def hosted(agent: Agent) -> set[str]:
    return {h.spec.deployment_id for h in agent.table.hosted()}


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Seconds until ``predicate`` held; fails the test, saying what, after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def ready(endpoints: Iterable) -> bool:
    return all(d.state == "READY" and d.agent_ids for e in endpoints for d in e.deployments)
