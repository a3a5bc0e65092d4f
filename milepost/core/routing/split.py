"""split (A/B): traffic shared by weight, sticky per request key.

The key's point u in [0, 1) (see policy.unit_interval) picks the arm whose
slice of the cumulative, normalised weights holds it, so one key always gets
one arm. An arm with weight 0 gets nothing. If the chosen arm has no replica
anywhere, the request goes to the arms that do, by the same point over their
weights (stickiness holds again once the arm is back); with none,
UNAVAILABLE names the arm.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from milepost.core.routing.policy import Arm, Available, Choice, Policy, point_for, routing_pb2


def pick_by_weight(arms: Sequence[Arm], weights: Sequence[float], u: float) -> Arm:
    """The arm whose slice of [0, 1) (by normalised cumulative weight) holds u."""
    total = float(sum(weights))
    bounds = [w / total for w in itertools.accumulate(weights)]
    index = min(bisect.bisect_right(bounds, u), len(arms) - 1)
    while weights[index] <= 0:  # u on a boundary next to an empty slice
        index -= 1
    return arms[index]


class SplitPolicy(Policy):
    kind = "split"

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        super().__init__(endpoint, spec, generation)
        self.weights = tuple(arm.weight for arm in self.arms)

    def choose(self, key: str | None, available: Available) -> Choice:
        u = point_for(self.endpoint, key)
        chosen = pick_by_weight(self.arms, self.weights, u)
        if available(chosen):
            return Choice((chosen,))
        live = [(a, w) for a, w in zip(self.arms, self.weights) if w > 0 and a != chosen and available(a)]
        if not live:
            raise self._unavailable((chosen,))
        return Choice((pick_by_weight([a for a, _ in live], [w for _, w in live], u),))

    def ready(self, available: Available) -> bool:
        return any(available(a) for a, w in zip(self.arms, self.weights) if w > 0)
