"""The agent process: one gRPC server for the data plane, AgentService and health."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent import resources
from agent.control import AgentControlServicer
from agent.dataplane import InferenceServicer
from agent.deployments import DeploymentTable
from agent.model_cache import ModelCache
from agent.registration import Registration
from engines import registry
from milepost import __version__
from milepost._grpc_server import bind, new_server
from milepost.errors import NotFound, Unavailable
from milepost.inference import grpc_predict_v2_pb2_grpc
from milepost.v1 import agent_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc, types_pb2

log = logging.getLogger("milepost.agent")
SERVICES = ("inference.GRPCInferenceService", "milepost.v1.AgentService")


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


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._coordinator_channel = grpc.insecure_channel(
            config.coordinator, options=[("grpc.max_receive_message_length", -1)]
        )
        self.cache = ModelCache(config.data_dir / "models", self._fetch)
        self.table = DeploymentTable(self.cache)
        self.dataplane = InferenceServicer(self.table)
        self.health = health.HealthServicer()
        self.server = new_server()
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.dataplane, self.server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentControlServicer(self.table, self.info), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.registration = Registration(
            self._coordinator_channel, self.info,
            lambda: [h.spec.deployment_id for h in self.table.hosted()],
        )
        self.port = 0
        self._resources = resources.probe()
        self._engines = registry.discover()
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return self.config.advertise or f"{self.config.host}:{self.port}"

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
        self.port = bind(self.server, self.config.host, self.config.port)
        self.server.start()
        for service in ("", *SERVICES):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.registration.start()
        log.info("agent %s serving on %s (coordinator %s)", self.agent_id, self.address, self.config.coordinator)
        return self.address

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.dataplane.ready = False
        self.health.enter_graceful_shutdown()
        self.registration.stop()
        self.server.stop(grace).wait()
        self.table.close()
        self._coordinator_channel.close()

    def _fetch(self, model: str, version: str):  # type: ignore[no-untyped-def]
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._coordinator_channel)
        try:
            for chunk in stub.FetchModel(coordinator_pb2.FetchModelRequest(name=model, version=version), timeout=300):
                yield chunk.data
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise NotFound(f"coordinator has no bundle for {model}:{version}") from err
            raise Unavailable(f"fetching {model}:{version} from the coordinator failed: {err.details()}") from err  # type: ignore[attr-defined]
