"""Per-endpoint counters in the shape of Triton's ModelStatistics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class EndpointStatistics:
    inference_count: int = 0  # rows
    execution_count: int = 0  # engine calls
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # waiting for the model's batch (0 when scored at once)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0) -> None:
        with self._lock:
            self.queue.add(queue_ns)
            self.inference_count += rows
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            self.success.add(input_ns + infer_ns + output_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self.fail.add(ns)
