"""Answering for an ensemble: which members' answers count, and one answer made of theirs.

The policy (milepost.core.routing.ensemble) says who is asked and how; the
router fans the request out, and these two functions apply the failure policy
and the combiner (combiners.py) to what came back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from agent.routing import combiners
from milepost.core.deadlines import Deadline
from milepost.core.errors import FailedPrecondition
from milepost.core.routing.ensemble import EnsemblePolicy
from milepost.core.routing.policy import Arm


@dataclass
class MemberAnswer:
    arm: Arm
    batch: pa.RecordBatch | None = None
    error: BaseException | None = None


class Stacker(Protocol):
    @property
    def input_schema(self) -> pa.Schema: ...

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch: ...


def answered(policy: EnsemblePolicy, answers: Sequence[MemberAnswer]) -> list[MemberAnswer]:
    """The answers to combine, by the failure policy; raises the deciding member's error."""
    failed = [a for a in answers if a.error is not None]
    if failed and (policy.on_member_failure == "fail" or policy.combiner == "stacking" or len(failed) == len(answers)):
        raise failed[0].error or AssertionError("a failed member without its error")
    return [a for a in answers if a.error is None]


def combine(policy: EnsemblePolicy, answers: Sequence[MemberAnswer], stacker: Stacker | None = None) -> pa.RecordBatch:
    outputs = [(a.arm.name, a.batch) for a in answers if a.batch is not None]
    if policy.combiner == "mean":
        return combiners.mean(outputs)
    if policy.combiner == "weighted":
        weights = [a.arm.weight for a in answers]
        if not any(w > 0 for w in weights):
            raise FailedPrecondition(
                f"endpoint {policy.endpoint!r}: every member that answered has weight 0 "
                f"({', '.join(a.arm.name for a in answers)})"
            )
        return combiners.mean(outputs, weights)
    if policy.combiner == "vote":
        return combiners.vote(outputs)
    assert stacker is not None
    features = combiners.stacking_features(outputs)
    batch = combiners.stacking_input(features, stacker.input_schema, [name for name, _ in outputs])
    return stacker.predict(batch)
