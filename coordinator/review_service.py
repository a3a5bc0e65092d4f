"""The review RPCs of CoordinatorService (coordinator.governance): validations, approvals,
retirement, an endpoint's approval requirement, and one version shown whole.

A mixin of CoordinatorServicer, kept apart so the registry's review reads in one place.
"""

from __future__ import annotations

import grpc

from coordinator.endpoints import Endpoints
from coordinator.governance import Governance
from coordinator.messages import audit_message, endpoint_message, model_message
from coordinator.store import ModelRecord, Store
from coordinator.versions import Registry, explicit
from milepost.core.auth import APPROVER, current_identity
from milepost.core.errors import PermissionDenied
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import types_pb2


class ReviewHandlers:
    store: Store
    registry: Registry
    endpoints: Endpoints
    governance: Governance

    def _version(self, name: str, version: str, what: str) -> ModelRecord:
        return self.registry.resolve(*explicit(name, version, what))

    def RecordValidation(self, request: pb.RecordValidationRequest, context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        m = self._version(request.name, request.version, "validate")
        self.governance.record_validation(m, request.passed, request.report_json)
        return self._message(m)

    def ApproveModel(self, request: pb.ApproveModelRequest, context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        m = self._version(request.name, request.version, "approve")
        self.governance.approve(m, request.note)
        return self._message(m)

    def RetireModel(self, request: pb.RetireModelRequest, context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        m = self._version(request.name, request.version, "retire")
        self.governance.retire(m, request.note)
        return self._message(m)

    def SetEndpointApproval(self, request: pb.SetEndpointApprovalRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        identity = current_identity()
        if not request.require_approval and (identity is None or not identity.may(APPROVER)):
            raise PermissionDenied("lifting an endpoint's approval requirement needs role approver")
        return endpoint_message(self.endpoints.set_require_approval(request.endpoint, request.require_approval))

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.ModelDetails:
        m = self.registry.resolve(request.name, request.version)
        review = self.governance.review(m)
        placements = [
            pb.Placement(endpoint=d.endpoint, deployment_id=d.deployment_id, state=d.state, agent_ids=list(d.agent_ids))
            for d in self.store.list_deployments() if (d.model, d.version) == (m.name, m.version)
        ]
        return pb.ModelDetails(
            model=self._message(m),
            validations=[pb.Validation(at=at, actor=actor, passed=passed, report_json=report)
                         for at, actor, passed, report in review.validations],
            approvals=[pb.Approval(at=at, actor=actor, note=note) for at, actor, note in review.approvals],
            placements=placements,
            audit=[audit_message(e) for e in self.governance.history(m)],
            retired_note=review.retired_note,
        )

    def _message(self, m: ModelRecord) -> types_pb2.ModelVersion:
        """The version as it stands after the change (its stage moved)."""
        found = self.store.get_model(m.name, m.version)
        return model_message(found or m)
