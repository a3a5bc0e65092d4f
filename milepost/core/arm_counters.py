"""The counters of one arm of one endpoint: one shape for the agent, the heartbeat and the coordinator.

Agents count cumulatively since they started and send the counters in every
heartbeat (``to_proto``); the coordinator sums the increases over agents
(``from_proto``, ``minus``, ``plus``) and reads rates and quantiles off the sum.

What the numbers mean:

- ``requests``, ``errors``: calls to the arm, and those that raised (a
  timed-out ensemble member counts as an error).
- ``latency_buckets[i]``: calls that took at most ``LATENCY_BOUNDS_MS[i]``
  milliseconds and more than the bound before it (not cumulative; the last
  bound is +inf); ``latency_sum_ms`` their total.
- ``predictions``, ``prediction_sum``, ``prediction_sum_squares``: over the
  rows an arm answered, the value of its first output column; for a
  fixed-size list (a classifier's probabilities) the last element, i.e. the
  probability of the last class. NaN values are left out.
- ``shadow_compared``, ``shadow_abs_diff_sum``: on a shadow arm, the rows
  compared with the primary's answer and the sum of |shadow - primary| of that
  same first-output value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from milepost.v1 import routing_pb2

LATENCY_BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, math.inf)


def _zero_buckets() -> list[float]:
    return [0.0] * len(LATENCY_BOUNDS_MS)


@dataclass
class ArmCounters:
    requests: float = 0
    errors: float = 0
    latency_sum_ms: float = 0.0
    predictions: float = 0
    prediction_sum: float = 0.0
    prediction_sum_squares: float = 0.0
    shadow_compared: float = 0
    shadow_abs_diff_sum: float = 0.0
    latency_buckets: list[float] = field(default_factory=_zero_buckets)

    # ---- arithmetic over reports ----
    def copy(self) -> ArmCounters:
        return ArmCounters(**self._scalars(), latency_buckets=list(self.latency_buckets))

    def plus(self, other: ArmCounters) -> ArmCounters:
        return self._combine(other, 1.0)

    def minus(self, other: ArmCounters) -> ArmCounters:
        return self._combine(other, -1.0)

    def _combine(self, other: ArmCounters, sign: float) -> ArmCounters:
        mine, theirs = self._scalars(), other._scalars()
        buckets = [a + sign * b for a, b in zip(self.latency_buckets, other.latency_buckets)]
        return ArmCounters(**{k: v + sign * theirs[k] for k, v in mine.items()}, latency_buckets=buckets)

    def _scalars(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "latency_buckets"}

    # ---- what reports and gates read ----
    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_quantile_ms(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (conservative for gates)."""
        buckets = np.asarray(self.latency_buckets, dtype=float)
        total = buckets.sum()
        if total <= 0:
            return 0.0
        index = int(np.searchsorted(np.cumsum(buckets), q * total))
        return float(LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)])

    @property
    def prediction_mean(self) -> float:
        return self.prediction_sum / self.predictions if self.predictions else 0.0

    @property
    def prediction_var(self) -> float:
        if self.predictions < 2:
            return 0.0
        mean = self.prediction_mean
        n = self.predictions
        return max(self.prediction_sum_squares / n - mean * mean, 0.0) * n / (n - 1)

    # ---- the wire ----
    def to_proto(self, endpoint: str, arm: str) -> routing_pb2.ArmMetrics:
        return routing_pb2.ArmMetrics(
            endpoint=endpoint, arm=arm, requests=int(self.requests), errors=int(self.errors),
            latency_buckets=[int(b) for b in self.latency_buckets], latency_sum_ms=self.latency_sum_ms,
            predictions=int(self.predictions), prediction_sum=self.prediction_sum,
            prediction_sum_squares=self.prediction_sum_squares,
            shadow_compared=int(self.shadow_compared), shadow_abs_diff_sum=self.shadow_abs_diff_sum,
        )

    @classmethod
    def from_proto(cls, m: routing_pb2.ArmMetrics) -> ArmCounters:
        """A report's counters; a report with fewer latency buckets (an older agent) pads with zeros."""
        buckets = _zero_buckets()
        for i, value in enumerate(list(m.latency_buckets)[: len(buckets)]):
            buckets[i] = float(value)
        scalars = {f.name: float(getattr(m, f.name)) for f in fields(cls) if f.name != "latency_buckets"}
        return cls(**scalars, latency_buckets=buckets)
