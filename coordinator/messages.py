"""The coordinator's records as the messages its RPCs answer with."""

from __future__ import annotations

from coordinator.audit import Entry
from coordinator.store import EndpointRecord, ModelRecord
from milepost.core.model_refs import SHA256
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2, types_pb2


def model_message(m: ModelRecord) -> types_pb2.ModelVersion:
    return types_pb2.ModelVersion(
        name=m.name, version=m.version, flavor=m.flavor, size_bytes=m.size_bytes,
        created_at=m.created_at, manifest_json=m.manifest_json,
        number=m.number, digest=SHA256 + m.version, aliases=list(m.aliases), stage=m.stage, pushed_by=m.pushed_by,
    )


def endpoint_message(e: EndpointRecord) -> types_pb2.Endpoint:
    return types_pb2.Endpoint(
        name=e.name, policy=e.policy, created_at=e.created_at, require_approval=e.require_approval,
        routing=routing_pb2.RoutingPolicy.FromString(e.policy_blob),
        deployments=[
            types_pb2.Deployment(
                deployment_id=d.deployment_id, endpoint=d.endpoint, model=d.model, version=d.version,
                replicas=d.replicas, agent_ids=list(d.agent_ids), state=d.state, message=d.message,
                batching=d.batching.to_proto(), resources=d.requirements.to_proto(),
                selector=d.requirements.selector, engine=d.requirements.engine, number=d.number,
            )
            for d in e.deployments
        ],
    )


def audit_message(e: Entry) -> pb.AuditEntry:
    return pb.AuditEntry(**vars(e))
