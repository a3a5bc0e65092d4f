"""The ML-health RPCs of CoordinatorService (mixed into coordinator.service.CoordinatorServicer):
GetHealth, GetFairness (role viewer) and SetHealthConfig (role deployer); coordinator.health
does the work."""

from __future__ import annotations

import grpc

from coordinator.endpoints import Endpoints
from coordinator.health import HealthBook
from milepost.core.errors import InvalidArgument
from milepost.v1 import coordinator_pb2 as pb


class HealthHandlers:
    endpoints: Endpoints
    health: HealthBook

    def GetHealth(self, request: pb.GetHealthRequest, context: grpc.ServicerContext) -> pb.GetHealthResponse:
        if request.windows < 0:
            raise InvalidArgument(f"windows must be >= 0 (0: the newest), got {request.windows}")
        return self.health.health(self.endpoints.get(request.endpoint), request.windows or 1)

    def GetFairness(self, request: pb.GetFairnessRequest, context: grpc.ServicerContext) -> pb.GetFairnessResponse:
        return self.health.fairness(self.endpoints.get(request.endpoint))

    def SetHealthConfig(self, request: pb.SetHealthConfigRequest, context: grpc.ServicerContext) -> pb.HealthConfig:
        self.endpoints.get(request.config.endpoint)  # NOT_FOUND for an endpoint that does not exist
        return self.health.set_config(request.config)
