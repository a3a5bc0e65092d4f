"""The python engine beyond the conformance suite: what it executes, where from, and what it leaves behind."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines.base import DatasetJob, DeploymentSpec, StageSpec
from engines.python import PythonEngine, save_bundle
from milepost.core.errors import DataLoss, InvalidArgument, MilepostError, NotFound
from scoring_core import bundle
from tests.engines.conftest import FEATURES, Data, feature_batch

SPEC = DeploymentSpec("d", "e", "m", "")
SCHEMA_IN = pa.schema([pa.field(n, pa.float32()) for n in FEATURES])


def write_component(tmp_path: Path, source: str, name: str = "bundle") -> Path:
    src = tmp_path / f"{name}-src"
    src.mkdir()
    (src / "component.py").write_text(source)
    save_bundle(tmp_path / name, entry_point="component:Component", sources=[src / "component.py"],
                input_schema=SCHEMA_IN, output_schema=pa.schema([pa.field("out", pa.float64())]))
    return tmp_path / name


def test_loading_writes_nothing_into_the_bundle(component) -> None:
    _, bundle_dir = component
    model = PythonEngine(allow_code=True).load(bundle_dir, SPEC)
    model.close()
    assert not list(bundle_dir.rglob("__pycache__"))
    bundle.bundle_version(bundle_dir)  # still verifies: no bytecode or other file was added


def test_source_changed_on_disk_is_refused_not_run(component, tmp_path: Path) -> None:
    _, bundle_dir = component
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    (tampered / "code" / "scorer.py").write_text("raise SystemExit('this must never run')\n")
    with pytest.raises(DataLoss, match="scorer.py"):
        PythonEngine(allow_code=True).load(tampered, SPEC)


def test_two_loads_do_not_share_modules_or_touch_user_names(component, data: Data) -> None:
    _, bundle_dir = component
    engine = PythonEngine(allow_code=True)
    first, second = engine.load(bundle_dir, SPEC), engine.load(bundle_dir, SPEC)
    try:
        assert first.package != second.package
        assert "scorer" not in sys.modules and "linear_math" not in sys.modules
        batch = feature_batch(data.X[:50])
        assert first.predict(batch).equals(second.predict(batch))
    finally:
        first.close()
        assert second.predict(feature_batch(data.X[:3])).num_rows == 3  # one close leaves the other serving
        second.close()


def test_stage_function_runs_from_the_bundle(component, data: Data, tmp_path: Path) -> None:
    _, bundle_dir = component
    pq.write_table(pa.table({"f0": data.X[:, 0], "f1": data.X[:, 1]}), tmp_path / "d.parquet")
    stage = StageSpec(name="profile", kind="custom", entry="means", bundle_dir=bundle_dir,
                      params={"columns": ["f0", "f1"]})
    outputs = PythonEngine(allow_code=True).run_stage(stage, {"data": str(tmp_path / "d.parquet")})
    assert outputs == pytest.approx({"f0": float(np.mean(data.X[:, 0])), "f1": float(np.mean(data.X[:, 1]))}, rel=1e-6)


def test_batch_scoring_goes_through_score_dataset(component, data: Data, tmp_path: Path) -> None:
    _, bundle_dir = component
    job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / "s.parquet"), keep=("id",))
    result = PythonEngine(allow_code=True).score_dataset(bundle_dir, job)
    assert result.rows == len(data.X) and result.sink == str(tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet").column_names == ["id", "score"]
    with pytest.raises(InvalidArgument, match="kind"):  # a batch scoring stage is a dataset job, not run_stage's
        StageSpec(name="nightly", kind="batch_scoring", bundle_dir=bundle_dir)


def test_missing_entry_point_is_not_found(tmp_path: Path) -> None:
    path = write_component(tmp_path, "class Other:\n    pass\n")
    with pytest.raises(NotFound, match="no attribute 'Component'"):
        PythonEngine(allow_code=True).load(path, SPEC)
    assert not any(n.startswith("_milepost_code_") and "component" in n for n in sys.modules)


def test_component_returning_the_wrong_thing_is_an_internal_error(tmp_path: Path, data: Data) -> None:
    path = write_component(tmp_path, (
        "import pyarrow as pa\n"
        "class Component:\n"
        "    def load(self, bundle_dir):\n        pass\n"
        "    def predict(self, batch):\n        return pa.record_batch([pa.array([1.0])], names=['wrong'])\n"
    ))
    model = PythonEngine(allow_code=True).load(path, SPEC)
    try:
        with pytest.raises(MilepostError, match="returned 1 rows for 4") as caught:
            model.predict(feature_batch(data.X[:4]))
        assert type(caught.value) is MilepostError  # INTERNAL: the component's bug, not the caller's
    finally:
        model.close()


def test_entry_point_must_be_among_the_sources(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    with pytest.raises(InvalidArgument, match="entry_point"):
        save_bundle(tmp_path / "b", entry_point="missing:Thing", sources=[tmp_path / "a.py"],
                    input_schema=SCHEMA_IN, output_schema=SCHEMA_IN)


def summarise(inputs: dict[str, Any], *, scale: float) -> dict[str, Any]:
    """An installed stage function (no code bundle)."""
    return {"scaled": inputs["value"] * scale}


def test_installed_stage_function_runs_only_where_code_is_allowed() -> None:
    from milepost.core.errors import FailedPrecondition

    stage = StageSpec(name="s", kind="custom", entry="tests.engines.test_python_engine:summarise", params={"scale": 3})
    assert PythonEngine(allow_code=True).run_stage(stage, {"value": 2}) == {"scaled": 6}
    with pytest.raises(FailedPrecondition, match="not allowed"):
        PythonEngine(allow_code=False).run_stage(stage, {"value": 2})


def test_a_2d_tensor_column_is_split_into_the_declared_inputs(component, data: Data) -> None:
    spec_, bundle_dir = component
    X = data.X[:30]
    tensor = pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])], names=["input"])
    model = PythonEngine(allow_code=True).load(bundle_dir, SPEC)
    try:
        np.testing.assert_array_equal(model.predict(tensor).column(0).to_numpy(),
                                      model.predict(feature_batch(X)).column(0).to_numpy())
    finally:
        model.close()
