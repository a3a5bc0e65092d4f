"""ML health on Prometheus, scraped: the agent's drift gauges cover closed windows only, and the
coordinator's gauges show realised performance, fairness and the alerts in a breach now, with
the values that `milepost health` and `milepost fairness` show.

A real coordinator and agent on loopback; the scrapes are the text the /metrics paths answer.
"""

from __future__ import annotations

import numpy as np
import pytest

import scoring_core
from coordinator.metrics import HEALTH_EVERY_S, CoordinatorCollector
from milepost.core.exposition import exposition
from tests.health_models import trained_logistic
from tests.metrics_text import gauges
from tests.test_health import windows_of

N = 120
WINDOW = 60


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    X, estimator = trained_logistic(rng, 3_000)
    path = tmp_path_factory.mktemp("metrics") / "lr"
    scoring_core.compile(estimator, baseline=X).save(path)
    return path


def test_the_agent_shows_drift_of_closed_windows_only(monkeypatch, cluster, model) -> None:
    live = np.random.default_rng(1).normal(size=(1_000, 3)).astype(np.float32)
    for _ in windows_of(600, monkeypatch):
        with cluster.client as client:
            client.push_model(model, "lr")
            client.deploy("churn", "lr")
            client.infer("churn", live[:500])
            assert gauges(cluster.agent.metrics_text(), "milepost_feature_drift") == {}  # 500 rows: still open
            client.infer("churn", live[500:700])  # 700 rows: the window closes
            client.infer("churn", live[700:])  # 300 more in the next, open one: not shown
            (rows,) = gauges(cluster.agent.metrics_text(), "milepost_drift_window_rows").values()
            assert rows == 700
            assert cluster.agent.registration.beat_now(10)  # shipped and acknowledged: still what the gauges show
            text = cluster.agent.metrics_text()
            (window,) = client.health("churn").deployments[0].windows
    assert gauges(text, "milepost_drift_window_rows") == {(("deployment", window_deployment(cluster)), ("endpoint", "churn")): 700}
    psi = {dict(k)["feature"]: v for k, v in gauges(text, "milepost_feature_drift").items() if dict(k)["statistic"] == "psi"}
    shown = {f.name: {s.name: s.value for s in f.statistics}["psi"] for f in window.features}
    assert psi == pytest.approx(shown, abs=1e-12) and set(psi) == {"f0", "f1", "f2"}


def window_deployment(cluster) -> str:
    (hosted,) = cluster.agent.table.hosted()
    return hosted.spec.deployment_id


def test_the_coordinator_shows_realised_performance_fairness_and_the_alerts_in_a_breach(monkeypatch, cluster, model) -> None:
    rng = np.random.default_rng(2)
    live = rng.normal(size=(N, 3)).astype(np.float32)
    group = np.array(["a", "b"] * (N // 2))
    live[group == "b", 0] -= 1.5  # group b is selected less often, and its f0 drifts
    for _ in windows_of(N, monkeypatch):
        with cluster.client as client:
            client.push_model(model, "lr")
            client.deploy("loans", "lr")
            client.set_health_config("loans", group_attributes=["group"], favourable="1", performance_window=WINDOW,
                                     thresholds={"min_accuracy": 0.99})
            for i in range(N):
                predicted = client.infer("loans", live[i:i + 1], key=f"k{i}", parameters={"group": group[i]})
                client.feedback("loans", f"k{i}", float(predicted.column(0).to_pylist()[0][1] < 0.5))  # every one wrong
            assert cluster.agent.registration.beat_now(10)
            rules = cluster.coordinator.health_rules
            rules.every_s = 0.0
            rules.tick()
            health, fairness = client.health("loans"), client.fairness("loans")
    coordinator = cluster.coordinator
    now = [0.0]
    collector = CoordinatorCollector(coordinator.store, coordinator.reconciler, coordinator.routes, coordinator.health,
                                     clock=lambda: now[0])
    text = exposition(collector)
    performance = {dict(k)["metric"]: v for k, v in gauges(text, "milepost_realised_performance").items()
                   if dict(k) == {"endpoint": "loans", "arm": "primary", "metric": dict(k)["metric"]}}
    newest = health.performance[-1]
    assert (newest.index, newest.outcomes) == (1, WINDOW)
    assert performance == pytest.approx(dict(newest.metrics), abs=1e-12) and performance["accuracy"] == 0.0
    impact = gauges(text, "milepost_impact_ratio")
    selection = gauges(text, "milepost_selection_rate")
    for g in fairness.groups:
        labels = (("attribute", "group"), ("endpoint", "loans"), ("group", g.group))
        assert impact[labels] == pytest.approx(g.impact_ratio, abs=1e-12)
        assert selection[labels] == pytest.approx(g.selection_rate, abs=1e-12)
    assert {g.group for g in fairness.groups if g.alert} == {"group=b"}
    active = {dict(k)["kind"]: v for k, v in gauges(text, "milepost_health_alerts_active").items()}
    (window,) = health.deployments[0].windows
    drifting = sum(s.alert for f in (*window.features, window.prediction) for s in f.statistics)
    assert drifting > 0 and active == {"drift": drifting, "performance": 1, "fairness": 1}
    # The coordinator's own /metrics collector shows the same.
    served = exposition(coordinator.metrics)
    for name in ("milepost_realised_performance", "milepost_impact_ratio", "milepost_health_alerts_active"):
        assert gauges(served, name) == gauges(text, name)
    # Performance and fairness are read again HEALTH_EVERY_S after the last reading, not at every scrape.
    with cluster.client as client:
        client.set_health_config("loans", favourable="0")
    now[0] = HEALTH_EVERY_S - 1
    assert gauges(exposition(collector), "milepost_selection_rate") == selection
    now[0] = HEALTH_EVERY_S
    flipped = gauges(exposition(collector), "milepost_selection_rate")
    assert flipped == pytest.approx({labels: 1 - rate for labels, rate in selection.items()}, abs=1e-12)
