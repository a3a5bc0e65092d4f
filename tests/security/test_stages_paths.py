"""Stage data paths stay inside the agent's data roots.

A training or batch-scoring stage names its data, source and sink in a remote spec; the
agent reads and writes them with its own permissions. Each is resolved (links followed)
and must lie inside the agent's data directory or a root the operator lists in
MILEPOST_DATA_ROOTS. /dev/zero (which would burn a CPU forever), /etc/passwd and ../ escapes
are refused with PERMISSION_DENIED naming the parameter, through a real coordinator and
agent, and nothing is written outside.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.stage_runner import dataset_files, fingerprint
from engines.stages import confined
from milepost.core.errors import InvalidArgument, PermissionDenied
from milepost.pipeline_spec import spec_from_dict
from tests.conftest import wait_until

WHAT = "stage 'train' params.data"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.parquet").write_bytes(b"secret")
    return tmp_path / "root"


@pytest.mark.parametrize("value", [
    "/dev/zero", "/etc/passwd", "/", "../outside/secret.parquet", "sub/../../outside/secret.parquet",
    "file:///etc/passwd", "file://otherhost/data.parquet", "~/.ssh/id_rsa", "s3://bucket/data.parquet",
])
def test_paths_outside_the_roots_are_refused_naming_the_parameter(root: Path, value: str) -> None:
    with pytest.raises(PermissionDenied, match=r"^stage 'train' params.data '\.\.\./") as caught:
        confined(value, WHAT, [root], base=root)
    assert "MILEPOST_DATA_ROOTS" in str(caught.value)
    assert str(root.parent) not in str(caught.value)  # never the whole path, never the server's layout


def test_a_link_inside_a_root_that_leads_out_is_refused(root: Path) -> None:
    (root / "link.parquet").symlink_to(root.parent / "outside" / "secret.parquet")
    (root / "zero").symlink_to("/dev/zero")
    (root / "up").symlink_to(root.parent / "outside")
    for value in ("link.parquet", str(root / "zero"), "up/secret.parquet"):
        with pytest.raises(PermissionDenied):
            confined(value, WHAT, [root], base=root)
    (root / "folder").mkdir()
    (root / "folder" / "ok.parquet").write_bytes(b"x")
    (root / "folder" / "leak.parquet").symlink_to(root.parent / "outside" / "secret.parquet")
    with pytest.raises(PermissionDenied, match="links out"):  # a folder inside a root holding a link out of it
        fingerprint(str(root / "folder"), [root])
    (root / "folder" / "leak.parquet").unlink()
    (root / "folder" / "inner").mkdir()
    (root / "folder" / "inner" / "out").symlink_to(root.parent / "outside")  # pyarrow's reader follows folder links
    with pytest.raises(PermissionDenied, match="'out' links out"):
        dataset_files(str(root / "folder"), [root])
    (root / "folder" / "inner" / "out").unlink()
    (root / "folder" / "inner" / "loop").symlink_to(root / "folder")  # a link back inside: read once
    assert [p.name for p in dataset_files(str(root / "folder"), [root])] == ["ok.parquet"]


def test_paths_inside_the_roots_are_made_absolute(root: Path, tmp_path: Path) -> None:
    assert confined("sub/x.parquet", WHAT, [root], base=root) == str(root / "sub" / "x.parquet")
    assert confined(str(root / "sub"), WHAT, [root], base=root) == str(root / "sub")
    assert confined(f"file://{root}/a.parquet", WHAT, [root], base=root) == str(root / "a.parquet")
    extra = tmp_path / "outside"
    assert confined(str(extra / "secret.parquet"), WHAT, [root, str(extra)], base=root) == str(extra / "secret.parquet")
    assert confined("s3://bucket/ml/x.parquet", WHAT, [root, "s3://bucket/ml"], base=root) == "s3://bucket/ml/x.parquet"
    for value in ("s3://bucket/ml/../other/x", "s3://bucket/mlx/y", "gs://bucket/ml/x"):
        with pytest.raises(PermissionDenied):
            confined(value, WHAT, [root, "s3://bucket/ml/"], base=root)
    with pytest.raises(InvalidArgument):
        confined("", WHAT, [root], base=root)


def test_a_long_path_is_not_echoed(root: Path) -> None:
    with pytest.raises(PermissionDenied) as caught:
        confined("/etc/" + "a" * 10_000, WHAT, [root], base=root)
    assert len(str(caught.value)) < 300


def test_a_device_or_a_pipe_inside_a_root_is_not_read(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(InvalidArgument, match="neither a regular file nor a folder"):
        fingerprint(str(root / "pipe"), [root])  # opening it would wait forever


def _train_stage(data: str, name: str = "train") -> dict:
    return {"name": name, "kind": "training", "engine": "native",
            "params": {"entry": "engines.trainers:sklearn", "data": data, "model_name": "m",
                       "params": {"label": "y", "estimator": "sklearn.linear_model.LogisticRegression"}}}


def _finished(client, spec: dict, base: Path):
    run = client.submit_pipeline(spec_from_dict(spec, base=base))
    return wait_until(lambda: (r := client.run(run.run_id)).state in ("FAILED", "SUCCEEDED") and r, timeout=120)


def test_stages_over_grpc_read_and_write_only_inside_the_data_roots(cluster, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MILEPOST_DATA_ROOTS", raising=False)
    agent_dir = tmp_path / "agent"  # the cluster's agent's data directory
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": (X[:, 0] > 0).astype(np.int64)})
    (agent_dir / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, agent_dir / "data" / "train.parquet")
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(table, outside / "train.parquet")
    stages = [
        _train_stage("/dev/zero", "zero"),
        _train_stage("/etc/passwd", "passwd"),
        _train_stage(str(outside / "train.parquet"), "beside"),
        _train_stage("../outside/train.parquet", "escape"),
        {"name": "score", "kind": "batch_scoring", "engine": "native",
         "params": {"model": "m", "source": "/etc/passwd", "sink": str(agent_dir / "data" / "s.parquet")}},
        {"name": "sink", "kind": "batch_scoring", "engine": "native",
         "params": {"model": "m", "source": str(agent_dir / "data" / "train.parquet"), "sink": str(outside / "o.parquet")}},
    ]
    with cluster.client as client:
        refused = _finished(client, {"name": "escape", "stages": stages}, base=agent_dir)
        assert refused.state == "FAILED"
        for stage in refused.stages:
            key = {"score": "source", "sink": "sink"}.get(stage.name, "data")
            assert stage.state == "FAILED", (stage.name, stage.message)
            assert f"params.{key}" in stage.message and "outside this agent's data roots" in stage.message, stage.message
            assert str(tmp_path) not in stage.message
        assert not (outside / "o.parquet").exists() and not list(agent_dir.rglob("s.parquet"))

        inside = _finished(client, {"name": "inside", "stages": [_train_stage("data/train.parquet")]}, base=agent_dir)
        assert inside.state == "SUCCEEDED", inside.stages[0].message

        monkeypatch.setenv("MILEPOST_DATA_ROOTS", str(outside))  # the operator adds a root; read when the stage runs
        listed = _finished(client, {"name": "listed", "stages": [_train_stage(str(outside / "train.parquet"))]}, base=tmp_path)
        assert listed.state == "SUCCEEDED", listed.stages[0].message
