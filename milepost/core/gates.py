"""The gate rule of validation: limits on a model's measures, and the verdict they give.

One rule for both sides: `milepost validate` (milepost.validation) judges what it measured
with ``judge``, and the coordinator, which takes a validation report from whoever sends
it, judges the report's own measures again with ``rejudge`` instead of believing the
verdicts written in it (coordinator.governance).

A gate is a limit on one measure (``max_fpr=0.05``); with a baseline each measure may also
be at most ``max_regression`` worse than the baseline's: absolute for AUC, rates and
accuracy, relative for errors and log loss. A measure that is undefined (None: the AUC of
data with one class) fails the gate on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from milepost.core.errors import InvalidArgument, shown

HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "fpr": False, "fnr": False, "log_loss": False,
                    "mae": False, "rmse": False}
RELATIVE = {"log_loss", "mae", "rmse"}  # regressions of these are judged as a share of the baseline
REGRESSION = "regression_"  # the prefix of a gate on the regression of one measure


@dataclass(frozen=True)
class Gates:
    """Limits on the measures; None: not gated."""

    max_fpr: float | None = None
    max_fnr: float | None = None
    min_auc: float | None = None
    min_accuracy: float | None = None
    max_log_loss: float | None = None
    max_mae: float | None = None
    max_rmse: float | None = None
    max_regression: float | None = None  # with a baseline: how much worse than it each measure may be

    def limits(self) -> list[tuple[str, str, float]]:
        """(gate, measure, limit) of each limit set."""
        return [(gate, gate.split("_", 1)[1], value) for gate, value in asdict(self).items()
                if value is not None and gate != "max_regression"]


def judge(measured: dict[str, Any], gates: Gates, baseline: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every gate set, with the value it saw and whether it passed."""
    verdicts = []
    for gate, name, limit in gates.limits():
        value = measured.get(name)
        if name not in measured:
            raise InvalidArgument(f"--{gate.replace('_', '-')} does not apply to this model: it measures "
                                  f"{sorted(k for k in measured if k in HIGHER_IS_BETTER)}")
        passed = value is not None and (value >= limit if HIGHER_IS_BETTER[name] else value <= limit)
        verdicts.append({"gate": gate, "limit": limit, "value": value, "passed": passed})
    if baseline is not None and gates.max_regression is not None:
        allowed = gates.max_regression
        for name, higher in HIGHER_IS_BETTER.items():
            ours, theirs = measured.get(name), baseline.get(name)
            if ours is None or theirs is None:
                continue
            worse = (theirs - ours) if higher else (ours - theirs)
            if name in RELATIVE:
                worse = worse / theirs if theirs > 0 else (0.0 if worse <= 0 else math.inf)
            verdicts.append({"gate": f"{REGRESSION}{name}", "limit": allowed, "value": worse,
                             "baseline": theirs, "passed": worse <= allowed})
    return verdicts


def passed(verdicts: list[dict[str, Any]]) -> bool:
    """A validation passes when every gate it judged passed."""
    return all(v["passed"] for v in verdicts)


def rejudge(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts that the gates a report names give on the report's own measures (and its
    baseline's, for regression gates): what its written verdicts must agree with.
    InvalidArgument naming the field when the report does not hold what ``judge`` needs."""
    metrics = _measures(report.get("metrics"), "metrics")
    written = report.get("gates")
    if not isinstance(written, list) or not all(isinstance(g, dict) for g in written):
        raise InvalidArgument("a validation report needs 'gates': a list of {gate, limit, value, passed}")
    limits: dict[str, float] = {}
    regression: set[float] = set()
    names = {f.name for f in fields(Gates)} - {"max_regression"}
    for g in written:
        gate = g.get("gate")
        if not isinstance(gate, str) or not (gate in names or gate.startswith(REGRESSION)):
            raise InvalidArgument(f"validation report: gate {shown(gate)} is not one of {sorted(names)} "
                                  f"or {REGRESSION}MEASURE")
        limit = _number(g.get("limit"), f"gates[{gate}].limit")
        if limit is None:
            raise InvalidArgument(f"validation report: gates[{gate}].limit must be a number")
        if gate.startswith(REGRESSION):
            regression.add(limit)
        else:
            limits[gate] = limit
    if len(regression) > 1:
        raise InvalidArgument(f"validation report: regression gates have different limits {sorted(regression)}; "
                              "one max_regression holds for every measure")
    baseline = None
    if regression:
        against = report.get("against")
        if not isinstance(against, dict):
            raise InvalidArgument("validation report: regression gates need 'against' with the baseline's metrics")
        baseline = _measures(against.get("metrics"), "against.metrics")
    return judge(metrics, Gates(**limits, max_regression=regression.pop() if regression else None), baseline)


def _measures(found: object, where: str) -> dict[str, float | None]:
    if not isinstance(found, dict):
        raise InvalidArgument(f"a validation report needs {where!r}: the measures it judged")
    return {name: _number(found[name], f"{where}.{name}") for name in HIGHER_IS_BETTER if name in found}


def _number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidArgument(f"validation report: {where} must be a number or null, got {shown(value)}")
    return float(value)
