"""`milepost models push <a saved Spark PipelineModel directory>` compiles it, as push does
for the model files it takes (issue 15): the registry gets the bundle that
``scoring_core.compile(dir).save(out)`` writes. A directory that is neither a bundle nor a
model the core reads is refused with INVALID_ARGUMENT saying what push takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import scoring_core
from milepost.core.errors import InvalidArgument
from tests.scoring_core.test_spark_ml import features, frames, logistic, logistic_dir, spark  # noqa: F401 - fixtures


def test_a_saved_pipeline_directory_is_compiled_on_push(cluster: Any, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    saved: Path = request.getfixturevalue("logistic_dir")  # test_spark_ml's saved PipelineModel
    expected = scoring_core.compile(str(saved)).save(tmp_path / "compiled")
    with cluster.client as client:
        pushed = client.push_model(saved, "spark-lr")
        assert (pushed.flavor, pushed.version) == ("scoring_core", expected)
        assert client.deploy("spark-api", "spark-lr").deployments[0].state == "READY"


def test_a_directory_push_cannot_read_is_refused_saying_what_it_takes(cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with cluster.client as client, pytest.raises(InvalidArgument, match="expected a bundle directory") as caught:
        client.push_model(tmp_path / "notes", "nothing")
    assert "a saved Spark ML model directory" in caught.value.message
