"""Errors that carry their gRPC status.

Every layer raises these; one server interceptor (``milepost.core.grpc_errors``)
turns them into the matching status and message. Anything else that escapes a
handler is our bug: it becomes INTERNAL with a generic message and a logged
traceback, never the client's fault.

This module imports nothing heavier than grpc's status enum so that
scoring_core and engines can raise these without seeing protobuf.
"""

from __future__ import annotations

from typing import Any

import grpc

SHOWN_CHARS = 64


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """How an error message quotes what a caller sent: ``repr(value)``, cut to ``limit``
    characters (with the full length said), so a 10k-character name or a huge list
    cannot make an error message huge or echo the whole input back."""
    whole = not isinstance(value, (str, bytes)) or len(value) <= 2 * limit
    text = repr(value if whole else value[: 2 * limit])  # type: ignore[index]
    if whole and len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    elif isinstance(value, (list, tuple, dict, set)):
        size = f"{len(value)} items"
    else:
        size = f"{len(text)} characters"
    return f"{text[:limit]}... ({size})"


class MilepostError(Exception):
    """Base class; ``code`` is the gRPC status a server answers with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @staticmethod
    def from_status(err: grpc.RpcError, where: str = "") -> MilepostError:
        """The status and details a peer answered with, as the matching subclass.

        ``where`` (which peer, which call) prefixes the message. A status with
        no subclass of its own (ABORTED, OUT_OF_RANGE...) gives a MilepostError
        that keeps that code and names it, so a server relaying it answers the
        same status.
        """
        call: Any = err  # a failed call is both an RpcError and a grpc.Call
        code: grpc.StatusCode = call.code()
        details = call.details() or code.name
        return MilepostError.of_code(code, f"{where}: {details}" if where else details)

    @staticmethod
    def of_code(code: grpc.StatusCode, message: str) -> MilepostError:
        """The error of status ``code`` with ``message``: the matching subclass, or (a status
        without one: ABORTED, OUT_OF_RANGE...) a MilepostError that keeps the code and names it."""
        cls = _BY_CODE.get(code)
        if cls is not None:
            return cls(message)
        error = MilepostError(f"{code.name}: {message}")
        error.code = code
        return error


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


class Cancelled(MilepostError):
    """The caller cancelled the call, or the work was cancelled on its behalf."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(MilepostError):
    """The call carries no valid identity (missing, malformed, expired or revoked token)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MilepostError):
    """The caller's identity is known but its role does not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


def _subclasses(cls: type[MilepostError]) -> list[type[MilepostError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


# The direct subclasses above, one per status; deeper subclasses never shadow them.
_BY_CODE: dict[grpc.StatusCode, type[MilepostError]] = {c.code: c for c in reversed(_subclasses(MilepostError))}
