"""Agents on loopback with real compiled models, and a fake coordinator that only serves bundles (helpers).

The routing tests push RouteTables to the agents themselves (AgentService.SetRoutes),
so the coordinator here is a fake: it registers agents, answers heartbeats (with a
route table when a test sets one) and streams bundles. A real coordinator would
reconcile away deployments it did not place, and push its own tables.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from milepost.core import auth
from milepost.core.auth import AuthInterceptor
from milepost.core.grpc_server import new_server
from milepost.core.tls import listen
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.v1 import agent_pb2, agent_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc, routing_pb2

FLAVOR = "scoring_core"


CONTROL_TOKEN = "mesh-control-token"


class FakeCoordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Registers anyone, remembers heartbeats, serves bundle archives by version."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.heartbeats: list[coordinator_pb2.HeartbeatRequest] = []
        self.table: routing_pb2.RouteTable | None = None
        self.lock = threading.Lock()
        # Open to every caller: the agents under test are what is tested, not this stand-in.
        self.server = new_server(AuthInterceptor(lambda token: None, {m: auth.OPEN for m in auth.RULES}), max_workers=8)
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(self, self.server)
        self.address = f"127.0.0.1:{listen(self.server, '127.0.0.1', 0, None)}"
        self.server.start()

    def RegisterAgent(self, request, context):
        return coordinator_pb2.RegisterAgentResponse(
            agent_id=request.agent.agent_id, heartbeat_interval_s=0.2, ttl_s=5, control_token=CONTROL_TOKEN,
        )

    def Heartbeat(self, request, context):
        with self.lock:
            self.heartbeats.append(request)
            table = self.table
        if table is not None and request.routes_generation < table.generation:
            return coordinator_pb2.HeartbeatResponse(known=True, routes=table)
        return coordinator_pb2.HeartbeatResponse(known=True)

    def FetchModel(self, request, context):
        data = self.archives[request.version]
        for start in range(0, len(data), 1 << 20):
            yield coordinator_pb2.ModelChunk(data=data[start : start + (1 << 20)])

    def stop(self) -> None:
        self.server.stop(0).wait()


@dataclass
class Model:
    name: str
    estimator: object
    version: str


@dataclass
class Mesh:
    """A fake coordinator, agents a1 (with /metrics) and a2, and deployments loaded on them."""

    coordinator: FakeCoordinator
    agents: dict[str, object]
    models: dict[str, Model]
    rows: np.ndarray
    generation: itertools.count = field(default_factory=lambda: itertools.count(1000))
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            # The agents take control calls from their coordinator only: this mesh speaks as it.
            self._channels[address] = auth.with_token(grpc.insecure_channel(address), CONTROL_TOKEN)
        return self._channels[address]

    def address(self, agent: str) -> str:
        return self.agents[agent].address

    def inference(self, agent: str = "a1") -> oip_grpc.GRPCInferenceServiceStub:
        return oip_grpc.GRPCInferenceServiceStub(self.channel(self.address(agent)))

    def control(self, agent: str = "a1") -> agent_pb2_grpc.AgentServiceStub:
        return agent_pb2_grpc.AgentServiceStub(self.channel(self.address(agent)))

    def load(self, agent: str, deployment_id: str, model: str) -> None:
        m = self.models[model]
        self.control(agent).Load(agent_pb2.LoadRequest(
            deployment_id=deployment_id, endpoint=f"direct-{deployment_id}", model=m.name,
            version=m.version, flavor=FLAVOR,
        ), timeout=60)

    def table(self, *routes: routing_pb2.Route) -> routing_pb2.RouteTable:
        return routing_pb2.RouteTable(generation=next(self.generation), routes=routes)

    def set_routes(self, *routes: routing_pb2.Route, agents: tuple[str, ...] = ("a1", "a2")) -> routing_pb2.RouteTable:
        table = self.table(*routes)
        for agent in agents:
            self.control(agent).SetRoutes(table, timeout=10)
        return table

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def route(endpoint: str, kind: str, arms: list[routing_pb2.Arm], replicas: dict[str, list[str]], **params) -> routing_pb2.Route:
    policy = routing_pb2.RoutingPolicy(kind=kind, arms=arms, **params)
    message = routing_pb2.Route(endpoint=endpoint, policy=policy)
    for dep, addresses in replicas.items():
        message.replicas[dep].addresses.extend(addresses)
    return message


def arm(name: str, deployment_id: str = "", endpoint: str = "", weight: float = 0.0) -> routing_pb2.Arm:
    return routing_pb2.Arm(name=name, deployment_id=deployment_id, endpoint=endpoint, weight=weight)


def infer_request(endpoint: str, rows: np.ndarray, **parameters: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    for name, value in parameters.items():
        request.parameters[name].string_param = value
    return request


@dataclass
class Answer:
    values: np.ndarray
    arm: str
    deployment: str
    version: str


def infer(stub: oip_grpc.GRPCInferenceServiceStub, endpoint: str, rows: np.ndarray, **parameters: str) -> Answer:
    response = stub.ModelInfer(infer_request(endpoint, rows, **parameters), timeout=30)
    out = response.outputs[0]
    dtype = {"FP64": "<f8", "FP32": "<f4"}[out.datatype]
    values = np.frombuffer(response.raw_output_contents[0], dtype=dtype).reshape(list(out.shape))
    p = response.parameters
    return Answer(values, p["milepost-arm"].string_param, p["milepost-deployment"].string_param, response.model_version)


def direct(mesh: Mesh, deployment_id: str, rows: np.ndarray, agent: str = "a1") -> np.ndarray:
    """A deployment's own answer, asked of it directly (no routing)."""
    return infer(mesh.inference(agent), deployment_id, rows, **{"milepost-deployment": deployment_id}).values


def code_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


