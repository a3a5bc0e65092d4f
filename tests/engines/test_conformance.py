"""The engine conformance suite: the same promises, tested on every engine.

Parametrised in conftest.pytest_generate_tests: ``online_case`` tests run on each
engine that serves requests (native, torch as TorchScript and as torch.export, onnx,
python, ray replicas), ``dataset_case`` tests on every engine (and spark), each against a
real model and the reference its own library computes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines import parquet_io, registry
from engines.base import DatasetJob, DeploymentSpec
from milepost.core.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    Unimplemented,
)
from tests.engines.conftest import FEATURES, Data, EngineCase, as_matrix, feature_batch


def spec(case: EngineCase) -> DeploymentSpec:
    return DeploymentSpec(deployment_id=f"conformance-{case.name}", endpoint="e", model="m", version="")


@pytest.fixture
def loaded(online_case: EngineCase):
    model = online_case.engine.load(online_case.bundle_dir, spec(online_case))
    yield model
    model.close()


# ---- online ----
def test_predictions_equal_the_reference(online_case: EngineCase, loaded, data: Data) -> None:
    X = data.X[:1500]
    out = loaded.predict(feature_batch(X))
    assert out.schema.equals(loaded.output_schema)
    assert out.num_rows == len(X)
    np.testing.assert_allclose(as_matrix(out.column(0)), online_case.reference(X),
                               rtol=online_case.rtol, atol=online_case.atol)


def test_schemas_and_version(online_case: EngineCase, loaded) -> None:
    from scoring_core import bundle

    assert loaded.input_schema.names == FEATURES
    assert len(loaded.output_schema) == 1
    assert loaded.version == bundle.bundle_version(online_case.bundle_dir)
    assert loaded.platform


def test_empty_batch_gives_empty_output(online_case: EngineCase, loaded, data: Data) -> None:
    out = loaded.predict(feature_batch(data.X[:0]))
    assert out.num_rows == 0
    assert out.schema.equals(loaded.output_schema)


def test_a_passed_deadline_is_not_scored_and_a_future_one_is(online_case: EngineCase, loaded, data: Data) -> None:
    batch = feature_batch(data.X[:10])
    with pytest.raises(DeadlineExceeded):
        loaded.predict(batch, time.monotonic() - 1)
    assert loaded.predict(batch, time.monotonic() + 60).num_rows == 10


def test_missing_column_is_invalid_argument_naming_it(online_case: EngineCase, loaded, data: Data) -> None:
    batch = feature_batch(data.X[:10])
    without_f3 = batch.drop_columns(["f3"])
    with pytest.raises(InvalidArgument, match="f3"):
        loaded.predict(without_f3)


def test_wrongly_typed_column_is_invalid_argument_naming_it(online_case: EngineCase, loaded, data: Data) -> None:
    batch = feature_batch(data.X[:10])
    index = batch.schema.get_field_index("f5")
    bad = batch.set_column(index, "f5", pa.array([f"x{i}" for i in range(10)]))
    with pytest.raises(InvalidArgument, match="f5"):
        loaded.predict(bad)


def test_concurrent_predicts_from_8_threads(online_case: EngineCase, loaded, data: Data) -> None:
    errors: list[BaseException] = []
    results: dict[int, np.ndarray] = {}

    def worker(k: int) -> None:
        try:
            for round_ in range(5):
                rows = slice(k * 500 + round_ * 7, k * 500 + round_ * 7 + 200 + k)
                results[(k, round_)] = (rows, as_matrix(loaded.predict(feature_batch(data.X[rows])).column(0)))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 40
    for rows, got in results.values():
        np.testing.assert_allclose(got, online_case.reference(data.X[rows]), rtol=online_case.rtol, atol=online_case.atol)


def test_close_releases_and_later_predicts_are_unavailable(online_case: EngineCase, data: Data) -> None:
    model = online_case.engine.load(online_case.bundle_dir, spec(online_case))
    model.predict(feature_batch(data.X[:5]))
    released = online_case.released(model)
    model.close()
    assert released()
    with pytest.raises(Unavailable, match="unloaded"):
        model.predict(feature_batch(data.X[:5]))
    model.close()  # idempotent


def test_info_reports_a_usable_engine(online_case: EngineCase) -> None:
    info = online_case.engine.info()
    assert info.available, info.reason
    assert info.version
    assert "cpu" in info.devices
    assert info.online


# ---- datasets ----
def _job(data: Data, sink: Path, **kw: object) -> DatasetJob:
    return DatasetJob(source=data.dataset_dir.as_uri(), sink=str(sink), keep=("id",), batch_rows=3000, **kw)


def test_dataset_scoring_keeps_rows_order_and_values(dataset_case: EngineCase, data: Data, tmp_path: Path) -> None:
    seen: list[int] = []
    result = dataset_case.engine.score_dataset(dataset_case.bundle_dir, _job(data, tmp_path / "scored"), seen.append)
    assert result.rows == len(data.X)
    assert result.engine == dataset_case.engine.name
    assert result.seconds > 0
    out = parquet_io.read_table(str(tmp_path / "scored"))
    assert out.num_rows == len(data.X)
    assert out.column_names[0] == "id"
    np.testing.assert_array_equal(out.column("id").to_numpy(), data.ids)
    np.testing.assert_allclose(as_matrix(out.column(1)), dataset_case.reference(data.X),
                               rtol=dataset_case.rtol, atol=dataset_case.atol)
    assert seen and seen[-1] == len(data.X)
    assert seen == sorted(seen)


def test_dataset_lacking_a_feature_is_refused_naming_it(dataset_case: EngineCase, data: Data, tmp_path: Path) -> None:
    table = parquet_io.read_table(str(data.dataset_dir)).drop_columns(["f6"]).slice(0, 100)
    pq.write_table(table, tmp_path / "narrow.parquet")
    job = DatasetJob(source=str(tmp_path / "narrow.parquet"), sink=str(tmp_path / "out"))
    with pytest.raises(InvalidArgument, match="f6"):
        dataset_case.engine.score_dataset(dataset_case.bundle_dir, job)
    assert not (tmp_path / "out").exists()


def test_dataset_unknown_keep_column_is_refused(dataset_case: EngineCase, data: Data, tmp_path: Path) -> None:
    job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / "out"), keep=("id", "customer"))
    with pytest.raises(InvalidArgument, match="customer"):
        dataset_case.engine.score_dataset(dataset_case.bundle_dir, job)


def test_dataset_sink_is_never_overwritten(dataset_case: EngineCase, data: Data, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.txt").write_text("keep me")
    with pytest.raises(AlreadyExists, match="taken"):
        dataset_case.engine.score_dataset(dataset_case.bundle_dir, _job(data, tmp_path / "taken"))
    assert (tmp_path / "taken" / "precious.txt").read_text() == "keep me"


def test_engine_is_registered_and_discovered(dataset_case: EngineCase) -> None:
    name = dataset_case.engine.name
    assert registry.get(name).name == name
    found = {info.name: info for info in registry.discover()}
    assert found[name].version


def test_dataset_only_engine_refuses_to_serve_online(dataset_only_case: EngineCase) -> None:
    info = dataset_only_case.engine.info()
    assert info.available and not info.online
    with pytest.raises(Unimplemented, match="does not serve online"):
        dataset_only_case.engine.load(dataset_only_case.bundle_dir, spec(dataset_only_case))


# ---- engines that cannot run say why ----
def test_python_engine_without_permission_reports_why(component, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.python import ALLOW_ENV, PythonEngine

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    engine = PythonEngine()
    info = engine.info()
    assert not info.available
    assert ALLOW_ENV in info.reason and "not allowed" in info.reason
    _, bundle_dir = component
    with pytest.raises(FailedPrecondition, match=ALLOW_ENV):
        engine.load(bundle_dir, DeploymentSpec("d", "e", "m", ""))
    with pytest.raises(FailedPrecondition, match="not allowed"):
        registry.engine_for("python")  # the node's own python engine follows the environment


def test_torch_cuda_requested_without_a_gpu_is_a_clear_error(torch_model) -> None:
    import torch

    from engines.torch import TorchEngine

    if torch.cuda.is_available():
        pytest.skip("this node has a GPU: the CUDA path is tested in test_torch_engine.py")
    _, bundles = torch_model
    with pytest.raises(FailedPrecondition, match="cuda:0.*no CUDA device"):
        TorchEngine().load(bundles["torchscript"], DeploymentSpec("d", "e", "m", "", device="cuda:0"))


def test_discover_reports_every_engine_with_a_version_or_a_reason() -> None:
    found = {info.name: info for info in registry.discover()}
    assert set(found) == {"native", "torch", "onnx", "python", "spark", "ray"}
    for info in found.values():
        assert info.available or info.reason, info
        assert info.flavors
