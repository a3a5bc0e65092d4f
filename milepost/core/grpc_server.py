"""How every Milepost gRPC server is built: thread pool, limits, error mapping, identities.

Listening (with or without TLS) is milepost.core.tls.listen."""

from __future__ import annotations

from concurrent import futures

import grpc

from milepost.core.auth import AuthInterceptor
from milepost.core.grpc_errors import ErrorMappingInterceptor

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


def new_server(
    auth: AuthInterceptor, *, max_workers: int = 16, max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.Server:
    """A server whose calls are checked by ``auth`` and whose oversized messages get
    RESOURCE_EXHAUSTED from gRPC itself. The error mapping is outermost, so refusals
    and every error inside become their status."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[ErrorMappingInterceptor(), auth],
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 8,
    )

