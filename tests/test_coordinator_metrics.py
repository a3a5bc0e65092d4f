"""The coordinator's own metrics and HTTP probes, on its console port (coordinator.metrics)."""

from __future__ import annotations

import urllib.request

from agent.server import Agent, AgentConfig
from coordinator.server import Coordinator, CoordinatorConfig
from tests.agent.test_agent_metrics import parse
from tests.chaos.nodes import client, wait_for


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_count_what_the_store_holds_and_probes_answer(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    node = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0, http_port=0, heartbeat_interval_s=0.25))
    node.start()
    agent = Agent(AgentConfig(coordinator=node.address, data_dir=tmp_path / "a", port=0, agent_id="a1",
                              token=node.local_agent_token()))
    agent.start()
    try:
        with client(node) as admin:
            wait_for(lambda: [a.state for a in admin.status().agents] == ["ALIVE"], 10, "agent alive")
            admin.push_model(bundle_dir, "churn")
            admin.push_model(bundle_dir, "other")
            admin.deploy("api", "churn")
            admin.deploy("second", "other")
            admin.canary("api", "other", steps=(10.0, 50.0, 100.0), window_s=3600)
            admin.deploy("third", "churn")
            admin.shadow("third", "other")
            admin.promote("third")
        status, text = _get(f"{node.console_url}/metrics")
        assert status == 200
        samples = parse(text)
        assert samples[("milepost_coordinator_agents", (("state", "ALIVE"),))] == 1
        assert samples[("milepost_coordinator_agents", (("state", "LOST"),))] == 0
        # api: the canary's two; second: one; third: the promoted shadow candidate alone
        assert samples[("milepost_coordinator_deployments", (("state", "READY"),))] == 4
        assert samples[("milepost_coordinator_endpoints", (("policy", "canary"),))] == 1
        assert samples[("milepost_coordinator_endpoints", (("policy", "single"),))] == 2
        assert samples[("milepost_coordinator_model_versions", (("stage", "registered"),))] == 2
        assert samples[("milepost_coordinator_canary_step_percent", (("endpoint", "api"),))] == 10
        assert samples[("milepost_coordinator_events_total", (("endpoint", "third"), ("kind", "promote")))] == 1
        assert samples[("milepost_coordinator_routes_generation", ())] >= 1
        assert ("milepost_coordinator_reconciler_tasks", ()) in samples
        # and the process's own, as an agent's /metrics has them
        assert samples[("process_resident_memory_bytes", ())] > 0 and samples[("process_cpu_seconds_total", ())] > 0
        assert samples[("process_open_fds", ())] > 0
        assert ("python_gc_collections_total", (("generation", "0"),)) in samples
        assert any(name == "python_info" for name, _ in samples)
        assert _get(f"{node.console_url}/healthz") == (200, "live\n")
        assert _get(f"{node.console_url}/readyz") == (200, "ready\n")
    finally:
        agent.stop()
        node.stop()
