"""An agent whose coordinator does not answer says so once, keeps retrying, and says when it is back."""

from __future__ import annotations

import logging
import socket

from agent.server import Agent, AgentConfig
from coordinator.server import Coordinator, CoordinatorConfig
from tests.conftest import wait_until


def test_the_agent_says_once_that_it_cannot_reach_its_coordinator_then_that_it_is_back(tmp_path, caplog) -> None:
    with socket.socket() as probe:  # a closed local port: where the coordinator will be, later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="milepost.agent")
    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=port))
    agent = Agent(AgentConfig(coordinator=f"127.0.0.1:{port}", data_dir=tmp_path / "a", port=0, agent_id="a1",
                              token=coordinator.local_agent_token()))
    agent.start()
    try:
        wait_until(lambda: any("cannot reach the coordinator" in r.getMessage() for r in caplog.records), timeout=10)
        wait_until(lambda: sum("still unreachable" in r.getMessage() for r in caplog.records) >= 2, timeout=20)
        said = [r for r in caplog.records if "cannot reach the coordinator" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING and "retrying with backoff" in said[0].getMessage()
        coordinator.start()
        assert agent.registration.registered.wait(20)
        wait_until(lambda: any("answers again" in r.getMessage() for r in caplog.records), timeout=10)
    finally:
        agent.stop()
        coordinator.stop()
