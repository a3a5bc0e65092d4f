"""ensemble: every arm scores the request and a combiner makes one answer of theirs.

- Members run concurrently on the router's bounded pool, each given
  ``member_timeout_s`` (default 10 s, never past the caller's deadline); a
  member that has not answered by then counts as failed with DEADLINE_EXCEEDED.
- ``on_member_failure``: "fail" (default) fails the request with the status of
  the first failed member in arm order; "skip" combines the members that
  answered (weights renormalised) and fails only when none did, with the
  first member's error. Stacking always needs every member: its stacker's
  input has one slot per member output.
- Combiners (see combiners.py): mean, weighted (arm weights, normalised),
  vote (answers the vote shares), stacking (the members' first outputs side by
  side, in arm order, scored by the ``stacker_deployment_id`` deployment, local
  or remote; its answer is the ensemble's).
"""

from __future__ import annotations

from milepost.core.routing.policy import Available, Choice, Policy, routing_pb2
from milepost.core.routing.spec import DEFAULT_MEMBER_TIMEOUT_S


class EnsemblePolicy(Policy):
    """Every arm is chosen; the router fans out, and agent.routing.ensemble combines."""

    kind = "ensemble"

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        super().__init__(endpoint, spec, generation)
        self.combiner = spec.combiner
        self.on_member_failure = spec.on_member_failure
        self.member_timeout_s = spec.member_timeout_s if spec.member_timeout_s > 0 else DEFAULT_MEMBER_TIMEOUT_S
        self.stacker_deployment_id = spec.stacker_deployment_id

    def choose(self, key: str | None, available: Available) -> Choice:
        if not any(available(arm) for arm in self.arms):
            raise self._unavailable(self.arms)
        return Choice(self.arms)

    def ready(self, available: Available) -> bool:
        return all(available(arm) for arm in self.arms)
