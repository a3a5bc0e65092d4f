"""Per-arm traffic totals, summed over agents from their heartbeats.

Agents report cumulative counters; the coordinator adds each report's increase
to its totals, so the totals keep rising across agent restarts (a counter that
went down, or an uptime that did, means the agent restarted and the whole
report is new). Totals live in memory: they are statistics, not acknowledged
state, and a restarted coordinator starts counting again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from agent.routing.arm_metrics import LATENCY_BOUNDS_MS
from milepost.v1 import routing_pb2

_COUNTERS = (
    "requests", "errors", "latency_sum_ms", "predictions", "prediction_sum",
    "prediction_sum_squares", "shadow_compared", "shadow_abs_diff_sum",
)


@dataclass
class Totals:
    requests: float = 0
    errors: float = 0
    latency_sum_ms: float = 0
    predictions: float = 0
    prediction_sum: float = 0
    prediction_sum_squares: float = 0
    shadow_compared: float = 0
    shadow_abs_diff_sum: float = 0
    latency_buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BOUNDS_MS)))

    def copy(self) -> Totals:
        return Totals(**{k: getattr(self, k) for k in _COUNTERS}, latency_buckets=self.latency_buckets.copy())

    def minus(self, earlier: Totals) -> Totals:
        return Totals(
            **{k: getattr(self, k) - getattr(earlier, k) for k in _COUNTERS},
            latency_buckets=self.latency_buckets - earlier.latency_buckets,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_quantile_ms(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (conservative for gates)."""
        total = self.latency_buckets.sum()
        if total <= 0:
            return 0.0
        index = int(np.searchsorted(np.cumsum(self.latency_buckets), q * total))
        return float(LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)])

    @property
    def prediction_mean(self) -> float:
        return self.prediction_sum / self.predictions if self.predictions else 0.0

    @property
    def prediction_var(self) -> float:
        if self.predictions < 2:
            return 0.0
        mean = self.prediction_mean
        return max(self.prediction_sum_squares / self.predictions - mean * mean, 0.0) * self.predictions / (self.predictions - 1)


def _as_totals(m: routing_pb2.ArmMetrics) -> Totals:
    buckets = np.zeros(len(LATENCY_BOUNDS_MS))
    values = np.asarray(m.latency_buckets, dtype=float)[: len(buckets)]
    buckets[: len(values)] = values
    return Totals(**{k: float(getattr(m, k)) for k in _COUNTERS}, latency_buckets=buckets)


class ArmStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, dict[tuple[str, str], Totals]]] = {}
        self._totals: dict[tuple[str, str], Totals] = {}

    def record(self, agent_id: str, uptime_s: float, metrics: list[routing_pb2.ArmMetrics]) -> None:
        current = {(m.endpoint, m.arm): _as_totals(m) for m in metrics}
        with self._lock:
            last_uptime, last = self._last.get(agent_id, (0.0, {}))
            restarted = uptime_s < last_uptime or any(
                key in last and current[key].requests < last[key].requests for key in current
            )
            for key, now in current.items():
                before = None if restarted else last.get(key)
                delta = now if before is None else now.minus(before)
                total = self._totals.setdefault(key, Totals())
                for k in _COUNTERS:
                    setattr(total, k, getattr(total, k) + getattr(delta, k))
                total.latency_buckets = total.latency_buckets + delta.latency_buckets
            self._last[agent_id] = (uptime_s, current)

    def totals(self, endpoint: str) -> dict[str, Totals]:
        with self._lock:
            return {arm: t.copy() for (e, arm), t in self._totals.items() if e == endpoint}

    def reset(self, endpoint: str) -> None:
        """Forget an endpoint's totals (its policy changed: a report compares the new arms)."""
        with self._lock:
            for key in [k for k in self._totals if k[0] == endpoint]:
                del self._totals[key]
