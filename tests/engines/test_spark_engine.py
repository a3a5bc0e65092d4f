"""The spark engine beyond the conformance suite: the bundle shipped once per executor,
training stages, and one session per process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines import shipped_bundle
from engines.base import DatasetJob, StageSpec
from engines.native import NativeEngine
from milepost.core.errors import FailedPrecondition, InvalidArgument
from scoring_core import bundle
from tests.engines.conftest import FEATURES, Data, as_matrix, feature_batch


def test_bundle_is_loaded_once_per_worker_process_not_per_batch(spark_engine, logistic, data: Data, tmp_path: Path) -> None:
    from engines import spark

    _, bundle_dir = logistic
    version = bundle.bundle_version(bundle_dir)
    for k in range(2):  # two jobs, 40 batches of 500 rows each
        job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / f"out{k}"), batch_rows=500)
        spark_engine.score_dataset(bundle_dir, job)
    assert list(spark._shipped) == [version]  # registered with addFile once

    def loads_here(batches):
        for _ in batches:
            yield pa.record_batch([pa.array([os.getpid()]), pa.array([shipped_bundle.load_count(version)])],
                                  names=["pid", "loads"])

    # Asked of the same pool of Arrow UDF workers that scored: each loaded the bundle once.
    rows = spark.session("local[2]").range(0, 8, 1, 4).mapInArrow(loads_here, "pid long, loads long").collect()
    assert max(r.loads for r in rows) == 1, rows


def test_a_second_master_in_one_process_is_refused(spark_engine) -> None:
    from engines import spark

    with pytest.raises(FailedPrecondition, match="already runs Spark on 'local\\[2\\]'"):
        spark.session("local[1]")


def test_unknown_option_is_refused(spark_engine, logistic, data: Data, tmp_path: Path) -> None:
    job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / "o"), options={"address": "x"})
    with pytest.raises(InvalidArgument, match="address"):
        spark_engine.score_dataset(logistic[1], job)


def train_logistic(df, *, C: float):
    """A user's training function: a Spark DataFrame in, a fitted estimator out."""
    from sklearn.linear_model import LogisticRegression

    frame = df.toPandas()
    return LogisticRegression(C=C, max_iter=500).fit(frame[FEATURES].to_numpy(), frame["label"].to_numpy())


def test_training_stage_returns_a_registrable_bundle(spark_engine, data: Data, tmp_path: Path) -> None:
    labels = (data.X[:, 0] + data.X[:, 3] > 0).astype(np.int64)
    table = pa.table({**{n: data.X[:, j] for j, n in enumerate(FEATURES)}, "label": labels})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=4000)
    stage = StageSpec(name="fit", kind="training", entry=train_logistic, params={"C": 0.5})
    lineage = {"data_fingerprint": "abc123", "pipeline_run": "r1"}
    outputs = spark_engine.run_stage(
        stage, {"data": str(tmp_path / "train.parquet"), "output": str(tmp_path / "model"), "lineage": lineage})
    assert outputs["flavor"] == "scoring_core"
    assert outputs["version"] == bundle.bundle_version(outputs["model"])
    assert bundle.read_manifest(outputs["model"])["metadata"]["lineage"]["data_fingerprint"] == "abc123"
    from sklearn.linear_model import LogisticRegression

    expected = LogisticRegression(C=0.5, max_iter=500).fit(data.X, labels).predict_proba(data.X[:300].astype(np.float64))
    model = NativeEngine().load(Path(outputs["model"]), _spec(outputs["version"]))
    np.testing.assert_allclose(as_matrix(model.predict(feature_batch(data.X[:300])).column(0)), expected, rtol=1e-4, atol=1e-6)


def count_rows(inputs: dict[str, Any], *, column: str) -> dict[str, Any]:
    """A custom stage: finds the running session itself, as user code does."""
    from pyspark.sql import SparkSession

    df = SparkSession.builder.getOrCreate().read.parquet(inputs["data"])
    return {"rows": df.count(), "distinct": df.select(column).distinct().count()}


def test_custom_stage_finds_the_session(spark_engine, data: Data) -> None:
    stage = StageSpec(name="count", kind="custom", entry=count_rows, params={"column": "id"})
    assert spark_engine.run_stage(stage, {"data": str(data.dataset_dir)}) == {"rows": len(data.X), "distinct": len(data.X)}


def test_training_stage_needs_an_output(spark_engine) -> None:
    with pytest.raises(InvalidArgument, match="output"):
        spark_engine.run_stage(StageSpec(name="fit", kind="training", entry=train_logistic), {"data": "x"})


def _spec(version: str):
    from engines.base import DeploymentSpec

    return DeploymentSpec("d", "e", "m", version)


def test_a_local_sink_with_a_space_is_written_where_named(spark_engine, logistic, data: Data, tmp_path: Path) -> None:
    from engines import parquet_io

    sink = tmp_path / "scored out"
    spark_engine.score_dataset(logistic[1], DatasetJob(source=str(data.dataset_dir), sink=str(sink), keep=("id",)))
    assert sink.is_dir() and parquet_io.count_rows(str(sink)) == len(data.X)
