"""Errors that carry their gRPC status.

Every layer raises these; one server interceptor (``milepost._grpc_errors``)
turns them into the matching status and message. Anything else that escapes a
handler is our bug: it becomes INTERNAL with a generic message and a logged
traceback, never the client's fault.

This module imports nothing heavier than grpc's status enum so that
scoring_core and engines can raise these without seeing protobuf.
"""

from __future__ import annotations

import grpc


class MilepostError(Exception):
    """Base class; ``code`` is the gRPC status a server answers with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MilepostError):
    """The request is malformed: a missing, extra or ill-shaped input, a bad value.
    The message names the offending field so the caller can fix it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MilepostError):
    """A named model, version, endpoint, agent or deployment does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MilepostError):
    """Creating something whose name is taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MilepostError):
    """The system is not in a state to do this (no agent to place on, model not ready)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(MilepostError):
    """Overload or a limit: a full queue, an oversized message. Retry later or send less."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MilepostError):
    """A dependency (an agent, the coordinator) cannot be reached right now."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(MilepostError):
    """Stored or transferred bytes do not match their hash."""

    code = grpc.StatusCode.DATA_LOSS


class Unimplemented(MilepostError):
    """A recognised but unsupported model, estimator, option or datatype."""

    code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(MilepostError):
    """The caller's deadline passed before the work was done; the work was abandoned."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
