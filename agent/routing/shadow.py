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

from agent.routing.policy import Available, Choice, Policy, expect_arms
from milepost.core.errors import FailedPrecondition


class ShadowPolicy(Policy):
    kind = "shadow"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        expect_arms(self, 2, 2)
        self.fraction = self.spec.shadow_fraction
        if not 0 <= self.fraction <= 1:
            raise FailedPrecondition(f"endpoint {self.endpoint!r}: shadow_fraction must be in [0, 1], got {self.fraction}")

    def choose(self, key: str | None, available: Available) -> Choice:
        primary, shadow = self.arms
        if not available(primary):
            raise self._unavailable((primary,))
        mirror = shadow if self.fraction > 0 and random.random() < self.fraction and available(shadow) else None
        return Choice((primary,), mirror)

    def ready(self, available: Available) -> bool:
        return available(self.arms[0])
