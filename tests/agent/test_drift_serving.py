"""Drift counted in the scoring path of a real agent, shown on its /metrics.

A logistic regression compiled with its training data (scoring_core.compile(..., baseline=X))
is pushed and deployed; live traffic has one feature shifted by half a standard deviation.
After one window, that feature and no other is past PSI 0.2, and the prediction moved too.
"""

from __future__ import annotations

import numpy as np
import pytest

import scoring_core
from milepost.core.settings import reset_settings
from tests.metrics_text import gauges

SHIFTED = 2


@pytest.fixture
def drift_window(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MILEPOST_DRIFT_WINDOW_ROWS", "4000")
    monkeypatch.setenv("MILEPOST_DRIFT_BUDGET", "1")  # every batch: the test knows what the window holds
    reset_settings()
    yield
    reset_settings()


def test_a_shifted_feature_is_flagged_within_one_window_and_no_other(drift_window, cluster, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -1.0, 2.0, 0.5, 0.0]) + rng.normal(size=20_000) > 0).astype(int)
    compiled = scoring_core.compile(LogisticRegression().fit(X, y), baseline=X)
    compiled.save(tmp_path / "lr")
    with cluster.client as client:
        client.push_model(tmp_path / "lr", "lr")
        client.deploy("churn", "lr")
        live = rng.normal(size=(4_000, 5)).astype(np.float32)
        live[:, SHIFTED] += 0.5
        for part in np.array_split(live, 8):
            client.infer("churn", part)
    text = cluster.agent.metrics_text()
    psi = {dict(k)["feature"]: v for k, v in gauges(text, "milepost_feature_drift").items() if dict(k)["statistic"] == "psi"}
    assert set(psi) == {f"f{i}" for i in range(5)}
    assert psi[f"f{SHIFTED}"] > 0.2, psi
    assert all(v < 0.05 for name, v in psi.items() if name != f"f{SHIFTED}"), psi
    prediction = {dict(k)["statistic"]: v for k, v in gauges(text, "milepost_prediction_drift").items()}
    assert prediction["psi"] > 0.1 and prediction["overlap"] < 0.9, prediction
    (rows,) = gauges(text, "milepost_drift_window_rows").values()
    assert rows == 4_000


def test_a_bundle_without_a_baseline_serves_and_shows_no_drift(cluster, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "plain")
        client.deploy("plain", "plain")
        assert client.infer("plain", rows).num_rows == len(rows)
    assert gauges(cluster.agent.metrics_text(), "milepost_feature_drift") == {}
