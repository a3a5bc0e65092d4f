"""Pipelines from the CLI against a real `milepost up`: train, score on Spark, deploy as canary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

import scoring_core
from milepost.client import Client
from milepost.core.errors import InvalidArgument
from milepost.pipeline_spec import spec_from_dict
from tests.conftest import ROOT, milepost_cmd

EXAMPLE = ROOT / "examples" / "churn_pipeline"


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(milepost_cmd(*args), capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_example_pipeline_trains_scores_on_spark_and_deploys_a_canary(up, tmp_path) -> None:
    work = tmp_path / "churn"
    shutil.copytree(EXAMPLE, work)
    subprocess.run([sys.executable, str(work / "make_data.py"), str(work / "data")], check=True)
    train = pq.read_table(work / "data" / "train.parquet").to_pandas()
    features = [c for c in train.columns if c != "churned"]
    baseline = LogisticRegression().fit(train[features].to_numpy(np.float32), train["churned"])
    scoring_core.compile(baseline, feature_names=features).save(tmp_path / "baseline")
    c = ("--coordinator", up.coordinator)
    cli("models", "push", str(tmp_path / "baseline"), "--name", "churn-baseline", *c)
    cli("deploy", "churn-api", "--model", "churn-baseline", *c)

    done = cli("submit", str(work / "pipeline.yaml"), "--follow", *c)
    assert "SUCCEEDED" in done.stdout, done.stdout + done.stderr
    assert "train:running" in done.stderr or "train:succeeded" in done.stderr  # live progress on stderr
    assert "score:succeeded(10,000 rows, " in done.stderr and " rows/s)" in done.stderr  # with its rate

    with Client(up.coordinator) as client:
        (run,) = client.runs()
        stages = {s.name: s for s in run.stages}
        assert [s.state for s in run.stages] == ["SUCCEEDED"] * 3
        model_ref = stages["train"].outputs["model"]
        name, version = model_ref.split(":")
        (registered,) = client.list_models("churn")
        assert registered.version == version
        lineage = json.loads(registered.manifest_json)["metadata"]["lineage"]
        assert len(lineage["data_fingerprint"]) == 64 and lineage["code"].startswith("engines.trainers:xgboost")
        assert lineage["metrics"]["holdout_accuracy"] > 0.6
        # The training rows are the drift baseline the health checks compare live traffic with.
        baseline = json.loads(registered.manifest_json)["metadata"]["drift_baseline"]
        assert [f["name"] for f in baseline["features"]] == features and baseline["prediction"]
        assert stages["score"].agent_id == "local" and int(stages["score"].outputs["rows"]) == 10_000

        scored = pq.read_table(work / "data" / "scores.parquet")
        source = pq.read_table(work / "data" / "score.parquet")
        assert scored.column("customer_id").to_pylist() == source.column("customer_id").to_pylist()
        fetched = scoring_core.load(_fetch(client, up, name, version), version=version)
        expected = fetched.predict(source.select(features))
        got = np.stack(scored.column("probabilities").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got[:, 1], expected, atol=1e-6)  # the trained Booster predicts P(churned) alone

        (endpoint,) = client.endpoints()
        assert endpoint.policy == "canary"
        assert sorted(d.model for d in endpoint.deployments) == ["churn", "churn-baseline"]
        assert "pipeline" in [e.kind for e in client.events("churn-api")]


def _fetch(client: Client, up, name: str, version: str) -> Path:
    """The bundle as the local agent cached it when it scored."""
    path = up.data_dir / "agent" / "models" / version
    assert path.is_dir()
    return path


def test_failed_stage_fails_the_run_and_skips_what_depends_on_it(up, tmp_path) -> None:
    spec = {
        "name": "broken",
        "stages": [
            {"name": "train", "kind": "training", "engine": "native",
             "params": {"entry": "engines.trainers:xgboost", "data": "missing.parquet", "model_name": "m",
                        "params": {"label": "y"}}},
            {"name": "deploy", "kind": "deploy", "depends_on": ["train"],
             "params": {"endpoint": "e", "model": "${train.model}"}},
        ],
    }
    (tmp_path / "broken.json").write_text(json.dumps(spec))
    done = cli("submit", str(tmp_path / "broken.json"), "--follow", "--coordinator", up.coordinator, ok=False)
    assert done.returncode == 1
    with Client(up.coordinator) as client:
        (run,) = client.runs()
    assert run.state == "FAILED"
    train, deploy = run.stages
    assert train.state == "FAILED" and "missing.parquet" in train.message
    assert deploy.state == "SKIPPED" and "upstream stage 'train' failed" in deploy.message


@pytest.mark.parametrize("stages, message", [
    ([{"name": "a", "kind": "custom", "engine": "native", "depends_on": ["b"]},
      {"name": "b", "kind": "custom", "engine": "native", "depends_on": ["a"]}], "cycle"),
    ([{"name": "a", "kind": "custom", "engine": "native", "depends_on": ["nope"]}], "unknown stage 'nope'"),
    ([{"name": "a", "kind": "bake", "engine": "native"}], "kind 'bake' is unknown"),
    ([{"name": "a", "kind": "custom", "engine": "native"},
      {"name": "b", "kind": "deploy", "params": {"endpoint": "e", "model": "${a.model}"}}], "not one of its dependencies"),
])
def test_invalid_specs_are_refused_before_anything_runs(cluster, stages, message) -> None:
    with cluster.client as client:
        with pytest.raises(InvalidArgument, match=message):
            client.submit_pipeline(spec_from_dict({"name": "p", "stages": stages}, base=Path(".")))
        assert client.runs() == []


def test_stage_entries_outside_the_built_in_trainers_are_refused(up, tmp_path) -> None:
    """A remote spec must not make an agent call any installed function (say os:system)."""
    spec = {"name": "sneaky", "stages": [
        {"name": "x", "kind": "custom", "engine": "native",
         "params": {"entry": "os:system", "params": {"command": "touch /tmp/pwned"}}},
    ]}
    (tmp_path / "sneaky.json").write_text(json.dumps(spec))
    cli("submit", str(tmp_path / "sneaky.json"), "--follow", "--coordinator", up.coordinator, ok=False)
    with Client(up.coordinator) as client:
        (run,) = client.runs()
    assert run.state == "FAILED"
    assert "not allowed on this agent" in run.stages[0].message and "MILEPOST_STAGE_ENTRIES" in run.stages[0].message
