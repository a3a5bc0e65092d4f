"""Stages run in a child process with CPU-time and memory limits, and cancel kills them.

Real pipelines on a real coordinator and agent (gRPC on loopback, in this process, so the
agent's settings and environment are this test's). The stage functions are in
tests/security/stage_functions.py, allowed by exact name through MILEPOST_STAGE_ENTRIES.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from milepost.pipeline_spec import spec_from_dict
from tests.conftest import wait_until

FUNCTIONS = "tests.security.stage_functions"
FINISHED = ("FAILED", "SUCCEEDED", "CANCELLED")


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("spin", "hog", "sleep_with_child", "set_environment")
    monkeypatch.setenv("MILEPOST_STAGE_ENTRIES", ",".join(f"{FUNCTIONS}:{n}" for n in names))


def training_stage(cluster, entry: str, **params: object) -> dict:
    """A training stage of the native engine on a small real table in the agent's data directory."""
    data = cluster.agent.config.data_dir / "train.parquet"
    pq.write_table(pa.table({"x": [0.0, 1.0, 2.0, 3.0] * 8, "y": [0, 0, 1, 1] * 8}), data)
    return {"name": entry.replace("_", "-"), "kind": "training", "engine": "native",
            "params": {"entry": f"{FUNCTIONS}:{entry}", "data": str(data), "model_name": "limited", "params": params}}


def finished_run(client, spec: dict, base: Path, timeout: float = 60):
    run = client.submit_pipeline(spec_from_dict(spec, base=base))
    return wait_until(lambda: (r := client.run(run.run_id)).state in FINISHED and r, timeout=timeout)


def test_a_stage_past_its_cpu_time_is_killed(cluster, tmp_path: Path, allowed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEPOST_STAGE_CPU_SECONDS", "2")
    started = time.monotonic()
    with cluster.client as client:
        done = finished_run(client, {"name": "cpu", "stages": [training_stage(cluster, "spin")]}, tmp_path)
    assert done.state == "FAILED"
    assert "more than 2 CPU seconds" in done.stages[0].message and "MILEPOST_STAGE_CPU_SECONDS" in done.stages[0].message
    assert time.monotonic() - started < 30


def test_a_stage_past_its_memory_is_killed(cluster, tmp_path: Path, allowed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEPOST_STAGE_MEMORY_MB", "400")
    agent_rss = psutil.Process().memory_info().rss
    with cluster.client as client:
        done = finished_run(client, {"name": "memory", "stages": [training_stage(cluster, "hog", mib=3000)]},
                            tmp_path)
    assert done.state == "FAILED"
    message = done.stages[0].message
    assert "more than its 400 MiB" in message and "MILEPOST_STAGE_MEMORY_MB" in message, message
    assert psutil.Process().memory_info().rss - agent_rss < 200 << 20  # the agent itself never held it


def test_cancel_kills_the_stage_and_what_it_started(cluster, tmp_path: Path, allowed) -> None:
    pids_file = cluster.agent.config.data_dir / "pids.txt"
    spec = {"name": "sleepy", "stages": [training_stage(cluster, "sleep_with_child", pids=str(pids_file))]}
    with cluster.client as client:
        run = client.submit_pipeline(spec_from_dict(spec, base=tmp_path))
        pids = [int(p) for p in wait_until(lambda: pids_file.exists() and pids_file.read_text().split(), timeout=60)]
        assert all(psutil.pid_exists(p) for p in pids)
        assert os.getpid() not in pids
        client.cancel_run(run.run_id)
        wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                   for p in pids), timeout=15)
        assert wait_until(lambda: (r := client.run(run.run_id)).state in FINISHED and r).state == "CANCELLED"


def test_a_stage_cannot_change_the_agents_environment(cluster, tmp_path: Path, allowed) -> None:
    before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    pids_file = cluster.agent.config.data_dir / "pid.txt"
    stage = training_stage(cluster, "set_environment", pids=str(pids_file),
                           variables={"MILEPOST_ALLOW_CODE_BUNDLES": "1"})
    with cluster.client as client:
        done = finished_run(client, {"name": "env", "stages": [stage]}, tmp_path)
        assert done.state == "SUCCEEDED", done.stages[0].message
        (model,) = client.list_models("limited")  # what it trained was registered all the same
    assert done.stages[0].outputs["model"] == f"limited:{model.version}"
    assert int(pids_file.read_text()) != os.getpid()  # it ran in a process of its own
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == before


@pytest.mark.parametrize(("engine", "option", "value", "setting"), [
    ("spark", "master", "spark://spark-master.example:7077", "MILEPOST_SPARK_MASTERS"),
    ("ray", "address", "ray://ray-head.example:10001", "MILEPOST_RAY_ADDRESSES"),
])
def test_a_pipeline_cannot_pick_a_cluster_the_operator_did_not_configure(cluster, tmp_path: Path, engine: str,
                                                                         option: str, value: str, setting: str) -> None:
    stage = {"name": "train", "kind": "training", "engine": engine,
             "params": {"entry": "engines.trainers:sklearn", "data": "data.parquet", "model_name": "m",
                        option: value}}
    with cluster.client as client:
        done = finished_run(client, {"name": "foreign", "stages": [stage]}, tmp_path)
    assert done.state == "FAILED"
    message = done.stages[0].message
    assert "is not a cluster this agent may use" in message, message
    assert setting in message


def test_stage_paths_inside_the_agents_own_folders_are_refused(cluster, tmp_path: Path) -> None:
    own = cluster.agent.config.data_dir / "models"
    stage = {"name": "score", "kind": "batch_scoring", "engine": "native",
             "params": {"model": "m", "source": str(own), "sink": str(tmp_path / "out")}}
    with cluster.client as client:
        done = finished_run(client, {"name": "peek", "stages": [stage]}, tmp_path)
    assert done.state == "FAILED"
    assert "inside the agent's own models/ folder" in done.stages[0].message, done.stages[0].message


@pytest.mark.parametrize(("engine", "params", "allowed"), [
    ("spark", {"options": {"master": "local[2]"}}, True),
    ("spark", {"params": {"master": "local[*]"}}, True),
    ("spark", {"params": {"master": "local"}}, True),
    ("spark", {"params": {"master": "spark://listed.example:7077"}}, True),
    ("spark", {"params": {"master": "spark://other.example:7077"}}, False),
    ("spark", {"params": {"master": "local[2] "}}, False),
    ("ray", {"options": {"address": ""}}, True),
    ("ray", {"params": {"address": "ray://head.example:10001"}}, True),
    ("ray", {"params": {"address": "auto"}}, False),
    ("native", {"params": {"master": "anything"}}, True),  # only the cluster engines name clusters
])
def test_the_cluster_rule(engine: str, params: dict, allowed: bool) -> None:
    from agent.stage_runner import check_cluster
    from milepost.core.errors import PermissionDenied
    from milepost.core.settings import read_settings

    settings = read_settings(spark_masters="spark://listed.example:7077", ray_address="ray://head.example:10001")
    if allowed:
        check_cluster(engine, params, settings)
    else:
        with pytest.raises(PermissionDenied, match="is not a cluster this agent may use"):
            check_cluster(engine, params, settings)
