"""The routing table agents apply: every endpoint's policy and where its deployments run.

The table is recomputed from the store, agent liveness and what agents report
(coordinator.agent_reports): a replica is listed where its agent is live and
serves it, and not where the agent drains, unless no other agent serves it (a
draining agent still answers; an empty list answers nothing). Its generation
increases (persistently, so agents never see it go back after a restart)
whenever its content changes. Agents get it pushed on every change and, as a
safety net, in the reply to any heartbeat that reports an older generation.

Pushes coalesce per agent: while a push to an agent is under way, later tables
for it replace each other and only the newest is sent next. A burst of changes
(fifty loads finishing after a failover) or an agent slow to answer never
builds a queue of stale tables.
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
        self._push_lock = threading.Lock()
        self._next: dict[str, routing_pb2.RouteTable] = {}  # address -> the table to send it next
        self._sending: set[str] = set()  # addresses with a push under way

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _build(self) -> list[routing_pb2.Route]:
        live = self.reconciler.live_agents()
        routes = []
        sampled = self.store.decision_sample_rates()
        for endpoint in self.store.list_endpoints():
            if not endpoint.policy_blob:
                continue  # created, its deployments loading, no policy yet
            route = routing_pb2.Route(
                endpoint=endpoint.name, policy=routing_pb2.RoutingPolicy.FromString(endpoint.policy_blob),
                decision_sample_rate=sampled.get(endpoint.name, 0.0),
            )
            if route.policy.kind == "bandit":
                # Bandits choose from the outcomes fed back so far, summed over every agent.
                for arm, (count, total, squares) in sorted(self.store.rewards(endpoint.name).items()):
                    route.policy.rewards.add(arm=arm, count=count, sum=total, sum_squares=squares)
            reports = self.reconciler.reports
            for d in endpoint.deployments:
                serving = [a for a in d.agent_ids if d.state == "READY" and a in live and reports.serves(a, d.deployment_id)]
                staying = [a for a in serving if not reports.draining(a)]
                route.replicas[d.deployment_id].addresses.extend(sorted(live[a].address for a in staying or serving))
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
            with self._push_lock:
                queued = self._next.get(info.address)
                if queued is None or queued.generation <= table.generation:  # two pushes at once: newest wins
                    self._next[info.address] = table
                if info.address in self._sending:
                    continue  # the push under way sends this table when it is done
                self._sending.add(info.address)
            try:
                self._pool.submit(self._send_newest, info.address)
            except RuntimeError:  # closed: the coordinator is stopping
                return

    def _send_newest(self, address: str) -> None:
        while True:
            with self._push_lock:
                table = self._next.pop(address, None)
                if table is None:
                    self._sending.discard(address)
                    return
            try:
                self._push_one(address, table)
            except Exception:  # noqa: BLE001 - a bug in one push must not silence this agent's later ones
                log.exception("route push to %s failed", address)

    def _push_one(self, address: str, table: routing_pb2.RouteTable) -> None:
        try:
            self.agents.set_routes(address, table)
        except MilepostError as err:
            log.info("route push to %s deferred to its next heartbeat: %s", address, err.message)
