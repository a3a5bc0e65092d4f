"""Rows that sit on split thresholds, shared by the XGBoost and LightGBM agreement tests.

A plain module with a unique name (not conftest): tests/trees and tests/scoring_core
both have a conftest, and ``from conftest import`` would pick whichever came first.
"""

from __future__ import annotations

import numpy as np


def at_thresholds(X: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
                  seed: int = 3) -> np.ndarray:
    """Rows where one split feature sits on a float32 threshold's rounding or one ulp to
    either side: the inputs most likely to take another branch."""
    rng = np.random.default_rng(seed)
    rows = []
    with np.errstate(over="ignore"):
        t32 = threshold.astype(np.float32)
    for f, t in zip(feature, t32):
        for v in (np.nextafter(t, np.float32(-np.inf)), t, np.nextafter(t, np.float32(np.inf))):
            row = X[rng.integers(len(X))].copy()
            row[f] = v
            rows.append(row)
    return np.asarray(rows, np.float32) if rows else X[:0]
