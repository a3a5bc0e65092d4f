"""Per-arm traffic totals, summed over agents from their heartbeats.

Agents report cumulative counters; the coordinator adds each report's increase
to its totals, so the totals keep rising across agent restarts (a counter that
went down, or an uptime that did, means the agent restarted and the whole
report is new). Totals live in memory: they are statistics, not acknowledged
state, and a restarted coordinator starts counting again.
"""

from __future__ import annotations

import threading

from milepost.core.arm_counters import ArmCounters
from milepost.v1 import routing_pb2


class ArmStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, dict[tuple[str, str], ArmCounters]]] = {}
        self._totals: dict[tuple[str, str], ArmCounters] = {}

    def record(self, agent_id: str, uptime_s: float, metrics: list[routing_pb2.ArmMetrics]) -> None:
        current = {(m.endpoint, m.arm): ArmCounters.from_proto(m) for m in metrics}
        with self._lock:
            last_uptime, last = self._last.get(agent_id, (0.0, {}))
            restarted = uptime_s < last_uptime or any(
                key in last and current[key].requests < last[key].requests for key in current
            )
            for key, now in current.items():
                before = None if restarted else last.get(key)
                delta = now if before is None else now.minus(before)
                self._totals[key] = self._totals.get(key, ArmCounters()).plus(delta)
            self._last[agent_id] = (uptime_s, current)

    def totals(self, endpoint: str) -> dict[str, ArmCounters]:
        with self._lock:
            return {arm: t.copy() for (e, arm), t in self._totals.items() if e == endpoint}

    def reports(self, endpoint: str) -> dict[str, tuple[float, dict[str, ArmCounters]]]:
        """Each agent's latest report for this endpoint: its uptime and cumulative counters by arm.

        For a reader that must count across a coordinator restart (the canary controller
        keeps what it counted per agent in the store, and diffs against that)."""
        with self._lock:
            return {
                agent: (uptime, {arm: c.copy() for (e, arm), c in counters.items() if e == endpoint})
                for agent, (uptime, counters) in self._last.items()
            }

    def reset(self, endpoint: str) -> None:
        """Forget an endpoint's totals (its policy changed: a report compares the new arms)."""
        with self._lock:
            for key in [k for k in self._totals if k[0] == endpoint]:
                del self._totals[key]
