"""The coordinator: registry, deploy, reconcile, and what survives restarts (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from milepost.client import Client
from milepost.core.errors import DataLoss, InvalidArgument, NotFound
from milepost.pipeline_spec import spec_from_dict
from tests.conftest import ROOT, agent_token, milepost_cmd, wait_for_file, wait_until


def start(role: str, data_dir: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / f"{role}.json").unlink(missing_ok=True)
    process = subprocess.Popen(
        milepost_cmd(role, "--data-dir", str(data_dir), "--port", "0",
                     *(("--metrics-port", "0", "--token", _agent_token(data_dir, extra)) if role == "agent" else ()),
                     *extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    state = wait_for_file(data_dir / f"{role}.json", process)
    if role == "coordinator":  # this test's clients and agents speak as its admin (see tests/conftest.py)
        os.environ["MILEPOST_TOKEN"] = (data_dir / "admin.token").read_text().strip()
    return process, state


def _agent_token(data_dir: Path, extra: tuple[str, ...]) -> str:
    """The agent's token, made once per data directory: a restarted agent comes back as itself."""
    kept = data_dir / "test-agent.token"
    if not kept.exists():
        kept.write_text(agent_token(extra[extra.index("--coordinator") + 1], data_dir.name))
    return kept.read_text()


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def ready_replica(client: Client, endpoint: str) -> bool:
    try:
        client.agent_for(endpoint)
    except Exception:  # noqa: BLE001 - polled until it succeeds
        return False
    return True


def test_restart_keeps_models_and_endpoints_and_agents_serve_meanwhile(tmp_path, logistic_model) -> None:
    estimator, bundle_dir, version, rows = logistic_model
    coord, coord_state = start("coordinator", tmp_path / "coord")
    address = coord_state["coordinator"]
    agent, agent_state = start("agent", tmp_path / "agent", "--coordinator", address, "--agent-id", "node-1")
    try:
        with Client(address) as client:
            client.push_model(bundle_dir, "lr")
            client.deploy("scores", "lr")
            wait_until(lambda: ready_replica(client, "scores"))
            run = client.submit_pipeline(spec_from_dict({"name": "p", "stages": [
                {"name": "s", "kind": "batch_scoring", "engine": "native",
                 "params": {"model": "lr", "source": "/nonexistent.parquet", "sink": str(tmp_path / "o.parquet")}},
            ]}, base=tmp_path))
            wait_until(lambda: client.run(run.run_id).state == "FAILED")
        stop(coord)

        # The coordinator is down: the agent keeps serving.
        with Client(address) as client:
            table = client.infer("scores", rows, agent=agent_state["agent"])
        got = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got, estimator.predict_proba(rows), atol=1e-5)

        coord, coord_state = start("coordinator", tmp_path / "coord", "--port", address.rsplit(":", 1)[1])
        with Client(address) as client:
            assert [(m.name, m.version) for m in client.list_models()] == [("lr", version)]
            endpoints = client.endpoints()
            assert [e.name for e in endpoints] == ["scores"]
            assert endpoints[0].deployments[0].version == version
            (kept,) = client.runs()
            assert kept.run_id == run.run_id and kept.state == "FAILED" and kept.stages[0].message
            wait_until(lambda: ready_replica(client, "scores"))
            assert client.infer("scores", rows).num_rows == len(rows)
    finally:
        for p in (agent, coord):
            if p.poll() is None:
                stop(p)


def test_deploy_waits_for_an_agent_then_places(tmp_path, logistic_model) -> None:
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig

    _, bundle_dir, _, rows = logistic_model
    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0))
    coordinator.start()
    try:
        with Client(coordinator.address, token=coordinator.admin_token_file.read_text().strip()) as client:
            client.push_model(bundle_dir, "lr")
            endpoint = client.deploy("later", "lr")
            assert endpoint.deployments[0].state == "PENDING"
            assert "no live agent" in endpoint.deployments[0].message
            agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "a", port=0, agent_id="late",
                                      token=coordinator.local_agent_token()))
            agent.start()
            try:
                wait_until(lambda: ready_replica(client, "later"))
                assert client.infer("later", rows).num_rows == len(rows)
            finally:
                agent.stop()
    finally:
        coordinator.stop()


def test_redeploy_swaps_version_and_undeploy_unloads(cluster, logistic_model, tmp_path) -> None:
    from sklearn.linear_model import LinearRegression

    import scoring_core

    _, bundle_dir, version, rows = logistic_model
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, rows.shape[1])).astype(np.float32)
    regression = LinearRegression().fit(X, X @ np.arange(rows.shape[1]))
    second = tmp_path / "reg"
    scoring_core.compile(regression).save(second)
    with cluster.client as client:
        client.push_model(bundle_dir, "m")
        client.push_model(second, "m")
        assert len(client.list_models("m")) == 2
        for _ in range(3):  # the call right after a Deploy returns is served by the version it names
            client.deploy("ep", "m", version[:12])
            assert client.infer("ep", rows).column_names == ["probabilities"]
            client.deploy("ep", "m")  # newest version: the regression
            table = client.infer("ep", rows)
            np.testing.assert_allclose(table.column("prediction").to_numpy(), regression.predict(rows), atol=1e-4)
        wait_until(lambda: len(cluster.agent.table.hosted()) == 1)
        client.undeploy("ep")
        wait_until(lambda: not cluster.agent.table.hosted())
        with pytest.raises(NotFound):
            client.undeploy("ep")


def test_registry_rejects_bad_names_unknown_models_and_corrupt_bundles(cluster, logistic_model, tmp_path) -> None:
    import shutil

    _, bundle_dir, _, _ = logistic_model
    with cluster.client as client:
        with pytest.raises(InvalidArgument, match="model name"):
            client.push_model(bundle_dir, "../etc")
        with pytest.raises(NotFound):
            client.deploy("ep", "missing")
        with pytest.raises(InvalidArgument, match="endpoint name"):
            client.push_model(bundle_dir, "ok") and client.deploy("bad name", "ok")
        tampered = tmp_path / "tampered"
        shutil.copytree(bundle_dir, tampered)
        manifest = tampered / "milepost.json"
        manifest.write_text(manifest.read_text().replace('"classification"', '"regression"'))
        with pytest.raises(DataLoss):
            client.push_model(tampered, "bad")
        assert [m.name for m in client.list_models()] == ["ok"]


def test_status_reports_agent_resources_and_engines(cluster) -> None:
    with cluster.client as client:
        status = client.status()
    (agent,) = status.agents
    assert agent.state == "ALIVE" and agent.info.agent_id == "a1"
    assert agent.info.resources.cpu_cores >= 1 and agent.info.resources.memory_bytes > 0
    engines = {e.name: e for e in agent.info.engines}
    assert engines["native"].available and engines["native"].version.startswith("numba")
    # Code bundles are refused unless an operator allows them, and the agent says why.
    assert not engines["python"].available and "MILEPOST_ALLOW_CODE_BUNDLES" in engines["python"].reason
    assert all(e.reason for e in engines.values() if not e.available)
