"""The agent's one route table: the coordinator's pushed routes and this agent's own deployments.

Every name a client can call is a route here. A pushed route (SetRoutes, or a
heartbeat reply) carries the endpoint's policy and where each of its
deployments runs; an endpoint deployed on this agent that has no pushed route
(a standalone agent, or the moment before the coordinator's push arrives) is a
synthesised ``single`` route over the local deployment. A pushed route always
wins over a synthesised one.

Tables are immutable once built: the router swaps in a whole new table, and a
request reads the table once and uses that one from start to end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.routing.members import Channels, RemoteModel
from milepost.core.description import ModelDescription
from milepost.core.errors import FailedPrecondition, MilepostError
from milepost.core.routing import policy as policies
from milepost.core.routing.policy import Policy
from milepost.core.settings import Settings
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.agent")
LOCAL_ARM = "primary"  # the arm name of a synthesised route, as the coordinator names a deploy's arm


@dataclass(frozen=True)
class Route:
    endpoint: str
    policy: Policy | None
    broken: str  # why the pushed policy cannot be applied, when policy is None
    remotes: dict[str, RemoteModel]  # deployment id -> proxy to the other agents that run it
    pushed: bool  # False: synthesised from a local deployment
    decision_sample_rate: float = 0.0  # share of requests the decision log keeps (agent.decision_log)

    def policy_or_raise(self) -> Policy:
        if self.policy is None:
            raise FailedPrecondition(self.broken)
        return self.policy


@dataclass(frozen=True)
class RouteTable:
    generation: int = 0
    pushed: dict[str, Route] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)  # pushed, then the synthesised ones

    def get(self, endpoint: str) -> Route | None:
        return self.routes.get(endpoint)


def compile_pushed(
    message: routing_pb2.RouteTable, own_address: str, channels: Channels,
    described: dict[str, ModelDescription], settings: Settings,
) -> dict[str, Route]:
    """The routes of a pushed table, each with proxies to the replicas on other agents."""
    routes: dict[str, Route] = {}
    for route in message.routes:
        remotes = {}
        for dep, addresses in route.replicas.items():
            others = tuple(a for a in addresses.addresses if a != own_address)
            if others:
                remotes[dep] = RemoteModel(
                    dep, others, channels, described,
                    call_timeout_s=settings.remote_call_timeout_s, describe_timeout_s=settings.describe_timeout_s,
                )
        try:
            built, broken = policies.build(route.endpoint, route.policy, message.generation), ""
        except MilepostError as err:
            built, broken = None, err.message
            log.warning("route for %s cannot be applied: %s", route.endpoint, broken)
        routes[route.endpoint] = Route(route.endpoint, built, broken, remotes, pushed=True,
                                       decision_sample_rate=route.decision_sample_rate)
    return routes


def with_local(generation: int, pushed: dict[str, Route], local: Mapping[str, str]) -> RouteTable:
    """The table serving ``pushed`` plus a single route for each local endpoint it lacks."""
    routes = dict(pushed)
    for endpoint, deployment_id in local.items():
        if endpoint in routes:
            continue
        spec = routing_pb2.RoutingPolicy(
            kind="single", arms=[routing_pb2.Arm(name=LOCAL_ARM, deployment_id=deployment_id, weight=1.0)],
        )
        routes[endpoint] = Route(endpoint, policies.build(endpoint, spec, generation), "", {}, pushed=False)
    return RouteTable(generation, pushed, routes)
