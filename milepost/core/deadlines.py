"""Deadlines: one representation from the gRPC front end down to the engine call.

A deadline is an absolute ``time.monotonic()`` instant, or None for "no
deadline". It is passed as an argument (``LoadedModel.predict(batch, deadline)``)
through routing, the micro-batcher's queue and remote calls, never through
thread-local or context variables, so work handed to another thread keeps it.
"""

from __future__ import annotations

import time
from typing import Protocol

from milepost.core.errors import DeadlineExceeded

Deadline = float | None

# gRPC reports a huge time_remaining() when the caller set no deadline.
_NO_DEADLINE_S = 1e7


class _HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


def from_grpc(context: _HasTimeRemaining) -> Deadline:
    """The caller's deadline of a gRPC call being served."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


def after(seconds: float | None) -> Deadline:
    """The deadline ``seconds`` from now (None: none)."""
    return None if seconds is None else time.monotonic() + seconds


def earliest(*deadlines: Deadline) -> Deadline:
    """The first of several deadlines; None when none is set."""
    set_ = [d for d in deadlines if d is not None]
    return min(set_) if set_ else None


def remaining(deadline: Deadline, default: float | None = None) -> float | None:
    """Seconds left before ``deadline`` (may be <= 0), or ``default`` without one: a call timeout."""
    return default if deadline is None else deadline - time.monotonic()


def check(deadline: Deadline, what: str) -> None:
    """Raise DeadlineExceeded naming ``what`` when the deadline has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"deadline passed before {what}")
