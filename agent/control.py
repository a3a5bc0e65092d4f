"""AgentService: the coordinator's orders to this agent (load, unload, status)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from agent.deployments import DeploymentTable
from engines.base import DeploymentSpec
from engines.batching import batching_config
from milepost.errors import InvalidArgument
from milepost.v1 import agent_pb2, agent_pb2_grpc, types_pb2


class AgentControlServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, table: DeploymentTable, info: Callable[[], types_pb2.AgentInfo]) -> None:
        self.table = table
        self.info = info

    def Load(self, request: agent_pb2.LoadRequest, context: grpc.ServicerContext) -> agent_pb2.LoadResponse:
        for field in ("deployment_id", "endpoint", "model", "version", "flavor"):
            if not getattr(request, field):
                raise InvalidArgument(f"LoadRequest.{field} is required")
        spec = DeploymentSpec(
            deployment_id=request.deployment_id, endpoint=request.endpoint,
            model=request.model, version=request.version,
        )
        self.table.load(spec, request.flavor, batching_config(request.batching))
        return agent_pb2.LoadResponse()

    def Unload(self, request: agent_pb2.UnloadRequest, context: grpc.ServicerContext) -> agent_pb2.UnloadResponse:
        self.table.unload(request.deployment_id)
        return agent_pb2.UnloadResponse()

    def Status(self, request: agent_pb2.AgentStatusRequest, context: grpc.ServicerContext) -> agent_pb2.AgentStatusResponse:
        return agent_pb2.AgentStatusResponse(
            info=self.info(),
            deployments=[
                agent_pb2.LoadedDeployment(
                    deployment_id=h.spec.deployment_id, endpoint=h.spec.endpoint,
                    model=h.spec.model, version=h.spec.version, engine=h.engine,
                )
                for h in self.table.hosted()
            ],
        )
