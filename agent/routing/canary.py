"""canary: arms[0] the baseline, arms[1] the candidate, which gets steps[step] percent.

Sticky per key like split: a key whose point u (policy.unit_interval) is
below percent/100 goes to the candidate. Because the test is ``u < p``, a key
on the candidate stays on it as the ramp goes up. Promotion, rollback and the
gates are the coordinator's; it pushes a new step (or a new policy). An arm
with no replica anywhere hands its traffic to the other arm.
"""

from __future__ import annotations

from agent.routing.policy import Available, Choice, Policy, expect_arms, point_for


class CanaryPolicy(Policy):
    kind = "canary"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        expect_arms(self, 2, 2)
        steps = list(self.spec.steps)
        step = min(max(self.spec.step, 0), len(steps) - 1) if steps else 0
        self.percent = min(max(steps[step], 0.0), 100.0) if steps else 0.0

    def choose(self, key: str | None, available: Available) -> Choice:
        baseline, candidate = self.arms
        chosen, other = (candidate, baseline) if point_for(self.endpoint, key) * 100.0 < self.percent else (baseline, candidate)
        if available(chosen):
            return Choice((chosen,))
        if available(other):
            return Choice((other,))
        raise self._unavailable((chosen,))
