from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# The repository root, so that ``scoring_core`` imports however pytest is started.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

N_ROWS = 2000
N_FEATURES = 12


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray]:
    """float32 features with 10% NaNs, a few exact zeros and tiny values; a continuous
    target that the classification tests threshold."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3])  # many exact zeros and repeated values
    X[rng.random(X.shape) < 0.1] = np.nan
    clean = np.nan_to_num(X)
    y = clean[:, 0] + 0.5 * clean[:, 1] * clean[:, 2] - clean[:, 3] + 0.3 * rng.normal(size=N_ROWS)
    return X, y.astype(np.float32)


@pytest.fixture(scope="session")
def probe(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows to score: the training rows, plus rows holding exact zeros, tiny and signed
    values, large magnitudes, and whole-NaN rows."""
    X, _ = data
    rng = np.random.default_rng(11)
    extra = X[:300].copy()
    special = np.array(
        [0.0, -0.0, 1e-38, -1e-38, 1e-36, 5e-35, 1e30, -1e30, np.nan, 0.5, -0.5, 3.0], np.float32)
    mask = rng.random(extra.shape) < 0.3
    extra[mask] = rng.choice(special, size=int(mask.sum()))
    extra[-5:] = np.nan
    return np.concatenate((X, extra))
