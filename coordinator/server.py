"""The coordinator process: store, artifacts, reconciler and the gRPC server around them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import generate_latest

from coordinator.agent_client import AgentClients
from coordinator.arm_stats import ArmStats
from coordinator.artifacts import ArtifactStore
from coordinator.canary import CanaryController
from coordinator.console import Console
from coordinator.console.app import Probes
from coordinator.endpoints import Endpoints
from coordinator.governance import Governance
from coordinator.health import HealthBook
from coordinator.health_rules import HealthRules
from coordinator.metrics import CoordinatorCollector
from coordinator.pipelines import Pipelines
from coordinator.reconciler import Reconciler
from coordinator.routes import RouteBook
from coordinator.service import CoordinatorServicer
from coordinator.store import Store
from coordinator.tokens import TokenBook, token_file
from coordinator.versions import Registry
from milepost.core import auth, tracing
from milepost.core.auth import AuthInterceptor
from milepost.core.exposition import with_process
from milepost.core.grpc_server import new_server
from milepost.core.tls import Tls, listen
from milepost.v1 import coordinator_pb2, coordinator_pb2_grpc

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
    # Approving a model version needs a passing validation report (`milepost validate`) first.
    approval_requires_validation: bool = False
    # The web console's port (coordinator.console); -1: off, 0: a free one.
    http_port: int = -1


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
        self.governance = Governance(self.store, clock, config.approval_requires_validation)
        self.stats = ArmStats()
        self.health = HealthBook(self.store, clock)
        self.health_rules = HealthRules(self.health, clock, endpoints=self.endpoints)
        self.canary = CanaryController(self.endpoints, self.stats, clock, self.health)
        self.pipelines = Pipelines(self.store, self.reconciler, self.agent_clients, self.endpoints, clock)
        self.pipelines.recover()
        # Requests to the coordinator are small (bundles arrive in 1 MiB chunks): gRPC refuses
        # anything larger on arrival, before a handler sees it.
        self.server = new_server(AuthInterceptor(self.tokens.authenticate, auth.RULES), max_receive_bytes=MAX_REQUEST_BYTES)
        self.servicer = CoordinatorServicer(
            self.store, self.artifacts, self.reconciler, self.endpoints, self.routes, self.stats, self.pipelines,
            self.tokens, self.registry, self.governance, heartbeat_interval_s=config.heartbeat_interval_s,
            clock=clock, health=self.health,
        )
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(self.servicer, self.server)
        # The web console (coordinator.console) reads through the same handlers, behind the same tokens.
        # grpc.health.v1, open to probes (auth.RULES): SERVING while started, NOT_SERVING once stopping.
        self.probes = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.probes, self.server)
        self.metrics = CoordinatorCollector(self.store, self.reconciler, self.routes, self.health)
        # Its own families and the process's (process_*, python_gc_*, python_info), as an agent's /metrics has.
        self.metrics_registry = with_process(self.metrics)
        self.console = None if config.http_port < 0 else Console(
            self.servicer, self.canary, self.tokens.authenticate, config.host, config.http_port, config.tls,
            Probes(lambda: generate_latest(self.metrics_registry), lambda: self.port > 0 and not self._stopped.is_set()),
            insecure=config.insecure)
        self.port = 0
        self.console_url = ""  # http(s)://host:port of the console, once started; empty when off
        self._stopped = threading.Event()
        self._monitor = threading.Thread(target=self._watch_agents, name="agent-monitor", daemon=True)

    def local_agent_token(self) -> str:
        """The agent token of `milepost up`'s own agent (kept in the data directory, 0600)."""
        return token_file(self.tokens, self.config.data_dir / LOCAL_AGENT_TOKEN_FILE, "local-agent", auth.AGENT)

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> str:
        tracing.start("milepost-coordinator")  # the tracing setting; off: nothing
        self.port = listen(self.server, self.config.host, self.config.port, self.config.tls,
                           insecure=self.config.insecure)
        self.server.start()
        for service in ("", coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"].full_name):
            self.probes.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.console is not None:
            try:
                self.console_url = self.console.start()
            except BaseException:
                self.server.stop(None)
                raise
        self._monitor.start()
        log.info("coordinator listening on %s, data in %s", self.address, self.config.data_dir)
        return self.address

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.probes.enter_graceful_shutdown()
        if self.console is not None:
            self.console.stop(grace)
        self.server.stop(grace).wait()
        if self._monitor.is_alive():
            self._monitor.join(timeout=5)
        self.health.alerts.close()
        self.reconciler.close()
        self.routes.close()
        self.agent_clients.close()
        self.tokens.close()
        self.store.close()
        tracing.shutdown()

    def _watch_agents(self) -> None:
        """The control loops: re-place replicas of lost agents, judge canary windows and health rules."""
        period = min(1.0, self.config.agent_ttl_s / 4)
        while not self._stopped.wait(period):
            try:
                self.reconciler.repair()
                self.canary.tick()
                self.health_rules.tick()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad pass
                log.exception("control loop pass failed")
