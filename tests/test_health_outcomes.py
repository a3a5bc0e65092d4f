"""Realised performance from the outcomes `milepost feedback` sends, against sklearn.metrics.

Requests scored with a key (``milepost-key``) on a real agent travel to the coordinator in
heartbeats; feedback by key is joined with them. A label flip lowers realised accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

import scoring_core
from coordinator import health_stats
from milepost.cli import main
from tests.conftest import wait_until

WINDOW = 120


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3_000, 4)).astype(np.float32)
    y = (X @ np.array([1.5, -1.0, 0.5, 0.0]) + rng.normal(size=3_000) > 0).astype(int)
    model = LogisticRegression().fit(X[:2_000], y[:2_000])
    path = tmp_path_factory.mktemp("outcomes") / "lr"
    scoring_core.compile(model, baseline=X[:2_000]).save(path)
    return path, model, X[2_000:], y[2_000:]


def score_and_feed_back(client, endpoint: str, rows: np.ndarray, outcomes: np.ndarray, first: int) -> None:
    for i, (row, outcome) in enumerate(zip(rows, outcomes), start=first):
        client.infer(endpoint, row[None, :], key=f"k{i}")
        client.feedback(endpoint, f"k{i}", float(outcome), arm="primary")


def test_realised_performance_matches_sklearn_and_a_label_flip_lowers_accuracy(cluster, classifier, capsys) -> None:
    path, model, X, y = classifier
    rows, labels = X[: 2 * WINDOW], y[: 2 * WINDOW]
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy("loans", "lr")
        client.set_health_config("loans", performance_window=WINDOW, thresholds={"min_accuracy": 0.6})
        score_and_feed_back(client, "loans", rows[:WINDOW], labels[:WINDOW], 0)
        score_and_feed_back(client, "loans", rows[WINDOW:], 1 - labels[WINDOW:], WINDOW)  # the world changed
        assert cluster.agent.registration.beat_now(10)
        health = client.health("loans")
    assert health.task == "classification"
    first, second = health.performance
    assert (first.arm, first.index, first.outcomes, second.index, second.outcomes) == ("primary", 0, WINDOW, 1, WINDOW)
    p = model.predict_proba(rows[:WINDOW])[:, 1]
    assert first.metrics["accuracy"] == pytest.approx(metrics.accuracy_score(labels[:WINDOW], p >= 0.5), abs=1e-12)
    assert first.metrics["auc"] == pytest.approx(metrics.roc_auc_score(labels[:WINDOW], p), abs=1e-6)
    assert first.metrics["log_loss"] == pytest.approx(metrics.log_loss(labels[:WINDOW], p), abs=1e-6)
    assert first.metrics["accuracy"] > 0.75
    assert second.metrics["accuracy"] < 0.3 < first.metrics["accuracy"] - 0.4
    assert second.metrics["auc"] < 0.3 and second.metrics["log_loss"] > first.metrics["log_loss"]
    # The min_accuracy rule: one alert, for the window after the flip (the control loop judges it).
    with cluster.client as client:
        cluster.coordinator.health_rules.every_s = 0.0  # judge what arrived now, not 5 s after the last pass
        cluster.coordinator.health_rules.tick()
        alerts = wait_until(lambda: [e.message for e in client.events("loans") if e.kind == "alert"], timeout=10)
    assert alerts == [f"realised performance of arm primary, window 1 ({WINDOW} outcomes): "
                      f"{second.metrics['accuracy']:.4g} accuracy (< 0.6)"]
    assert main(["health", "loans", "--coordinator", cluster.coordinator.address]) == 0
    out = capsys.readouterr().out
    assert "realised performance (classification, windows of 120 outcomes)" in out
    assert "ACCURACY" in out and "AUC" in out and f"{second.metrics['accuracy']:.4f}" in out


def test_a_rule_alerts_when_it_starts_to_break_and_resolves_when_it_stops(cluster, classifier) -> None:
    """Windows right, flipped, flipped, right: one alert (window 1), one resolution (window 3), not one a window."""
    path, _, X, y = classifier
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy("loans", "lr")
        client.set_health_config("loans", performance_window=WINDOW, thresholds={"min_accuracy": 0.6})
        rules = cluster.coordinator.health_rules
        rules.every_s = 0.0
        for window, flipped in enumerate((False, True, True, False)):
            rows = slice(window * WINDOW, (window + 1) * WINDOW)
            score_and_feed_back(client, "loans", X[rows], 1 - y[rows] if flipped else y[rows], window * WINDOW)
            assert cluster.agent.registration.beat_now(10)
            rules.tick()
        events = [(e.kind, e.message.split(":")[0]) for e in client.events("loans") if e.kind in ("alert", "resolved")]
    assert events == [("alert", "realised performance of arm primary, window 1 (120 outcomes)"),
                      ("resolved", "realised performance of arm primary is back, window 3 (120 outcomes)")], events


def test_regressor_outcomes_give_mae_and_rmse(cluster, tmp_path) -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    target = X @ np.array([2.0, -1.0, 0.5]) + rng.normal(scale=0.3, size=500)
    model = LinearRegression().fit(X[:400], target[:400])
    scoring_core.compile(model).save(tmp_path / "reg")
    with cluster.client as client:
        client.push_model(tmp_path / "reg", "reg")
        client.deploy("price", "reg")
        score_and_feed_back(client, "price", X[400:440], target[400:440], 0)
        assert cluster.agent.registration.beat_now(10)
        health = client.health("price")
    (window,) = health.performance
    predicted = model.predict(X[400:440])
    assert window.outcomes == 40 and set(window.metrics) == {"mae", "rmse"}
    assert window.metrics["mae"] == pytest.approx(metrics.mean_absolute_error(target[400:440], predicted), rel=1e-5)
    assert window.metrics["rmse"] == pytest.approx(metrics.root_mean_squared_error(target[400:440], predicted), rel=1e-5)
    assert not health.deployments[0].has_baseline  # compiled without one: performance still shows


def test_metrics_agree_with_sklearn_with_ties_and_one_class() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=1_000)
    p = np.round(rng.uniform(size=1_000), 1)  # many ties
    got = health_stats.classification(p, y, binary=True)
    assert got["auc"] == pytest.approx(metrics.roc_auc_score(y, p), abs=1e-12)
    assert got["log_loss"] == pytest.approx(metrics.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), abs=1e-9)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, p >= 0.5), abs=1e-12)
    edges = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[edges == b].mean() - y[edges == b].mean()) * np.sum(edges == b) for b in np.unique(edges)) / p.size
    assert got["calibration_error"] == pytest.approx(ece, abs=1e-12)
    assert np.isnan(health_stats.classification(p, np.ones(1_000), binary=True)["auc"])  # one class
    multi = health_stats.classification(np.array([0, 2, 1, 2]), np.array([0, 2, 2, 2]), binary=False)
    assert multi == {"accuracy": 0.75}


def test_scored_keys_keep_the_newest_and_are_acknowledged_in_order() -> None:
    import pyarrow as pa

    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.registration import ScoredKeys
    from agent.routing.route_table import Route
    from milepost.core.routing.policy import build
    from milepost.v1 import routing_pb2

    policy = routing_pb2.RoutingPolicy(kind="single", key_parameter="milepost-key",
                                       arms=[routing_pb2.Arm(name="primary", deployment_id="d1", weight=1)])
    route = Route("ep", build("ep", policy, 0), "", {}, True)
    three = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.7, 0.2, 0.5, 0.1, 0.4]), 3)
    answer = InferenceResponse(pa.RecordBatch.from_arrays([three], names=["probabilities"]), "v", ("primary",), ("d1",))
    inputs = pa.RecordBatch.from_arrays([pa.array([0.5, 1.5]), pa.array(["F", "M"]), pa.array([3, 4])], names=["x", "sex", "age"])
    keys = ScoredKeys(keep=3, clock=lambda: 7.0)
    for i in range(5):
        request = InferenceRequest("ep", lambda s: None, parameters={"milepost-key": f"k{i}", "group": "a", "age": "40s"})
        keys.offer(route, request, inputs, answer)
    keys.offer(route, InferenceRequest("ep", lambda s: None, parameters={"group": "a"}), inputs, answer)  # no key: not kept
    messages, upto = keys.pending()
    assert [m.key for m in messages] == ["k2", "k3", "k4"] and upto == 5  # the oldest forgotten past keep
    assert {(m.arm, m.prediction, m.at) for m in messages} == {("primary", 1.0, 7.0)}
    # Groups: the parameters, and the first row's text and integer columns (a parameter wins over a column).
    assert dict(messages[0].attributes) == {"group": "a", "sex": "F", "age": "40s"}
    keys.acknowledge(3)
    assert [m.key for m in keys.pending()[0]] == ["k3", "k4"]
    keys.acknowledge(upto)
    assert keys.pending() == ([], 0)
