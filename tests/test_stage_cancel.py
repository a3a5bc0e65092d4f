"""Cancelling a run stops its Spark job and leaves no output behind.

A real coordinator and agent (in this process) and a real Spark in local mode, started by
the stage's own process (agent.stage_process). The stage scores 400 small row groups as 400
Spark tasks on one core, long enough to be cancelled mid-job once it reports progress.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

import scoring_core
from engines.spark import java_found
from milepost.pipeline_spec import spec_from_dict
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(not java_found(), reason="Spark needs a Java runtime; CI installs one")
FEATURES = [f"f{i}" for i in range(8)]


def test_a_cancelled_spark_stage_writes_nothing(cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, len(FEATURES))).astype(np.float32)
    model = LogisticRegression().fit(X[:2000], X[:2000, 0] > 0)
    scoring_core.compile(model, feature_names=FEATURES).save(tmp_path / "bundle")
    data_dir = cluster.agent.config.data_dir
    source, sink = data_dir / "score.parquet", data_dir / "scores"
    pq.write_table(pa.table({name: X[:, j] for j, name in enumerate(FEATURES)}), source, row_group_size=50)
    stage = {"name": "score", "kind": "batch_scoring", "engine": "spark",
             "params": {"model": "lr", "source": str(source), "sink": str(sink),
                        "options": {"master": "local[1]", "partitions": 400}}}
    with cluster.client as client:
        client.push_model(tmp_path / "bundle", "lr")
        run = client.submit_pipeline(spec_from_dict({"name": "cancel-me", "stages": [stage]}, base=tmp_path))
        wait_until(lambda: client.run(run.run_id).stages[0].rows > 0, timeout=120, interval=0.2)
        client.cancel_run(run.run_id)
        done = wait_until(lambda: (r := client.run(run.run_id)).state in ("CANCELLED", "FAILED", "SUCCEEDED") and r)
        assert done.state == "CANCELLED"
    time.sleep(5)  # a job that went on would have written by now
    assert not sink.exists()
    assert not list(data_dir.glob(".scores.writing-*"))
