"""Serving an ASGI application over HTTP/1.1 in a Milepost process (the agent's REST data plane,
the coordinator's web console): uvicorn, with uvloop and httptools, on an event loop in a thread
of its own; used as the gRPC server is (``start()`` binds and returns the port, ``stop(grace)``).

Why this stack: side by side with granian's embedded server (Rust HTTP), the same RestApp in
the same agent, interleaved (benchmarks/rest_stacks.py; benchmarks/results/rest_stacks.json, a
shared 2-core machine), uvicorn answered GET /v2 at 1.1-1.3x granian's requests/s with 21-26%
less agent CPU per request, 1 row of JSON at 1.2-1.5x, and 64 binary rows at 1.1x (a tie at 32
concurrent); one of three runs had granian ahead at 1 row x 32. It also takes a socket bound
here (granian binds its own), so port 0 and bind errors are known when ``start`` returns.
Most of a request's cost is the core's, not the stack's (about 1 ms of agent CPU for a scored
row against 0.2 ms for GET /v2).

TLS as the process's gRPC server has it (milepost.core.tls): its certificate and key, and with a
CA, client certificates required (mutual TLS); without TLS only loopback, unless ``insecure``.
At most ``max_connections`` connections at once; past that, 503 at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
import threading
from typing import Any

import uvicorn

from milepost.core.errors import InvalidArgument
from milepost.core.event_loops import new_event_loop
from milepost.core.ports import bind_error
from milepost.core.tls import Tls, check_plaintext

# uvicorn tells of every start and stop at INFO; the process says what it serves itself.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, tls: Tls | None, *, insecure: bool = False,
                 max_connections: int = 128, name: str = "REST", flag: str = "--http-port; -1 turns it off",
                 logger: str = "milepost.agent") -> None:
        """``name`` and ``flag`` (the option that sets its port) are named in errors; ``logger`` is
        where a failure once serving is logged."""
        self._name, self._flag, self._logger = name, flag, logger
        if tls is None:
            check_plaintext(host, insecure)
        self._address = (host, port)
        self.tls = tls
        self._config = uvicorn.Config(
            app, host=host, port=port, http="httptools", loop="none", lifespan="off", interface="asgi3",
            log_config=None, access_log=False, server_header=False, date_header=False,
            limit_concurrency=max_connections, backlog=1024,
            ssl_certfile=str(tls.cert) if tls else None, ssl_keyfile=str(tls.key) if tls else None,
            ssl_ca_certs=str(tls.ca) if tls and tls.ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.ca else ssl.CERT_NONE,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def start(self) -> int:
        """Bind (port 0: a free one) and serve; the port bound. PortUnavailable when it cannot be had."""
        try:
            self._config.load()
        except (OSError, ssl.SSLError) as err:
            raise InvalidArgument(f"cannot use the TLS files for the {self._name} server: {err}") from err
        host, port = self._address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host.strip("[]"), port), family=family, backlog=1024)
        except OSError as err:
            raise bind_error(host, port, self._name, self._flag, err) from err
        self.port = self._socket.getsockname()[1]
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(started))
            except BaseException as err:  # noqa: BLE001 - told to start(), or logged once it returned
                failed.append(err)
                if started.is_set():
                    logging.getLogger(self._logger).exception("the %s server stopped", self._name)
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="http-loop", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            raise failed[0]
        return self.port

    async def _serve(self, started: threading.Event) -> None:
        assert self._socket is not None
        serving = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.005)
        started.set()
        await serving

    def stop(self, grace: float | None = 2.0) -> None:
        """Take no new connections, finish the requests under way for up to ``grace`` seconds
        (None: at once), then close every connection."""
        if self._thread is None:
            return
        self._config.timeout_graceful_shutdown = math.ceil(max(grace or 0.0, 0.0))  # whole seconds, as uvicorn takes it
        self._server.should_exit = True
        self._thread.join((grace or 0.0) + 5.0)
        self._thread = None
