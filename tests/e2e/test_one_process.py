"""milepost.Client and Triton's own clients, imported in either order, work in one process
(their protobuf messages share the package ``inference``; tools/generate_stubs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROBE = Path(__file__).with_name("one_process_probe.py")


@pytest.fixture(scope="module")
def served(tmp_path_factory, logistic_model):
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    root = tmp_path_factory.mktemp("one-process")
    coordinator = Coordinator(CoordinatorConfig(data_dir=root / "coordinator", port=0))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=root / "agent", port=0, http_port=0,
                              agent_id="a1", token=coordinator.local_agent_token()))
    agent.start()
    token = coordinator.admin_token_file.read_text().strip()
    _, bundle_dir, _, rows = logistic_model
    with Client(coordinator.address, token=token) as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("churn-api", "churn")
    yield coordinator, agent, token
    agent.stop()
    coordinator.stop()


@pytest.mark.parametrize("order", ["milepost-first", "triton-first"])
def test_both_clients_score_alike_in_one_process(served, logistic_model, tmp_path, order) -> None:
    coordinator, agent, token = served
    estimator, _, _, rows = logistic_model
    rows_path = tmp_path / "rows.npy"
    np.save(rows_path, rows[:5])
    done = subprocess.run(
        [sys.executable, str(PROBE), order, coordinator.address, agent.address, f"127.0.0.1:{agent.http_port}",
         "churn-api", str(rows_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MILEPOST_TOKEN": token},
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    expected = estimator.predict_proba(rows[:5])
    for name in ("milepost", "tritonclient.grpc", "tritonclient.http"):
        np.testing.assert_allclose(np.asarray(answers[name]), expected, rtol=1e-5, atol=1e-6, err_msg=name)
