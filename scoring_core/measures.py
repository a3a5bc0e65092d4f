"""How well predictions met outcomes: the measures that validation gates (milepost.validation),
realised performance (coordinator.health_stats) and training stages (engines.trainers) report,
defined once.

- ``auc``: area under the ROC curve, the Mann-Whitney statistic with tied scores sharing their
  average rank, as sklearn.metrics.roc_auc_score; NaN when the outcomes hold one class only.
- ``log_loss``: the mean of -log of the probability each row gave its true class, clipped to
  [1e-15, 1]; ``binary_log_loss`` the same from P(class 1), clipped to [1e-15, 1 - 1e-15]
  first, as scikit-learn clips a binary classifier's probabilities.
- ``errors``: MAE and RMSE of a regressor.
"""

from __future__ import annotations

import math

import numpy as np

CLIP = 1e-15


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    positive = np.asarray(positive, dtype=bool)
    positives = int(positive.sum())
    negatives = positive.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # ranks from 1, ties at their average
    return float((ranks[positive].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(p_of_truth: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(np.asarray(p_of_truth, dtype=np.float64), CLIP, 1.0))))


def binary_log_loss(p1: np.ndarray, positive: np.ndarray) -> float:
    clipped = np.clip(np.asarray(p1, dtype=np.float64), CLIP, 1 - CLIP)
    return float(-np.mean(np.where(np.asarray(positive, dtype=bool), np.log(clipped), np.log1p(-clipped))))


def errors(predictions: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(math.sqrt(np.mean(error * error)))}
