"""The canary controller: judge each window, then step up, promote or roll back.

Every tick it looks at each canary endpoint. A window opens at the current step
and closes after ``window_s`` once the candidate has served ``min_requests``
(an idle candidate is not judged on nothing). At the close the candidate's
window totals go through the gates: error rate, p99 latency, divergence of
its mean prediction from the baseline's in the same window, and (``gates.max_drift``) drift of
its predictions against its own training baseline over the drift windows it closed meanwhile,
and (``gates.max_impact_ratio_drop``) the fall of its lowest impact ratio below the baseline's
(coordinator.health; the window waits for the data these need). A failed gate rolls
back at once; a passed window moves to the next step, and passing the last
step (100 percent) promotes. Every decision and its reason is in the audit trail.

An open window is kept in the store (step, when it opened, what it counted so
far), so a coordinator restart continues it instead of starting it again. To
count across a restart it keeps, per agent, the cumulative counters it has
already counted (agents count since they started and report the totals): after a
restart an agent's next report is diffed against those, so the traffic served
while the coordinator was down counts too, and nothing from before the window
does. An agent that restarted meanwhile (uptime or a counter went down) counts
from zero. A window belongs to one step of one pair of deployments: a new policy
or step opens a new one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from coordinator.arm_stats import ArmStats
from coordinator.endpoints import Endpoints, policy_of
from coordinator.health import LOWER_IS_WORSE, HealthBook
from coordinator.store import EndpointRecord
from milepost.core.arm_counters import ArmCounters
from milepost.core.errors import FailedPrecondition
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.coordinator")

AgentMark = tuple[float, dict[str, ArmCounters]]  # an agent's uptime and cumulative counters by arm


@dataclass
class _Window:
    key: str  # the step and the deployments of the two arms
    step: int
    opened_at: float
    seen: dict[str, ArmCounters]  # arm -> what it served in this window so far
    marks: dict[str, AgentMark] = field(default_factory=dict)  # agent -> what is counted already

    def to_json(self) -> str:
        return json.dumps({
            "key": self.key, "step": self.step, "opened_at": self.opened_at,
            "seen": {arm: asdict(c) for arm, c in self.seen.items()},
            "marks": {a: [up, {arm: asdict(c) for arm, c in arms.items()}] for a, (up, arms) in self.marks.items()},
        }, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> _Window:
        raw = json.loads(text)
        return _Window(
            key=raw["key"], step=raw["step"], opened_at=raw["opened_at"],
            seen={arm: ArmCounters(**c) for arm, c in raw["seen"].items()},
            marks={a: (up, {arm: ArmCounters(**c) for arm, c in arms.items()}) for a, (up, arms) in raw["marks"].items()},
        )

    def count(self, reports: dict[str, AgentMark]) -> bool:
        """Add what each agent served since its mark; True when anything was added."""
        added = False
        for agent, (uptime, counters) in reports.items():
            counters = {arm: c for arm, c in counters.items() if arm in self.seen}
            mark = self.marks.get(agent)
            before = mark[1] if mark is not None else {}
            restarted = mark is not None and (
                uptime < mark[0] or any(c.requests < before[arm].requests for arm, c in counters.items() if arm in before)
            )
            for arm, now in counters.items():
                delta = now if restarted or arm not in before else now.minus(before[arm])
                if delta.requests:
                    self.seen[arm] = self.seen[arm].plus(delta)
                    added = True
            if mark is None or restarted or added:
                self.marks[agent] = (uptime, counters)
        return added


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
    def __init__(self, endpoints: Endpoints, stats: ArmStats, clock: Callable[[], float],
                 health: HealthBook | None = None) -> None:
        self.endpoints = endpoints
        self.store = endpoints.store
        self.stats = stats
        self.clock = clock
        self.health = health

    def tick(self) -> list[str]:
        """One pass over the canaries; returns what it decided, for logs and tests."""
        decisions = []
        canaries = {e.name: e for e in self.store.list_endpoints() if e.policy == "canary"}
        for name in self.store.canary_window_endpoints():
            if name not in canaries:
                self.store.drop_canary_window(name)
        for name, endpoint in canaries.items():
            decision = self._judge(name, policy_of(endpoint))
            if decision:
                decisions.append(f"{name}: {decision}")
                log.info("canary %s: %s", name, decision)
        return decisions

    def window(self, name: str) -> _Window | None:
        """The open window of a canary endpoint, as stored."""
        text = self.store.get_canary_window(name)
        return _Window.from_json(text) if text else None

    def _judge(self, name: str, policy: routing_pb2.RoutingPolicy) -> str | None:
        baseline_arm, candidate_arm = policy.arms[0].name, policy.arms[1].name
        key = f"{policy.step}:{policy.arms[0].deployment_id}:{policy.arms[1].deployment_id}"
        reports = self.stats.reports(name)
        window = self.window(name)
        now = self.clock()
        if window is None or window.key != key:
            window = _Window(key, policy.step, now, {baseline_arm: ArmCounters(), candidate_arm: ArmCounters()})
            window.count(reports)  # marks only: what agents served before the window is not counted
            window.seen = {baseline_arm: ArmCounters(), candidate_arm: ArmCounters()}
            self.store.put_canary_window(name, window.to_json())
            return None
        if window.count(reports):
            self.store.put_canary_window(name, window.to_json())
        seen_baseline, seen_candidate = window.seen[baseline_arm], window.seen[candidate_arm]
        if now - window.opened_at < policy.window_s or seen_candidate.requests < policy.gates.min_requests:
            return None
        reason = failed_gate(policy.gates, seen_baseline, seen_candidate)
        if reason is None and (policy.gates.max_drift or policy.gates.max_impact_ratio_drop):
            judged, reason = self._health_gates(name, policy, window.opened_at)
            if not judged:
                return None
        if reason is not None:
            self.endpoints.rollback(name, reason=f"gate failed at {policy.steps[policy.step]:g}%: {reason}")
            decision = f"rolled back: {reason}"
        else:
            passed = (f"window passed at {policy.steps[policy.step]:g}%: error rate {seen_candidate.error_rate:.3f}, "
                      f"p99 {seen_candidate.latency_quantile_ms(0.99):g} ms, {seen_candidate.requests:.0f} requests")
            if policy.step + 1 >= len(policy.steps):
                self.endpoints.promote(name, reason=passed)
                decision = f"promoted: {passed}"
            else:
                self.endpoints.set_canary_step(name, policy.step + 1, passed)
                decision = f"step {policy.step + 1}: {passed}"
        # After the decision is stored: a crash in between leaves a window whose key no longer matches.
        self.store.drop_canary_window(name)
        return decision

    def _health_gates(self, name: str, policy: routing_pb2.RoutingPolicy, since: float) -> tuple[bool, str | None]:
        """(judged, the reason the candidate fails) of the gates on ML health (coordinator.health):
        ``max_drift``, its predictions against its training baseline over the drift windows it
        closed in this canary window; ``max_impact_ratio_drop``, its lowest impact ratio against the
        baseline arm's over the keyed requests of the window. Not judged while either lacks data."""
        endpoint = self.store.get_endpoint(name)
        candidate = next((d for d in endpoint.deployments if d.deployment_id == policy.arms[1].deployment_id), None) \
            if endpoint is not None else None
        if endpoint is None or candidate is None or self.health is None:
            return True, "the health gates have no candidate deployment to judge"
        try:
            if policy.gates.max_drift:
                judged = self.health.prediction_drift(candidate, since, policy.gates.max_drift)
                if judged is None:
                    return False, None
                if judged.alert:
                    over = ", ".join(f"{s.name} {s.value:.3g} {'<' if s.name in LOWER_IS_WORSE else '>'} {s.threshold:g}"
                                     for s in judged.statistics if s.alert)
                    return True, f"prediction drift against the candidate's training baseline: {over}"
            if policy.gates.max_impact_ratio_drop:
                return self._impact_gate(endpoint, policy, since)
        except FailedPrecondition as err:
            return True, err.message
        return True, None

    def _impact_gate(self, endpoint: EndpointRecord, policy: routing_pb2.RoutingPolicy,
                     since: float) -> tuple[bool, str | None]:
        assert self.health is not None
        lowest: dict[str, tuple[float, str]] = {}
        for arm in (policy.arms[0].name, policy.arms[1].name):
            groups = self.health.fairness(endpoint, arm=arm, since=since).groups
            if len(groups) < 2:
                return False, None  # one group seen yet: nothing to compare
            # No group selected at all: all alike (ratio 1).
            lowest[arm] = min((g.impact_ratio if math.isfinite(g.impact_ratio) else 1.0, g.group) for g in groups)
        (base, _), (ratio, group) = lowest[policy.arms[0].name], lowest[policy.arms[1].name]
        drop = base - ratio
        if drop > policy.gates.max_impact_ratio_drop:
            return True, (f"impact ratio of {group} {ratio:.3f} against {base:.3f} on the baseline: a drop of {drop:.3f} "
                          f"> {policy.gates.max_impact_ratio_drop:g}")
        return True, None
