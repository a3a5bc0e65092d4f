"""milepost.Client through an agent's death and the coordinator's: no failed request.

Real processes: a coordinator and two agents (`milepost coordinator`, `milepost agent`),
an endpoint with a replica on each agent, and scoring loops in threads of this process.
One agent is SIGKILLed mid-load; later the coordinator is too. The client knows which
agents serve the endpoint (milepost.replicas) and passes over one that is gone.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from milepost.client import Client
from milepost.core.errors import MilepostError
from tests.conftest import wait_until
from tests.test_coordinator import start, stop
from tests.test_failover import serving_agents


@pytest.fixture
def two_replicas(tmp_path, logistic_model, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MILEPOST_ENDPOINT_CACHE_S", "0.5")  # re-learned often: the coordinator's word is used
    _, bundle_dir, _, _ = logistic_model
    coord, state = start("coordinator", tmp_path / "c", "--agent-ttl", "2", "--heartbeat-interval", "0.25")
    address = state["coordinator"]
    agents = {name: start("agent", tmp_path / name, "--coordinator", address, "--agent-id", name)
              for name in ("node-a", "node-b")}
    try:
        with Client(address) as client:
            wait_until(lambda: len([a for a in client.status().agents if a.state == "ALIVE"]) == 2)
            client.push_model(bundle_dir, "lr")
            client.deploy("ep", "lr", replicas=2)
            wait_until(lambda: sorted(serving_agents(client, "ep")) == ["node-a", "node-b"], timeout=60)
        yield address, coord, agents
    finally:
        for process, _ in [*agents.values(), (coord, None)]:
            if process.poll() is None:
                stop(process)


def load(address: str, rows: np.ndarray, expected: np.ndarray, stop_at: threading.Event, threads: int = 4,
         endpoint: str = "ep") -> dict:
    """Score in ``threads`` loops until ``stop_at``; counts of answers right, wrong and failed."""
    counts = {"ok": 0, "wrong": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def loop() -> None:
        with Client(address) as client:
            while not stop_at.is_set():
                try:
                    got = np.stack(client.infer(endpoint, rows, timeout=10).column("probabilities").to_numpy(zero_copy_only=False))
                    outcome = "ok" if np.allclose(got, expected, atol=1e-5) else "wrong"
                except MilepostError as err:
                    outcome = "failed"
                    errors.append(f"{type(err).__name__}: {err.message[:200]}")
                with lock:
                    counts[outcome] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    counts["_workers"] = workers  # type: ignore[assignment]
    counts["_errors"] = errors  # type: ignore[assignment]
    return counts


def finish(counts: dict) -> dict:
    for w in counts.pop("_workers"):
        w.join(30)
    return counts


def test_no_request_fails_when_an_agent_is_killed_under_load(two_replicas, logistic_model) -> None:
    address, _, agents = two_replicas
    estimator, _, _, rows = logistic_model
    stop_at = threading.Event()
    counts = load(address, rows, estimator.predict_proba(rows), stop_at)
    time.sleep(1.5)
    agents["node-a"][0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    with Client(address) as client:
        wait_until(lambda: serving_agents(client, "ep") == ["node-b"], timeout=30)
    while time.monotonic() - killed < 3:  # load on the survivor alone for a while
        time.sleep(0.1)
    stop_at.set()
    errors = counts.pop("_errors")
    counts = finish(counts)
    print(f"through the kill: {counts}")
    assert counts["failed"] == 0 and counts["wrong"] == 0, (counts, errors[:3])
    assert counts["ok"] > 100


def test_scoring_goes_on_while_the_coordinator_is_down(two_replicas, logistic_model) -> None:
    address, coord, _ = two_replicas
    estimator, _, _, rows = logistic_model
    with Client(address) as client:
        client.infer("ep", rows)  # learns where the endpoint is served
        coord.send_signal(signal.SIGKILL)
        coord.wait(10)
        time.sleep(1.0)  # past endpoint_cache_s: the client would ask again, and cannot
        for _ in range(20):
            got = np.stack(client.infer("ep", rows, timeout=10).column("probabilities").to_numpy(zero_copy_only=False))
            np.testing.assert_allclose(got, estimator.predict_proba(rows), atol=1e-5)


def agent_states(client: Client) -> dict[str, str]:
    """Agent id -> state; empty while the restarted coordinator is not reachable yet."""
    try:
        return {a.info.agent_id: a.state for a in client.status().agents}
    except MilepostError:
        return {}


def test_no_request_fails_when_an_agent_and_the_coordinator_die_at_once(two_replicas, logistic_model, tmp_path) -> None:
    """Both at once: clients go on with what they knew (the survivor), and the restarted
    coordinator, finding one agent gone, leaves the endpoint served by the other."""
    address, coord, agents = two_replicas
    estimator, _, _, rows = logistic_model
    stop_at = threading.Event()
    counts = load(address, rows, estimator.predict_proba(rows), stop_at)
    time.sleep(1.5)
    agents["node-a"][0].send_signal(signal.SIGKILL)
    coord.send_signal(signal.SIGKILL)
    coord.wait(10)
    time.sleep(3.0)  # scoring with no coordinator and one replica gone
    port = address.rsplit(":", 1)[1]
    restarted, again = start("coordinator", tmp_path / "c", "--agent-ttl", "2", "--heartbeat-interval", "0.25", "--port", port)
    assert again["coordinator"] == address, again
    try:
        with Client(address) as client:
            # node-a is lost once the restarted coordinator's grace period for known agents ends.
            wait_until(lambda: agent_states(client).get("node-a") == "LOST", timeout=30)
            wait_until(lambda: serving_agents(client, "ep") == ["node-b"], timeout=30)
        time.sleep(1.0)
        stop_at.set()
        errors = counts.pop("_errors")
        counts = finish(counts)
        print(f"agent and coordinator killed at once: {counts}")
        assert counts["failed"] == 0 and counts["wrong"] == 0, (counts, errors[:3])
        assert counts["ok"] > 100
    finally:
        stop_at.set()
        stop(restarted)
