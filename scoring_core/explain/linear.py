"""Exact contributions of a linear model: coefficient times feature value per margin, the
intercept as the bias (XGBoost's gblinear ``pred_contribs`` layout)."""

from __future__ import annotations

from typing import Any

import numpy as np


class LinearExplainer:
    """Contributions of a ``linear`` stage (scoring_core.linear.LinearModel). Its margins:
    one for a regression or a binary logistic model (the log-odds of class 1), one a class
    for softmax and one-vs-rest models (before their normalisation)."""

    def __init__(self, stage: Any) -> None:
        self.coef = np.asarray(stage.coef, np.float64)  # (k, width)
        self.intercept = np.asarray(stage.intercept, np.float64)
        self.n_groups = self.coef.shape[0]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(n, k, width + 1): ``coef[g, j] * x[j]``, then ``intercept[g]``."""
        X = np.asarray(X, np.float64)
        n, width = X.shape
        out = np.empty((n, self.n_groups, width + 1))
        out[:, :, :width] = X[:, None, :] * self.coef[None, :, :]
        out[:, :, width] = self.intercept
        return out
