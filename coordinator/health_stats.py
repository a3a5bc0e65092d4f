"""Realised performance and fairness from predictions and the outcomes fed back for them.

Plain numpy over the pairs the coordinator joined (coordinator.health): a prediction is what
the agent's scored key carried (a regressor's value, P(class 1) of a binary classifier, or
the predicted class index of a multiclass one) and an outcome is what `milepost feedback`
sent for that key (the label's class index, or the true value).

- Classifiers: accuracy (a binary prediction is class 1 from P >= 0.5), and for binary ones
  AUC and log loss (scoring_core.measures) and the expected calibration error over
  ten equal-width bins of P (the share-weighted gap between mean P and the rate of class 1).
- Regressors: MAE and RMSE.
- Fairness per group: the selection rate (share of favourable predictions), the impact ratio
  against the most-selected group (the 4/5 rule of US employment guidance and of New York
  City's Local Law 144 audits), and with outcomes the true- and false-positive rates (equal
  opportunity, equalised odds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scoring_core import measures

CALIBRATION_BINS = 10


def classification(predictions: np.ndarray, outcomes: np.ndarray, *, binary: bool) -> dict[str, float]:
    """accuracy; with ``binary`` (predictions are P(class 1)) also auc, log_loss, calibration_error."""
    y = np.asarray(outcomes, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if not binary:
        return {"accuracy": float(np.mean(np.rint(p) == y))}
    metrics = {"accuracy": float(np.mean((p >= 0.5) == (y == 1)))}
    positive = y == 1
    metrics["auc"] = measures.auc(p, positive)
    metrics["log_loss"] = measures.binary_log_loss(p, positive)
    metrics["calibration_error"] = calibration_error(p, positive)
    return metrics


def regression(predictions: np.ndarray, outcomes: np.ndarray) -> dict[str, float]:
    return measures.errors(predictions, outcomes)


def calibration_error(probabilities: np.ndarray, positive: np.ndarray) -> float:
    p = np.asarray(probabilities, dtype=np.float64)
    bins = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += abs(p[inside].mean() - positive[inside].mean()) * inside.sum()
    return float(total / p.size) if p.size else 0.0


@dataclass(frozen=True)
class Group:
    name: str
    predictions: int
    selection_rate: float
    impact_ratio: float
    outcomes: int
    true_positive_rate: float
    false_positive_rate: float


def fairness(groups: list[str], selected: np.ndarray, positive: np.ndarray | None) -> list[Group]:
    """Per group (sorted by name): ``selected``, whether each prediction was favourable;
    ``positive``, whether its outcome was (1 or 0; NaN where none came back; None: no outcomes)."""
    names = np.asarray(groups, dtype=object)
    chosen = np.asarray(selected, dtype=bool)
    labels = np.full(chosen.size, np.nan) if positive is None else np.asarray(positive, dtype=np.float64)
    rates = {g: float(chosen[names == g].mean()) for g in sorted(set(groups))}
    top = max(rates.values(), default=0.0)
    out = []
    for g, rate in rates.items():
        inside = names == g
        known = inside & ~np.isnan(labels)
        pos, neg = known & (labels == 1), known & (labels == 0)
        out.append(Group(
            g, int(inside.sum()), rate, rate / top if top else math.nan, int(known.sum()),
            float(chosen[pos].mean()) if pos.any() else math.nan, float(chosen[neg].mean()) if neg.any() else math.nan,
        ))
    return out
