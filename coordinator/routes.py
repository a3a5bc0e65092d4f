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

A change a caller makes (deploy, policy, promote) is pushed with ``push(wait=True)``: the call
returns once every live agent has answered a push of that table or a newer one (applied, or
failed and left to its next heartbeat), within the agents' call timeout, so that the next
request after a Deploy returns is served by the new version, as after Triton's load call.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from coordinator.agent_client import AgentClients
from coordinator.reconciler import Reconciler
from coordinator.store import Store
from milepost.core.errors import MilepostError
from milepost.core.settings import get_settings
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
        self._answered: dict[str, int] = {}  # address -> the newest generation it answered a push of
        self._answer = threading.Condition(self._push_lock)

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

    @property
    def generation(self) -> int:
        """The generation of the newest table built (0: none yet)."""
        with self._lock:
            return self._generation

    def current(self) -> routing_pb2.RouteTable:
        """The table as it stands now, with a new generation if anything changed."""
        routes = self._build()
        content = routing_pb2.RouteTable(routes=routes).SerializeToString(deterministic=True)
        with self._lock:
            if content != self._content or not self._generation:
                self._content = content
                self._generation = self.store.next_counter("routes_generation")
            return routing_pb2.RouteTable(generation=self._generation, routes=routes)

    def push(self, *, wait: bool = False) -> None:
        """Send the current table to every live agent, in the background, best effort;
        ``wait``: until each has answered it (see the module docstring)."""
        table = self.current()
        addresses = [info.address for info in self.reconciler.live_agents().values()]
        self._send(table, addresses)
        if wait:
            deadline = time.monotonic() + get_settings().agent_call_timeout_s
            with self._answer:
                self._answer.wait_for(
                    lambda: all(self._answered.get(a, 0) >= table.generation for a in addresses),
                    timeout=max(0.0, deadline - time.monotonic()),
                )

    def _send(self, table: routing_pb2.RouteTable, addresses: list[str]) -> None:
        for address in addresses:
            with self._push_lock:
                queued = self._next.get(address)
                if queued is None or queued.generation <= table.generation:  # two pushes at once: newest wins
                    self._next[address] = table
                if address in self._sending:
                    continue  # the push under way sends this table when it is done
                self._sending.add(address)
            try:
                self._pool.submit(self._send_newest, address)
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
            with self._answer:
                self._answered[address] = max(self._answered.get(address, 0), table.generation)
                self._answer.notify_all()

    def _push_one(self, address: str, table: routing_pb2.RouteTable) -> None:
        try:
            self.agents.set_routes(address, table)
        except MilepostError as err:
            log.info("route push to %s deferred to its next heartbeat: %s", address, err.message)
