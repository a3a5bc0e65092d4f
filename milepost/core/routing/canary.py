"""canary: arms[0] the baseline, arms[1] the candidate, which gets steps[step] percent.

Sticky per key like split: a key whose point u (policy.unit_interval) is
below percent/100 goes to the candidate. Because the test is ``u < p``, a key
on the candidate stays on it as the ramp goes up. Promotion, rollback and the
gates are the coordinator's; it pushes a new step (or a new policy). An arm
with no replica anywhere hands its traffic to the other arm.
"""

from __future__ import annotations

from milepost.core.routing.policy import Available, Choice, Policy, point_for, routing_pb2


class CanaryPolicy(Policy):
    kind = "canary"

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        super().__init__(endpoint, spec, generation)
        self.percent = spec.steps[spec.step]

    def choose(self, key: str | None, available: Available) -> Choice:
        baseline, candidate = self.arms
        chosen, other = (candidate, baseline) if point_for(self.endpoint, key) * 100.0 < self.percent else (baseline, candidate)
        if available(chosen):
            return Choice((chosen,))
        if available(other):
            return Choice((other,))
        raise self._unavailable((chosen,))
