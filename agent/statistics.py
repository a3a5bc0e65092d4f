"""Per-endpoint counters in the shape of Triton's ModelStatistics, and the same per arm.

The endpoint's totals answer ModelStatistics (agent.grpc_inference); each arm's share of
them (``EndpointStatistics.arms``) gives /metrics its ``model``, ``version`` and ``arm``
labels (agent.prometheus). A request counts in each arm that answered it: one for single,
split, canary, shadow (the primary; mirrors are not the caller's answer) and bandit; every
member of an ensemble, each of which took part in all of it. A request served with no arm
(a deployment called by id, as other agents' remote members do, or a deployment's own route)
counts under arm ``""``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

NO_ARM = ("",)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class Served:
    """Rows, engine calls and where the time went (Triton's queue and compute figures)."""

    inference_count: int = 0  # rows
    execution_count: int = 0  # engine calls
    queue: Duration = field(default_factory=Duration)  # waiting for the model's batch (0 when scored at once)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)

    def _add(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int) -> None:
        self.inference_count += rows
        self.execution_count += 1
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)


@dataclass
class EndpointStatistics(Served):
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    arms: dict[str, Served] = field(default_factory=dict)  # arm -> its requests' share (module docstring)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(
        self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0, arms: Sequence[str] = (),
    ) -> None:
        """One answered request of ``rows`` rows, its phases' times, and the arm(s) that answered it."""
        with self._lock:
            self._add(rows, input_ns, infer_ns, output_ns, queue_ns)
            self.last_inference_ms = int(time.time() * 1000)
            self.success.add(input_ns + infer_ns + output_ns)
            for arm in arms or NO_ARM:
                counted = self.arms.get(arm)
                if counted is None:
                    counted = self.arms[arm] = Served()
                counted._add(rows, input_ns, infer_ns, output_ns, queue_ns)

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self.fail.add(ns)

    def arm_snapshot(self) -> dict[str, Served]:
        """A copy of each arm's counters, consistent with one another (for a scrape)."""
        with self._lock:
            return copy.deepcopy(self.arms)
