"""Per-endpoint counters in the shape of Triton's ModelStatistics, and the same per arm.

The endpoint's totals answer ModelStatistics (agent.grpc_inference); each arm's share of
them (``EndpointStatistics.arms``) gives /metrics its ``model``, ``version`` and ``arm``
labels (agent.prometheus). A request counts in each arm that answered it: one for single,
split, canary, shadow (the primary; mirrors are not the caller's answer) and bandit; every
member of an ensemble, each of which took part in all of it. A request served with no arm
(a deployment called by id, as other agents' remote members do, or a deployment's own route)
counts under arm ``""``.

An endpoint whose arms serve different model versions answers ModelStatistics with one entry
per version (``by_version``), as Triton does for a model with several versions: perf_analyzer
and Triton's tools read the counts of the version they asked for.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Sequence
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
    """Rows, engine calls and where the time went (Triton's queue and compute figures).

    Every answered request counts once in each of the durations, so their counts are all
    ``execution_count``: only their sums are kept, and the durations are read as Duration
    (two additions a request instead of ten; this is on every request's path)."""

    inference_count: int = 0  # rows
    execution_count: int = 0  # engine calls
    queue_ns: int = 0  # waiting for the model's batch (0 when scored at once)
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    last_inference_ms: int = 0
    version: str = ""  # an arm's: the model version that answered its last request ("" for an ensemble's)

    @property
    def success(self) -> Duration:
        """Answered requests, their time in the three phases."""
        return Duration(self.execution_count, self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns)

    queue = property(lambda self: Duration(self.execution_count, self.queue_ns))
    compute_input = property(lambda self: Duration(self.execution_count, self.compute_input_ns))
    compute_infer = property(lambda self: Duration(self.execution_count, self.compute_infer_ns))
    compute_output = property(lambda self: Duration(self.execution_count, self.compute_output_ns))

    def _add(self, rows: int, calls: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int,
             last_ms: int) -> None:
        """``calls`` answered requests (one, or another's counters merged in) of ``rows`` rows."""
        if last_ms > self.last_inference_ms:
            self.last_inference_ms = last_ms
        self.inference_count += rows
        self.execution_count += calls
        self.queue_ns += queue_ns
        self.compute_input_ns += input_ns
        self.compute_infer_ns += infer_ns
        self.compute_output_ns += output_ns

    def _merge(self, other: Served) -> None:
        self._add(other.inference_count, other.execution_count, other.compute_input_ns, other.compute_infer_ns,
                  other.compute_output_ns, other.queue_ns, other.last_inference_ms)


@dataclass
class EndpointStatistics(Served):
    fail: Duration = field(default_factory=Duration)
    arms: dict[str, Served] = field(default_factory=dict)  # arm -> its requests' share (module docstring)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(
        self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0, arms: Sequence[str] = (),
        version: str = "",
    ) -> None:
        """One answered request of ``rows`` rows, its phases' times, the arm(s) that answered it and
        the model version it was answered by."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            self._add(rows, 1, input_ns, infer_ns, output_ns, queue_ns, now_ms)
            for arm in arms or NO_ARM:
                counted = self.arms.get(arm)
                if counted is None:
                    counted = self.arms[arm] = Served()
                counted._add(rows, 1, input_ns, infer_ns, output_ns, queue_ns, now_ms)
                counted.version = version

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self.fail.add(ns)

    def arm_snapshot(self) -> dict[str, Served]:
        """A copy of each arm's counters, consistent with one another (for a scrape)."""
        with self._lock:
            return copy.deepcopy(self.arms)

    def versions(self) -> set[str]:
        """The model versions its arms' requests were answered by ("" aside)."""
        with self._lock:
            return {counted.version for counted in self.arms.values()} - {""}

    def by_version(self, first: str, served: Iterable[str] = ()) -> dict[str, EndpointStatistics]:
        """These counters split by model version, ``first`` first, then each version ``served``
        now (counted or not, as Triton lists a loaded version) and each version counted: an
        arm's requests count under the version that answered its last one. Failures, which are
        not known per arm, and requests answered with no version (an ensemble's) count under
        ``first``, so that the entries add up to the endpoint's totals."""
        with self._lock:
            split = {first: EndpointStatistics(fail=copy.copy(self.fail))}
            for version in served:
                split.setdefault(version, EndpointStatistics())
            for counted in self.arms.values():
                entry = split.get(counted.version or first)
                if entry is None:
                    entry = split[counted.version] = EndpointStatistics()
                entry._merge(counted)
            return split
