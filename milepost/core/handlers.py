"""Wrapping a gRPC method handler, whatever its kind: the one place the four kinds are told apart.

Server interceptors (error mapping, identities) wrap the function of a handler and keep
everything else; ``rewrap`` does that for unary and streaming responses alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]


def rewrap(
    handler: grpc.RpcMethodHandler, unary: Callable[[Behaviour], Behaviour], stream: Callable[[Behaviour], Behaviour],
    *, request_deserializer: Callable[[bytes], Any] | None = None,
    response_serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with its function wrapped by ``unary`` (one response) or ``stream`` (a stream of
    responses); ``request_deserializer`` and ``response_serializer`` replace the handler's when given."""
    kinds = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": response_serializer or handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kinds)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kinds)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **kinds)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **kinds)
