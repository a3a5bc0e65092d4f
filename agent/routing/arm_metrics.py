"""Per-arm counting on the agent: what each arm of each endpoint served, how fast, what it predicted.

Keyed by (endpoint, arm name); cumulative since the agent started (the
heartbeat carries the agent's uptime so the coordinator can tell a restart
from a quiet arm). Recording takes one short per-arm lock and a few numpy
reductions per batch, never a loop over rows. What each counter means is
said once, in milepost.core.arm_counters.
"""

from __future__ import annotations

import bisect
import threading

import numpy as np
import pyarrow as pa

from milepost.core.arm_counters import LATENCY_BOUNDS_MS, ArmCounters
from milepost.v1 import routing_pb2

_FEW = 16  # up to this many predictions, Python sums them faster than three numpy calls would


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


def matrix_output_values(outputs: np.ndarray) -> np.ndarray:
    """``first_output_values`` of the output column a model answered as the (n, k) matrix
    ``outputs`` (a fixed-size-list column when k > 1, else a one-value column)."""
    return outputs[:, -1].astype(np.float64, copy=False)


class ArmRecorder:
    """One arm's counters and the lock that guards them."""

    def __init__(self) -> None:
        self.counters = ArmCounters()
        self.lock = threading.Lock()

    def record(self, latency_ms: float, values: np.ndarray | None, failed: bool) -> None:
        """A call that took ``latency_ms``; ``values``: the tracked value of each row it answered
        (``first_output_values`` or ``matrix_output_values``), None when it has none."""
        count, total, squares = 0, 0.0, 0.0
        if values is not None:
            if values.size == 1:  # the common one-row request
                v = values.item()
                if v == v:  # v != v: NaN
                    count, total, squares = 1, v, v * v
            elif values.size <= _FEW:
                few = [v for v in values.tolist() if v == v]  # v != v: NaN
                count, total, squares = len(few), sum(few), sum(v * v for v in few)
            else:
                values = values[~np.isnan(values)]
                count, total, squares = int(values.size), float(values.sum()), float(np.dot(values, values))
        bucket = bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)
        c = self.counters
        with self.lock:
            c.requests += 1
            c.errors += int(failed)
            c.latency_buckets[bucket] += 1
            c.latency_sum_ms += latency_ms
            c.predictions += count
            c.prediction_sum += total
            c.prediction_sum_squares += squares

    def record_comparison(self, compared: int, abs_diff_sum: float) -> None:
        with self.lock:
            self.counters.shadow_compared += compared
            self.counters.shadow_abs_diff_sum += abs_diff_sum

    def snapshot(self, endpoint: str, arm: str) -> routing_pb2.ArmMetrics:
        with self.lock:
            return self.counters.to_proto(endpoint, arm)


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
        self._arms: dict[tuple[str, str], ArmRecorder] = {}
        self._shadow_dropped: dict[str, int] = {}

    def arm(self, endpoint: str, arm: str) -> ArmRecorder:
        key = (endpoint, arm)
        counters = self._arms.get(key)
        if counters is None:
            with self._lock:
                counters = self._arms.setdefault(key, ArmRecorder())
        return counters

    def record(self, endpoint: str, arm: str, latency_ms: float, outputs: pa.RecordBatch | None, failed: bool) -> None:
        self.arm(endpoint, arm).record(latency_ms, first_output_values(outputs) if outputs is not None else None, failed)

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
