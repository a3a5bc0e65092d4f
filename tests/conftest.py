"""Shared fixtures: real servers on loopback, port 0, in a temporary data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Agents stopped with SIGTERM drain (agent.server.Agent.drain) until no request came for this
# long; tests stop hundreds of agents, and those that test a drain set their own.
os.environ.setdefault("MILEPOST_DRAIN_QUIET_S", "0.2")
# Agents started by the CLI serve REST on a free port, not on the default 8000 (tests run side by side).
os.environ.setdefault("MILEPOST_HTTP_PORT", "0")
os.environ.setdefault("MILEPOST_CONSOLE_PORT", "0")  # `up` and `coordinator` serve the console on 7080 by default


@dataclass
class UpProcess:
    """A `milepost up` process and the addresses it wrote once ready."""

    process: subprocess.Popen
    data_dir: Path
    coordinator: str
    agent: str

    def stop(self) -> int:
        """SIGTERM, then its exit status: 0, or 1 where its stop hung (milepost.processes.STOP_LIMIT_S)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # written but not flushed yet
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"process exited with {process.returncode} before it was ready:\n{out}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def milepost_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "milepost.cli", *args]


def start_up(data_dir: Path, *, port: int = 0, agent_port: int = 0) -> UpProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "up.json").unlink(missing_ok=True)
    process = subprocess.Popen(
        milepost_cmd("up", "--data-dir", str(data_dir), "--port", str(port), "--agent-port", str(agent_port),
                     "--metrics-port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        # The test's own files (beside the data directory) are data its pipelines may read.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MILEPOST_DATA_ROOTS": str(data_dir.parent)},
    )
    state = wait_for_file(data_dir / "up.json", process)
    # The CLI and milepost.Client of this test speak as the admin `up` made (see _no_token_leaks).
    os.environ["MILEPOST_TOKEN"] = (data_dir / "admin.token").read_text().strip()
    return UpProcess(process, data_dir, state["coordinator"], state["agent"])


@pytest.fixture(autouse=True)
def _no_token_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """MILEPOST_TOKEN as the test found it, whatever the test sets (start_up sets it)."""
    monkeypatch.delenv("MILEPOST_TOKEN", raising=False)


def agent_token(coordinator: str, name: str) -> str:
    """A new token of role agent, made with the admin token in $MILEPOST_TOKEN."""
    from milepost.client import Client

    with Client(coordinator) as client:
        return client.create_token(name, "agent").token


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    proc = start_up(tmp_path / "milepost")
    yield proc
    status = proc.stop()
    log_tail = (proc.process.stdout.read() if proc.process.stdout else "")[-8000:]
    if status != 0:  # what the test checked held; the stacks of a stop that hung go to the warnings summary
        warnings.warn(f"milepost up exited with status {status} after SIGTERM:\n{log_tail}", stacklevel=1)
    # pytest shows what a test printed only when it fails: then the servers' log is there.
    print("---- milepost up log (tail) ----")
    print(log_tail)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


@pytest.fixture(scope="session")
def logistic_model(tmp_path_factory: pytest.TempPathFactory):
    """A real scikit-learn logistic regression, its compiled bundle and some held-out rows."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    import scoring_core

    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    X = X.astype(np.float32)
    estimator = LogisticRegression(max_iter=500).fit(X[:500], y[:500])
    bundle_dir = tmp_path_factory.mktemp("bundles") / "logistic"
    version = scoring_core.compile(estimator).save(bundle_dir)
    return estimator, bundle_dir, version, X[500:]


@dataclass
class Cluster:
    """A coordinator and an agent in this process, each on its own loopback port."""

    coordinator: object
    agent: object

    @property
    def client(self):
        from milepost.client import Client

        return Client(self.coordinator.address, token=self.coordinator.admin_token_file.read_text().strip())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from started_cluster(tmp_path)


def started_cluster(tmp_path: Path, **agent_config: Any) -> Iterator[Cluster]:
    """A coordinator and agent a1 on loopback ports (``agent_config``: more AgentConfig fields)."""
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig

    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "coordinator", port=0))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "agent", port=0, agent_id="a1",
                              token=coordinator.local_agent_token(), **agent_config))
    agent.start()
    assert agent.registration.registered.wait(10)
    # Commands this test runs in process speak as the coordinator's admin (see _no_token_leaks).
    os.environ["MILEPOST_TOKEN"] = coordinator.admin_token_file.read_text().strip()
    yield Cluster(coordinator, agent)
    agent.stop()
    coordinator.stop()
