"""shadow: arms[0] answers; a fraction of requests is mirrored to arms[1].

Each request is mirrored with probability ``shadow_fraction`` (not sticky),
when the shadow arm has a replica somewhere. The router runs mirrors on a
small bounded pool after the primary has answered, drops them when the pool
is full, compares the shadow's answer with the primary's in the shadow arm's
metrics and discards it: shadow answers never reach the client and shadow
failures never fail the request.
"""

from __future__ import annotations

import random

from milepost.core.routing.policy import Available, Choice, Policy, routing_pb2


class ShadowPolicy(Policy):
    kind = "shadow"

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        super().__init__(endpoint, spec, generation)
        self.fraction = spec.shadow_fraction

    def choose(self, key: str | None, available: Available) -> Choice:
        primary, shadow = self.arms
        if not available(primary):
            raise self._unavailable((primary,))
        mirror = shadow if random.random() < self.fraction and available(shadow) else None
        return Choice((primary,), mirror)

    def ready(self, available: Available) -> bool:
        return available(self.arms[0])
