"""The model the ML-health tests judge: a logistic regression on three features whose labels
follow one rule, so live rows drawn from the same generator have known outcomes."""

from __future__ import annotations

import numpy as np

WEIGHTS = np.array([1.5, -1.0, 0.5])


def labels(rng: np.random.Generator, X: np.ndarray) -> np.ndarray:
    """The rule's outcome for each row of ``X``: 1 where its weighted sum plus noise is positive."""
    return (X @ WEIGHTS + rng.normal(size=len(X)) > 0).astype(int)


def trained_logistic(rng: np.random.Generator, rows: int):
    """``rows`` training rows from ``rng`` and a LogisticRegression fitted to their labels."""
    from sklearn.linear_model import LogisticRegression

    X = rng.normal(size=(rows, 3)).astype(np.float32)
    return X, LogisticRegression().fit(X, labels(rng, X))
