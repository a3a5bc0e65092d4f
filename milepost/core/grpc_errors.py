"""The one place where exceptions become gRPC statuses.

A MilepostError keeps its status and message. Anything else is a bug of ours:
the client sees INTERNAL with a generic message and the traceback goes to the
log, so internals never leak and the client is never blamed for our faults.
Bytes that do not decode as the method's request message are the caller's
fault: INVALID_ARGUMENT (gRPC itself would answer INTERNAL), before any
handler or identity check runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from milepost.core.errors import InvalidArgument, MilepostError
from milepost.core.handlers import rewrap

log = logging.getLogger("milepost.grpc")


def _abort(context: grpc.ServicerContext, err: BaseException, method: str) -> None:
    if isinstance(err, MilepostError):
        context.abort(err.code, err.message)
    log.exception("unhandled error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")


class _Undecodable:
    """What a request's bytes became when they are not a valid message of the method."""

    def __init__(self, why: str) -> None:
        self.why = why


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:  # noqa: BLE001 - any decoding failure is the sender's bytes
            return _Undecodable(type(err).__name__)

    return run


def _decoded(request: Any, method: str, streaming: bool = False) -> Any:
    """The request, or InvalidArgument when its bytes did not decode; a stream
    (``streaming``) is checked as it is read."""
    if streaming:
        return (_decoded(item, method) for item in request)
    if type(request) is _Undecodable:
        raise InvalidArgument(f"the request bytes are not a valid {method.rsplit('/', 1)[-1]} request ({request.why})")
    return request


def _wrap_unary(fn: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(_decoded(request, method, streaming), context)
        except Exception as err:  # noqa: BLE001 - mapped to a status here, by design
            if _already_aborted(context):
                raise
            _abort(context, err, method)

    return handler


def _wrap_stream(fn: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from fn(_decoded(request, method, streaming), context)
        except Exception as err:  # noqa: BLE001
            if _already_aborted(context):
                raise
            _abort(context, err, method)

    return handler


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code; keep that code.
    return context.code() is not None


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Wraps every handler so raised MilepostErrors become their status."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method, streaming = handler_call_details.method, handler.request_streaming
        return rewrap(
            handler, lambda fn: _wrap_unary(fn, method, streaming), lambda fn: _wrap_stream(fn, method, streaming),
            request_deserializer=_tolerant(handler.request_deserializer),
        )
