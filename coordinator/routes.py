"""The routing table agents apply: every endpoint's policy and where its deployments run.

The table is recomputed from the store and agent liveness; its generation
increases (persistently, so agents never see it go back after a restart)
whenever its content changes. Agents get it pushed on every change and, as a
safety net, in the reply to any heartbeat that reports an older generation.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from coordinator.agent_client import AgentClients
from coordinator.reconciler import Reconciler
from coordinator.store import Store
from milepost.core.errors import MilepostError
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.coordinator")


class RouteBook:
    def __init__(self, store: Store, reconciler: Reconciler, agents: AgentClients) -> None:
        self.store = store
        self.reconciler = reconciler
        self.agents = agents
        self._lock = threading.Lock()
        self._content = b""
        self._generation = 0
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="routes")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _build(self) -> list[routing_pb2.Route]:
        live = self.reconciler.live_agents()
        routes = []
        for endpoint in self.store.list_endpoints():
            if not endpoint.policy_blob:
                continue  # created, its deployments loading, no policy yet
            route = routing_pb2.Route(
                endpoint=endpoint.name, policy=routing_pb2.RoutingPolicy.FromString(endpoint.policy_blob)
            )
            if route.policy.kind == "bandit":
                # Bandits choose from the outcomes fed back so far, summed over every agent.
                for arm, (count, total, squares) in sorted(self.store.rewards(endpoint.name).items()):
                    route.policy.rewards.add(arm=arm, count=count, sum=total, sum_squares=squares)
            for d in endpoint.deployments:
                serving = d.state == "READY"
                addresses = sorted(live[a].address for a in d.agent_ids if a in live and serving)
                route.replicas[d.deployment_id].addresses.extend(addresses)
            routes.append(route)
        return routes

    def current(self) -> routing_pb2.RouteTable:
        """The table as it stands now, with a new generation if anything changed."""
        routes = self._build()
        content = routing_pb2.RouteTable(routes=routes).SerializeToString(deterministic=True)
        with self._lock:
            if content != self._content or not self._generation:
                self._content = content
                self._generation = self.store.next_counter("routes_generation")
            return routing_pb2.RouteTable(generation=self._generation, routes=routes)

    def push(self) -> None:
        """Send the current table to every live agent, in the background, best effort."""
        table = self.current()
        for info in self.reconciler.live_agents().values():
            self._pool.submit(self._push_one, info.address, table)

    def _push_one(self, address: str, table: routing_pb2.RouteTable) -> None:
        try:
            self.agents.set_routes(address, table)
        except MilepostError as err:
            log.info("route push to %s deferred to its next heartbeat: %s", address, err.message)
