"""single: every request to the one arm."""

from __future__ import annotations

from milepost.core.routing.policy import Available, Choice, Policy


class SinglePolicy(Policy):
    kind = "single"

    def choose(self, key: str | None, available: Available) -> Choice:
        arm = self.arms[0]
        if not available(arm):
            raise self._unavailable((arm,))
        return Choice((arm,))
