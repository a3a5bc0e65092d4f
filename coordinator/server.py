"""The coordinator process: store, artifacts, reconciler and the gRPC server around them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coordinator.agent_client import AgentClients
from coordinator.arm_stats import ArmStats
from coordinator.artifacts import ArtifactStore
from coordinator.canary import CanaryController
from coordinator.endpoints import Endpoints
from coordinator.pipelines import Pipelines
from coordinator.reconciler import Reconciler
from coordinator.routes import RouteBook
from coordinator.service import CoordinatorServicer
from coordinator.store import Store
from coordinator.tokens import TokenBook, token_file
from coordinator.versions import Registry
from milepost.core import auth
from milepost.core.auth import AuthInterceptor
from milepost.core.grpc_server import new_server
from milepost.core.tls import Tls, listen
from milepost.v1 import coordinator_pb2_grpc

log = logging.getLogger("milepost.coordinator")
ADMIN_TOKEN_FILE = "admin.token"
LOCAL_AGENT_TOKEN_FILE = "local-agent.token"
MAX_REQUEST_BYTES = 8 << 20


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7070
    heartbeat_interval_s: float = 1.0
    agent_ttl_s: float = 5.0
    placement: str = "spread"
    # Where the first start writes the admin token (0600); None: data_dir/admin.token.
    admin_token_file: Path | None = None
    # TLS of its server and of its channels to agents; None: plaintext (loopback only unless insecure).
    tls: Tls | None = None
    insecure: bool = False


class Coordinator:
    """Owns everything the coordinator runs; start() binds, stop() releases it all."""

    def __init__(self, config: CoordinatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = Store(config.data_dir / "milepost.db")
        self.tokens = TokenBook(config.data_dir / "milepost.db", clock, self.store.audit_key)
        # The first start of a data directory makes an admin token, kept in admin.token (0600).
        self.admin_token_file = config.admin_token_file or config.data_dir / ADMIN_TOKEN_FILE
        if not self.tokens.has_tokens() or self.admin_token_file.exists():
            token_file(self.tokens, self.admin_token_file, "admin", auth.ADMIN)
        self.artifacts = ArtifactStore(config.data_dir / "artifacts")
        self.agent_clients = AgentClients(self.tokens.control_token, config.tls)
        self.reconciler = Reconciler(
            self.store, self.agent_clients, ttl_s=config.agent_ttl_s, clock=clock, strategy=config.placement
        )
        self.routes = RouteBook(self.store, self.reconciler, self.agent_clients)
        self.reconciler.on_change = self.routes.push
        self.endpoints = Endpoints(self.store, self.reconciler, clock, on_change=lambda: self.routes.push(wait=True))
        self.registry = Registry(self.store, self.artifacts, self.reconciler.placing, clock)
        self.stats = ArmStats()
        self.canary = CanaryController(self.endpoints, self.stats, clock)
        self.pipelines = Pipelines(self.store, self.reconciler, self.agent_clients, self.endpoints, clock)
        self.pipelines.recover()
        # Requests to the coordinator are small (bundles arrive in 1 MiB chunks): gRPC refuses
        # anything larger on arrival, before a handler sees it.
        self.server = new_server(AuthInterceptor(self.tokens.authenticate, auth.RULES), max_receive_bytes=MAX_REQUEST_BYTES)
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(
            CoordinatorServicer(
                self.store, self.artifacts, self.reconciler, self.endpoints, self.routes, self.stats, self.pipelines,
                self.tokens, self.registry, heartbeat_interval_s=config.heartbeat_interval_s, clock=clock,
            ),
            self.server,
        )
        self.port = 0
        self._stopped = threading.Event()
        self._monitor = threading.Thread(target=self._watch_agents, name="agent-monitor", daemon=True)

    def local_agent_token(self) -> str:
        """The agent token of `milepost up`'s own agent (kept in the data directory, 0600)."""
        return token_file(self.tokens, self.config.data_dir / LOCAL_AGENT_TOKEN_FILE, "local-agent", auth.AGENT)

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> str:
        self.port = listen(self.server, self.config.host, self.config.port, self.config.tls,
                           insecure=self.config.insecure)
        self.server.start()
        self._monitor.start()
        log.info("coordinator listening on %s, data in %s", self.address, self.config.data_dir)
        return self.address

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.server.stop(grace).wait()
        if self._monitor.is_alive():
            self._monitor.join(timeout=5)
        self.reconciler.close()
        self.routes.close()
        self.agent_clients.close()
        self.tokens.close()
        self.store.close()

    def _watch_agents(self) -> None:
        """The control loops: re-place replicas of lost agents, judge canary windows."""
        period = min(1.0, self.config.agent_ttl_s / 4)
        while not self._stopped.wait(period):
            try:
                self.reconciler.repair()
                self.canary.tick()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad pass
                log.exception("control loop pass failed")
