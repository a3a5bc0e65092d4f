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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from agent.routing import combiners
from agent.routing.policy import Arm, Available, Choice, Policy, expect_arms
from milepost.core.errors import FailedPrecondition

COMBINERS = ("mean", "weighted", "vote", "stacking")
FAILURE_POLICIES = ("fail", "skip")
DEFAULT_MEMBER_TIMEOUT_S = 10.0


@dataclass
class MemberAnswer:
    arm: Arm
    batch: pa.RecordBatch | None = None
    error: BaseException | None = None


class Stacker(Protocol):
    @property
    def input_schema(self) -> pa.Schema: ...

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


class EnsemblePolicy(Policy):
    kind = "ensemble"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        expect_arms(self, 1)
        spec = self.spec
        self.combiner = spec.combiner or "mean"
        self.on_member_failure = spec.on_member_failure or "fail"
        self.member_timeout_s = spec.member_timeout_s if spec.member_timeout_s > 0 else DEFAULT_MEMBER_TIMEOUT_S
        self.stacker_deployment_id = spec.stacker_deployment_id
        where = f"endpoint {self.endpoint!r}"
        if self.combiner not in COMBINERS:
            raise FailedPrecondition(f"{where}: combiner {self.combiner!r} is unknown; use one of {', '.join(COMBINERS)}")
        if self.on_member_failure not in FAILURE_POLICIES:
            raise FailedPrecondition(f"{where}: on_member_failure must be fail or skip, got {self.on_member_failure!r}")
        if self.combiner == "stacking" and not self.stacker_deployment_id:
            raise FailedPrecondition(f"{where}: the stacking combiner needs stacker_deployment_id")
        if self.combiner == "weighted" and (any(a.weight < 0 for a in self.arms) or not any(a.weight > 0 for a in self.arms)):
            raise FailedPrecondition(f"{where}: weighted combiner needs arm weights >= 0, at least one > 0")

    def choose(self, key: str | None, available: Available) -> Choice:
        if not any(available(arm) for arm in self.arms):
            raise self._unavailable(self.arms)
        return Choice(self.arms)

    def answered(self, answers: Sequence[MemberAnswer]) -> list[MemberAnswer]:
        """The answers to combine, by the failure policy; raises the deciding member's error."""
        failed = [a for a in answers if a.error is not None]
        if failed and (self.on_member_failure == "fail" or self.combiner == "stacking" or len(failed) == len(answers)):
            raise failed[0].error  # type: ignore[misc]
        return [a for a in answers if a.error is None]

    def combine(self, answers: Sequence[MemberAnswer], stacker: Stacker | None = None) -> pa.RecordBatch:
        outputs = [(a.arm.name, a.batch) for a in answers if a.batch is not None]
        if self.combiner == "mean":
            return combiners.mean(outputs)
        if self.combiner == "weighted":
            weights = [a.arm.weight for a in answers]
            if not any(w > 0 for w in weights):
                raise FailedPrecondition(
                    f"endpoint {self.endpoint!r}: every member that answered has weight 0 "
                    f"({', '.join(a.arm.name for a in answers)})"
                )
            return combiners.mean(outputs, weights)
        if self.combiner == "vote":
            return combiners.vote(outputs)
        assert stacker is not None
        features = combiners.stacking_features(outputs)
        batch = combiners.stacking_input(features, stacker.input_schema, [name for name, _ in outputs])
        return stacker.predict(batch)
