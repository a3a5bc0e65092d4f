"""Health alerts that act: a JSON POST to the endpoint's webhook (a real HTTP receiver on
127.0.0.1, retried after a failure), and the canary drift gate rolling back a candidate whose
predictions drift from its training baseline while a steady one is promoted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import scoring_core
from coordinator import health, health_alerts
from milepost.core.errors import FailedPrecondition, InvalidArgument
from tests.conftest import wait_until
from tests.test_health import windows_of

SHIFTED = 0


class Receiver:
    """An HTTP server on 127.0.0.1 that answers ``statuses`` in turn (then 200) and keeps the bodies."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.bodies, self.attempts = list(statuses), [], 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from windows_of(500, monkeypatch)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """``steady`` barely looks at f0; ``eager`` leans on it (so its predictions move when f0 does)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5_000, 3)).astype(np.float32)
    root = tmp_path_factory.mktemp("alerts")
    for name, weights in (("steady", [0.0, 1.0, 1.0]), ("eager", [3.0, 0.2, 0.2])):
        y = (X @ np.array(weights) + rng.normal(size=5_000) > 0).astype(int)
        scoring_core.compile(LogisticRegression().fit(X, y), baseline=X).save(root / name)
    return root


def traffic(rows: int, shift: float, seed: int) -> np.ndarray:
    live = np.random.default_rng(seed).normal(size=(rows, 3)).astype(np.float32)
    live[:, SHIFTED] += shift
    return live


def test_a_drifting_window_is_posted_to_the_webhook_with_retries(small_windows, cluster, models) -> None:
    receiver = Receiver([500])  # the first attempt fails: the alert is tried again
    try:
        with cluster.client as client:
            client.push_model(models / "eager", "eager")
            client.deploy("risk", "eager")
            client.set_health_config("risk", webhook_url=receiver.url)
            for part in np.array_split(traffic(500, 1.0, 1), 5):
                client.infer("risk", part)
            assert cluster.agent.registration.beat_now(10)
            wait_until(lambda: receiver.bodies, timeout=10)
        (body,) = receiver.bodies
        assert receiver.attempts == 2
        assert (body["kind"], body["endpoint"], body["model"], body["rows"], body["window"]) == ("drift", "risk", "eager", 500, 1)
        assert set(body["features"]) == {f"f{SHIFTED}", "prediction"} and body["features"][f"f{SHIFTED}"]["psi"] > 0.2
        assert "drift in eager:1" in body["message"]
    finally:
        receiver.close()


def test_drift_alerts_once_on_entering_a_breach_and_once_on_leaving_it(monkeypatch, cluster, models) -> None:
    """Three drifting windows then two steady ones: one alert, one resolution, two POSTs (not one a window)."""
    receiver = Receiver([])
    try:
        for _ in windows_of(1_000, monkeypatch):
            with cluster.client as client:
                client.push_model(models / "eager", "eager")
                client.deploy("risk", "eager")
                client.set_health_config("risk", webhook_url=receiver.url)
                for window, shift in enumerate((1.0, 1.0, 1.0, 0.0, 0.0)):
                    for part in np.array_split(traffic(1_000, shift, 10 + window), 4):
                        client.infer("risk", part)
                assert cluster.agent.registration.beat_now(10)
                wait_until(lambda: len(receiver.bodies) == 2, timeout=10)
                events = [(e.kind, e.message) for e in client.events("risk") if e.kind in ("alert", "resolved")]
                shown = client.health("risk", windows=10).deployments[0]
                assert len(shown.windows) == 5
    finally:
        receiver.close()
    (alert, started), (resolved, ended) = events
    assert (alert, resolved) == ("alert", "resolved"), events
    assert started.startswith("drift in eager:1") and "window 1 on a1" in started and f"f{SHIFTED}: psi" in started
    assert ended.startswith("drift ended in eager:1") and "window 4 on a1" in ended and f"f{SHIFTED}: psi" in ended
    assert "f1: " not in started + ended and "f2: " not in started + ended
    firing, back = receiver.bodies
    assert (firing["status"], firing["window"], back["status"], back["window"]) == ("firing", 1, "resolved", 4)
    assert firing["features"].keys() == back["features"].keys() and firing["features"][f"f{SHIFTED}"]["psi"] > 0.2
    assert back["features"][f"f{SHIFTED}"]["psi"] < 0.2
    with cluster.coordinator.store.transaction() as db:  # nothing is in a breach any more
        assert db.execute("SELECT COUNT(*) FROM health_breaches").fetchone() == (0,)
    # A window as drifting as the first, of too few rows to judge (quiet traffic): no alert; of enough rows: one.
    from milepost.v1 import coordinator_pb2 as pb

    drifting = shown.windows[-1]
    for seq, rows in ((6, health.MIN_JUDGED_ROWS - 1), (7, 1_000)):
        counts = [pb.BinCounts(name=f.name, counts=[round(x * rows) for x in f.live] + [0])
                  for f in (*drifting.features, drifting.prediction)]
        cluster.coordinator.health.record("a1", [pb.DriftWindow(endpoint="risk", deployment_id=shown.deployment_id, seq=seq,
                                                                opened_at=seq, closed_at=seq + 0.5, rows=rows, counts=counts)], [])
    with cluster.client as client:
        later = [e.message for e in client.events("risk") if e.kind == "alert"][1:]
    assert len(later) == 1 and "window 7 on a1, 1000 rows" in later[0], later


def test_a_webhook_that_keeps_failing_gives_up_with_the_last_error(tmp_path) -> None:
    import time

    from coordinator.store import Store

    receiver = Receiver([503] * 10)
    store = Store(tmp_path / "milepost.db")
    alerts = health_alerts.Alerts(store, time.time, backoff_s=0.01)
    try:
        assert health_alerts.post(receiver.url, {"kind": "drift"}, attempts=3, backoff_s=0.01) == "HTTP 503"
        assert receiver.attempts == 3 and receiver.bodies == []
        assert health_alerts.post("http://127.0.0.1:9/none", {}, attempts=1) is not None  # nothing listens there
        # Through the alert queue: the alert is an event at once, the failed delivery one more.
        alerts.raise_alert("", "drift in m:1", {"kind": "drift"}, receiver.url)
        failed = wait_until(lambda: [e for e in store.list_events() if e.kind == "webhook_failed"], timeout=10)
        assert [e.kind for e in store.list_events()] == ["alert", "webhook_failed"]
        assert failed[0].message == f"alert not delivered to {receiver.url} after 4 attempts: HTTP 503"
        # Closing while a POST waits to be retried ends at once (the store may close right after).
        alerts.backoff_s = 30.0
        alerts.raise_alert("", "drift in m:1", {"kind": "drift"}, receiver.url)
        started = time.monotonic()
        wait_until(lambda: receiver.attempts >= 8, timeout=10)
        alerts.close()
        assert time.monotonic() - started < 5 and len(store.list_events()) == 3
    finally:
        alerts.close()
        store.close()
        receiver.close()


def canary(client, cluster, models, send, **gates) -> str:
    """Deploy steady, canary eager with ``gates``, ``send(round)`` traffic until the controller
    decides; the decision's event (kind: message)."""
    client.push_model(models / "steady", "steady")
    client.push_model(models / "eager", "eager")
    client.deploy("risk", "steady")
    client.set_health_config("risk", group_attributes=["group"], favourable="1")
    client.canary("risk", "eager", steps=(50.0, 100.0), window_s=0.1, min_requests=5, max_divergence=0.0, **gates)
    cluster.coordinator.canary.tick()  # opens the first window before any traffic
    sent = [0]

    def decided() -> str | None:
        send(client, sent[0])
        sent[0] += 1
        cluster.agent.registration.beat_now(10)
        cluster.coordinator.canary.tick()
        events = [e for e in client.events("risk") if e.kind in ("rollback", "promote")]
        return events[-1].kind + ": " + events[-1].message if events else None

    return wait_until(decided, timeout=40, interval=0.0)


def batches(shift: float):
    """400 rows a round in 8 requests, f0 shifted by ``shift``."""
    def send(client, round: int) -> None:
        for i, part in enumerate(np.array_split(traffic(400, shift, round), 8)):
            client.infer("risk", part, key=f"{round}-{i}")
    return send


def groups(client, round: int) -> None:
    """40 single-row requests a round with a key and a group; group b's f0 is lower (so eager,
    which leans on f0, selects b less; steady does not look at f0)."""
    live = traffic(40, 0.0, 100 + round)
    for i, row in enumerate(live):
        group = "ab"[i % 2]
        if group == "b":
            row[SHIFTED] -= 1.5
        client.infer("risk", row[None, :], key=f"g{round}-{i}", parameters={"group": group})


def test_the_drift_gate_rolls_back_a_candidate_whose_predictions_drift(small_windows, cluster, models) -> None:
    with cluster.client as client:
        decision = canary(client, cluster, models, batches(1.0), max_drift={"psi": 0.2})
        assert decision.startswith("rollback") and "prediction drift against the candidate's training baseline: psi" in decision
        assert client.endpoints()[0].routing.kind == "single"


def test_the_drift_gate_promotes_a_steady_candidate(small_windows, cluster, models) -> None:
    with cluster.client as client:
        decision = canary(client, cluster, models, batches(0.0), max_drift={"psi": 0.2})
        assert decision.startswith("promote"), decision
        with pytest.raises(InvalidArgument, match="statistic 'psy' is unknown"):
            client.canary("risk", "steady", max_drift={"psy": 0.2})


def test_the_impact_ratio_gate_rolls_back_a_candidate_that_selects_a_group_less(cluster, models) -> None:
    with cluster.client as client:
        client.push_model(models / "steady", "steady")
        client.deploy("risk", "steady")
        with pytest.raises(FailedPrecondition, match="the impact-ratio gate needs the groups of endpoint 'risk'"):
            client.canary("risk", "steady", max_impact_ratio_drop=0.1)
        decision = canary(client, cluster, models, groups, max_impact_ratio_drop=0.1)
        assert decision.startswith("rollback") and "impact ratio of group=b" in decision, decision
        assert "on the baseline: a drop of" in decision


def test_an_alert_of_another_arm_falls_back_to_the_declared_arm(small_windows, cluster, models) -> None:
    with cluster.client as client:
        client.push_model(models / "steady", "steady")
        client.push_model(models / "eager", "eager")
        client.split("risk", {"a": ("steady", "", 50.0), "b": ("eager", "", 50.0)})
        with pytest.raises(InvalidArgument, match="fallback_arm 'c' is not an arm of endpoint 'risk'"):
            client.set_health_config("risk", fallback_arm="c")
        client.set_health_config("risk", fallback_arm="a")

        def fell_back() -> str | None:
            for i, part in enumerate(np.array_split(traffic(1_200, 1.0, 7), 12)):
                client.infer("risk", part, key=f"f{i}")  # keys spread the rows over both arms
            cluster.agent.registration.beat_now(10)
            cluster.coordinator.health_rules.tick()
            return next((e.message for e in client.events("risk") if e.kind == "promote"), None)

        reason = wait_until(fell_back, timeout=30, interval=0.0)
        assert "fallback: alert on arm b: drift in eager:1" in reason, reason
        (endpoint,) = client.endpoints()
        assert [a.name for a in endpoint.routing.arms] == ["a"]


def test_a_fairness_alert_of_another_arm_falls_back_to_the_declared_arm(cluster, models) -> None:
    """Arm b (eager, which leans on f0) selects group b less; arm a (steady) does not look at f0."""
    with cluster.client as client:
        client.push_model(models / "steady", "steady")
        client.push_model(models / "eager", "eager")
        client.split("risk", {"a": ("steady", "", 50.0), "b": ("eager", "", 50.0)})
        client.set_health_config("risk", group_attributes=["group"], favourable="1", fallback_arm="a")
        rules = cluster.coordinator.health_rules
        rules.every_s = 0.0

        def fell_back() -> str | None:
            groups(client, fell_back.round)
            fell_back.round += 1
            cluster.agent.registration.beat_now(10)
            rules.tick()
            return next((e.message for e in client.events("risk") if e.kind == "promote"), None)

        fell_back.round = 0
        reason = wait_until(fell_back, timeout=30, interval=0.0)
        assert "(fallback: alert on arm b: impact ratio of group=b on arm b is " in reason, reason
        (endpoint,) = client.endpoints()
        assert [a.name for a in endpoint.routing.arms] == ["a"]
        alerts = [e.message for e in client.events("risk") if e.kind == "alert"]
        assert not any("on arm a" in m for m in alerts), alerts  # the fallback arm is not judged alone
    # Arm b is gone with its deployment: so are its breaches (what milepost_health_alerts_active counts).
    def breaches_of_b() -> int:
        with cluster.coordinator.store.transaction() as db:
            return db.execute("SELECT COUNT(*) FROM health_breaches WHERE subject LIKE 'b:%'").fetchone()[0]

    assert breaches_of_b() > 0
    wait_until(lambda: cluster.coordinator.health.forget_gone() or breaches_of_b() == 0, timeout=10)
