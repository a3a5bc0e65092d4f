"""AgentService: the coordinator's orders to this agent (load, unload, routes, status),
its questions (which arm served a key), and people reading its decision log."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from agent import decision_files
from agent.decision_log import DecisionLog
from agent.deployments import DeploymentTable
from agent.resources import GpuAssigner
from agent.routing.arm_metrics import ArmMetricsBook
from agent.routing.router import Router
from agent.stage_runner import StageRunner
from engines.base import DeploymentSpec
from milepost.core.batching import BatchingSettings
from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.v1 import agent_pb2, agent_pb2_grpc, pipelines_pb2, routing_pb2, types_pb2


class AgentControlServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self, table: DeploymentTable, info: Callable[[], types_pb2.AgentInfo],
        router: Router, metrics: ArmMetricsBook, stages: StageRunner, *, decisions: DecisionLog | None = None,
        gpus: GpuAssigner | None = None,
    ) -> None:
        self.gpus = gpus or GpuAssigner(lambda: list(info().resources.gpus))
        self.decisions = decisions
        self.stages = stages
        self.table = table
        self.info = info
        self.router = router
        self.metrics = metrics

    def Load(self, request: agent_pb2.LoadRequest, context: grpc.ServicerContext) -> agent_pb2.LoadResponse:
        for field in ("deployment_id", "endpoint", "model", "version", "flavor"):
            if not getattr(request, field):
                raise InvalidArgument(f"LoadRequest.{field} is required")
        # A GPU replica runs on the GPU this agent assigns it ("cuda:N"), with the memory it
        # reserves there, held until unloaded.
        if request.gpu_memory_bytes < 0 or (request.gpu_memory_bytes and request.gpus <= 0):
            raise InvalidArgument(
                f"LoadRequest.gpu_memory_bytes ({request.gpu_memory_bytes}) needs gpus >= 1 and must be >= 0")
        device = (self.gpus.assign(request.deployment_id, request.gpus, request.gpu_memory_bytes)
                  if request.gpus > 0 else "cpu")
        spec = DeploymentSpec(
            deployment_id=request.deployment_id, endpoint=request.endpoint,
            model=request.model, version=request.version, engine=request.engine,
            device=device,
        )
        try:
            self.table.load(spec, request.flavor, BatchingSettings.from_proto(request.batching), number=request.version_number)
        except BaseException:
            if request.gpus > 0 and self.table.get(request.deployment_id) is None:
                self.gpus.release(request.deployment_id)
            raise
        return agent_pb2.LoadResponse()

    def Unload(self, request: agent_pb2.UnloadRequest, context: grpc.ServicerContext) -> agent_pb2.UnloadResponse:
        self.table.unload(request.deployment_id)
        self.gpus.release(request.deployment_id)
        return agent_pb2.UnloadResponse()

    def SetRoutes(self, request: routing_pb2.RouteTable, context: grpc.ServicerContext) -> agent_pb2.SetRoutesResponse:
        """Hold the table unless it is older than the one held (then it is ignored: a late retry).

        A route whose policy this agent cannot apply does not fail the call:
        requests to that endpoint answer FAILED_PRECONDITION saying why, and the
        other routes serve.
        """
        endpoints = [r.endpoint for r in request.routes]
        if any(not e for e in endpoints):
            raise InvalidArgument("RouteTable.routes[].endpoint is required")
        self.router.apply(request)
        return agent_pb2.SetRoutesResponse()

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
            routes_generation=self.router.generation,
            metrics=self.metrics.snapshot(),
        )

    def ServedArm(self, request: agent_pb2.ServedArmRequest, context: grpc.ServicerContext) -> agent_pb2.ServedArmResponse:
        """The arm that served this agent's last request to the endpoint with the key (see
        agent.routing.served_keys); an empty answer when it served none or has forgotten."""
        found = self.router.served_keys.arm_for(request.endpoint, request.key)
        if found is None:
            return agent_pb2.ServedArmResponse()
        arm, served_at = found
        return agent_pb2.ServedArmResponse(arm=arm, served_at=served_at)

    def RunStage(
        self, request: agent_pb2.RunStageRequest, context: grpc.ServicerContext,
    ) -> Iterator[pipelines_pb2.StageProgress]:
        yield from self.stages.run(request, context)

    def ListDecisions(
        self, request: agent_pb2.ListDecisionsRequest, context: grpc.ServicerContext,
    ) -> Iterator[agent_pb2.DecisionRows]:
        """The decisions this agent logged (agent.decision_log), a file's worth of rows per message."""
        if self.decisions is None:
            raise FailedPrecondition("this agent keeps no decision log")
        for table in self.decisions.read(request.endpoint, request.since, request.until, request.limit,
                                         request.decision_id):
            yield agent_pb2.DecisionRows(arrow_ipc=decision_files.to_ipc(table))
