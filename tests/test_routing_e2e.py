"""Routing policies across real processes: a coordinator, two agents, the CLI and the client.

The canary's candidate is "deliberately broken" for real: it was trained on one
feature more than the traffic carries, so every request it gets fails with
INVALID_ARGUMENT, and the gates see a real error rate.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import scoring_core
from milepost.client import Client
from milepost.core.errors import InvalidArgument
from tests.conftest import milepost_cmd, wait_until
from tests.test_coordinator import start, stop


def cli(*args: str) -> str:
    done = subprocess.run(milepost_cmd(*args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def mesh(tmp_path: Path, logistic_model):
    """A coordinator and two agents as processes, with three models pushed."""
    estimator, bundle_dir, _, rows = logistic_model
    coord, state = start("coordinator", tmp_path / "c", "--heartbeat-interval", "0.2")
    address = state["coordinator"]
    agents = [start("agent", tmp_path / n, "--coordinator", address, "--agent-id", n) for n in ("n1", "n2")]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, rows.shape[1])).astype(np.float32)
    other = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    wide = LogisticRegression().fit(np.hstack([X, X[:, :1]]), (X[:, 1] > 0).astype(int))
    scoring_core.compile(other).save(tmp_path / "other")
    scoring_core.compile(wide).save(tmp_path / "wide")
    with Client(address) as client:
        wait_until(lambda: sum(a.state == "ALIVE" for a in client.status().agents) == 2)
        client.push_model(bundle_dir, "base")
        client.push_model(tmp_path / "other", "other")
        client.push_model(tmp_path / "wide", "broken")
        client.deploy("ep", "base")
        yield client, address, estimator, other, rows, agents
    for process, _ in agents:
        stop(process)
    stop(coord)


def routed(client: Client, agent: str, rows: np.ndarray, key: str) -> tuple[np.ndarray, str]:
    table = client.infer("ep", rows, agent=agent, key=key)
    return np.stack(table.column("probabilities").to_numpy(zero_copy_only=False)), key


def wait_for_policy(client: Client, kind: str, timeout: float = 60) -> None:
    wait_until(lambda: [e.policy for e in client.endpoints() if e.name == "ep"] == [kind], timeout=timeout)


def test_split_is_sticky_and_weighted_across_agents(mesh) -> None:
    client, address, base, other, rows, agents = mesh
    cli("split", "ep", "--arm", "a=base::80", "--arm", "b=other::20", "--coordinator", address)
    wait_until(lambda: all(a.state == "READY" for a in client.endpoints()[0].deployments))
    served = {"a": 0, "b": 0}
    for i in range(200):
        key = f"user-{i}"
        answers = [routed(client, agent[1]["agent"], rows[:2], key)[0] for agent in agents]
        np.testing.assert_allclose(answers[0], answers[1], atol=1e-7)  # same key, same arm, either agent
        arm = "a" if np.allclose(answers[0], base.predict_proba(rows[:2]), atol=1e-5) else "b"
        np.testing.assert_allclose(answers[0], (base if arm == "a" else other).predict_proba(rows[:2]), atol=1e-5)
        served[arm] += 1
    # 200 keys at 20%: binomial sd = 5.7; allow 4 sd either side.
    assert 40 - 23 <= served["b"] <= 40 + 23, served
    assert client.feedback("ep", "user-1", 1.0) in ("a", "b")
    wait_until(lambda: sum(a.requests for a in client.report("ep").arms) >= 400, timeout=10)
    report = cli("report", "ep", "--coordinator", address)
    assert "two_proportion_z" in report and "welch_t" in report


def test_broken_canary_rolls_back_and_good_canary_is_promoted(mesh) -> None:
    client, address, base, other, rows, agents = mesh
    agent = agents[0][1]["agent"]
    cli("canary", "ep", "--candidate", "broken", "--steps", "50,100", "--window", "1s", "--min-requests", "10",
        "--coordinator", address)
    failures = 0
    for i in range(400):
        try:
            routed(client, agent, rows[:1], f"k{i}")
        except InvalidArgument:
            failures += 1
        if [e.policy for e in client.endpoints()] == ["single"]:
            break
    assert failures > 0
    wait_for_policy(client, "single")
    (endpoint,) = client.endpoints()
    assert [d.model for d in endpoint.deployments] == ["base"]
    events = cli("events", "ep", "--coordinator", address)
    assert "rollback" in events and "error rate" in events

    client.canary("ep", "other", steps=(50, 100), window_s=1.0, min_requests=10)
    for i in range(2000):
        routed(client, agent, rows[:1], f"k{i}")
        if [e.policy for e in client.endpoints()] == ["single"]:
            break
    wait_for_policy(client, "single")
    (endpoint,) = client.endpoints()
    assert [d.model for d in endpoint.deployments] == ["other"]
    kinds = [e.kind for e in client.events("ep")]
    assert kinds[-2:] == ["canary_step", "promote"]


def test_shadow_answers_never_reach_the_client(mesh) -> None:
    client, address, base, other, rows, agents = mesh
    cli("shadow", "ep", "--candidate", "other", "--fraction", "1.0", "--coordinator", address)
    wait_until(lambda: all(d.state == "READY" for d in client.endpoints()[0].deployments))
    expected = base.predict_proba(rows)
    for i in range(30):
        got, _ = routed(client, agents[1][1]["agent"], rows, f"s{i}")
        np.testing.assert_allclose(got, expected, atol=1e-5)
    def compared() -> int:
        return {a.arm: a.shadow_compared for a in client.report("ep").arms}.get("shadow", 0)
    wait_until(lambda: compared() > 0, timeout=15)
    metrics = urllib.request.urlopen(agents[1][1]["metrics"], timeout=5).read().decode()
    assert "milepost_shadow_compared_total" in metrics


def test_ensemble_mean_equals_the_mean_of_its_members(mesh) -> None:
    client, address, base, other, rows, agents = mesh
    cli("ensemble", "ep", "--member", "x=base", "--member", "y=other", "--combiner", "mean", "--coordinator", address)
    wait_until(lambda: all(d.state == "READY" for d in client.endpoints()[0].deployments))
    got, _ = routed(client, agents[0][1]["agent"], rows, "e")
    np.testing.assert_allclose(got, (base.predict_proba(rows) + other.predict_proba(rows)) / 2, atol=1e-5)


def test_bandit_learns_from_feedback_to_favour_the_better_arm(mesh) -> None:
    client, address, base, other, rows, agents = mesh
    cli("bandit", "ep", "--arm", "a=base", "--arm", "b=other", "--algorithm", "thompson", "--coordinator", address)
    wait_until(lambda: all(d.state == "READY" for d in client.endpoints()[0].deployments))
    for i in range(40):  # outcomes: arm b converts, arm a never does
        client.feedback("ep", f"seed-{i}", 1.0 if i % 2 else 0.0, arm="b" if i % 2 else "a")
    # The agents learn the rewards from the route table the coordinator pushes.
    agent = agents[0][1]["agent"]

    def share_of_b() -> float:
        served = [routed(client, agent, rows[:1], f"user-{i}")[0] for i in range(100)]
        b = sum(np.allclose(s, other.predict_proba(rows[:1]), atol=1e-5) for s in served)
        return b / len(served)

    assert wait_until(lambda: share_of_b() > 0.8, timeout=20)
