"""Fairness per group on a real agent and coordinator, checked against fairlearn's MetricFrame.

Requests scored with a key carry a group parameter (and a region, for intersections); one
group's rows lean towards the unfavourable class, so its impact ratio falls under 4/5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate

import scoring_core
from milepost.cli import main
from milepost.core.errors import FailedPrecondition
from tests.conftest import wait_until
from tests.health_models import labels, trained_logistic

N = 240
WITH_OUTCOMES = 180


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    X, estimator = trained_logistic(rng, 2_000)
    path = tmp_path_factory.mktemp("fairness") / "lr"
    scoring_core.compile(estimator).save(path)
    live = rng.normal(size=(N, 3)).astype(np.float32)
    group = rng.choice(["a", "b"], size=N)
    live[group == "b", 0] -= 0.8  # group b is selected less often
    region = rng.choice(["north", "south"], size=N)
    truth = labels(rng, live)
    return path, live, group, region, truth


def test_selection_rate_impact_ratio_tpr_and_fpr_match_fairlearn(cluster, population, capsys) -> None:
    path, live, group, region, truth = population
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy("loans", "lr")
        assert "declares no group attribute" in client.fairness("loans").message
        predictions = []
        for i in range(N):
            out = client.infer("loans", live[i:i + 1], key=f"k{i}", parameters={"group": group[i], "region": region[i]})
            predictions.append(out.column(0).to_pylist()[0][1])
            if i < WITH_OUTCOMES:
                client.feedback("loans", f"k{i}", float(truth[i]), arm="primary")
        assert cluster.agent.registration.beat_now(10)
        client.set_health_config("loans", group_attributes=["group"], favourable="1")
        fairness = client.fairness("loans")
        client.set_health_config("loans", group_attributes=["group", "region"])
        crossed = client.fairness("loans")
    selected = (np.asarray(predictions) >= 0.5).astype(int)
    frame = MetricFrame(metrics=selection_rate, y_true=truth, y_pred=selected, sensitive_features=group)
    known = slice(0, WITH_OUTCOMES)
    rates = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=truth[known],
                        y_pred=selected[known], sensitive_features=group[known])
    by_group = {g.group: g for g in fairness.groups}
    assert set(by_group) == {"group=a", "group=b"}
    top = frame.by_group.max()
    for name in ("a", "b"):
        g = by_group[f"group={name}"]
        assert g.predictions == int(np.sum(group == name)) and g.outcomes == int(np.sum(group[known] == name))
        assert g.selection_rate == pytest.approx(frame.by_group[name], abs=1e-12)
        assert g.impact_ratio == pytest.approx(frame.by_group[name] / top, abs=1e-12)
        assert g.true_positive_rate == pytest.approx(rates.by_group.loc[name, "tpr"], abs=1e-12)
        assert g.false_positive_rate == pytest.approx(rates.by_group.loc[name, "fpr"], abs=1e-12)
    assert by_group["group=b"].impact_ratio < 0.8 and by_group["group=b"].alert and not by_group["group=a"].alert
    # Intersections of two attributes, as MetricFrame's groups over both columns.
    both = MetricFrame(metrics=selection_rate, y_true=truth, y_pred=selected,
                       sensitive_features=pd.DataFrame({"group": group, "region": region}))
    crossed_rates = {g.group: g.selection_rate for g in crossed.groups}
    assert crossed_rates == pytest.approx({f"group={a}&region={r}": v for (a, r), v in both.by_group.items()}, abs=1e-12)
    # The 4/5 rule as an alert: raised once when group b falls under it, in the audit trail.
    # The intersections were judged while they were set (as the control loop may have done): going
    # back to one attribute is judged anew although no data arrived since.
    rules = cluster.coordinator.health_rules
    rules.every_s = 0.0  # judge what arrived now, not 5 s after the last pass
    rules.tick()
    with cluster.client as client:
        client.set_health_config("loans", group_attributes=["group"])
        rules.tick()
        alerts = wait_until(lambda: [e.message for e in client.events("loans") if e.kind == "alert" and "&" not in e.message],
                            timeout=10)
        assert len(alerts) == 1 and alerts[0].startswith("impact ratio of group=b is "), alerts
        assert any(e.action == "alert" and "impact ratio of group=b" in e.detail for e in client.audit())
    with cluster.coordinator.store.transaction() as db:  # the intersections' breaches went with them
        assert db.execute("SELECT subject FROM health_breaches WHERE kind='fairness'").fetchall() == [(":group=b",)]
    assert main(["fairness", "loans", "--coordinator", cluster.coordinator.address, "--group", "group"]) == 0
    out = capsys.readouterr().out
    assert "groups by group, favourable outcome '1'" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("group=")}
    assert rows["group=b"].endswith("ALERT") and rows["group=a"].endswith("ok")


def test_a_favourable_outcome_that_is_no_class_is_refused(cluster, population) -> None:
    path, live, *_ = population
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy("loans", "lr")
        client.infer("loans", live[:1], key="k0", parameters={"group": "a"})
        client.set_health_config("loans", group_attributes=["group"], favourable="yes")
        with pytest.raises(FailedPrecondition, match="favourable outcome 'yes' is not a class of the model"):
            client.fairness("loans")
