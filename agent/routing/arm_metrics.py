"""Per-arm counters: what each arm of each endpoint served, how fast, and what it predicted.

Keyed by (endpoint, arm name); cumulative since the agent started (the
heartbeat carries the agent's uptime so the coordinator can tell a restart
from a quiet arm). Recording takes one short per-arm lock and a few numpy
reductions per batch, never a loop over rows.

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

import bisect
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from milepost.v1 import routing_pb2

LATENCY_BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, math.inf)


def first_output_values(batch: pa.RecordBatch) -> np.ndarray | None:
    """The per-row value the metrics track (see the module docstring), as float64; None if not numeric."""
    if batch.num_columns == 0:
        return None
    column = batch.column(0)
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        k = kind.list_size
        if k == 0 or not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
            return None
        values = column.values.slice(column.offset * k, len(column) * k)
        flat = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        last = flat.reshape(len(column), k)[:, -1]
        if column.null_count:
            last = last.copy()
            last[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
        return last
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        if column.null_count:
            column = column.cast(pa.float64())
        return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return None


@dataclass
class ArmCounters:
    requests: int = 0
    errors: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))
    latency_sum_ms: float = 0.0
    predictions: int = 0
    prediction_sum: float = 0.0
    prediction_sum_squares: float = 0.0
    shadow_compared: int = 0
    shadow_abs_diff_sum: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, latency_ms: float, outputs: pa.RecordBatch | None, failed: bool) -> None:
        count, total, squares = 0, 0.0, 0.0
        if outputs is not None:
            values = first_output_values(outputs)
            if values is not None and values.size:
                values = values[~np.isnan(values)]
                count, total, squares = int(values.size), float(values.sum()), float(np.dot(values, values))
        bucket = bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)
        with self.lock:
            self.requests += 1
            self.errors += int(failed)
            self.latency_buckets[bucket] += 1
            self.latency_sum_ms += latency_ms
            self.predictions += count
            self.prediction_sum += total
            self.prediction_sum_squares += squares

    def record_comparison(self, compared: int, abs_diff_sum: float) -> None:
        with self.lock:
            self.shadow_compared += compared
            self.shadow_abs_diff_sum += abs_diff_sum

    def snapshot(self, endpoint: str, arm: str) -> routing_pb2.ArmMetrics:
        with self.lock:
            return routing_pb2.ArmMetrics(
                endpoint=endpoint, arm=arm, requests=self.requests, errors=self.errors,
                latency_buckets=list(self.latency_buckets), latency_sum_ms=self.latency_sum_ms,
                predictions=self.predictions, prediction_sum=self.prediction_sum,
                prediction_sum_squares=self.prediction_sum_squares,
                shadow_compared=self.shadow_compared, shadow_abs_diff_sum=self.shadow_abs_diff_sum,
            )


def compare(primary: pa.RecordBatch, shadow: pa.RecordBatch) -> tuple[int, float]:
    """Rows compared and sum of |shadow - primary| over the first-output values; (0, 0) if incomparable."""
    p, s = first_output_values(primary), first_output_values(shadow)
    if p is None or s is None or p.shape != s.shape:
        return 0, 0.0
    diff = np.abs(s - p)
    diff = diff[~np.isnan(diff)]
    return int(diff.size), float(diff.sum())


class ArmMetricsBook:
    """Every arm's counters, plus the per-endpoint count of shadow mirrors dropped for lack of room."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arms: dict[tuple[str, str], ArmCounters] = {}
        self._shadow_dropped: dict[str, int] = {}

    def arm(self, endpoint: str, arm: str) -> ArmCounters:
        key = (endpoint, arm)
        counters = self._arms.get(key)
        if counters is None:
            with self._lock:
                counters = self._arms.setdefault(key, ArmCounters())
        return counters

    def record(self, endpoint: str, arm: str, latency_ms: float, outputs: pa.RecordBatch | None, failed: bool) -> None:
        self.arm(endpoint, arm).record(latency_ms, outputs, failed)

    def record_comparison(self, endpoint: str, arm: str, primary: pa.RecordBatch, shadow: pa.RecordBatch) -> None:
        compared, total = compare(primary, shadow)
        self.arm(endpoint, arm).record_comparison(compared, total)

    def record_shadow_dropped(self, endpoint: str) -> None:
        with self._lock:
            self._shadow_dropped[endpoint] = self._shadow_dropped.get(endpoint, 0) + 1

    def shadow_dropped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._shadow_dropped)

    def snapshot(self) -> list[routing_pb2.ArmMetrics]:
        with self._lock:
            arms = sorted(self._arms.items())
        return [counters.snapshot(endpoint, arm) for (endpoint, arm), counters in arms]
