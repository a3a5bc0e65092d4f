"""Fixtures for the engine tests: real models of every flavor, one Parquet dataset,
and one Spark session and one local Ray shared by the whole test session.

Spark and Ray take seconds to start, so they start once, on first use, and stop at
the end. An engine "case" bundles what the conformance suite needs to test an
engine: the engine, a bundle it runs, and the reference predictions it must match.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines.base import Engine, LoadedModel

N_FEATURES = 8
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
FILE_ROWS = (8000, 5000, 7000)  # uneven, so that a reader ordering files by size would reorder rows
ROW_GROUP_ROWS = 2500
COMPONENT_DIR = Path(__file__).parent / "user_component"

ONLINE = ["native", "torch-script", "torch-export", "onnx", "python", "ray"]
DATASET = ["native", "torch-script", "torch-export", "onnx", "python", "spark", "ray"]
DATASET_ONLY = ["spark"]


@dataclass
class EngineCase:
    """An engine, a bundle it runs and the reference it must reproduce."""

    name: str
    engine: Engine
    bundle_dir: Path
    reference: Callable[[np.ndarray], np.ndarray]  # (n, 8) float32 -> (n, k) float64
    rtol: float = 1e-6
    atol: float = 1e-6
    # Called on a loaded model before close; the check it returns says, after close,
    # whether what the model held was given back.
    released: Callable[[LoadedModel], Callable[[], bool]] = field(
        default=lambda model: lambda: model._compiled is None  # type: ignore[attr-defined]  # a NativeModel's
    )


@dataclass
class Data:
    X: np.ndarray
    ids: np.ndarray
    dataset_dir: Path
    root: Path


def as_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An output column as (rows, k) float64, whatever its layout (scalar, list, fixed-size list)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        return values.reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)


def feature_batch(X: np.ndarray) -> pa.RecordBatch:
    return pa.record_batch([pa.array(X[:, j]) for j in range(X.shape[1])], names=FEATURES)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """20,000 rows of 8 float32 features with an id, as 3 Parquet files of several row groups."""
    from sklearn.datasets import make_classification

    X, _ = make_classification(n_samples=sum(FILE_ROWS), n_features=N_FEATURES, n_informative=5, random_state=3)
    X = X.astype(np.float32)
    ids = np.arange(len(X), dtype=np.int64) * 7 + 11
    root = tmp_path_factory.mktemp("engines")
    dataset_dir = root / "dataset"
    dataset_dir.mkdir()
    start = 0
    for i, rows in enumerate(FILE_ROWS):
        part = slice(start, start + rows)
        table = pa.table({"id": ids[part], "note": [f"row {k}" for k in range(start, start + rows)],
                          **{name: X[part, j] for j, name in enumerate(FEATURES)}})
        pq.write_table(table, dataset_dir / f"part-{i}.parquet", row_group_size=ROW_GROUP_ROWS)
        start += rows
    return Data(X=X, ids=ids, dataset_dir=dataset_dir, root=root)


@pytest.fixture(scope="session")
def logistic(data: Data) -> tuple[Any, Path]:
    """A scikit-learn LogisticRegression compiled by the scoring core."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    import scoring_core

    X, y = make_classification(n_samples=2000, n_features=N_FEATURES, n_informative=5, random_state=3)
    estimator = LogisticRegression(max_iter=500).fit(X.astype(np.float32), y)
    bundle_dir = data.root / "logistic"
    scoring_core.compile(estimator).save(bundle_dir)
    return estimator, bundle_dir


@pytest.fixture(scope="session")
def torch_model(data: Data) -> tuple[Any, dict[str, Path]]:
    """A real nn.Sequential saved both as TorchScript and as torch.export."""
    import torch

    from engines.torch import save_bundle

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1)
    ).eval()
    example = torch.from_numpy(data.X[:64])
    bundles = {}
    for export in ("torchscript", "export"):
        bundles[export] = data.root / f"torch-{export}"
        save_bundle(module, bundles[export], example_input=example, feature_names=FEATURES,
                    output_name="probabilities", export=export)
    return module, bundles


@pytest.fixture(scope="session")
def onnx_model(data: Data) -> tuple[Any, Path]:
    """A torch network exported by torch.onnx with an operator the scoring core lacks (Elu),
    so only the onnx engine serves it, as an onnx bundle."""
    import warnings

    import torch

    from engines.onnx import save_bundle

    torch.manual_seed(1)
    module = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16), torch.nn.ELU(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1)
    ).eval()
    path = data.root / "elu.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(data.X[:4]),), str(path), input_names=["x"],
                          output_names=["probabilities"], dynamic_axes={"x": {0: "n"}, "probabilities": {0: "n"}},
                          dynamo=False)
    bundle_dir = data.root / "onnx"
    save_bundle(path, bundle_dir)
    return module, bundle_dir


@pytest.fixture(scope="session")
def component(data: Data) -> tuple[dict[str, Any], Path]:
    """A user component (tests/engines/user_component) as a python code bundle."""
    from engines.python import save_bundle

    rng = np.random.default_rng(5)
    spec = {"features": FEATURES, "weights": rng.normal(size=N_FEATURES).tolist(), "bias": 0.25}
    bundle_dir = data.root / "component"
    save_bundle(
        bundle_dir, entry_point="scorer:Scorer", sources=[COMPONENT_DIR],
        input_schema=pa.schema([pa.field(n, pa.float32()) for n in FEATURES]),
        output_schema=pa.schema([pa.field("score", pa.float64())]),
        data={"weights.json": json.dumps(spec).encode()}, stages={"means": "scorer:column_means"},
    )
    return spec, bundle_dir


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[Engine]:
    """One local[2] Spark session for the whole test session."""
    from engines import spark

    spark.session("local[2]")
    yield spark.SparkEngine(master="local[2]")
    spark.stop_session()


@pytest.fixture(scope="session")
def ray_engine() -> Iterator[Engine]:
    """One local Ray (2 CPUs) for the whole test session; replicas are 2 actors."""
    from engines import ray

    ray.connect("")
    yield ray.RayEngine(address="", replicas=2, actor_cpus=0.5)
    ray.shutdown()


def _logistic_case(name: str, engine: Engine, logistic: tuple[Any, Path]) -> EngineCase:
    estimator, bundle_dir = logistic
    return EngineCase(name, engine, bundle_dir, lambda X: estimator.predict_proba(X.astype(np.float64)), rtol=1e-5)


def _torch_case(name: str, torch_model: tuple[Any, dict[str, Path]]) -> EngineCase:
    import torch

    from engines.torch import TorchEngine

    module, bundles = torch_model

    def reference(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(X))).numpy().astype(np.float64)

    export = "torchscript" if name == "torch-script" else "export"
    return EngineCase(name, TorchEngine(), bundles[export], reference, rtol=1e-5,
                      released=lambda model: lambda: model._module is None)


def _onnx_case(onnx_model: tuple[Any, Path]) -> EngineCase:
    import torch

    from engines.onnx import OnnxEngine

    module, bundle_dir = onnx_model

    def reference(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(X))).numpy().astype(np.float64)

    return EngineCase("onnx", OnnxEngine(), bundle_dir, reference, rtol=1e-5, atol=1e-6,
                      released=lambda model: lambda: model._session is None)  # type: ignore[attr-defined]  # an OnnxModel's


def _python_case(component: tuple[dict[str, Any], Path]) -> EngineCase:
    import sys

    from engines.python import PythonEngine

    spec, bundle_dir = component

    def reference(X: np.ndarray) -> np.ndarray:
        z = X.astype(np.float64) @ np.asarray(spec["weights"]) + spec["bias"]
        return (1.0 / (1.0 + np.exp(-z))).reshape(-1, 1)

    def released(model: LoadedModel) -> Callable[[], bool]:
        package = model.package  # type: ignore[attr-defined]  # a ComponentModel's
        assert any(n.startswith(package + ".") for n in sys.modules), "the component's modules are imported"
        return lambda: not any(n == package or n.startswith(package + ".") for n in sys.modules)

    return EngineCase("python", PythonEngine(allow_code=True), bundle_dir, reference, released=released)


def _ray_released(model: LoadedModel) -> Callable[[], bool]:
    import ray
    from ray.exceptions import RayActorError

    actors = list(model.actors)  # type: ignore[attr-defined]  # a RayReplicas

    def killed() -> bool:
        for actor in actors:
            try:
                ray.get(actor.ready.remote(), timeout=60)
            except RayActorError:
                continue
            return False
        return bool(actors)

    return killed


def build_case(name: str, request: pytest.FixtureRequest) -> EngineCase:
    from engines.native import NativeEngine

    if name == "native":
        return _logistic_case(name, NativeEngine(), request.getfixturevalue("logistic"))
    if name in ("torch-script", "torch-export"):
        return _torch_case(name, request.getfixturevalue("torch_model"))
    if name == "onnx":
        return _onnx_case(request.getfixturevalue("onnx_model"))
    if name == "python":
        return _python_case(request.getfixturevalue("component"))
    if name == "spark":
        return _logistic_case(name, request.getfixturevalue("spark_engine"), request.getfixturevalue("logistic"))
    if name == "ray":
        case = _logistic_case(name, request.getfixturevalue("ray_engine"), request.getfixturevalue("logistic"))
        case.released = _ray_released
        return case
    raise ValueError(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One suite, every engine: ``online_case`` runs over engines that serve requests,
    ``dataset_case`` over every engine, ``dataset_only_case`` over those that only score datasets."""
    for fixture, names in (("online_case", ONLINE), ("dataset_case", DATASET), ("dataset_only_case", DATASET_ONLY)):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, names, indirect=True)


@pytest.fixture
def online_case(request: pytest.FixtureRequest) -> EngineCase:
    return build_case(request.param, request)


@pytest.fixture
def dataset_case(request: pytest.FixtureRequest) -> EngineCase:
    return build_case(request.param, request)


@pytest.fixture
def dataset_only_case(request: pytest.FixtureRequest) -> EngineCase:
    return build_case(request.param, request)
