"""Deploy without waiting (``milepost deploy --no-wait``, ``Client.deploy(wait=False)``): the
call answers once the endpoint is stored and placed, and the loading and the switch of traffic
go on in the coordinator; the endpoint serves its old version until the new one is loaded. A
real coordinator and agent on loopback, real models."""

from __future__ import annotations

import threading

import numpy as np

from tests.conftest import wait_until


def test_a_deploy_that_does_not_wait_answers_placed_then_serves(cluster, logistic_model, tmp_path) -> None:
    from sklearn.linear_model import LinearRegression

    import scoring_core

    _, bundle_dir, version, rows = logistic_model
    X = np.random.default_rng(1).normal(size=(200, rows.shape[1])).astype(np.float32)
    regression = LinearRegression().fit(X, X @ np.arange(rows.shape[1]))
    scoring_core.compile(regression).save(tmp_path / "reg")
    with cluster.client as client:
        client.push_model(bundle_dir, "m")
        client.push_model(tmp_path / "reg", "m")
        first = client.deploy("ep", "m", version[:12], wait=False)
        assert [d.state for d in first.deployments] == ["PENDING"]  # placed, not loaded yet
        assert first.deployments[0].agent_ids == ["a1"]
        wait_until(lambda: [d.state for d in _endpoint(client).deployments] == ["READY"])
        wait_until(lambda: _answers(client, rows) == ["probabilities"])

        # Redeploying without waiting: the old version answers every call until the new one serves.
        columns: list[list[str]] = []
        failures: list[Exception] = []
        stop = threading.Event()

        def keep_calling() -> None:
            while not stop.is_set():
                try:
                    columns.append(client.infer("ep", rows).column_names)
                except Exception as err:  # noqa: BLE001 - any failure is what the test looks for
                    failures.append(err)

        caller = threading.Thread(target=keep_calling)
        caller.start()
        try:
            switched = client.deploy("ep", "m", wait=False)  # the newest: the regression
            assert sorted(d.state for d in switched.deployments) == ["PENDING", "READY"]
            wait_until(lambda: columns and columns[-1] == ["prediction"], timeout=30)
        finally:
            stop.set()
            caller.join()
        assert not failures, failures[:3]
        assert columns[0] == ["probabilities"] and set(map(tuple, columns)) == {("probabilities",), ("prediction",)}
        np.testing.assert_allclose(client.infer("ep", rows).column("prediction").to_numpy(), regression.predict(rows),
                                   atol=1e-4)
        wait_until(lambda: [d.state for d in _endpoint(client).deployments] == ["READY"])  # the old one left


def _answers(client, rows) -> list[str] | None:
    try:
        return client.infer("ep", rows).column_names
    except Exception:  # noqa: BLE001 - not serving yet
        return None


def _endpoint(client):
    return next(e for e in client.endpoints() if e.name == "ep")
