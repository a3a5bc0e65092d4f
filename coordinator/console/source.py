"""What the console reads: the CoordinatorService's own read handlers, called in process.

The pages show what `milepost status`, `report`, `models`, `runs`, `events` and `audit` answer,
because they get it from the same handlers (no second query to drift from the first). Each read
names the RPC it stands for: the console admits a caller by that RPC's rule in
milepost.core.auth.RULES, as the gRPC server would. The read handlers use no context (they
neither stream nor call agents), so they are given none.
"""

from __future__ import annotations

from collections import deque
from typing import cast

import grpc

from coordinator.canary import CanaryController
from coordinator.service import MAX_PAGE, CoordinatorServicer
from milepost.core.arm_counters import ArmCounters
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import pipelines_pb2, types_pb2

_IN_PROCESS = cast(grpc.ServicerContext, None)
METHOD = "/milepost.v1.CoordinatorService/"


class Source:
    def __init__(self, servicer: CoordinatorServicer, canary: CanaryController) -> None:
        self._service = servicer
        self._canary = canary

    def status(self) -> pb.GetStatusResponse:  # GetStatus
        return self._service.GetStatus(pb.GetStatusRequest(), _IN_PROCESS)

    def endpoints(self) -> list[types_pb2.Endpoint]:  # ListEndpoints
        return list(self._service.ListEndpoints(pb.ListEndpointsRequest(), _IN_PROCESS).endpoints)

    def report(self, endpoint: str) -> pb.ReportResponse:  # Report
        return self._service.Report(pb.ReportRequest(endpoint=endpoint), _IN_PROCESS)

    def canary_window(self, endpoint: str) -> tuple[float, dict[str, ArmCounters]] | None:  # Report
        """When the canary's open window opened and what each arm served in it so far."""
        window = self._canary.window(endpoint)
        return None if window is None else (window.opened_at, window.seen)

    def health(self, endpoint: str) -> pb.GetHealthResponse:  # GetHealth
        return self._service.GetHealth(pb.GetHealthRequest(endpoint=endpoint), _IN_PROCESS)

    def fairness(self, endpoint: str) -> pb.GetFairnessResponse:  # GetFairness (the same rule as GetHealth)
        return self._service.GetFairness(pb.GetFairnessRequest(endpoint=endpoint), _IN_PROCESS)

    def models(self) -> list[types_pb2.ModelVersion]:  # ListModels
        return list(self._service.ListModels(pb.ListModelsRequest(), _IN_PROCESS).models)

    def model(self, name: str, number: str) -> pb.ModelDetails:  # GetModel
        return self._service.GetModel(pb.GetModelRequest(name=name, version=number), _IN_PROCESS)

    def runs(self, limit: int = 100) -> list[pipelines_pb2.PipelineRun]:  # ListRuns
        return list(self._service.ListRuns(pb.ListRunsRequest(limit=limit), _IN_PROCESS).runs)

    def run(self, run_id: str) -> pipelines_pb2.PipelineRun:  # GetRun
        return self._service.GetRun(pb.GetRunRequest(run_id=run_id), _IN_PROCESS)

    def events(self, endpoint: str = "", limit: int = 200) -> list[types_pb2.Event]:  # ListEvents
        return list(self._service.ListEvents(pb.ListEventsRequest(endpoint=endpoint, limit=limit), _IN_PROCESS).events)

    def audit(self, newest: int = 200) -> list[pb.AuditEntry]:  # ListAudit
        """The ``newest`` entries, newest first (read page by page, as `milepost audit` does)."""
        kept: deque[pb.AuditEntry] = deque(maxlen=newest)
        after = 0
        while True:
            entries = self._service.ListAudit(pb.ListAuditRequest(after_seq=after, limit=MAX_PAGE), _IN_PROCESS).entries
            kept.extend(entries)
            if len(entries) < MAX_PAGE:
                return list(reversed(kept))
            after = entries[-1].seq
