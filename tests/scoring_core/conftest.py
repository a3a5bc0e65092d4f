"""Shared data and batch builders for the scoring_core tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

N_ROWS = 500
N_FEATURES = 20


@pytest.fixture(scope="session")
def X() -> np.ndarray:
    rng = np.random.default_rng(42)
    return rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32)


@pytest.fixture(scope="session")
def y_reg(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(7)
    w = rng.normal(size=N_FEATURES)
    return X.astype(np.float64) @ w + 0.5 + rng.normal(scale=0.1, size=len(X))


@pytest.fixture(scope="session")
def y_binary(y_reg: np.ndarray) -> np.ndarray:
    return (y_reg > np.median(y_reg)).astype(np.int64)


@pytest.fixture(scope="session")
def y_multi(y_reg: np.ndarray) -> np.ndarray:
    return np.digitize(y_reg, np.quantile(y_reg, [0.33, 0.66]))


def _named_batch(X: np.ndarray, names: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(X.shape[1])], names=names)


def _tensor_batch(X: np.ndarray, name: str = "input") -> pa.RecordBatch:
    """A single fixed-size-list column over the row-major buffer, as the network layer builds it."""
    X = np.ascontiguousarray(X)
    values = pa.array(X.reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(values, X.shape[1])
    return pa.RecordBatch.from_arrays([column], names=[name])


@pytest.fixture(scope="session")
def named_batch() -> Callable[[np.ndarray, list[str]], pa.RecordBatch]:
    return _named_batch


@pytest.fixture(scope="session")
def tensor_batch() -> Callable[..., pa.RecordBatch]:
    return _tensor_batch


# ---- for the MLP and transform tests: small real data, and agreement over every path ----

TOL = 1e-5


@pytest.fixture(scope="session")
def data() -> dict[str, np.ndarray]:
    """400 rows of 8 float32 features with regression, binary and 3-class string targets."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    score = X[:, 0] * 2 + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(scale=0.1, size=len(X))
    return {
        "X": X,
        "y_reg": 3 * score + 1,
        "y_binary": (score > 0).astype(np.int64),
        "y_multi": np.array(["low", "mid", "high"])[np.digitize(score, np.quantile(score, [0.33, 0.66]))],
    }


def _model_outputs(model, X: np.ndarray) -> dict[str, np.ndarray]:
    """predict() on numpy, and predict_arrow() on named columns and on a tensor column,
    each shaped as predict() returns it."""
    found = {"numpy": model.predict(X)}
    for layout, batch in (("named", _named_batch(X, model.feature_names)), ("tensor", _tensor_batch(X))):
        result = model.predict_arrow(batch)
        assert result.schema.equals(model.output_schema)
        column = result.column(0)
        if pa.types.is_fixed_size_list(column.type):
            found[layout] = column.values.to_numpy().reshape(len(X), -1)
        else:
            found[layout] = column.to_numpy().reshape((len(X), 1) if model.predict_ndim == 2 else (len(X),))
    return found


def _assert_agrees(model, X: np.ndarray, expected: np.ndarray) -> None:
    """Every path agrees with ``expected`` (the library's own call): predict() in the model's
    predict_dtype (the library's, where it has one dtype: tests/scoring_core/test_contracts.py),
    the Arrow paths in float64 (the wire)."""
    for path, got in _model_outputs(model, X).items():
        assert got.shape == expected.shape, path
        assert got.dtype == (model.predict_dtype if path == "numpy" else np.float64), path
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)


def _round_trip(model, tmp_path, X):
    """Save, load (verifying the version), and check the loaded model scores identically."""
    import scoring_core

    version = model.save(tmp_path / "bundle")
    loaded = scoring_core.load(tmp_path / "bundle", version=version)
    assert loaded.input_schema == model.input_schema
    assert loaded.output_schema == model.output_schema and loaded.predict_ndim == model.predict_ndim
    assert loaded.metadata == model.metadata
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    return loaded


@pytest.fixture(scope="session")
def model_outputs():
    return _model_outputs


@pytest.fixture(scope="session")
def assert_agrees():
    return _assert_agrees


@pytest.fixture(scope="session")
def round_trip():
    return _round_trip
