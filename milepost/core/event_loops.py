"""The event loop every server thread of Milepost runs: uvloop's where it is installed (a
dependency except on Windows), else asyncio's. uvloop's callbacks, futures and sockets cost
less Python per call: the agent's one-row ModelInfer at 8 concurrent calls took ~10% less CPU
a request on it than on asyncio's loop (milepost.core.grpc_server), and uvicorn serves on it.
"""

from __future__ import annotations

import asyncio

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows: asyncio's own loop
    uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
