"""The ray engine beyond the conformance suite: replicas as actors, training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engines.base import DeploymentSpec, StageSpec
from scoring_core import bundle
from tests.engines.conftest import FEATURES, Data, as_matrix, feature_batch


def test_replicas_are_actors_and_requests_go_round_robin(ray_engine, logistic, data: Data) -> None:
    import ray

    estimator, bundle_dir = logistic
    model = ray_engine.load(bundle_dir, DeploymentSpec("d", "e", "m", bundle.bundle_version(bundle_dir)))
    try:
        assert len(model.actors) == 2
        assert len({a._actor_id for a in model.actors}) == 2
        for k in range(4):
            rows = data.X[k * 100:(k + 1) * 100]
            np.testing.assert_allclose(as_matrix(model.predict(feature_batch(rows)).column(0)),
                                       estimator.predict_proba(rows.astype(np.float64)), rtol=1e-5)
        assert all(ray.get(a.ready.remote()) for a in model.actors)
    finally:
        model.close()


def train_logistic(dataset, *, C: float):
    """A user's training function: a Ray Dataset in, a fitted estimator out."""
    from sklearn.linear_model import LogisticRegression

    frame = dataset.to_pandas()
    return LogisticRegression(C=C, max_iter=500).fit(frame[FEATURES].to_numpy(), frame["label"].to_numpy())


def test_training_stage_on_a_ray_dataset(ray_engine, data: Data, tmp_path: Path) -> None:
    labels = (data.X[:, 1] - data.X[:, 2] > 0).astype(np.int64)
    pq.write_table(pa.table({**{n: data.X[:, j] for j, n in enumerate(FEATURES)}, "label": labels}),
                   tmp_path / "train.parquet")
    stage = StageSpec(name="fit", kind="training", entry=train_logistic, params={"C": 2.0})
    outputs = ray_engine.run_stage(stage, {"data": str(tmp_path / "train.parquet"), "output": str(tmp_path / "m")})
    assert outputs["flavor"] == "scoring_core" and outputs["version"] == bundle.bundle_version(tmp_path / "m")


def test_custom_stage_by_module_path(ray_engine, data: Data) -> None:
    stage = StageSpec(name="stats", kind="custom", entry="tests.engines.test_ray_engine:dataset_rows")
    assert ray_engine.run_stage(stage, {"data": str(data.dataset_dir)}) == {"rows": len(data.X)}


def dataset_rows(inputs: dict[str, Any]) -> dict[str, Any]:
    """A custom stage run on the Ray the engine connected to."""
    import ray.data

    return {"rows": ray.data.read_parquet(inputs["data"]).count()}
