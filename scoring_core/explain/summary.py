"""A short account of one decision: the features that moved its margin most, and by how much.

For several margins (one a class) the summary speaks of the largest, the class the model
leans to; the full contributions stay available for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Explanation:
    """One row's explanation. ``contributions`` is (n_features + 1,) for one margin or
    (n_groups, n_features + 1), bias last; ``group`` the margin the summary is about."""

    feature_names: list[str]
    values: list[Any]
    contributions: np.ndarray
    group: int | None
    group_label: str | None
    bias: float
    margin: float
    top: list[tuple[str, Any, float]] = field(default_factory=list)
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-able form: what ``milepost explain --output json`` prints."""
        rows = np.atleast_2d(self.contributions)
        return {
            "margin": self.margin,
            "bias": self.bias,
            "group": self.group_label,
            "top": [{"feature": name, "value": _plain(value), "contribution": c} for name, value, c in self.top],
            "contributions": {
                **({} if self.group is None else {"groups": rows.shape[0]}),
                "features": self.feature_names,
                "values": rows[:, :-1].tolist() if self.group is not None else rows[0, :-1].tolist(),
                "bias": rows[:, -1].tolist() if self.group is not None else float(rows[0, -1]),
            },
            "summary": self.text,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def summary(contributions: np.ndarray, feature_names: list[str], values: list[Any] | None = None,
            *, top: int = 3, label: str | None = None) -> str:
    """One line: the margin, then the ``top`` features by |contribution| with their signed
    shares, e.g. ``margin 1.84 (bias -0.20): income=52000 +1.32, age=23 +0.61, debt=0.4 -0.12``."""
    c = np.asarray(contributions, np.float64)
    order = _top(c, top)
    margin = float(c.sum())
    parts = []
    for i in order:
        name = feature_names[i] if values is None else f"{feature_names[i]}={_show(values[i])}"
        parts.append(f"{name} {c[i]:+.4g}")
    head = f"{label}: " if label else ""
    rest = ", ".join(parts) if parts else "no feature moved it"
    return f"{head}margin {margin:.4g} (bias {c[-1]:.4g}): {rest}"


def _top(c: np.ndarray, top: int) -> list[int]:
    body = np.abs(c[:-1])
    order = np.argsort(-body, kind="stable")[:max(top, 0)]
    return [int(i) for i in order if body[i] > 0.0]


def _show(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def explanation_of(contributions: np.ndarray, feature_names: list[str], values: list[Any],
                   labels: list[str] | None, *, top: int = 5) -> Explanation:
    """The Explanation of one row's contributions ((F + 1,) or (G, F + 1))."""
    c = np.asarray(contributions, np.float64)
    group = label = None
    row = c
    if c.ndim == 2:
        group = int(np.argmax(c.sum(axis=1)))
        label = labels[group] if labels else str(group)
        row = c[group]
    order = _top(row, top)
    return Explanation(
        feature_names=list(feature_names),
        values=[_plain(v) for v in values],
        contributions=c,
        group=group,
        group_label=label,
        bias=float(row[-1]),
        margin=float(row.sum()),
        top=[(feature_names[i], _plain(values[i]), float(row[i])) for i in order],
        text=summary(row, feature_names, values, top=min(top, 3), label=label),
    )
