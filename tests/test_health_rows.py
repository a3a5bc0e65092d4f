"""Every row of a keyed request counts for fairness and realised performance, and fairness is
judged over a window of each group's newest predictions.

A real agent and coordinator on loopback; requests of several rows each carry a key and a group
parameter. Their outcomes are one value per row, in row order (`milepost feedback --value 1,0,...`,
Client.feedback with a list: FeedbackRequest.values); checked against fairlearn's MetricFrame and
sklearn.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
from sklearn import metrics

import scoring_core
from milepost.cli import main
from tests.health_models import labels, trained_logistic

REQUESTS = 30
ROWS = 8
WITH_OUTCOMES = 20  # requests whose outcomes come back


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    X, estimator = trained_logistic(rng, 2_000)
    path = tmp_path_factory.mktemp("rows") / "lr"
    scoring_core.compile(estimator).save(path)
    live = rng.normal(size=(REQUESTS * ROWS, 3)).astype(np.float32)
    group = np.repeat(["a", "b"] * (REQUESTS // 2), ROWS)  # a request's rows share its group parameter
    live[group == "b", 0] -= 0.8
    truth = labels(rng, live)
    return path, live, group, truth


def served(cluster, population) -> np.ndarray:
    """Deploy, score every request with a key, ship them; every row's P(class 1)."""
    path, live, group, _ = population
    predictions = []
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy("loans", "lr")
        client.set_health_config("loans", group_attributes=["group"], favourable="1", performance_window=1_000)
        for r in range(REQUESTS):
            rows = slice(r * ROWS, (r + 1) * ROWS)
            out = client.infer("loans", live[rows], key=f"k{r}", parameters={"group": str(group[rows][0])})
            predictions.extend(p[1] for p in out.column(0).to_pylist())
        assert cluster.agent.registration.beat_now(10)
    return np.asarray(predictions)


def test_every_row_of_a_keyed_request_counts(cluster, population) -> None:
    _, _, group, truth = population
    predictions = served(cluster, population)
    with cluster.client as client:
        for r in range(WITH_OUTCOMES - 1):
            client.feedback("loans", f"k{r}", truth[r * ROWS:(r + 1) * ROWS].tolist())  # one outcome per row
        client.feedback("loans", f"k{WITH_OUTCOMES}", 1.0)  # one value for a request of 8 rows: not judged
    last = WITH_OUTCOMES - 1
    assert main(["feedback", "loans", "--coordinator", cluster.coordinator.address, "--key", f"k{last}",
                 "--value", ",".join(str(v) for v in truth[last * ROWS:(last + 1) * ROWS])]) == 0
    with cluster.client as client:
        fairness, health = client.fairness("loans"), client.health("loans")
    selected = (predictions >= 0.5).astype(int)
    frame = MetricFrame(metrics=selection_rate, y_true=truth, y_pred=selected, sensitive_features=group)
    known = slice(0, WITH_OUTCOMES * ROWS)
    rates = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=truth[known],
                        y_pred=selected[known], sensitive_features=group[known])
    by_group = {g.group: g for g in fairness.groups}
    for name in ("a", "b"):
        g = by_group[f"group={name}"]
        assert (g.predictions, g.outcomes) == (REQUESTS * ROWS // 2, WITH_OUTCOMES * ROWS // 2)
        assert g.selection_rate == pytest.approx(frame.by_group[name], abs=1e-12)
        assert g.impact_ratio == pytest.approx(frame.by_group[name] / frame.by_group.max(), abs=1e-12)
        assert g.true_positive_rate == pytest.approx(rates.by_group.loc[name, "tpr"], abs=1e-12)
        assert g.false_positive_rate == pytest.approx(rates.by_group.loc[name, "fpr"], abs=1e-12)
    (window,) = health.performance
    assert window.outcomes == WITH_OUTCOMES * ROWS
    assert window.metrics["accuracy"] == pytest.approx(metrics.accuracy_score(truth[known], selected[known]), abs=1e-12)
    assert window.metrics["auc"] == pytest.approx(metrics.roc_auc_score(truth[known], predictions[known]), abs=1e-6)


def test_fairness_is_judged_over_each_groups_newest_predictions(cluster, population, capsys) -> None:
    _, _, group, _ = population
    predictions = served(cluster, population)
    with cluster.client as client:
        with pytest.raises(Exception, match="fairness_window must be >= 0"):
            client.set_health_config("loans", fairness_window=-1)
    address = ["--coordinator", cluster.coordinator.address]
    assert main(["fairness", "loans", *address, "--window", "40"]) == 0
    out = capsys.readouterr().out
    assert "window: each group's newest 40 predictions" in out
    with cluster.client as client:
        fairness = client.fairness("loans")
    assert fairness.window == 40
    newest = {name: predictions[group == name][-40:] for name in ("a", "b")}  # the last 5 requests of each group
    rates = {name: float(np.mean(p >= 0.5)) for name, p in newest.items()}
    for g in fairness.groups:
        name = g.group.removeprefix("group=")
        assert g.predictions == 40 and g.selection_rate == pytest.approx(rates[name], abs=1e-12)
        assert g.impact_ratio == pytest.approx(rates[name] / max(rates.values()), abs=1e-12)
        assert 0 < g.first_at < g.last_at
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("group=")}
    assert set(rows) == {"group=a", "group=b"} and all(" 40 " in line for line in rows.values())


def test_each_rows_own_input_columns_are_its_groups(cluster, population) -> None:
    """A text column of the inputs: each row is grouped by its own value (a null leaves it out),
    as the agent ships it (ScoredKeys) and the coordinator reads it."""
    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.registration import ScoredKeys
    from agent.routing.route_table import Route
    from milepost.core.routing.policy import build
    from milepost.v1 import coordinator_pb2 as pb
    from milepost.v1 import routing_pb2

    served(cluster, population)
    policy = routing_pb2.RoutingPolicy(kind="single", key_parameter="milepost-key",
                                       arms=[routing_pb2.Arm(name="primary", deployment_id="d1", weight=1)])
    route = Route("loans", build("loans", policy, 0), "", {}, True)
    p = [0.9, 0.2, 0.7, 0.4, 0.6]
    probabilities = pa.FixedSizeListArray.from_arrays(pa.array([v for q in p for v in (1 - q, q)]), 2)
    answer = InferenceResponse(pa.RecordBatch.from_arrays([probabilities], names=["probabilities"]), "v", ("primary",), ("d1",))
    inputs = pa.RecordBatch.from_arrays([pa.array(np.zeros(5)), pa.array(["F", "M", "F", None, "M"])], names=["x", "sex"])
    keys = ScoredKeys()
    keys.offer(route, InferenceRequest("loans", lambda s: None, parameters={"milepost-key": "rows"}), inputs, answer)
    (message,), _ = keys.pending()
    assert list(message.predictions) == pytest.approx(p) and list(message.columns["sex"].values) == ["F", "M", "F", "", "M"]
    assert dict(message.attributes) == {"sex": "F"} and message.prediction == pytest.approx(0.9)
    # A first row without a prediction (NaN): the request's other rows count all the same.
    nan_first = pb.ScoredKey(endpoint="loans", key="nan-first", arm="primary", prediction=math.nan, at=message.at,
                             attributes={"sex": "M"}, predictions=[math.nan, 0.8])
    cluster.coordinator.health.record("a1", [], [message, nan_first])
    with cluster.client as client:
        client.set_health_config("loans", group_attributes=["sex"])
        by_group = {g.group: (g.predictions, g.selection_rate) for g in client.fairness("loans").groups}
    assert by_group == {"sex=F": (2, 1.0), "sex=M": (3, pytest.approx(2 / 3))}
