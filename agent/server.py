"""The agent process: one gRPC server for the data plane, AgentService and health; optionally
the data plane over REST (agent.rest on milepost.core.http_server) and an HTTP server for Prometheus metrics.

``drain()`` is how it stops on SIGTERM (a rolling restart, a node going down): it
tells the coordinator at once that it drains, so routes and clients move to other
replicas and nothing new is placed on it; it keeps answering while they move, until
no request came for ``drain_quiet_s`` or ``drain_timeout_s`` passed; then the server
stops with the rest of the time (at least DRAIN_MIN_GRACE_S) as grace, so calls under way finish. A call that
arrives after that is refused UNAVAILABLE, which clients retry on another replica.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent import resources
from agent.control import AgentControlServicer
from agent.dataplane import DataPlane
from agent.decision_log import DecisionLog, DecisionLogSettings, model_of
from agent.deployments import DeploymentTable
from agent.grpc_inference import INLINE_METHODS, InferenceServicer
from agent.load_meter import LoadMeter
from agent.model_cache import ModelCache
from agent.prometheus import AgentCollector, MetricsServer
from agent.registration import Registration
from agent.rest import RestApp
from agent.routing.arm_metrics import ArmMetricsBook
from agent.routing.router import Router
from agent.stage_runner import StageRunner
from engines import registry
from milepost.core import auth, model_upload, tracing
from milepost.core.auth import AuthInterceptor, Identity
from milepost.core.errors import MilepostError, NotFound, Unavailable
from milepost.core.exposition import exposition
from milepost.core.grpc_server import DEFAULT_MAX_MESSAGE_BYTES, new_server
from milepost.core.http_server import HttpServer
from milepost.core.settings import get_settings
from milepost.core.tls import Tls, is_loopback, listen, open_channel
from milepost.core.version import __version__
from milepost.inference import grpc_predict_v2_pb2_grpc
from milepost.v1 import agent_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc, types_pb2
from scoring_core import bundle
from scoring_core.threads import pin_blas_to_one_thread

log = logging.getLogger("milepost.agent")
SERVICES = ("inference.GRPCInferenceService", "milepost.v1.AgentService")
# However long a drain waited, calls under way when the server stops get this long to finish.
DRAIN_MIN_GRACE_S = 5.0


@dataclass(frozen=True)
class AgentConfig:
    coordinator: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8001
    agent_id: str = ""
    # The address others use to reach this agent; defaults to host:bound port.
    advertise: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # HTTP port of GET /metrics (Prometheus text); None: no metrics server; 0: a free port.
    metrics_port: int | None = None
    # HTTP port of the data plane over REST (Open Inference Protocol /v2/...); None: none; 0: a free port.
    http_port: int | None = None
    # The agent's own token (role agent) for its calls to the coordinator; empty: the token setting.
    token: str = ""
    # TLS of its server and of its channels to the coordinator and other agents; None: plaintext,
    # which a non-loopback host refuses unless insecure.
    tls: Tls | None = None
    insecure: bool = False
    # Inference calls need a user token (role viewer or above); None: only when host is not loopback.
    inference_auth: bool | None = None

    def __post_init__(self) -> None:
        for name in ("metrics_port", "http_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {port}")


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._settings = get_settings()
        self._coordinator_channel = auth.with_token(
            open_channel(config.coordinator, config.tls, [("grpc.max_receive_message_length", -1)]),
            config.token or self._settings.token,
        )
        self.cache = ModelCache(config.data_dir / "models", self._fetch)
        self.table = DeploymentTable(self.cache)
        self.arm_metrics = ArmMetricsBook()
        self.router = Router(self.table, lambda: self.address, self.arm_metrics, tls=config.tls,
                             token=lambda: self.registration.control_token)
        self.dataplane = DataPlane(self.table, self.router, max_inflight_bytes=self._settings.max_inflight_bytes,
                                   inline_max_bytes=self._settings.inline_max_bytes)
        s = self._settings
        self.decisions = DecisionLog(config.data_dir / "decisions", lambda: self.agent_id, model_of(self.table),
                                     DecisionLogSettings(s.decision_log_queue, s.decision_log_queue_bytes,
                                                         s.decision_log_rotate_bytes, s.decision_log_rotate_s,
                                                         s.decision_log_retention_s))
        self.dataplane.decisions = self.decisions
        self.health = health.HealthServicer()
        require = config.inference_auth if config.inference_auth is not None else not is_loopback(config.host)
        rules = auth.data_plane_rules(require_token=require)
        self.server = new_server(AuthInterceptor(self._authenticate, rules), inline_methods=INLINE_METHODS)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.dataplane), self.server)
        # Which GPU each replica and stage holds: assigned here, reported in every heartbeat.
        self.gpus = resources.GpuAssigner(lambda: list(self.info().resources.gpus))
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentControlServicer(self.table, self.info, self.router, self.arm_metrics, self._stage_runner(),
                                 decisions=self.decisions, gpus=self.gpus),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.draining = threading.Event()
        meter = LoadMeter(lambda: self.dataplane.inflight_requests, lambda: self.dataplane.answered)
        self.registration = Registration(
            self._coordinator_channel, self.info,
            lambda: [h.spec.deployment_id for h in self.table.hosted()],
            routes=self.router, metrics=self.arm_metrics.snapshot, load=meter.reading, gpu_rooms=self.gpus.report,
            draining=self.draining.is_set,
            decisions_dropped=self.decisions.dropped,
            drift_windows=lambda: [(h.spec.endpoint, h.spec.deployment_id, h.model.drift) for h in self.table.hosted()
                                   if h.model.drift is not None],
        )
        self.dataplane.scored_keys = self.registration.scored_keys
        self.port = 0
        self._metrics_server: MetricsServer | None = None
        # The REST front end; served when http_port is set (a benchmark may serve it on another server).
        self._http_workers = ThreadPoolExecutor(16, thread_name_prefix="http")
        self.rest = RestApp(self.dataplane, self._authenticate, rules, workers=self._http_workers,
                            max_body_bytes=DEFAULT_MAX_MESSAGE_BYTES,
                            max_receiving_bytes=self._settings.max_inflight_bytes)
        self._http_server = (
            HttpServer(self.rest, config.host, config.http_port, config.tls, insecure=config.insecure)
            if config.http_port is not None else None
        )
        self._resources = resources.probe()
        self._engines = registry.discover()
        self._stopped = threading.Event()

    def _authenticate(self, token: str) -> Identity | None:
        """The coordinator's control token (learned at registration), or a user token the
        coordinator lists as valid (checked here against its hash, also while it is down)."""
        control = self.registration.control_token
        if control and hmac.compare_digest(token, control):
            return Identity("coordinator", auth.COORDINATOR)
        parts = auth.split_token(token)
        digest = self.registration.access_tokens.get(parts[0]) if parts else None
        if parts is None or digest is None or not auth.hash_matches(parts[1], digest.secret_sha256):
            return None
        if digest.expires_at and time.time() >= digest.expires_at:
            return None
        return Identity(digest.token_id, digest.role, digest.token_id)

    @property
    def address(self) -> str:
        return self.config.advertise or f"{self.config.host}:{self.port}"

    @property
    def http_port(self) -> int | None:
        """The bound port of the REST data plane, once started; None when it is off."""
        return self._http_server.port if self._http_server is not None else None

    @property
    def http_url(self) -> str | None:
        """``http(s)://host:port`` of the REST data plane, once started; None when it is off."""
        if self._http_server is None:
            return None
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{self._http_server.scheme}://{host}:{self._http_server.port}"

    @property
    def metrics_port(self) -> int | None:
        """The bound port of GET /metrics, once started; None when metrics are off."""
        return self._metrics_server.port if self._metrics_server is not None else None

    def metrics_text(self) -> str:
        """This agent's metrics in Prometheus text format."""
        return exposition(AgentCollector.of(self))

    @property
    def agent_id(self) -> str:
        return self.config.agent_id or f"{socket.gethostname()}-{self.port}"

    def info(self) -> types_pb2.AgentInfo:
        return types_pb2.AgentInfo(
            agent_id=self.agent_id,
            address=self.address,
            resources=self._resources,
            engines=[
                types_pb2.EngineInfo(name=e.name, version=e.version, available=e.available, reason=e.reason)
                for e in self._engines
            ],
            labels=self.config.labels,
            milepost_version=__version__,
        )

    def start(self) -> str:
        # One thread pool per scoring process: BLAS threads spinning beside numba's pool
        # and the MLP workers halve throughput (PERF_NOTES, technique 8).
        pin_blas_to_one_thread()
        tracing.start("milepost-agent", self._settings.tracing)  # the tracing setting; off: nothing
        self.port = listen(self.server, self.config.host, self.config.port, self.config.tls,
                           insecure=self.config.insecure)
        if self._http_server is not None:
            try:
                self._http_server.start()
            except BaseException:
                self.server.stop(None)
                raise
        if self.config.metrics_port is not None:
            self._metrics_server = MetricsServer(self.config.host, self.config.metrics_port, AgentCollector.of(self))
            self._metrics_server.start()
        self.server.start()
        for service in ("", *SERVICES):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.registration.start()
        log.info("agent %s serving on %s (coordinator %s)", self.agent_id, self.address, self.config.coordinator)
        return self.address

    def drain(self, timeout_s: float | None = None, quiet_s: float | None = None,
              abandon: threading.Event | None = None) -> None:
        """Stop without failing a request (the module docstring says how); ``abandon``
        (a second Ctrl-C) ends the wait early. Defaults: the drain_* settings."""
        timeout_s = self._settings.drain_timeout_s if timeout_s is None else timeout_s
        quiet_s = self._settings.drain_quiet_s if quiet_s is None else quiet_s
        abandon = abandon or threading.Event()
        started = time.monotonic()
        deadline = started + timeout_s
        self.draining.set()
        self.dataplane.ready = False  # ServerReady says so, as Triton's does while it shuts down
        for service in ("", *SERVICES):  # load balancers probing health move away too
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        told = self.registration.beat_now(timeout=min(timeout_s, self._settings.registration_timeout_s))
        log.info("agent %s draining (%s)", self.agent_id,
                 "the coordinator moves its routes" if told else "the coordinator did not answer")
        while time.monotonic() < deadline and not abandon.is_set():
            quiet = time.monotonic() - max(self.dataplane.last_request_at, started)
            if self.dataplane.inflight_requests == 0 and quiet >= quiet_s:
                break
            abandon.wait(0.05)
        self.stop(grace=max(deadline - time.monotonic(), DRAIN_MIN_GRACE_S))

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.dataplane.ready = False
        self.health.enter_graceful_shutdown()
        self.registration.stop()
        stopped = self.server.stop(grace)
        if self._http_server is not None:
            self._http_server.stop(grace)
        stopped.wait()
        self._http_workers.shutdown(wait=False, cancel_futures=True)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.router.close()
        self.decisions.close()
        self.table.close()
        self._coordinator_channel.close()
        tracing.shutdown()

    def _stage_runner(self) -> StageRunner:
        """Stages register the models they train as users push theirs (milepost.core.model_upload)."""

        stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._coordinator_channel)

        def push(name: str, bundle_dir: Path) -> str:
            try:
                requests = model_upload.push_requests(name, bundle.pack(bundle_dir))
                model = stub.PushModel(requests, timeout=self._settings.model_fetch_timeout_s)
            except grpc.RpcError as err:
                raise MilepostError.from_status(err, f"registering {name!r} with the coordinator") from err
            return f"{model.name}:{model.version}"

        def newest(name: str) -> str:
            try:
                versions = stub.ListModels(coordinator_pb2.ListModelsRequest(name=name),
                                          timeout=self._settings.agent_call_timeout_s).models
            except grpc.RpcError as err:
                raise MilepostError.from_status(err, f"listing versions of {name!r} at the coordinator") from err
            if not versions:
                raise NotFound(f"model {name!r} is not registered")
            return max(versions, key=lambda m: m.created_at).version

        return StageRunner(self.cache, self.config.data_dir / "stages", push, newest, gpus=self.gpus)

    def _fetch(self, model: str, version: str) -> Iterator[bytes]:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._coordinator_channel)
        try:
            for chunk in stub.FetchModel(coordinator_pb2.FetchModelRequest(name=model, version=version),
                                       timeout=self._settings.model_fetch_timeout_s):
                yield chunk.data
        except grpc.RpcError as err:
            error = MilepostError.from_status(err, f"fetching {model}:{version} from the coordinator")
            if isinstance(error, NotFound):
                raise error from err
            raise Unavailable(error.message) from err
