"""single: every request to the one arm."""

from __future__ import annotations

from agent.routing.policy import Available, Choice, Policy, expect_arms


class SinglePolicy(Policy):
    kind = "single"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        expect_arms(self, 1, 1)

    def choose(self, key: str | None, available: Available) -> Choice:
        arm = self.arms[0]
        if not available(arm):
            raise self._unavailable((arm,))
        return Choice((arm,))
