"""The canary controller: judge each window, then step up, promote or roll back.

Every tick it looks at each canary endpoint. A window opens at the current step
and closes after ``window_s`` once the candidate has served ``min_requests``
(an idle candidate is not judged on nothing). At the close the candidate's
window totals go through the gates: error rate, p99 latency, and divergence of
its mean prediction from the baseline's in the same window. A failed gate rolls
back at once; a passed window moves to the next step, and passing the last
step (100 percent) promotes. Every decision and its reason is in the audit trail.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.arm_stats import ArmStats
from coordinator.endpoints import Endpoints, policy_of
from milepost.core.arm_counters import ArmCounters
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.coordinator")


@dataclass
class _Window:
    step: int
    opened_at: float
    baseline: ArmCounters
    candidate: ArmCounters


def failed_gate(gates: routing_pb2.CanaryGates, baseline: ArmCounters, candidate: ArmCounters) -> str | None:
    """The reason the candidate fails this window's gates, or None when it passes."""
    if candidate.error_rate > gates.max_error_rate:
        return f"error rate {candidate.error_rate:.3f} > {gates.max_error_rate:g} over {candidate.requests:.0f} requests"
    p99 = candidate.latency_quantile_ms(0.99)
    if gates.max_p99_latency_ms and p99 > gates.max_p99_latency_ms:
        return f"p99 latency {p99:g} ms > {gates.max_p99_latency_ms:g} ms"
    if gates.max_divergence and baseline.predictions >= 2 and candidate.predictions >= 1:
        spread = math.sqrt(baseline.prediction_var) or 1e-12
        divergence = abs(candidate.prediction_mean - baseline.prediction_mean) / spread
        if divergence > gates.max_divergence:
            return (f"prediction divergence {divergence:.2f} baseline std > {gates.max_divergence:g} "
                    f"(means {candidate.prediction_mean:.4g} vs {baseline.prediction_mean:.4g})")
    return None


class CanaryController:
    def __init__(self, endpoints: Endpoints, stats: ArmStats, clock: Callable[[], float]) -> None:
        self.endpoints = endpoints
        self.stats = stats
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def tick(self) -> list[str]:
        """One pass over the canaries; returns what it decided, for logs and tests."""
        decisions = []
        canaries = {e.name: e for e in self.endpoints.store.list_endpoints() if e.policy == "canary"}
        for name in list(self._windows):
            if name not in canaries:
                del self._windows[name]
        for name, endpoint in canaries.items():
            decision = self._judge(name, policy_of(endpoint))
            if decision:
                decisions.append(f"{name}: {decision}")
                log.info("canary %s: %s", name, decision)
        return decisions

    def _judge(self, name: str, policy: routing_pb2.RoutingPolicy) -> str | None:
        baseline_arm, candidate_arm = policy.arms[0].name, policy.arms[1].name
        totals = self.stats.totals(name)
        baseline, candidate = totals.get(baseline_arm, ArmCounters()), totals.get(candidate_arm, ArmCounters())
        window = self._windows.get(name)
        now = self.clock()
        if window is None or window.step != policy.step:
            self._windows[name] = _Window(policy.step, now, baseline, candidate)
            return None
        seen_baseline, seen_candidate = baseline.minus(window.baseline), candidate.minus(window.candidate)
        if now - window.opened_at < policy.window_s or seen_candidate.requests < policy.gates.min_requests:
            return None
        reason = failed_gate(policy.gates, seen_baseline, seen_candidate)
        del self._windows[name]
        if reason is not None:
            self.endpoints.rollback(name, reason=f"gate failed at {policy.steps[policy.step]:g}%: {reason}")
            return f"rolled back: {reason}"
        passed = (f"window passed at {policy.steps[policy.step]:g}%: error rate {seen_candidate.error_rate:.3f}, "
                  f"p99 {seen_candidate.latency_quantile_ms(0.99):g} ms, {seen_candidate.requests:.0f} requests")
        if policy.step + 1 >= len(policy.steps):
            self.endpoints.promote(name, reason=passed)
            return f"promoted: {passed}"
        self.endpoints.set_canary_step(name, policy.step + 1, passed)
        return f"step {policy.step + 1}: {passed}"
