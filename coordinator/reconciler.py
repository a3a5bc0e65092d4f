"""Keeps agents' loaded deployments equal to what the store says they should host.

Two loops feed it:
- every heartbeat reports what an agent serves; the difference with the store
  becomes Load and Unload calls (an agent that restarted empty, an undeploy it
  missed while down, a stale replica after it was declared lost);
- the coordinator's monitor calls repair(): replicas on agents that missed their
  heartbeats for the TTL move to live agents, and deployments short of replicas
  (none was free when deployed) get them as agents appear.
Loads of the same (deployment, agent) never run twice at once. The clock is
injected so that tests drive the loops without waiting.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator import placement
from coordinator.agent_client import AgentClients
from coordinator.store import DeploymentRecord, Store
from milepost.core.errors import FailedPrecondition, MilepostError
from milepost.core.requirements import Requirements
from milepost.v1 import agent_pb2, types_pb2

log = logging.getLogger("milepost.coordinator")


class Reconciler:
    def __init__(
        self, store: Store, agents: AgentClients, *, ttl_s: float, clock: Callable[[], float],
        strategy: str = "spread",
    ) -> None:
        self.store = store
        self.agents = agents
        self.ttl_s = ttl_s
        self.clock = clock
        self.strategy = strategy
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="reconcile")
        self._lock = threading.Lock()
        self._repair_lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], Future] = {}
        # Called after replicas changed (re-placement, loads finished): pushes routes.
        self.on_change: Callable[[], None] = lambda: None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- liveness and placement ----
    def live_agents(self) -> dict[str, types_pb2.AgentInfo]:
        deadline = self.clock() - self.ttl_s
        return {
            rec.agent_id: types_pb2.AgentInfo.FromString(rec.info)
            for rec in self.store.list_agents()
            if rec.last_heartbeat >= deadline
        }

    def candidates(self) -> list[placement.Candidate]:
        live = self.live_agents()
        used: dict[str, list[float]] = {a: [0.0, 0, 0] for a in live}
        for d in self.store.list_deployments():
            for a in d.agent_ids:
                if a in used:
                    used[a][0] += d.requirements.cpu
                    used[a][1] += d.requirements.memory_bytes
                    used[a][2] += d.requirements.gpus
        return [
            placement.Candidate(
                agent_id=a,
                engines=frozenset(e.name for e in info.engines if e.available),
                labels=dict(info.labels),
                cpu=float(info.resources.cpu_cores),
                memory_bytes=info.resources.memory_bytes,
                gpus=len(info.resources.gpus),
                used_cpu=used[a][0], used_memory_bytes=int(used[a][1]), used_gpus=int(used[a][2]),
            )
            for a, info in live.items()
        ]

    def place(self, req: Requirements, count: int, exclude: frozenset[str] = frozenset()) -> list[str]:
        return placement.place(self.candidates(), req, count, exclude=exclude, strategy=self.strategy)

    @staticmethod
    def new_deployment_id() -> str:
        return uuid.uuid4().hex[:12]

    # ---- loads ----
    def load_all(self, deployment: DeploymentRecord, timeout: float | None = None) -> None:
        """Load a deployment on each of its agents and record its state; raises the first error."""
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
        short = deployment.replicas - len(deployment.agent_ids)
        message = f"{len(deployment.agent_ids)} of {deployment.replicas} replicas placed" if short > 0 else ""
        self.store.set_deployment_state(deployment.deployment_id, "READY" if deployment.agent_ids else "PENDING", message)

    def _submit_load(self, d: DeploymentRecord, agent_id: str, timeout: float | None) -> Future:
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

    def _load_one(self, d: DeploymentRecord, agent_id: str, timeout: float | None) -> None:
        agent = self.store.get_agent(agent_id)
        model = self.store.get_model(d.model, d.version)
        if agent is None or model is None:
            raise MilepostError(f"deployment {d.deployment_id}: agent or model vanished")
        request = agent_pb2.LoadRequest(
            deployment_id=d.deployment_id, endpoint=d.endpoint, model=d.model,
            version=d.version, flavor=model.flavor, engine=d.requirements.engine, gpus=d.requirements.gpus,
            batching=d.batching.to_proto(),
        )
        self.agents.load(agent.address, request, timeout=timeout)

    def unload(self, deployment: DeploymentRecord) -> None:
        """Best effort: an agent that is down drops it when it next reports in."""
        for agent_id in deployment.agent_ids:
            self._unload_later(agent_id, deployment.deployment_id)

    def _unload_later(self, agent_id: str, deployment_id: str) -> None:
        agent = self.store.get_agent(agent_id)
        if agent is not None:
            self._pool.submit(self._unload_quietly, agent.address, deployment_id)

    def _unload_quietly(self, address: str, deployment_id: str) -> None:
        try:
            self.agents.unload(address, deployment_id)
        except MilepostError as err:
            log.info("unload of %s deferred: %s", deployment_id, err.message)

    # ---- the loops ----
    def reconcile_agent(self, agent_id: str, reported: set[str]) -> None:
        """Schedule the loads and unloads that bring one agent to its desired state."""
        desired = {d.deployment_id: d for d in self.store.list_deployments() if agent_id in d.agent_ids}
        for dep_id in reported - desired.keys():
            self._unload_later(agent_id, dep_id)
        for dep_id, d in desired.items():
            # A FAILED deployment waits for a new Deploy rather than retrying every heartbeat.
            if dep_id not in reported and d.state != "FAILED":
                self._pool.submit(self._load_and_record, dep_id)

    def repair(self) -> list[str]:
        """Move replicas off lost agents and fill deployments short of replicas.

        Returns the ids of the deployments it changed. Serialised, so the monitor
        and a registration never place the same replica twice.
        """
        with self._repair_lock:
            live = set(self.live_agents())
            changed = []
            for d in self.store.list_deployments():
                if d.state == "FAILED":
                    continue
                keep = [a for a in d.agent_ids if a in live]
                missing = d.replicas - len(keep)
                added: list[str] = []
                if missing > 0:
                    try:
                        added = self.place(d.requirements, missing, exclude=frozenset(d.agent_ids))
                    except FailedPrecondition as err:
                        if not keep:
                            self.store.set_deployment_state(d.deployment_id, "PENDING", f"waiting for an agent: {err.message}")
                if keep == list(d.agent_ids) and not added:
                    continue
                lost = sorted(set(d.agent_ids) - live)
                self.store.set_replicas(d.deployment_id, keep + added)
                if added and not keep:
                    # No replica serves until the new ones load: say so rather than a stale READY.
                    self.store.set_deployment_state(d.deployment_id, "PENDING", f"re-placing on {added}")
                log.warning(
                    "deployment %s (%s): lost %s, placed on %s", d.deployment_id, d.endpoint, lost or "-", added or "-"
                )
                changed.append(d.deployment_id)
                if added:
                    self._pool.submit(self._load_and_record, d.deployment_id)
            if changed:
                self.on_change()
            return changed

    def _load_and_record(self, deployment_id: str) -> None:
        current = self.store.get_deployment(deployment_id)
        if current is None or not current.agent_ids:
            return
        try:
            self.load_all(current)
        except MilepostError as err:
            log.warning("deployment %s failed to load: %s", deployment_id, err.message)
        self.on_change()
