"""Shared data and batch builders for the scoring_core tests."""

from __future__ import annotations

from typing import Callable

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
