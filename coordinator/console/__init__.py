"""The coordinator's web console: read-only pages of agents, endpoints, canaries, ML health,
model versions, pipeline runs, events and the audit trail, for role viewer and above.

Server-rendered HTML with inline SVG charts, served by uvicorn (milepost.core.http_server) on
the coordinator's ``http_port``: console.app admits callers and picks the page, console.source
reads through the coordinator's own read handlers, console.serving and console.records draw
the pages, console.html and console.charts are their markup.
"""

from __future__ import annotations

from coordinator.canary import CanaryController
from coordinator.console.app import ConsoleApp, Probes
from coordinator.console.source import Source
from coordinator.service import CoordinatorServicer
from milepost.core.auth import Authenticate
from milepost.core.http_server import HttpServer
from milepost.core.tls import Tls

FLAG = "--console-port of up, --http-port of coordinator; -1 turns it off"


class Console:
    """The console's server; start() binds (port 0: a free one), stop() ends it."""

    def __init__(self, servicer: CoordinatorServicer, canary: CanaryController, authenticate: Authenticate,
                 host: str, port: int, tls: Tls | None, probes: Probes, *, insecure: bool = False) -> None:
        self.host = host
        app = ConsoleApp(Source(servicer, canary), authenticate, secure_cookie=tls is not None, probes=probes)
        self._server = HttpServer(app, host, port, tls, insecure=insecure, name="console", flag=FLAG,
                                  logger="milepost.coordinator")

    def start(self) -> str:
        self._server.start()
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._server.scheme}://{host}:{self._server.port}"

    def stop(self, grace: float = 2.0) -> None:
        self._server.stop(grace)
