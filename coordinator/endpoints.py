"""Endpoints and their policies: set, promote, roll back, remove.

Setting a policy runs in three steps so traffic never points at a model that is
not serving: new deployments are placed and stored (so heartbeats load, not
unload, them), with an event saying where each went and why, and loaded; only
then does the policy switch, in one transaction with its audit event;
deployments no arm names any more are unloaded last. A new deployment that fails
to load leaves the endpoint as it was; a crash between the steps is rolled back
at the next start (Reconciler.recover).

A production endpoint (``require_approval``, coordinator.governance) serves approved
versions only, also through its endpoint arms: what an arm naming another endpoint
serves is what that endpoint's serving arms serve, followed down (``served``). So an
endpoint arm is taken only when everything behind it is approved, and a change to an
endpoint that production endpoints route to (a deploy, a canary, a promote, a policy)
is refused when it would put an unapproved version behind one of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from coordinator import governance, versions
from coordinator.reconciler import WAITING, Reconciler
from coordinator.store import DeploymentRecord, EndpointRecord, ModelRecord, Store
from engines import engine_for_flavor
from milepost.core.batching import BatchingSettings
from milepost.core.errors import FailedPrecondition, InvalidArgument, MilepostError, NotFound, shown
from milepost.core.names import check_name
from milepost.core.requirements import Requirements
from milepost.core.routing import spec as routing_spec
from milepost.core.routing.policy import Arm
from milepost.core.settings import get_settings
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.coordinator")
T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """How new deployments of a policy are placed and batched.

    ``device`` is ResourceRequest.device ("", "cpu", "gpu", "auto"): resolved into the
    requirements' GPUs, against the batching's largest batch, when each deployment is
    made (Requirements.on_device); what is stored is the result.
    """

    replicas: int = 1
    requirements: Requirements = field(default_factory=Requirements)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    device: str = ""

    def __post_init__(self) -> None:
        self.resolved()  # a bad device or a contradiction is refused before anything else

    def resolved(self) -> Requirements:
        return self.requirements.on_device(
            self.device, self.batching.effective_max_batch_size, get_settings().gpu_crossover_rows)


def policy_of(endpoint: EndpointRecord) -> routing_pb2.RoutingPolicy:
    return routing_pb2.RoutingPolicy.FromString(endpoint.policy_blob)


class Endpoints:
    def __init__(
        self, store: Store, reconciler: Reconciler, clock: Callable[[], float],
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.reconciler = reconciler
        self.clock = clock
        self.on_change = on_change  # pushes the new route table to agents, waiting for their answers

    def get(self, name: str) -> EndpointRecord:
        endpoint = self.store.get_endpoint(name)
        if endpoint is None:
            raise NotFound(f"endpoint {shown(name)} does not exist; see `milepost endpoints`")
        return endpoint

    def model(self, name: str, version: str) -> ModelRecord:
        """The version an arm names (coordinator.versions: a number, an alias, a digest or its prefix)."""
        return versions.resolve(self.store, name, version)

    # ---- setting policies ----
    def set_policy(
        self, endpoint: str, policy: routing_pb2.RoutingPolicy, arms: list[Arm], placement: Placement,
        *, stacker: Arm | None = None, timeout: float | None = None, event: str = "policy",
        require_approval: bool = False, wait: bool = True,
    ) -> EndpointRecord:
        """``require_approval`` marks the endpoint production (coordinator.governance) with this
        change; a marked endpoint stays marked. Without ``wait`` it answers once the change is
        checked and its new deployments placed and stored (PENDING): their loads and then the
        policy change go on in a thread of their own, so the endpoint serves as before until
        they are loaded, and a failed load leaves it so (an event says why)."""
        check_name("endpoint", endpoint)  # every way in (Deploy, SetPolicy, pipeline deploy stages) passes here
        routing_spec.check(policy, [a.name for a in arms], [a.weight for a in arms], stacker is not None)
        if placement.replicas < 0:
            raise InvalidArgument(f"replicas must be >= 1, got {placement.replicas}")

        # Placing and storing under one lock: concurrent Deploys see each other's replicas.
        with self.reconciler.placing:
            existing = self.store.get_endpoint(endpoint)
            current = {(d.model, d.version): d for d in existing.deployments} if existing else {}
            new: list[DeploymentRecord] = []
            serving: list[tuple[str, ModelRecord]] = []  # what production endpoints take approved only
            policy.ClearField("arms")

            def deployment_for(target: Arm, serves: bool) -> str:
                record = self.model(target.model, target.version)
                if serves:
                    serving.append((f"arm {target.name!r}", record))
                found = current.get((record.name, record.version)) or next(
                    (d for d in new if (d.model, d.version) == (record.name, record.version)), None
                )
                if found is None:
                    governance.check_deployable(record)
                    found = self._new_deployment(endpoint, record, placement, new)
                    new.append(found)
                return found.deployment_id

            answering = len(_serving(policy.kind, arms))
            for i, arm in enumerate(arms):
                if arm.endpoint:
                    if arm.endpoint == endpoint:
                        raise InvalidArgument(f"arm {arm.name!r} cannot route to its own endpoint")
                    self.get(arm.endpoint)
                    if i < answering:
                        serving.extend(self._through(arm.name, arm.endpoint, frozenset({endpoint})))
                    policy.arms.append(arm.to_proto())
                elif arm.model:
                    policy.arms.append(arm.resolved(deployment_for(arm, i < answering)).to_proto())
                else:
                    raise InvalidArgument(f"arm {arm.name!r} names neither a model nor an endpoint")
            if stacker is not None:
                policy.stacker_deployment_id = deployment_for(stacker, True)
            self._check_production(endpoint, require_approval or (existing is not None and existing.require_approval),
                                   serving)
            if new:
                self.store.add_deployments(endpoint, new, self.clock(), events=[
                    ("placement", f"{d.model}:{d.version[:12]} ({d.deployment_id}): {d.message}") for d in new
                ])

        def finish() -> EndpointRecord:  # not waited for: the loads take the agents' own call timeout
            return self._switch(endpoint, policy, new, current, created=existing is None,
                                timeout=timeout if wait else None, event=event, require_approval=require_approval)

        if wait:
            return finish()
        stored = self.get(endpoint)
        threading.Thread(target=self._switch_quietly, args=(endpoint, finish), name=f"deploy-{endpoint}",
                         daemon=True).start()
        return stored

    def _switch_quietly(self, endpoint: str, finish: Callable[[], EndpointRecord]) -> None:
        """``finish`` of a change that did not wait: its failure is already an event and a
        deployment state (``_load_new``), so here it is only logged."""
        try:
            finish()
        except MilepostError as err:
            log.warning("endpoint %s: a change that did not wait failed: %s", endpoint, err.message)
        except Exception:
            log.exception("endpoint %s: a change that did not wait failed", endpoint)

    def _switch(
        self, endpoint: str, policy: routing_pb2.RoutingPolicy, new: list[DeploymentRecord],
        current: dict, *, created: bool, timeout: float | None, event: str, require_approval: bool,
    ) -> EndpointRecord:
        """Load ``new``, then store ``policy`` (routes leave the deployments it no longer names,
        which then unload)."""
        self._load_new(endpoint, new, created=created, timeout=timeout)
        keep = {a.deployment_id for a in policy.arms if a.deployment_id}
        if policy.stacker_deployment_id:
            keep.add(policy.stacker_deployment_id)
        summary = ", ".join(
            f"{a.name}={a.endpoint or self._describe(a.deployment_id, new, current)}" for a in policy.arms
        )
        removed = self.store.set_policy(
            endpoint, policy.kind, policy.SerializeToString(), keep, self.clock(), (event, f"{policy.kind}: {summary}"),
            require_approval=require_approval,
        )
        self.on_change()  # routes leave the old deployments before they unload
        for d in removed:
            self.reconciler.unload(d)
        return self.get(endpoint)

    def _new_deployment(
        self, endpoint: str, model: ModelRecord, placement: Placement, others: list[DeploymentRecord],
    ) -> DeploymentRecord:
        """A deployment placed on agents (``others``: placed in this same call, not stored yet),
        its message saying where and why, or why it waits."""
        d = DeploymentRecord(
            deployment_id=self.reconciler.new_deployment_id(), endpoint=endpoint,
            model=model.name, version=model.version, replicas=placement.replicas or 1, state="PENDING",
            message="", created_at=self.clock(),
            batching=placement.batching,
            requirements=placement.resolved().with_engine(
                placement.requirements.engine or engine_for_flavor(model.flavor)
            ),
        )
        try:
            choices = self.reconciler.choose(d.requirements, d.replicas, extra=others)
        except FailedPrecondition as err:
            return replace(d, message=WAITING + err.message)
        short = d.replicas - len(choices)
        message = (f"{len(choices)} of {d.replicas} replicas placed; " if short > 0 else "") + "; ".join(
            c.reason for c in choices)
        return replace(d, agent_ids=tuple(c.agent_id for c in choices), message=message)

    def _load_new(self, endpoint: str, new: list[DeploymentRecord], *, created: bool, timeout: float | None) -> None:
        """Load the deployments just stored; on a failure forget them (and the endpoint made for them)."""
        if not new:
            return
        try:
            for d in new:
                if d.agent_ids:
                    self.reconciler.load_all(d, timeout)
        except MilepostError as err:
            self.store.remove_deployments([d.deployment_id for d in new], drop_endpoint=endpoint if created else "")
            for d in new:
                self.reconciler.unload(d)
            if not created:
                self.store.add_event(endpoint, "failed", f"policy not changed: {err.message}", self.clock())
            raise

    @staticmethod
    def _describe(deployment_id: str, new: list[DeploymentRecord], current: dict) -> str:
        for d in [*new, *current.values()]:
            if d.deployment_id == deployment_id:
                return f"{d.model}:{d.version[:12]}"
        return deployment_id

    # ---- finishing canaries and shadows ----
    def promote(self, name: str, arm: str = "", reason: str = "by hand") -> EndpointRecord:
        """Send all traffic to one arm (default: a canary's or shadow's candidate)."""
        endpoint = self.get(name)
        policy = policy_of(endpoint)
        if not arm:
            if policy.kind not in ("canary", "shadow"):
                raise FailedPrecondition(f"endpoint {name!r} is a {policy.kind}; say which arm to promote")
            arm = policy.arms[1].name
        return self._collapse(endpoint, policy, arm, "promote", reason)

    def rollback(self, name: str, reason: str = "by hand") -> EndpointRecord:
        """Send all traffic back to a canary's or shadow's baseline."""
        endpoint = self.get(name)
        policy = policy_of(endpoint)
        if policy.kind not in ("canary", "shadow"):
            raise FailedPrecondition(f"endpoint {name!r} is a {policy.kind}; only canaries and shadows roll back")
        return self._collapse(endpoint, policy, policy.arms[0].name, "rollback", reason)

    def _collapse(
        self, endpoint: EndpointRecord, policy: routing_pb2.RoutingPolicy, arm_name: str, event: str, reason: str,
    ) -> EndpointRecord:
        arm = next((a for a in policy.arms if a.name == arm_name), None)
        if arm is None:
            raise NotFound(f"endpoint {endpoint.name!r} has no arm {shown(arm_name)}; arms: {[a.name for a in policy.arms]}")
        if not arm.deployment_id:
            raise FailedPrecondition(f"arm {arm_name!r} routes to endpoint {arm.endpoint!r}; promote a model arm")
        by_id = {d.deployment_id: d for d in endpoint.deployments}
        if event == "promote":
            taking = by_id[arm.deployment_id]
            self._check_production(endpoint.name, endpoint.require_approval,
                                   [(f"arm {arm_name!r}", self.model(taking.model, taking.version))])
        single = routing_pb2.RoutingPolicy(kind="single", key_parameter=policy.key_parameter)
        single.arms.add(name=arm.name, deployment_id=arm.deployment_id, weight=1.0)
        # The entry names the versions it moves traffic to and from, so that each version's
        # history (`milepost models show`) finds it.
        left = ", ".join(f"{a.name} ({self._describe(a.deployment_id, [], by_id)}, {a.deployment_id})"
                         for a in policy.arms if a.deployment_id and a.deployment_id != arm.deployment_id)
        removed = self.store.set_policy(
            endpoint.name, "single", single.SerializeToString(), {arm.deployment_id}, self.clock(),
            (event, f"{arm_name} ({self._describe(arm.deployment_id, [], by_id)}, {arm.deployment_id}) takes all "
                    f"traffic ({reason})" + (f"; leaving {left}" if left else "")),
        )
        self.on_change()
        for d in removed:
            self.reconciler.unload(d)
        return self.get(endpoint.name)

    def set_canary_step(self, name: str, step: int, reason: str) -> None:
        endpoint = self.get(name)
        policy = policy_of(endpoint)
        policy.step = step
        self.store.set_policy(
            name, policy.kind, policy.SerializeToString(), {d.deployment_id for d in endpoint.deployments},
            self.clock(), ("canary_step", f"candidate at {policy.steps[step]:g}% ({reason})"),
        )
        self.on_change()

    def set_require_approval(self, name: str, required: bool) -> EndpointRecord:
        """Mark an endpoint production (refused while it serves an unapproved version) or lift that."""
        endpoint = self.get(name)
        if required:
            governance.check_servable(name, self.served(name))
        if required != endpoint.require_approval:
            self.store.set_require_approval(name, required, self.clock())
        return self.get(name)

    # ---- what production endpoints serve, through endpoint arms too ----
    def served(self, name: str, seen: frozenset[str] = frozenset()) -> list[tuple[str, ModelRecord]]:
        """Every version endpoint ``name`` answers with, each with where it is named ("arm 'a'",
        or "arm 'b' (endpoint 'staging', its arm 'a')" behind an endpoint arm): its serving arms
        (not a shadow's candidate, whose answers are discarded) and stacker. ``seen``: the
        endpoints on the way here, so that arms routing in a circle end."""
        endpoint = self.store.get_endpoint(name)
        if endpoint is None or not endpoint.policy_blob or name in seen:
            return []
        policy = policy_of(endpoint)
        by_id = {d.deployment_id: d for d in endpoint.deployments}
        found: list[tuple[str, ModelRecord]] = []
        for arm in _serving(policy.kind, policy.arms):
            if arm.endpoint:
                found.extend(self._through(arm.name, arm.endpoint, seen | {name}))
            elif arm.deployment_id in by_id:
                found.append((f"arm {arm.name!r}", self._record(by_id[arm.deployment_id])))
        if policy.stacker_deployment_id in by_id:
            found.append(("the stacker", self._record(by_id[policy.stacker_deployment_id])))
        return found

    def _through(self, arm: str, target: str, seen: frozenset[str]) -> list[tuple[str, ModelRecord]]:
        """What arm ``arm``, routing to endpoint ``target``, serves."""
        return [(_behind(arm, target, where), m) for where, m in self.served(target, seen)]

    def _record(self, d: DeploymentRecord) -> ModelRecord:
        return self.model(d.model, d.version)

    def _routing_here(self, name: str) -> list[tuple[str, list[tuple[str, str]]]]:
        """The production endpoints whose serving arms route to endpoint ``name``, directly or
        through other endpoints, each with its way down: the (arm, endpoint) hops to ``name``."""
        into: dict[str, list[tuple[str, str]]] = {}  # endpoint -> (endpoint, arm) routing to it
        production = set()
        for e in self.store.list_endpoints():
            if e.require_approval:
                production.add(e.name)
            if not e.policy_blob:
                continue
            policy = policy_of(e)
            for arm in _serving(policy.kind, policy.arms):
                if arm.endpoint:
                    into.setdefault(arm.endpoint, []).append((e.name, arm.name))
        found: list[tuple[str, list[tuple[str, str]]]] = []
        ways: list[tuple[str, list[tuple[str, str]]]] = [(name, [])]
        seen = {name}
        while ways:
            below, hops = ways.pop()
            for above, arm in into.get(below, []):
                if above in seen:
                    continue
                seen.add(above)
                way = [(arm, below), *hops]
                ways.append((above, way))
                if above in production:
                    found.append((above, way))
        return found

    def _check_production(self, name: str, required_here: bool, serving: list[tuple[str, ModelRecord]]) -> None:
        """FailedPrecondition (coordinator.governance.check_servable) when endpoint ``name``, serving
        ``serving`` after a change, is production and serves an unapproved version, or makes a
        production endpoint that routes to it serve one."""
        if required_here:
            governance.check_servable(name, serving)
        for above, hops in self._routing_here(name):
            behind = serving
            for arm, target in reversed(hops):
                behind = [(_behind(arm, target, where), m) for where, m in behind]
            governance.check_servable(above, behind)

    def set_decision_log(self, name: str, sample_rate: float) -> None:
        """Have agents log this share of the endpoint's decisions (agent.decision_log); 0: none."""
        if not 0.0 <= sample_rate <= 1.0:  # NaN fails too
            raise InvalidArgument(f"sample_rate must be in [0, 1] (a share of requests), got {sample_rate}")
        self.get(name)
        self.store.set_decision_sample_rate(name, sample_rate, self.clock())
        self.on_change()

    def undeploy(self, name: str) -> None:
        removed = self.store.delete_endpoint(name, self.clock())
        if removed is None:
            raise NotFound(f"endpoint {shown(name)} does not exist; see `milepost endpoints`")
        self.on_change()
        for d in removed:
            self.reconciler.unload(d)


def _serving(kind: str, arms: Sequence[T]) -> list[T]:
    """The arms whose answers a policy of ``kind`` returns: all but a shadow's candidate (its
    last arm), whose answers are compared and discarded."""
    return list(arms)[:-1] if kind == "shadow" else list(arms)


def _behind(arm: str, endpoint: str, where: str) -> str:
    """Where a version is named, seen from an arm that routes to the endpoint naming it."""
    return f"arm {arm!r} (endpoint {endpoint!r}, its {where})"
