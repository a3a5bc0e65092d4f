"""Keeps each agent's loaded deployments equal to what the store says it should host.

Agents report what they serve in every heartbeat; the difference with the
store becomes Load and Unload calls. This one loop covers an agent that
restarted empty, a coordinator that restarted, an undeploy that an agent missed
while it was down, and deployments that waited for a first agent to appear.
Loads of the same (deployment, agent) never run twice at once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator import placement
from coordinator.agent_client import AgentClients
from coordinator.store import DeploymentRecord, Store
from engines import engine_for_flavor
from milepost.errors import MilepostError
from milepost.v1 import agent_pb2, types_pb2

log = logging.getLogger("milepost.coordinator")


class Reconciler:
    def __init__(self, store: Store, agents: AgentClients, *, ttl_s: float, clock) -> None:  # type: ignore[no-untyped-def]
        self.store = store
        self.agents = agents
        self.ttl_s = ttl_s
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="reconcile")
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], Future] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- liveness and placement ----
    def live_agents(self) -> dict[str, types_pb2.AgentInfo]:
        deadline = self.clock() - self.ttl_s
        live = {}
        for rec in self.store.list_agents():
            if rec.last_heartbeat >= deadline:
                live[rec.agent_id] = types_pb2.AgentInfo.FromString(rec.info)
        return live

    def place(self, flavor: str, replicas: int) -> list[str]:
        live = self.live_agents()
        hosted: dict[str, int] = {a: 0 for a in live}
        for d in self.store.list_deployments():
            for a in d.agent_ids:
                if a in hosted:
                    hosted[a] += 1
        candidates = [
            placement.Candidate(
                agent_id=a,
                engines=frozenset(e.name for e in info.engines if e.available),
                hosted_replicas=hosted[a],
            )
            for a, info in live.items()
        ]
        return placement.place(candidates, engine=engine_for_flavor(flavor), replicas=replicas)

    def new_deployment_id(self) -> str:
        return uuid.uuid4().hex[:12]

    # ---- loads ----
    def load_all(self, deployment: DeploymentRecord, timeout: float) -> None:
        """Load a deployment on each of its agents and record READY or FAILED; raises the first error."""
        futures = [self._submit_load(deployment, a, timeout) for a in deployment.agent_ids]
        errors = []
        for f in futures:
            try:
                f.result()
            except MilepostError as err:
                errors.append(err)
        if errors:
            self.store.set_deployment_state(deployment.deployment_id, "FAILED", errors[0].message)
            raise errors[0]
        self.store.set_deployment_state(deployment.deployment_id, "READY")

    def _submit_load(self, d: DeploymentRecord, agent_id: str, timeout: float) -> Future:
        key = (d.deployment_id, agent_id)
        with self._lock:
            running = self._in_flight.get(key)
            if running is not None:
                return running
            future = self._pool.submit(self._load_one, d, agent_id, timeout)
            self._in_flight[key] = future
        future.add_done_callback(lambda _f: self._forget(key))
        return future

    def _forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def _load_one(self, d: DeploymentRecord, agent_id: str, timeout: float) -> None:
        agent = self.store.get_agent(agent_id)
        model = self.store.get_model(d.model, d.version)
        if agent is None or model is None:
            raise MilepostError(f"deployment {d.deployment_id}: agent or model vanished")
        request = agent_pb2.LoadRequest(
            deployment_id=d.deployment_id, endpoint=d.endpoint, model=d.model,
            version=d.version, flavor=model.flavor,
            batching=types_pb2.Batching(
                max_batch_size=d.max_batch_size, max_delay_us=d.max_delay_us, max_queue_rows=d.max_queue_rows
            ),
        )
        self.agents.load(agent.address, request, timeout=timeout)

    def unload(self, deployment: DeploymentRecord) -> None:
        """Best effort: an agent that is down drops it when it next reports in."""
        for agent_id in deployment.agent_ids:
            agent = self.store.get_agent(agent_id)
            if agent is not None:
                self._pool.submit(self._unload_quietly, agent.address, deployment.deployment_id)

    def _unload_quietly(self, address: str, deployment_id: str) -> None:
        try:
            self.agents.unload(address, deployment_id)
        except MilepostError as err:
            log.info("unload of %s deferred: %s", deployment_id, err.message)

    # ---- the heartbeat-driven loop ----
    def reconcile_agent(self, agent_id: str, reported: set[str]) -> None:
        """Schedule the loads and unloads that bring one agent to its desired state."""
        self._place_pending()
        agent = self.store.get_agent(agent_id)
        if agent is None:
            return
        desired = {d.deployment_id: d for d in self.store.list_deployments() if agent_id in d.agent_ids}
        for dep_id in reported - desired.keys():
            self._pool.submit(self._unload_quietly, agent.address, dep_id)
        for dep_id, d in desired.items():
            # A FAILED deployment waits for a new Deploy rather than retrying every heartbeat.
            if dep_id not in reported and d.state != "FAILED":
                self._pool.submit(self._load_and_record, d)

    def _place_pending(self) -> None:
        for d in self.store.list_deployments():
            if d.agent_ids:
                continue
            model = self.store.get_model(d.model, d.version)
            if model is None:
                continue
            try:
                agent_ids = self.place(model.flavor, d.replicas)
            except MilepostError:
                continue
            self.store.set_replicas(d.deployment_id, agent_ids)
            log.info("placed pending deployment %s on %s", d.deployment_id, agent_ids)

    def _load_and_record(self, d: DeploymentRecord) -> None:
        current = next(
            (x for x in self.store.list_deployments() if x.deployment_id == d.deployment_id), None
        )
        if current is None:
            return
        try:
            self.load_all(current, timeout=120.0)
        except MilepostError as err:
            log.warning("deployment %s failed to load: %s", d.deployment_id, err.message)
