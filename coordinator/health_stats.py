"""Realised performance and fairness from predictions and the outcomes fed back for them.

Plain numpy over the pairs the coordinator joined (coordinator.health): a prediction is what
the agent's scored key carried (a regressor's value, P(class 1) of a binary classifier, or
the predicted class index of a multiclass one) and an outcome is what `milepost feedback`
sent for that key (the label's class index, or the true value).

- Classifiers: accuracy (a binary prediction is class 1 from P >= 0.5), and for binary ones
  AUC (the Mann-Whitney statistic, ties counted half, as sklearn.metrics.roc_auc_score), log
  loss (probabilities clipped to [1e-15, 1 - 1e-15]) and the expected calibration error over
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

CLIP = 1e-15
CALIBRATION_BINS = 10


def classification(predictions: np.ndarray, outcomes: np.ndarray, *, binary: bool) -> dict[str, float]:
    """accuracy; with ``binary`` (predictions are P(class 1)) also auc, log_loss, calibration_error."""
    y = np.asarray(outcomes, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if not binary:
        return {"accuracy": float(np.mean(np.rint(p) == y))}
    metrics = {"accuracy": float(np.mean((p >= 0.5) == (y == 1)))}
    metrics["auc"] = auc(p, y == 1)
    clipped = np.clip(p, CLIP, 1 - CLIP)
    positive = y == 1
    metrics["log_loss"] = float(-np.mean(np.where(positive, np.log(clipped), np.log1p(-clipped))))
    metrics["calibration_error"] = calibration_error(p, positive)
    return metrics


def regression(predictions: np.ndarray, outcomes: np.ndarray) -> dict[str, float]:
    error = np.asarray(predictions, dtype=np.float64) - np.asarray(outcomes, dtype=np.float64)
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(math.sqrt(np.mean(error * error)))}


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    positives = int(np.sum(positive))
    negatives = positive.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    average = (starts + ends + 1) / 2  # ranks start..end-1 (0-based) -> mean of start+1..end
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


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
