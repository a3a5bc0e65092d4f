"""Keeps agents' loaded deployments equal to what the store says they should host.

Work comes in three ways:
- a Deploy (Endpoints.set_policy) loads its new deployments itself, in the
  caller's thread, and waits for them: it never queues behind background work;
- every heartbeat reports what an agent serves; the difference with the store
  becomes load and unload tasks (an agent that restarted empty, an undeploy it
  missed while down, a stale replica after it was declared lost);
- the monitor calls repair(): replicas on agents that missed their heartbeats
  for the TTL move to live agents, deployments short of replicas get them as
  agents appear, and a deployment still PENDING with no load under way is
  driven again. This last pass is what finishes work that a crash, a full
  queue or a failed call dropped: nothing depends on a task surviving.

Background tasks go to a bounded queue served by a fixed set of workers
(coordinator.task_queue). A task is one call to one agent and never waits for
another task, so the workers cannot deadlock; a full queue refuses tasks, which
the next pass derives again. A load of one (deployment, agent) runs at most once
at a time: a Deploy that asks while a worker loads it waits for that call, a
worker that finds one under way leaves it to its owner. Agents' Load and Unload
are idempotent, so a call that runs twice does no harm.

A restart of the coordinator must never stop the data plane. At start, recover()
rolls back what a crash left half done (recover's docstring says what), and
agents known from the store are not declared lost during a grace period counted
from this start, not from their last heartbeat before the crash: an agent
retrying with backoff needs that long to reach us again. Until one of them is
heard from, nothing new is placed on it either (it may really be gone).

The clock is injected so that tests drive the loops without waiting.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from coordinator import placement
from coordinator.agent_client import AgentClients
from coordinator.agent_reports import AgentReports
from coordinator.store import DeploymentRecord, Store
from coordinator.task_queue import TaskQueue
from milepost.core.errors import DeadlineExceeded, FailedPrecondition, MilepostError, Unavailable
from milepost.core.requirements import GpuRoom, Requirements
from milepost.core.settings import get_settings
from milepost.v1 import agent_pb2, routing_pb2, types_pb2

log = logging.getLogger("milepost.coordinator")

# A replica whose load failed for a reason other than reachability is not retried sooner.
FAILED_LOAD_RETRY_S = 30.0
# How the message of a deployment that no live agent hosts starts; cleared once it serves.
WAITING = "waiting for an agent: "


class Reconciler:
    def __init__(
        self, store: Store, agents: AgentClients, *, ttl_s: float, clock: Callable[[], float],
        strategy: str = "spread", grace_s: float | None = None, workers: int = 8, queue_limit: int = 1024,
    ) -> None:
        """``grace_s``: how long after this start agents known from the store count as live
        without a heartbeat; default the TTL plus the agents' longest registration backoff
        and one registration call (an agent may be mid-backoff, then slow to answer)."""
        self.store = store
        self.agents = agents
        self.ttl_s = ttl_s
        self.clock = clock
        self.strategy = strategy
        self.started_at = clock()
        settings = get_settings()
        default_grace = ttl_s + settings.registration_max_backoff_s + settings.registration_timeout_s
        self.grace_s = max(ttl_s, default_grace if grace_s is None else grace_s)
        self._known_at_start = frozenset(a.agent_id for a in store.list_agents())
        # What agents last said they serve, whether they drain, their load (heartbeats fill it).
        self.reports = AgentReports(clock)
        self._tasks = TaskQueue(workers=workers, limit=queue_limit, name="reconcile")
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], Future[None]] = {}
        # Pipeline stages running on agents: holder (stage_holder) -> (agent id, what it asked for).
        self._stages: dict[str, tuple[str, Requirements]] = {}
        # Stages that ended, while a heartbeat sent before may still report their GPUs: holder -> (agent, asked, when).
        self._ended: dict[str, tuple[str, Requirements, float]] = {}
        self._retry_after: dict[tuple[str, str], float] = {}
        # Held from choosing agents to storing the choice: concurrent Deploys and repairs see
        # each other's replicas, so they spread instead of all picking the same emptiest agent.
        self.placing = threading.RLock()
        # Called after replicas changed (re-placement, loads finished): pushes routes.
        self.on_change: Callable[[], None] = lambda: None
        self.recovered = self.recover()

    def close(self) -> None:
        self._tasks.close()

    def busy(self) -> int:
        """Background tasks queued or running (for tests and logs)."""
        return self._tasks.busy()

    # ---- start after a crash ----
    def recover(self) -> list[str]:
        """Roll back what a crash left half done; returns what it did, one line each.

        - An endpoint with no policy is a first Deploy that never answered: its
          deployments were stored (so heartbeats load, not unload, them) and the crash
          came before the policy switch. Nobody was told it exists: it is removed.
        - Deployments that no arm of their endpoint's policy names are the new
          deployments of a policy change that never answered: removed, the endpoint
          keeps the policy it had.
        Agents that loaded any of these drop them now or at their next heartbeat; no
        route ever pointed at them. Deployments left PENDING are driven again by the
        monitor's first repair() pass. Safe to run twice.
        """
        now = self.clock()
        done = []
        for endpoint in self.store.list_endpoints():
            if not endpoint.policy_blob:
                removed = self.store.delete_endpoint(endpoint.name, now, (
                    "recovered", "rolled back: the coordinator restarted before this Deploy answered"))
                for d in removed or []:
                    self.unload(d)
                done.append(f"endpoint {endpoint.name}: unfinished Deploy rolled back")
                continue
            policy = routing_pb2.RoutingPolicy.FromString(endpoint.policy_blob)
            named = {a.deployment_id for a in policy.arms} | {policy.stacker_deployment_id}
            orphans = [d for d in endpoint.deployments if d.deployment_id not in named]
            if orphans:
                ids = [d.deployment_id for d in orphans]
                self.store.remove_deployments(ids, event=(
                    endpoint.name, "recovered",
                    f"rolled back: the coordinator restarted before a policy change answered; removed {ids}", now))
                for d in orphans:
                    self.unload(d)
                done.append(f"endpoint {endpoint.name}: unfinished policy change rolled back ({ids})")
        pending = [d.deployment_id for d in self.store.list_deployments() if d.state == "PENDING"]
        if pending:
            done.append(f"{len(pending)} PENDING deployment(s) to drive again")
        for line in done:
            log.warning("recovery: %s", line)
        return done

    # ---- liveness and placement ----
    def tasks_busy(self) -> int:
        """Calls to agents queued or under way (loads, unloads, repairs)."""
        return self._tasks.busy()

    def live_agents(self) -> dict[str, types_pb2.AgentInfo]:
        """Agents heard within the TTL, and those known at start while the grace period lasts."""
        now = self.clock()
        in_grace = now < self.started_at + self.grace_s
        return {
            rec.agent_id: types_pb2.AgentInfo.FromString(rec.info)
            for rec in self.store.list_agents()
            if rec.last_heartbeat >= now - self.ttl_s or (in_grace and rec.agent_id in self._known_at_start)
        }

    def candidates(self, extra: Sequence[DeploymentRecord] = ()) -> list[placement.Candidate]:
        """Agents that may take new replicas: those heard within the TTL and not draining,
        with what they carry (replicas, reserved resources, measured CPU).

        ``extra``: deployments chosen but not stored yet (the other arms of one policy).
        """
        now = self.clock()
        heard = {
            rec.agent_id: types_pb2.AgentInfo.FromString(rec.info)
            for rec in self.store.list_agents()
            if rec.last_heartbeat >= now - self.ttl_s and not self.reports.draining(rec.agent_id)
        }
        hosted: dict[str, list[tuple[str, Requirements]]] = {a: [] for a in heard}
        replicas = dict.fromkeys(heard, 0)
        # Oldest first, as agents load them: the GPU rooms (placement.gpu_rooms) count what a report lacks in order.
        for d in sorted([*self.store.list_deployments(), *extra], key=lambda d: d.created_at):
            for a in d.agent_ids:
                if a in hosted:
                    replicas[a] += 1
                    hosted[a].append((d.deployment_id, d.requirements))
        now = self.clock()
        with self._lock:
            stages = list(self._stages.items())
            self._ended = {h: e for h, e in self._ended.items() if e[2] > now - self.ttl_s}
            ended = dict(self._ended)
        for holder, (a, req) in stages:  # a running stage holds what it asked for, as a replica does
            if a in hosted:
                hosted[a].append((holder, req))
        rooms = {a: self._gpu_rooms(a, info, hosted[a], ended) for a, info in heard.items()}
        return [
            placement.Candidate(
                agent_id=a,
                engines=frozenset(e.name for e in info.engines if e.available),
                labels=dict(info.labels),
                cpu=float(info.resources.cpu_cores),
                memory_bytes=info.resources.memory_bytes,
                gpus=len(info.resources.gpus),
                used_cpu=sum(r.cpu for _, r in hosted[a]), used_memory_bytes=sum(r.memory_bytes for _, r in hosted[a]),
                used_gpus=sum(1 for r in rooms[a] if r.replicas),
                replicas=replicas[a], cpu_utilization=self.reports.load(a).cpu_utilization,
                gpu_rooms=rooms[a],
            )
            for a, info in heard.items()
        ]

    def stage_started(self, holder: str, agent_id: str, req: Requirements) -> None:
        """A pipeline stage placed on ``agent_id``: its CPU, memory and GPUs count there
        (``candidates``) until it ends."""
        with self._lock:
            self._stages[holder] = (agent_id, req)
            self._ended.pop(holder, None)

    def stage_ended(self, holder: str) -> None:
        """The stage's process ended (the agent released its GPUs before answering). The
        agent's last heartbeat may still name it as holding them: for a TTL, a report naming
        it no longer counts it, so the next stage placed here (train, then score) finds them."""
        with self._lock:
            started = self._stages.pop(holder, None)
            if started is not None:
                self._ended[holder] = (*started, self.clock())

    def _gpu_rooms(
        self, agent_id: str, info: types_pb2.AgentInfo, hosted: Sequence[tuple[str, Requirements]],
        ended: Mapping[str, tuple[str, Requirements, float]],
    ) -> tuple[GpuRoom, ...]:
        """Each GPU of the agent with what is reserved on it: what its last heartbeat
        reported (AgentLoad.gpus, the agent's own assignment, stages included), plus the
        replicas and running stages placed on it that the report does not hold yet (placed
        since, or still loading), so that two Deploys between heartbeats do not both count
        the same free memory. Before its first report (a coordinator restart, an agent too old to
        report) the placed replicas are counted on its bare GPUs, as it would assign them."""
        report = self.reports.load(agent_id).gpus
        if report:
            start = [GpuRoom.from_proto(g) for g in report]
            for holder, (a, req, _) in ended.items():  # the report is older than the stage's end
                if a == agent_id:
                    start = [r.released(req.gpu_memory_bytes, holder) for r in start]
        else:
            start = [GpuRoom(g.index, g.memory_bytes) for g in info.resources.gpus]
        held = {d for room in start for d in room.deployment_ids}
        return placement.gpu_rooms(start, [(d, r) for d, r in hosted if d not in held])

    def choose(
        self, req: Requirements, count: int, exclude: frozenset[str] = frozenset(),
        extra: Sequence[DeploymentRecord] = (),
    ) -> list[placement.Choice]:
        """Agents for ``count`` replicas, each with why; hold ``placing`` until the choice is stored."""
        return placement.choose(self.candidates(extra), req, count, exclude=exclude, strategy=self.strategy)

    def place(self, req: Requirements, count: int, exclude: frozenset[str] = frozenset()) -> list[str]:
        return [c.agent_id for c in self.choose(req, count, exclude)]

    @staticmethod
    def new_deployment_id() -> str:
        return uuid.uuid4().hex[:12]

    # ---- loads ----
    def load_all(self, deployment: DeploymentRecord, timeout: float | None = None) -> None:
        """Load a deployment on each of its agents and record its state; raises the first error.

        Runs in the caller's thread (one short-lived thread more per further replica),
        so a Deploy waits only for its own loads.
        """
        if not deployment.agent_ids:
            return
        errors: list[MilepostError] = []

        def one(agent_id: str) -> None:
            try:
                self._load_once(deployment, agent_id, timeout, wait=True)
            except MilepostError as err:
                errors.append(err)

        first, *rest = deployment.agent_ids
        others = [threading.Thread(target=one, args=(a,), name="load", daemon=True) for a in rest]
        for thread in others:
            thread.start()
        one(first)
        for thread in others:
            thread.join()
        if errors:
            self.store.set_deployment_state(deployment.deployment_id, "FAILED", errors[0].message)
            raise errors[0]
        self.store.set_deployment_state(deployment.deployment_id, "READY")

    def _load_once(self, d: DeploymentRecord, agent_id: str, timeout: float | None, *, wait: bool) -> bool:
        """Call the agent's Load unless that load is under way already: then wait for it
        (``wait``) or leave it to its owner (returns False)."""
        key = (d.deployment_id, agent_id)
        with self._lock:
            running = self._loading.get(key)
            if running is None:
                mine: Future[None] = Future()
                self._loading[key] = mine
        if running is not None:
            if not wait:
                return False
            try:
                running.result(timeout=timeout)
            except FutureTimeout as err:
                raise Unavailable(f"loading {d.deployment_id} on agent {agent_id} is still under way") from err
            return True
        try:
            self._call_load(d, agent_id, timeout)
        except BaseException as err:
            mine.set_exception(err)
            raise
        else:
            self.reports.loaded(agent_id, d.deployment_id)
            mine.set_result(None)
            with self._lock:
                self._retry_after.pop(key, None)
        finally:
            with self._lock:
                self._loading.pop(key, None)
        return True

    def _call_load(self, d: DeploymentRecord, agent_id: str, timeout: float | None) -> None:
        agent = self.store.get_agent(agent_id)
        model = self.store.get_model(d.model, d.version)
        if agent is None or model is None:
            raise FailedPrecondition(f"deployment {d.deployment_id}: agent {agent_id} or model {d.model} is gone")
        request = agent_pb2.LoadRequest(
            deployment_id=d.deployment_id, endpoint=d.endpoint, model=d.model,
            version=d.version, flavor=model.flavor, engine=d.requirements.engine, gpus=d.requirements.gpus,
            batching=d.batching.to_proto(), version_number=model.number,
            gpu_memory_bytes=d.requirements.gpu_memory_bytes,
        )
        self.agents.load(agent.address, request, timeout=timeout)

    def _schedule_load(self, deployment_id: str, agent_id: str) -> None:
        key = (deployment_id, agent_id)
        with self._lock:
            if key in self._loading or self.clock() < self._retry_after.get(key, 0.0):
                return
        if not self._tasks.submit(("load", *key), lambda: self._load_task(deployment_id, agent_id)):
            log.warning("reconcile queue full (%d tasks): loading %s on %s waits for the next pass",
                        self._tasks.limit, deployment_id, agent_id)

    def _load_task(self, deployment_id: str, agent_id: str) -> None:
        """A background load: read what is wanted now, load, record; never raises."""
        d = self.store.get_deployment(deployment_id)
        if d is None or agent_id not in d.agent_ids or d.state == "FAILED" or agent_id not in self.live_agents():
            return
        try:
            if not self._load_once(d, agent_id, None, wait=False):
                return  # someone else's load is under way and records its outcome
        except (Unavailable, DeadlineExceeded) as err:
            log.info("loading %s on %s deferred: %s", deployment_id, agent_id, err.message)
            return  # the agent's next heartbeat or the next repair pass tries again
        except MilepostError as err:
            log.warning("deployment %s failed to load on %s: %s", deployment_id, agent_id, err.message)
            with self._lock:
                self._retry_after[(deployment_id, agent_id)] = self.clock() + FAILED_LOAD_RETRY_S
            current = self.store.get_deployment(deployment_id)
            if current is not None and current.state == "PENDING":
                self.store.set_deployment_state(deployment_id, "FAILED", f"load on {agent_id} failed: {err.message}")
                self.on_change()
            return
        current = self.store.get_deployment(deployment_id)
        if current is not None and current.state == "PENDING":
            self.store.set_deployment_state(deployment_id, "READY", "" if current.message.startswith(WAITING) else None)
        self.on_change()

    def unload(self, deployment: DeploymentRecord) -> None:
        """Best effort: an agent that is down drops it when it next reports in."""
        for agent_id in deployment.agent_ids:
            self._schedule_unload(agent_id, deployment.deployment_id)

    def _schedule_unload(self, agent_id: str, deployment_id: str) -> None:
        if not self._tasks.submit(("unload", deployment_id, agent_id), lambda: self._unload_task(agent_id, deployment_id)):
            log.warning("reconcile queue full: unloading %s from %s waits for its next heartbeat", deployment_id, agent_id)

    def _unload_task(self, agent_id: str, deployment_id: str) -> None:
        current = self.store.get_deployment(deployment_id)
        if current is not None and agent_id in current.agent_ids:
            return  # wanted there again meanwhile
        agent = self.store.get_agent(agent_id)
        if agent is None:
            return
        try:
            self.agents.unload(agent.address, deployment_id)
        except MilepostError as err:
            log.info("unload of %s deferred: %s", deployment_id, err.message)

    # ---- the loops ----
    def reconcile_agent(self, agent_id: str, reported: set[str]) -> None:
        """Schedule the loads and unloads that bring one agent to its desired state.
        A draining agent is stopping: it gets no new loads."""
        desired = {d.deployment_id: d for d in self.store.list_deployments() if agent_id in d.agent_ids}
        for dep_id in reported - desired.keys():
            self._schedule_unload(agent_id, dep_id)
        if self.reports.draining(agent_id):
            return
        for dep_id, d in desired.items():
            # A FAILED deployment waits for a new Deploy rather than retrying every heartbeat.
            if dep_id not in reported and d.state != "FAILED":
                self._schedule_load(dep_id, agent_id)

    def repair(self) -> list[str]:
        """Move replicas off lost agents, fill deployments short of replicas, drive PENDING ones.

        A lost agent that comes back is placed on again by the repair its first
        heartbeat triggers, before what it serves is compared with the store: what
        it still serves is kept, not unloaded and loaded again. Returns the ids of
        the deployments it changed. Holds ``placing``, so the monitor, a
        registration and a Deploy never place on stale counts.
        """
        with self.placing:
            live = set(self.live_agents())
            changed = []
            for d in self.store.list_deployments():
                if d.state == "FAILED":
                    continue
                keep = [a for a in d.agent_ids if a in live]
                choices: list[placement.Choice] = []
                waiting = ""
                if d.replicas > len(keep):
                    try:
                        choices = self.choose(d.requirements, d.replicas - len(keep), exclude=frozenset(d.agent_ids))
                    except FailedPrecondition as err:
                        waiting = err.message
                if keep != list(d.agent_ids) or choices:
                    self._move(d, keep, choices, waiting)
                    changed.append(d.deployment_id)
                elif not keep and waiting and (d.state, d.message) != ("PENDING", WAITING + waiting):
                    self.store.set_deployment_state(d.deployment_id, "PENDING", WAITING + waiting)
                    changed.append(d.deployment_id)
                if d.state == "PENDING" or choices:
                    for agent_id in keep + [c.agent_id for c in choices]:
                        self._schedule_load(d.deployment_id, agent_id)
            if changed:
                self.on_change()
            return changed

    def _move(self, d: DeploymentRecord, keep: list[str], choices: list[placement.Choice], waiting: str) -> None:
        """Record the replicas that remain and the new ones, with where and why (an event too)."""
        lost = sorted(set(d.agent_ids) - set(keep))
        added = [c.agent_id for c in choices]
        why = "; ".join(c.reason for c in choices)
        short = d.replicas - len(keep) - len(added)
        if not keep and not added:
            message: str | None = WAITING + (f"{lost} lost; " if lost else "") + (waiting or "no live agent can host it")
        elif added:
            message = (f"{len(keep) + len(added)} of {d.replicas} replicas placed; " if short > 0 else "") + why
        else:
            message = None
        # No live replica serves until the new ones load: say so rather than a stale READY.
        state = "PENDING" if not keep else None
        text = (f"lost {lost}; " if lost else "") + (why or message or f"kept on {keep}")
        self.store.set_replicas(
            d.deployment_id, keep + added, state=state, message=message,
            event=("placement", f"{d.model}:{d.version[:12]} ({d.deployment_id}): {text}", self.clock()),
        )
        log.warning("deployment %s (%s): lost %s, placed on %s", d.deployment_id, d.endpoint, lost or "-", added or "-")
