"""ML health end to end: agents ship closed drift windows in heartbeats, the coordinator judges
them against the bundle's training baseline, and `milepost health` shows it.

A real coordinator and agent on loopback (the ``cluster`` fixture), a logistic regression trained
here and compiled with its training data; live traffic has one feature shifted by half a
standard deviation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

import scoring_core
from milepost.cli import main
from milepost.core.errors import InvalidArgument, NotFound, PermissionDenied
from milepost.core.settings import reset_settings
from scoring_core import drift as d
from tests.conftest import wait_until

SHIFTED = 2
WINDOW = 4_000


def windows_of(rows: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Drift windows of ``rows`` rows for the agents a test starts, counting every batch (so the
    test knows what a window holds); the settings as they were afterwards."""
    monkeypatch.setenv("MILEPOST_DRIFT_WINDOW_ROWS", str(rows))
    monkeypatch.setenv("MILEPOST_DRIFT_BUDGET", "1")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def drift_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from windows_of(WINDOW, monkeypatch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -1.0, 2.0, 0.5, 0.0]) + rng.normal(size=20_000) > 0).astype(int)
    path = tmp_path_factory.mktemp("health") / "lr"
    scoring_core.compile(LogisticRegression().fit(X, y), baseline=X).save(path)
    return path, X


def shifted_traffic(seed: int = 1) -> np.ndarray:
    live = np.random.default_rng(seed).normal(size=(WINDOW, 5)).astype(np.float32)
    live[:, SHIFTED] += 0.5
    return live


def served_window(cluster, trained, endpoint: str = "churn"):
    """Deploy, send one window of shifted traffic, and wait for the coordinator to hold it."""
    path, _ = trained
    live = shifted_traffic()
    with cluster.client as client:
        client.push_model(path, "lr")
        client.deploy(endpoint, "lr")
        for part in np.array_split(live, 8):
            client.infer(endpoint, part)
        assert cluster.agent.registration.beat_now(10)
        health = wait_until(lambda: (h := client.health(endpoint)).deployments[0].windows and h, timeout=10)
    return health, live


def test_a_shifted_feature_is_flagged_at_the_coordinator_within_one_window_and_no_other(drift_window, cluster, trained) -> None:
    health, _ = served_window(cluster, trained)
    (deployment,) = health.deployments
    assert deployment.has_baseline and deployment.arm == "primary" and deployment.model == "lr"
    (window,) = deployment.windows
    assert window.rows == WINDOW and window.seq == 1 and window.agent_id == "a1"
    flagged = {f.name for f in window.features if f.alert}
    assert flagged == {f"f{SHIFTED}"}, [(f.name, [(s.name, round(s.value, 3)) for s in f.statistics]) for f in window.features]
    shifted = next(f for f in window.features if f.name == f"f{SHIFTED}")
    stats = {s.name: s for s in shifted.statistics}
    assert stats["psi"].value > 0.2 and stats["psi"].threshold == 0.2 and stats["psi"].alert
    assert stats["overlap"].value < 0.9 and stats["out_of_range_rate"].value < 0.01
    assert window.prediction.alert  # the shifted feature has weight 2: the predictions moved too
    # The agent holds no window back: the heartbeat's reply acknowledged it.
    assert [h.model.drift.pending() for h in cluster.agent.table.hosted()] == [[]]
    # The window's drift is an alert in the endpoint's events and so in the audit trail.
    with cluster.client as client:
        alerts = [e.message for e in client.events("churn") if e.kind == "alert"]
        assert len(alerts) == 1, alerts
        features = alerts[0].split(" rows): ", 1)[1]  # after "drift in lr:1 (deployment ID, window 1 on a1, 4000 rows): "
        assert features.startswith(f"f{SHIFTED}: psi") and "f0" not in features and "prediction: " in features, alerts
        assert any(e.action == "alert" and e.subject == "churn" for e in client.audit())


def test_statistics_agree_with_scipy_on_the_same_bins(drift_window, cluster, trained) -> None:
    health, live = served_window(cluster, trained)
    _, X = trained
    window = health.deployments[0].windows[0]
    for i, feature in enumerate(window.features):
        baseline = d.numeric_baseline(f"f{i}", X[:, i].astype(np.float64))
        assert list(feature.baseline) == pytest.approx(list(baseline.shares), abs=1e-12)
        train_bins = np.searchsorted(np.asarray(baseline.edges), X[:, i].astype(np.float64), side="left")
        live_bins = np.searchsorted(np.asarray(baseline.edges), live[:, i].astype(np.float64), side="left")
        q = np.bincount(live_bins, minlength=len(baseline.shares) - 1) / WINDOW
        assert list(feature.live)[:-1] == pytest.approx(q.tolist(), abs=1e-12)
        stats = {s.name: s.value for s in feature.statistics}
        assert stats["ks"] == pytest.approx(ks_2samp(train_bins, live_bins).statistic, abs=1e-9)
        assert stats["js_distance"] == pytest.approx(jensenshannon(feature.baseline, feature.live, base=2), abs=1e-9)
        assert stats["overlap"] == pytest.approx(np.minimum(feature.baseline, feature.live).sum(), abs=1e-9)


def test_the_cli_shows_the_table_json_and_a_plot(drift_window, cluster, trained, capsys, tmp_path) -> None:
    served_window(cluster, trained)
    address = ["--coordinator", cluster.coordinator.address]
    assert main(["health", "churn", *address]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith(("f", "prediction"))}
    assert rows[f"f{SHIFTED}"].endswith("DRIFT") and rows["f0"].endswith("ok") and rows["prediction"].endswith("DRIFT")
    assert "primary (lr:1, deployment " in table and "window 1 on a1, 4000 rows" in table and "no outcomes yet" in table
    assert main(["health", "churn", *address, "--output", "json", "--plot", str(tmp_path / "drift.png")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["deployments"][0]["windows"][0]["rows"] == str(WINDOW)  # int64 as JSON strings, as protobuf writes them
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Thresholds set from the CLI (role deployer): loose enough, the shift is no longer flagged.
    loose = ["--threshold", "psi=1.0", "--threshold", "ks=0.5", "--threshold", "js_distance=0.5"]
    assert main(["health", "churn", *address, *loose]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("f")}
    assert rows[f"f{SHIFTED}"].endswith("ok")


def test_a_bundle_without_a_baseline_says_so(cluster, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "plain")
        client.deploy("plain", "plain")
        client.infer("plain", rows)
        cluster.agent.registration.beat_now(10)
        (deployment,) = client.health("plain").deployments
    assert not deployment.has_baseline and not deployment.windows
    assert "carries no training baseline" in deployment.message and "baseline=X_train" in deployment.message


def test_bad_requests_get_clear_errors_and_roles_are_checked(cluster, logistic_model) -> None:
    from milepost.client import Client

    _, bundle_dir, _, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "plain")
        client.deploy("plain", "plain")
        with pytest.raises(NotFound, match="endpoint 'nope' does not exist"):
            client.health("nope")
        with pytest.raises(InvalidArgument, match="health threshold 'psy' is unknown"):
            client.set_health_config("plain", thresholds={"psy": 0.1})
        with pytest.raises(InvalidArgument, match="webhook_url must be an http"):
            client.set_health_config("plain", webhook_url="ftp://x")
        viewer = client.create_token("watcher", "viewer").token
    with Client(cluster.coordinator.address, token=viewer) as watcher:
        assert watcher.health("plain").config.thresholds["psi"] == 0.2
        with pytest.raises(PermissionDenied):
            watcher.set_health_config("plain", thresholds={"psi": 0.3})


def test_each_agent_has_its_windows_and_what_is_undeployed_is_forgotten(drift_window, cluster, trained, capsys) -> None:
    from milepost.v1 import coordinator_pb2 as pb

    health, _ = served_window(cluster, trained)
    book = cluster.coordinator.health
    deployment = health.deployments[0].deployment_id
    # A second agent serving the same deployment reports its own windows (as its heartbeat would carry them).
    same = health.deployments[0].windows[0]
    counts = [pb.BinCounts(name=f.name, counts=[round(x * 1000) for x in f.live] + [0])
              for f in (*same.features, same.prediction)]
    for seq in (1, 2):
        book.record("a2", [pb.DriftWindow(endpoint="churn", deployment_id=deployment, seq=seq, opened_at=seq,
                                          closed_at=seq + 0.5, rows=1000, counts=counts)], [])
    book.record("a2", [pb.DriftWindow(endpoint="churn", deployment_id=deployment, seq=2, opened_at=2, closed_at=2.5,
                                      rows=1000, counts=counts)], [])  # a repeat, after a lost reply: kept once
    with cluster.client as client:
        shown = client.health("churn", windows=5).deployments[0].windows
        assert [(w.agent_id, w.seq) for w in shown] == [("a1", 1), ("a2", 2), ("a2", 1)]
        assert [(w.agent_id, w.seq) for w in client.health("churn").deployments[0].windows] == [("a1", 1), ("a2", 2)]
        # The deployment as a whole: both agents' newest windows summed, and judged as one.
        whole = client.health("churn").deployments[0].all_agents
        a1 = next(w for w in shown if w.agent_id == "a1")
        assert (whole.agent_id, whole.rows) == ("all", a1.rows + 1000)
        assert [f.name for f in whole.features] == [f.name for f in a1.features]
        for together, alone in zip(whole.features, a1.features):  # a2 saw what a1 saw: the whole looks the same
            psi = {st.name: st.value for st in together.statistics}["psi"]
            assert abs(psi - {st.name: st.value for st in alone.statistics}["psi"]) < 0.02
        assert main(["health", "churn", "--coordinator", cluster.coordinator.address, "--windows", "5"]) == 0
        table = capsys.readouterr().out
        assert "window 1 on a1, 4000 rows" in table and "window 2 on a2, 1000 rows" in table  # the newest of each agent
        assert "all agents' newest windows together, 5000 rows" in table
        assert "window 1 on a2" not in table
        client.undeploy("churn")
    book.forget_gone()
    with cluster.coordinator.store.transaction() as db:
        assert db.execute("SELECT COUNT(*) FROM health_windows").fetchone() == (0,)


def test_missing_values_alert_on_their_rise_over_the_training_share() -> None:
    from coordinator.health import DEFAULT_THRESHOLDS, feature_health

    rng = np.random.default_rng(3)
    train = rng.normal(size=10_000)
    train[rng.uniform(size=10_000) < 0.3] = np.nan  # 30% missing in training
    baseline = d.numeric_baseline("x", train)

    def judged(missing: float):
        live = rng.normal(size=4_000)
        live[rng.uniform(size=4_000) < missing] = np.nan
        return {s.name: s for s in feature_health(baseline, d.count(baseline, live), DEFAULT_THRESHOLDS).statistics}

    as_trained, more = judged(0.3), judged(0.6)
    assert as_trained["missing_rate"].value == pytest.approx(0.3, abs=0.03) and not as_trained["missing_rate"].alert
    assert more["missing_rate"].value == pytest.approx(0.6, abs=0.03) and more["missing_rate"].alert


def test_windows_and_settings_survive_a_coordinator_restart(drift_window, cluster, trained) -> None:
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    with cluster.client as client:
        client.push_model(trained[0], "lr")
        client.deploy("churn", "lr")
        client.set_health_config("churn", thresholds={"psi": 0.15}, webhook_url="http://127.0.0.1:9/hook")
    health, _ = served_window(cluster, trained)
    data_dir = cluster.coordinator.config.data_dir
    cluster.coordinator.stop()
    again = Coordinator(CoordinatorConfig(data_dir=data_dir, port=0))
    again.start()
    try:
        with Client(again.address, token=again.admin_token_file.read_text().strip()) as client:
            after = client.health("churn")
    finally:
        again.stop()
    assert after.config.thresholds["psi"] == 0.15 and after.config.webhook_url == "http://127.0.0.1:9/hook"
    assert after.deployments[0].windows == health.deployments[0].windows


def test_a_window_closes_by_time_without_a_batch_and_an_empty_one_is_not_shipped() -> None:
    import pyarrow as pa

    rng = np.random.default_rng(4)
    baseline = {"features": [d.numeric_baseline("x", rng.normal(size=1_000)).to_json()],
                "prediction": d.numeric_baseline("prediction", rng.uniform(size=1_000)).to_json()}
    now, wall = [0.0], [100.0]
    window = d.LiveWindow(baseline, rows=1_000, seconds=60.0, clock=lambda: now[0], wall=lambda: wall[0])
    batch = pa.RecordBatch.from_arrays([pa.array(rng.normal(size=10))], names=["x"])
    out = pa.RecordBatch.from_arrays([pa.array(rng.uniform(size=10))], names=["value"])
    window.add(batch, out)
    now[0], wall[0] = 59.0, 159.0
    window.close_if_due()
    assert window.pending() == []  # not due yet
    now[0], wall[0] = 60.0, 160.0
    window.close_if_due()
    (closed,) = window.pending()
    assert (closed.seq, closed.rows, closed.opened_at, closed.closed_at) == (1, 10, 100.0, 160.0)
    assert window.drifts()["x"].rows == 10  # the closed window is what is judged now
    now[0], wall[0] = 200.0, 300.0
    window.close_if_due()  # nothing came since: nothing to ship, the window opens again now
    now[0], wall[0] = 230.0, 330.0
    window.add(batch, out)  # 30 s into the new window: it stays open
    assert [w.seq for w in window.pending()] == [1]
    now[0], wall[0] = 260.0, 360.0
    window.close_if_due()
    assert [(w.seq, w.rows, w.opened_at, w.closed_at) for w in window.pending()][1:] == [(2, 10, 300.0, 360.0)]


def test_at_default_settings_quiet_traffic_closes_its_window_by_time_and_flags_the_shifted_feature(
        monkeypatch, cluster, trained) -> None:
    """The drift budget and window rows at their defaults: a sample of the rows is counted, fewer
    than a window holds, so only time closes the window, and no batch comes to close
    it: the heartbeat does (LiveWindow.close_if_due)."""
    monkeypatch.setenv("MILEPOST_DRIFT_WINDOW_S", "4")
    reset_settings()
    try:
        path, _ = trained
        live = np.random.default_rng(5).normal(size=(30_000, 5)).astype(np.float32)
        live[:, SHIFTED] += 0.5
        with cluster.client as client:
            client.push_model(path, "lr")
            client.deploy("churn", "lr")
            (hosted,) = cluster.agent.table.hosted()
            window = hosted.model.drift
            assert window.budget == 0.01 and window.rows_per_window == 10_000
            for part in np.array_split(live, 60):
                client.infer("churn", part)
            counted = window.counted_rows
            assert 0 < counted < 10_000, (window.offered, counted)  # a sample of the rows, too few to fill a window

            def shipped():
                assert cluster.agent.registration.beat_now(10)
                return client.health("churn", windows=10).deployments[0].windows

            windows = wait_until(lambda: sum(w.rows for w in shipped()) == counted and shipped(), timeout=20)
    finally:
        reset_settings()
    assert window.pending() == [] and all(w.rows < 10_000 for w in windows)
    newest = windows[0]
    flagged = {f.name for f in newest.features if f.alert}
    assert flagged == {f"f{SHIFTED}"}, (newest.rows, [(f.name, [(s.name, round(s.value, 3)) for s in f.statistics])
                                                      for f in newest.features])


def test_a_plot_without_matplotlib_is_one_line_naming_the_extra(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as where it is not installed
    assert main(["health", "churn", "--coordinator", "127.0.0.1:9", "--plot", "drift.png"]) != 0
    err = capsys.readouterr().err
    assert err.strip() == "error: FAILED_PRECONDITION: --plot needs matplotlib: pip install 'milepost[plot]'", err
