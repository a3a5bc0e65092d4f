"""CoordinatorService: the registry, endpoints and agents, over gRPC.

Handlers validate, then change state through the Store in transactions and ask
the Reconciler to make agents match. They raise MilepostErrors; the shared
interceptor turns them into statuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import grpc

from coordinator.artifacts import ArtifactStore
from coordinator.reconciler import Reconciler, requirements
from coordinator.store import DeploymentRecord, EndpointRecord, ModelRecord, Store
from engines import engine_for_flavor
from engines.batching import batching_config
from milepost.errors import FailedPrecondition, InvalidArgument, NotFound
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, types_pb2

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_DEPLOY_TIMEOUT_S = 120.0


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise InvalidArgument(
            f"{kind} name {value!r} is invalid: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(
        self, store: Store, artifacts: ArtifactStore, reconciler: Reconciler, *,
        heartbeat_interval_s: float, clock,  # type: ignore[no-untyped-def]
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.reconciler = reconciler
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock

    # ---- agents ----
    def RegisterAgent(self, request: pb.RegisterAgentRequest, context: grpc.ServicerContext) -> pb.RegisterAgentResponse:
        info = request.agent
        check_name("agent", info.agent_id)
        if not info.address:
            raise InvalidArgument("agent.address is required (host:port of the agent's gRPC server)")
        self.store.upsert_agent(info.agent_id, info.address, info.SerializeToString(), self.clock())
        self.reconciler.repair()
        return pb.RegisterAgentResponse(
            agent_id=info.agent_id,
            heartbeat_interval_s=self.heartbeat_interval_s,
            ttl_s=self.reconciler.ttl_s,
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        was_live = request.agent_id in self.reconciler.live_agents()
        if not self.store.touch_agent(request.agent_id, self.clock()):
            return pb.HeartbeatResponse(known=False)
        if not was_live:
            # Back from lost: place what waits for it before diffing what it serves.
            self.reconciler.repair()
        self.reconciler.reconcile_agent(request.agent_id, set(request.deployment_ids))
        return pb.HeartbeatResponse(known=True)

    def FetchModel(self, request: pb.FetchModelRequest, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk]:
        record = self._model(request.name, request.version)
        for chunk in self.artifacts.read(record.version):
            yield pb.ModelChunk(data=chunk)

    # ---- registry ----
    def PushModel(self, request_iterator: Iterator[pb.PushModelRequest], context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("PushModel: the first message must carry a header (name, format)")
        header = first.header
        check_name("model", header.name)
        if header.format != "bundle":
            raise InvalidArgument(
                f"PushModel: header.format {header.format!r} is not supported; send 'bundle' "
                "(the client compiles XGBoost and LightGBM files into bundles)"
            )

        def chunks() -> Iterator[bytes]:
            yield first.data
            for message in request_iterator:
                yield message.data

        version, manifest, size = self.artifacts.put(chunks(), header.sha256)
        record = ModelRecord(
            name=header.name, version=version, flavor=manifest.get("flavor", ""),
            size_bytes=size, created_at=self.clock(), manifest_json=json.dumps(manifest, sort_keys=True),
        )
        if not self.store.add_model(record):
            record = self.store.get_model(header.name, version) or record
        return model_message(record)

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_message(m) for m in self.store.list_models(request.name)])

    def _model(self, name: str, version: str) -> ModelRecord:
        record = self.store.get_model(name, version)
        if record is None:
            which = f"{name}:{version}" if version else name
            raise NotFound(f"model {which} is not registered (or the version prefix is ambiguous); "
                           "see `milepost models`")
        return record

    # ---- endpoints ----
    def Deploy(self, request: pb.DeployRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        check_name("endpoint", request.endpoint)
        if request.replicas < 0:
            raise InvalidArgument(f"replicas must be >= 1, got {request.replicas}")
        res = request.resources
        if res.cpu < 0 or res.memory_bytes < 0 or res.gpus < 0:
            raise InvalidArgument("resources.cpu, resources.memory_bytes and resources.gpus must be >= 0")
        batching_config(request.batching)  # validated here, applied by the agents
        model = self._model(request.model, request.version)
        deployment = DeploymentRecord(
            deployment_id=self.reconciler.new_deployment_id(), endpoint=request.endpoint,
            model=model.name, version=model.version, replicas=request.replicas or 1, state="PENDING",
            message="", created_at=self.clock(),
            max_batch_size=request.batching.max_batch_size, max_delay_us=request.batching.max_delay_us,
            max_queue_rows=request.batching.max_queue_rows,
            engine=request.engine or engine_for_flavor(model.flavor),
            cpu=res.cpu, memory_bytes=res.memory_bytes, gpus=res.gpus,
            selector_json=json.dumps(dict(request.selector), sort_keys=True),
        )
        try:
            agent_ids = self.reconciler.place(requirements(deployment), deployment.replicas)
        except FailedPrecondition as err:
            agent_ids = []
            deployment = replace(deployment, message=f"waiting for an agent: {err.message}")
        deployment = replace(deployment, agent_ids=tuple(agent_ids))
        replaced = self.store.replace_endpoint(request.endpoint, "single", deployment, self.clock())
        try:
            if agent_ids:
                remaining = context.time_remaining()
                timeout = DEFAULT_DEPLOY_TIMEOUT_S if remaining is None else max(remaining - 0.5, 0.1)
                self.reconciler.load_all(deployment, timeout)
        finally:
            # Old deployments go once the new one is serving (or has definitely failed),
            # so a redeploy never leaves the endpoint without a model.
            for old in replaced:
                self.reconciler.unload(old)
        endpoint = self.store.get_endpoint(request.endpoint)
        assert endpoint is not None
        return endpoint_message(endpoint)

    def Undeploy(self, request: pb.UndeployRequest, context: grpc.ServicerContext) -> pb.UndeployResponse:
        removed = self.store.delete_endpoint(request.endpoint)
        if removed is None:
            raise NotFound(f"endpoint {request.endpoint!r} does not exist; see `milepost endpoints`")
        for d in removed:
            self.reconciler.unload(d)
        return pb.UndeployResponse()

    def ListEndpoints(self, request: pb.ListEndpointsRequest, context: grpc.ServicerContext) -> pb.ListEndpointsResponse:
        return pb.ListEndpointsResponse(endpoints=[endpoint_message(e) for e in self.store.list_endpoints()])

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        live = self.reconciler.live_agents()
        hosted: dict[str, list[str]] = {}
        for d in self.store.list_deployments():
            for a in d.agent_ids:
                hosted.setdefault(a, []).append(d.deployment_id)
        agents = [
            types_pb2.AgentStatus(
                info=types_pb2.AgentInfo.FromString(rec.info),
                state="ALIVE" if rec.agent_id in live else "LOST",
                last_heartbeat=rec.last_heartbeat,
                deployment_ids=hosted.get(rec.agent_id, []),
            )
            for rec in self.store.list_agents()
        ]
        return pb.GetStatusResponse(
            agents=agents,
            models=[model_message(m) for m in self.store.list_models()],
            endpoints=[endpoint_message(e) for e in self.store.list_endpoints()],
        )


def model_message(m: ModelRecord) -> types_pb2.ModelVersion:
    return types_pb2.ModelVersion(
        name=m.name, version=m.version, flavor=m.flavor, size_bytes=m.size_bytes,
        created_at=m.created_at, manifest_json=m.manifest_json,
    )


def batching_message(d: DeploymentRecord) -> types_pb2.Batching:
    return types_pb2.Batching(
        max_batch_size=d.max_batch_size, max_delay_us=d.max_delay_us, max_queue_rows=d.max_queue_rows
    )


def endpoint_message(e: EndpointRecord) -> types_pb2.Endpoint:
    return types_pb2.Endpoint(
        name=e.name, policy=e.policy, created_at=e.created_at,
        deployments=[
            types_pb2.Deployment(
                deployment_id=d.deployment_id, endpoint=d.endpoint, model=d.model, version=d.version,
                replicas=d.replicas, agent_ids=list(d.agent_ids), state=d.state, message=d.message,
                batching=batching_message(d),
                resources=types_pb2.ResourceRequest(cpu=d.cpu, memory_bytes=d.memory_bytes, gpus=d.gpus),
                selector=json.loads(d.selector_json), engine=d.engine,
            )
            for d in e.deployments
        ],
    )

