"""The router: serves a request to a name by that name's route (see route_table).

The dataplane decodes a request once and hands it here with the table it
read; the endpoint's policy chooses arm(s), and the router calls them: a
deployment arm on this agent's own replica when there is one (the
MicroBatcher in the DeploymentTable) or else on a RemoteModel proxy to the
agents listed in the route's replicas; an endpoint arm through that
endpoint's own route (nesting, at most MAX_DEPTH deep; a cycle is
FailedPrecondition). Every arm call is timed and recorded in the
ArmMetricsBook (the completion hook); shadows are mirrored on a bounded pool,
ensemble members fanned out on another. The caller's deadline is passed to
every ``predict``.

On an event loop (milepost.core.inline) a request is served only by a route whose every arm is
a deployment on this agent that scores inline (``serves_inline``): anything else, an ensemble's
fan-out or another agent's replica, would block, and the request goes to a worker instead.

Requests with a key: the arm of a pushed route that served one is remembered
(ServedKeys), so that feedback by key is credited to it.

Route tables: a pushed table (SetRoutes) replaces the held one unless it is
older; a table in a heartbeat reply replaces it when newer, or whatever its
generation when it is the first since the agent (re)registered (a coordinator
with a fresh store starts counting again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from agent.deployments import DeploymentTable, Hosted
from agent.routing import ensemble
from agent.routing import route_table as tables
from agent.routing.arm_metrics import ArmMetricsBook, ArmRecorder, matrix_output_values
from agent.routing.ensemble import MemberAnswer
from agent.routing.members import Channels
from agent.routing.route_table import Route, RouteTable
from agent.routing.served_keys import ServedKeys
from engines.base import LoadedModel
from milepost.core import deadlines, tracing
from milepost.core.deadlines import Deadline
from milepost.core.description import ModelDescription
from milepost.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MilepostError,
    NotFound,
    ResourceExhausted,
    Unavailable,
    shown,
)
from milepost.core.inline import WouldBlock
from milepost.core.model_refs import serves
from milepost.core.routing.ensemble import EnsemblePolicy
from milepost.core.routing.policy import Arm
from milepost.core.settings import get_settings
from milepost.core.tls import Tls
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.agent")
MAX_DEPTH = 4
STACKER_ARM = "(stacker)"  # the arm name a stacker's calls are recorded under; no real arm can have it


@dataclass(frozen=True)
class Served:
    """An answer and who gave it: the arm(s) of the endpoint and the deployments that scored."""

    batch: pa.RecordBatch
    arms: tuple[str, ...]
    deployments: tuple[str, ...]
    version: str = ""


class MatrixServed(NamedTuple):
    """The matrix lane's answer (``Router.serve_matrix``): the chosen model's (n, k) scores,
    and how its one output column goes on the wire: its name, and whether it has one value a
    row (``[n]``) or k (``[n, k]``); ``output_field`` is that column as ``serve`` answers it
    (the decision log builds the logged outputs from it). A named tuple: one is made for
    every small request, and a frozen dataclass takes seven ``object.__setattr__`` calls."""

    values: np.ndarray
    output_name: str
    rows_only: bool
    arms: tuple[str, ...]
    deployments: tuple[str, ...]
    version: str
    output_field: pa.Field


@dataclass(frozen=True)
class _MatrixRoute:
    """What the matrix lane needs of a route, worked out once per table: the width of its
    models' matrix; per deployment, its output column's (name, one value a row, field); the
    route, whether an arm is available (``Router._available`` for this route), and each arm's
    counters when the route was pushed (None for a deployment's own route, which has none)."""

    width: int
    outputs: Mapping[str, tuple[str, bool, pa.Field]]
    route: Route
    available: Callable[[Arm], bool]
    recorders: Mapping[str, ArmRecorder] | None


@dataclass(frozen=True)
class _Request:
    table: RouteTable
    parameters: Mapping[str, str]


class Router:
    def __init__(
        self, table: DeploymentTable, address: Callable[[], str], metrics: ArmMetricsBook, *,
        member_workers: int = 16, member_queue: int = 64, shadow_workers: int = 2, shadow_queue: int = 32,
        tls: Tls | None = None, token: Callable[[], str] | None = None,
    ) -> None:
        self._local = table
        self._address = address
        self.metrics = metrics
        self._channels = Channels(tls, token)  # token: the cluster's own identity towards other agents
        self._described: dict[str, ModelDescription] = {}
        self._table = RouteTable()
        self._inline: tuple[RouteTable, dict[str, bool]] = (self._table, {})  # serves_inline's answers, per table
        self._matrix: tuple[RouteTable, dict[str, _MatrixRoute | None]] = (self._table, {})  # the same, serve_matrix's
        self._apply_lock = threading.Lock()
        self._accept_any_heartbeat_table = False
        self._member_pool = ThreadPoolExecutor(member_workers, thread_name_prefix="ensemble")
        self._member_slots = threading.BoundedSemaphore(member_queue)
        self._shadow_pool = ThreadPoolExecutor(shadow_workers, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(shadow_queue)
        self._settings = get_settings()
        self.served_keys = ServedKeys(self._settings.served_keys_remembered)
        table.on_change = self._local_changed
        self._local_changed()

    # ---- the table ----
    @property
    def table(self) -> RouteTable:
        """The table now; a request reads it once and passes it along."""
        return self._table

    @property
    def generation(self) -> int:
        return self._table.generation

    def apply(self, message: routing_pb2.RouteTable, *, from_heartbeat: bool = False) -> bool:
        """Hold ``message`` if it is not older than the held table (see the module docstring)."""
        with self._apply_lock:
            held = self._table.generation
            if from_heartbeat:
                accept = message.generation > held or self._accept_any_heartbeat_table
            else:
                accept = message.generation >= held
            if not accept:
                log.debug("ignoring route table generation %d (holding %d)", message.generation, held)
                return False
            pushed = tables.compile_pushed(message, self._address(), self._channels, self._described, self._settings)
            self._table = tables.with_local(message.generation, pushed, self._local.local_endpoints())
            self._accept_any_heartbeat_table = False
        log.info("routes generation %d applied: %s", message.generation, ", ".join(pushed) or "none")
        return True

    def _local_changed(self) -> None:
        with self._apply_lock:
            held = self._table
            self._table = tables.with_local(held.generation, held.pushed, self._local.local_endpoints())

    def registered(self) -> None:
        """The agent (re)registered: take the next heartbeat's table whatever its generation."""
        with self._apply_lock:
            self._accept_any_heartbeat_table = True

    def has_route(self, endpoint: str) -> bool:
        """Whether the coordinator pushed a route for ``endpoint`` (local deployments aside)."""
        return endpoint in self._table.pushed

    def endpoints(self) -> list[str]:
        """Every name served: pushed routes and local deployments."""
        return sorted(self._table.routes)

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)
        self._member_pool.shutdown(wait=False, cancel_futures=True)
        self._channels.close()

    # ---- serving ----
    def serves_inline(self, table: RouteTable, endpoint: str) -> bool:
        """Whether every arm of ``endpoint``'s route (nested endpoints too) is a deployment hosted
        here whose model scores inline, so that its requests may be served on an event loop."""
        cached_table, answers = self._inline
        if cached_table is not table:
            answers = {}
            self._inline = (table, answers)
        found = answers.get(endpoint)
        if found is None:
            found = answers[endpoint] = self._all_inline(table, endpoint, 0)
        return found

    def _all_inline(self, table: RouteTable, endpoint: str, depth: int) -> bool:
        route = table.get(endpoint)
        if route is None or route.policy is None:
            return True  # serving it raises at once, which is as quick on the loop
        if isinstance(route.policy, EnsemblePolicy) or depth >= MAX_DEPTH:
            return False
        for arm in route.policy.arms:
            if arm.endpoint:
                if not self._all_inline(table, arm.endpoint, depth + 1):
                    return False
                continue
            hosted = self._local.get(arm.deployment_id)
            if hosted is None or not hosted.model.scores_inline:
                return False
        return True

    def serve(
        self, table: RouteTable, endpoint: str, batch: pa.RecordBatch, parameters: Mapping[str, str],
        deadline: Deadline, version: str = "",
    ) -> Served:
        """Serve one request by ``table``; ``version`` pins the arm serving that model version."""
        request = _Request(table, parameters)
        if version:
            return self._serve_version(request, endpoint, batch, version, deadline)
        return self._serve(request, endpoint, batch, (), deadline)

    def _serve(
        self, request: _Request, endpoint: str, batch: pa.RecordBatch, path: tuple[str, ...], deadline: Deadline,
    ) -> Served:
        if endpoint in path:
            raise FailedPrecondition(f"routing cycle: {' -> '.join((*path, endpoint))}")
        if len(path) >= MAX_DEPTH:
            raise FailedPrecondition(f"routing nests deeper than {MAX_DEPTH} endpoints: {' -> '.join((*path, endpoint))}")
        route = request.table.get(endpoint)
        if route is None:
            if not path:
                raise NotFound(f"model {endpoint!r} is not served by this agent")
            raise Unavailable(
                f"endpoint {endpoint!r} (an arm of {path[-1]!r}) has no route and is not served by this agent"
            )
        policy = route.policy_or_raise()
        path = (*path, endpoint)
        key = request.parameters.get(policy.key_parameter)
        choice = policy.choose(key, lambda arm: self._available(request.table, route, arm, path))
        if isinstance(policy, EnsemblePolicy):
            return self._ensemble(request, route, policy, batch, path, deadline)
        if not route.pushed:  # a local deployment: no arms to report or count
            (arm,) = choice.arms
            out, version = self._call_deployment(route, arm.deployment_id, arm.name, batch, deadline)
            return Served(out, (), (arm.deployment_id,), version)
        try:
            served = self._call_arm(request, route, choice.arms[0], batch, path, deadline)
        except WouldBlock:
            raise  # served again from a worker: mirror it then
        except BaseException:
            if choice.mirror is not None:
                self._mirror(request, route, choice.mirror, batch, None, path)
            raise
        if choice.mirror is not None:
            self._mirror(request, route, choice.mirror, batch, served.batch, path)
        if key:
            self.served_keys.record(endpoint, key, choice.arms[0].name)
        return served

    def serve_matrix(
        self, table: RouteTable, endpoint: str, X: np.ndarray, parameters: Mapping[str, str],
    ) -> MatrixServed | None:
        """``serve`` for a float32 matrix, without Arrow: the matrix lane. It serves a request
        without a key to a route whose arms are all deployments on this agent taking a matrix
        of X's width, chosen by the same policy, timed and counted as ``serve`` does; no
        ensembles or shadows (they read Arrow batches; sampled decisions are offered by the
        data plane, agent.decision_log.offer_matrix). None, before any
        choice is made, where ``serve`` must take the request; None after the choice only
        when the chosen model cannot take it now (a batch being scored or queued, or a model
        that reads Arrow only), and ``serve`` chooses again."""
        plan = self._matrix_route(table, endpoint)
        if plan is None or plan.width != X.shape[1]:
            return None
        policy = plan.route.policy
        assert policy is not None
        if parameters and parameters.get(policy.key_parameter):
            return None  # keyed requests are remembered by key (ServedKeys) from Arrow answers
        (arm,) = policy.choose(None, plan.available).arms
        hosted = self._local.get(arm.deployment_id)
        if hosted is None:
            return None
        recorders = plan.recorders  # None: a local deployment's synthesised route has no arms to report or count
        started = time.perf_counter()
        try:
            values = hosted.model.predict_matrix(X)
        except BaseException:
            if recorders is not None:
                recorders[arm.name].record(_ms_since(started), None, failed=True)
            raise
        if values is None:
            return None
        arms: tuple[str, ...] = ()
        if recorders is not None:
            recorders[arm.name].record(_ms_since(started), matrix_output_values(values), False)
            arms = (arm.name,)
        name, rows_only, output = plan.outputs[arm.deployment_id]
        return MatrixServed(values, name, rows_only, arms, (arm.deployment_id,), hosted.version, output)

    def _matrix_route(self, table: RouteTable, endpoint: str) -> _MatrixRoute | None:
        """What ``serve_matrix`` needs of ``endpoint``'s route; None when it does not serve it."""
        cached_table, plans = self._matrix
        if cached_table is not table:
            plans = {}
            self._matrix = (table, plans)
        if endpoint not in plans:
            plans[endpoint] = self._plan_matrix(table, table.get(endpoint))
        return plans[endpoint]

    def _plan_matrix(self, table: RouteTable, route: Route | None) -> _MatrixRoute | None:
        if route is None or route.policy is None:
            return None
        if route.policy.kind not in ("single", "split", "canary", "bandit"):
            return None  # an ensemble scores every arm; a shadow mirrors
        widths, outputs = set(), {}
        for arm in route.policy.arms:
            hosted = self._local.get(arm.deployment_id) if arm.deployment_id else None
            if hosted is None:
                return None  # an endpoint arm, or another agent's replica
            schema, out = hosted.model.input_schema, hosted.model.output_schema
            if len(out) != 1 or not all(f.type == pa.float32() for f in schema):
                return None
            widths.add(len(schema))
            field = out.field(0)
            if pa.types.is_fixed_size_list(field.type):
                if field.type.value_type != pa.float64():
                    return None
                outputs[arm.deployment_id] = (field.name, False, field)
            elif field.type == pa.float64():
                outputs[arm.deployment_id] = (field.name, True, field)
            else:
                return None
        if len(widths) != 1:
            return None
        path = (route.endpoint,)
        recorders = ({a.name: self.metrics.arm(route.endpoint, a.name) for a in route.policy.arms}
                     if route.pushed else None)
        return _MatrixRoute(widths.pop(), outputs, route, lambda a: self._available(table, route, a, path), recorders)

    def _serve_version(
        self, request: _Request, endpoint: str, batch: pa.RecordBatch, version: str, deadline: Deadline,
    ) -> Served:
        route = request.table.get(endpoint)
        if route is None:
            raise NotFound(f"model {endpoint!r} is not served by this agent")
        policy = route.policy_or_raise()
        arm, _ = self.pinned(request.table, endpoint, version)
        if not route.pushed:  # a local deployment: no arms to report or count
            out, served_version = self._call_deployment(route, arm.deployment_id, arm.name, batch, deadline)
            return Served(out, (), (arm.deployment_id,), served_version)
        served = self._call_arm(request, route, arm, batch, (endpoint,), deadline)
        key = request.parameters.get(policy.key_parameter)
        if key:
            self.served_keys.record(endpoint, key, arm.name)
        return served

    def pinned(self, table: RouteTable, endpoint: str, version: str) -> tuple[Arm, ModelDescription]:
        """The arm of ``endpoint``'s route that serves model version ``version`` (model_refs.serves),
        and its description: what a request, metadata or readiness call naming a version is for.
        NOT_FOUND when no arm serves it; INVALID_ARGUMENT listing the candidates when a digest
        prefix matches arms serving different versions (arms serving the same one are one answer:
        the first is taken); an arm whose replica does not answer now is skipped, and its error
        raised when no other arm serves the version."""
        route = self._route_for_description(table, endpoint, ())
        matches: dict[tuple[str, str], tuple[Arm, ModelDescription]] = {}
        others, unanswered = [], None
        for arm in route.policy_or_raise().arms:
            if not arm.deployment_id or self._member(route, arm.deployment_id) is None:
                continue
            try:
                described = self._describe_deployment(route, arm.deployment_id, arm.name)
            except (Unavailable, DeadlineExceeded) as err:
                unanswered = unanswered or err
                continue
            if serves(version, described.version, described.digest):
                matches.setdefault((described.version, described.digest), (arm, described))
            else:
                others.append(f"{arm.name}={described.version[:12]}")
        if len(matches) > 1:
            listed = ", ".join(f"arm {arm.name!r} (version {d.version}, sha256:{d.digest[:12]})"
                               for arm, d in matches.values())
            raise InvalidArgument(
                f"version prefix {shown(version)} of endpoint {endpoint!r} is ambiguous: it matches {listed}; "
                "give more digits or the version number"
            )
        if matches:
            (found,) = matches.values()
            return found
        if unanswered is not None:
            raise unanswered
        raise NotFound(
            f"version {version!r} of endpoint {endpoint!r} is not served by any of its arms"
            + (f" ({', '.join(others)})" if others else "")
        )

    def arm_versions(self, table: RouteTable, endpoint: str) -> dict[str, str]:
        """Arm name -> the model version it serves, for each deployment arm of ``endpoint``'s route
        whose replica answers now (what metadata lists and statistics count under); empty for an
        ensemble, whose answer is no one arm's."""
        route = self._route_for_description(table, endpoint, ())
        policy = route.policy_or_raise()
        if isinstance(policy, EnsemblePolicy):
            return {}
        found = {}
        for arm in policy.arms:
            if not arm.deployment_id or self._member(route, arm.deployment_id) is None:
                continue
            try:
                found[arm.name] = self._describe_deployment(route, arm.deployment_id, arm.name).version
            except (Unavailable, DeadlineExceeded):
                continue
        return found

    def _call_arm(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        path: tuple[str, ...], deadline: Deadline,
    ) -> Served:
        started = time.perf_counter()
        try:
            invoke = self._traced_arm if tracing.enabled() else self._invoke_arm
            served = invoke(request, route, arm, batch, path, deadline)
        except WouldBlock:
            raise  # not a failure: the request is served again from a worker
        except BaseException:
            self.metrics.record(route.endpoint, arm.name, _ms_since(started), None, failed=True)
            raise
        self.metrics.record(route.endpoint, arm.name, _ms_since(started), served.batch, failed=False)
        return served

    def _traced_arm(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        path: tuple[str, ...], deadline: Deadline,
    ) -> Served:
        """``_invoke_arm`` in a span saying which arm the policy chose (milepost.core.tracing)."""
        with tracing.span("milepost.arm") as span:
            span.set_attribute("milepost.endpoint", route.endpoint)
            span.set_attribute("milepost.arm", arm.name)
            span.set_attribute("milepost.policy", route.policy.kind if route.policy is not None else "")
            if arm.deployment_id:
                span.set_attribute("milepost.deployment", arm.deployment_id)
                span.set_attribute("milepost.remote", self._local.get(arm.deployment_id) is None)
            else:
                span.set_attribute("milepost.arm_endpoint", arm.endpoint)
            span.set_attribute("milepost.rows", batch.num_rows)
            served = self._invoke_arm(request, route, arm, batch, path, deadline)
            span.set_attribute("milepost.model_version", served.version)
            return served

    def _invoke_arm(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        path: tuple[str, ...], deadline: Deadline,
    ) -> Served:
        if arm.endpoint:
            inner = self._serve(request, arm.endpoint, batch, path, deadline)
            return Served(inner.batch, (arm.name,), inner.deployments, inner.version)
        out, version = self._call_deployment(route, arm.deployment_id, arm.name, batch, deadline)
        return Served(out, (arm.name,), (arm.deployment_id,), version)

    def _member(self, route: Route, deployment_id: str) -> LoadedModel | None:
        """This agent's replica of the deployment if it has one, else the remote proxy, else None."""
        hosted = self._local.get(deployment_id)
        if hosted is not None:
            return hosted.model
        return route.remotes.get(deployment_id)

    def _call_deployment(
        self, route: Route, deployment_id: str, arm_name: str, batch: pa.RecordBatch, deadline: Deadline,
    ) -> tuple[pa.RecordBatch, str]:
        """The deployment's answer and the version it reports (a local one's is its Hosted's)."""
        hosted = self._local.get(deployment_id)
        model = hosted.model if hosted is not None else route.remotes.get(deployment_id)
        if model is None:
            raise Unavailable(
                f"endpoint {route.endpoint!r}: arm {arm_name!r} (deployment {deployment_id}) has no replica on any agent"
            )
        deadlines.check(deadline, f"arm {arm_name!r} of endpoint {route.endpoint!r} could score")
        return model.predict(batch, deadline), hosted.version if hosted is not None else model.version

    def _available(self, table: RouteTable, route: Route, arm: Arm, path: tuple[str, ...]) -> bool:
        if arm.deployment_id:
            return self._local.get(arm.deployment_id) is not None or arm.deployment_id in route.remotes
        if arm.endpoint in path or len(path) >= MAX_DEPTH:
            return True  # serving it raises FailedPrecondition, which says more than UNAVAILABLE would
        inner = table.get(arm.endpoint)
        if inner is None:
            return False
        if inner.policy is None:
            return True  # serving it says why it is broken
        inner_path = (*path, arm.endpoint)
        return inner.policy.ready(lambda a: self._available(table, inner, a, inner_path))

    # ---- shadows ----
    def _mirror(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        primary: pa.RecordBatch | None, path: tuple[str, ...],
    ) -> None:
        """Score ``batch`` on the shadow arm in the background, if there is room; never raises."""
        if not self._shadow_slots.acquire(blocking=False):
            self.metrics.record_shadow_dropped(route.endpoint)
            return
        policy = route.policy
        timeout = (
            policy.spec.member_timeout_s if policy is not None and policy.spec.member_timeout_s > 0
            else self._settings.shadow_timeout_s
        )
        try:
            future = self._shadow_pool.submit(
                tracing.bind(self._shadow_job), request, route, arm, batch, primary, path, time.monotonic() + timeout
            )
        except RuntimeError:  # the pool is shut down: the agent is stopping
            self._shadow_slots.release()
            return
        future.add_done_callback(lambda _: self._shadow_slots.release())

    def _shadow_job(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        primary: pa.RecordBatch | None, path: tuple[str, ...], deadline: float,
    ) -> None:
        try:
            served = self._call_arm(request, route, arm, batch, path, deadline)
            if primary is not None:
                self.metrics.record_comparison(route.endpoint, arm.name, primary, served.batch)
        except Exception as err:  # noqa: BLE001 - a shadow's failure is counted in its metrics, never raised
            if not isinstance(err, MilepostError):
                log.exception("shadow arm %s of %s failed", arm.name, route.endpoint)

    # ---- ensembles ----
    def _ensemble(
        self, request: _Request, route: Route, policy: EnsemblePolicy, batch: pa.RecordBatch,
        path: tuple[str, ...], deadline: Deadline,
    ) -> Served:
        member_deadline = time.monotonic() + policy.member_timeout_s
        if deadline is not None:
            member_deadline = min(member_deadline, deadline)
        jobs: list[tuple[Arm, Future, float]] = []
        try:
            for arm in policy.arms:
                if not self._member_slots.acquire(blocking=False):
                    raise ResourceExhausted(
                        f"endpoint {route.endpoint!r}: too many ensemble members in flight on this agent; retry with backoff"
                    )
                started = time.perf_counter()
                try:
                    future = self._member_pool.submit(
                        tracing.bind(self._member_job), request, route, arm, batch, path, member_deadline
                    )
                except RuntimeError as err:
                    self._member_slots.release()
                    raise Unavailable("the agent is stopping") from err
                future.add_done_callback(lambda _: self._member_slots.release())
                jobs.append((arm, future, started))
        except BaseException:
            for _, future, _ in jobs:
                future.cancel()
            raise
        wait([f for _, f, _ in jobs], timeout=max(0.0, member_deadline - time.monotonic()))
        answers: list[MemberAnswer] = []
        served_by: dict[str, Served] = {}
        for arm, future, started in jobs:
            if future.done() and not future.cancelled():
                error = future.exception()
                if error is None:
                    served, finished = future.result()
                    served_by[arm.name] = served
                    self.metrics.record(route.endpoint, arm.name, (finished - started) * 1e3, served.batch, failed=False)
                    answers.append(MemberAnswer(arm, served.batch))
                    continue
                finished_ms = _ms_since(started)
            else:
                future.cancel()
                finished_ms = _ms_since(started)
                error = DeadlineExceeded(
                    f"endpoint {route.endpoint!r}: member {arm.name!r} did not answer within "
                    f"{policy.member_timeout_s:g}s (or the request's deadline)"
                )
            self.metrics.record(route.endpoint, arm.name, finished_ms, None, failed=True)
            answers.append(MemberAnswer(arm, error=error))
        chosen = ensemble.answered(policy, answers)
        stacker = None
        deployments = [d for a in chosen for d in served_by[a.arm.name].deployments]
        if policy.combiner == "stacking":
            stacker = _Stacker(self, route, policy.stacker_deployment_id, deadline)
            deployments.append(policy.stacker_deployment_id)
        combined = ensemble.combine(policy, chosen, stacker)
        return Served(combined, tuple(a.arm.name for a in chosen), tuple(deployments))

    def _member_job(
        self, request: _Request, route: Route, arm: Arm, batch: pa.RecordBatch,
        path: tuple[str, ...], deadline: float,
    ) -> tuple[Served, float]:
        invoke = self._traced_arm if tracing.enabled() else self._invoke_arm
        served = invoke(request, route, arm, batch, path, deadline)
        return served, time.perf_counter()

    # ---- describing ----
    def describe(self, table: RouteTable, endpoint: str, path: tuple[str, ...] = ()) -> ModelDescription:
        """The model behind a name: its first arm's that has a replica somewhere (the arms of one
        endpoint take the same inputs); a stacking ensemble's outputs are the stacker's."""
        route = self._route_for_description(table, endpoint, path)
        policy = route.policy_or_raise()
        described = None
        for arm in policy.arms:
            try:
                described = (
                    self.describe(table, arm.endpoint, (*path, endpoint)) if arm.endpoint
                    else self._describe_deployment(route, arm.deployment_id, arm.name)
                )
                break
            except (Unavailable, NotFound):
                continue
        if described is None:
            raise policy._unavailable(policy.arms)
        if isinstance(policy, EnsemblePolicy) and policy.combiner == "stacking":
            stacker = self._describe_deployment(route, policy.stacker_deployment_id, STACKER_ARM)
            described = described.with_outputs_of(stacker)
        if route.pushed and not path:
            described = replace(described, routing_policy=policy.kind)
        return described

    def input_schema(self, table: RouteTable, endpoint: str, path: tuple[str, ...] = ()) -> pa.Schema:
        """The schema requests to an endpoint are decoded with: the first arm's that is known
        without asking another agent, else as ``describe`` finds it."""
        route = self._route_for_description(table, endpoint, path)
        for arm in route.policy_or_raise().arms:
            if not arm.deployment_id:
                continue
            hosted = self._local.get(arm.deployment_id)
            if hosted is not None:
                return hosted.model.input_schema
            remote = route.remotes.get(arm.deployment_id)
            if remote is not None and remote.described:
                return remote.input_schema
        return self.describe(table, endpoint, path).input_schema

    def _route_for_description(self, table: RouteTable, endpoint: str, path: tuple[str, ...]) -> Route:
        if endpoint in path or len(path) >= MAX_DEPTH:
            raise FailedPrecondition(f"routing cycle or nesting deeper than {MAX_DEPTH}: {' -> '.join((*path, endpoint))}")
        route = table.get(endpoint)
        if route is None:
            if path:
                raise Unavailable(f"endpoint {endpoint!r} (an arm of {path[-1]!r}) has no route on this agent")
            raise NotFound(f"model {endpoint!r} is not served by this agent")
        return route

    def _describe_deployment(self, route: Route, deployment_id: str, arm_name: str) -> ModelDescription:
        hosted = self._local.get(deployment_id)
        if hosted is not None:
            return describe_hosted(hosted)
        remote = route.remotes.get(deployment_id)
        if remote is None:
            raise Unavailable(
                f"endpoint {route.endpoint!r}: arm {arm_name!r} (deployment {deployment_id}) has no replica on any agent"
            )
        return replace(remote.describe(), deployment_id=deployment_id)

    def ready(self, table: RouteTable, endpoint: str) -> bool:
        """Whether the endpoint can answer now (see each policy's ``ready``)."""
        route = table.get(endpoint)
        if route is None or route.policy is None:
            return False
        path = (endpoint,)
        return route.policy.ready(lambda arm: self._available(table, route, arm, path))


class _Stacker:
    """The stacker deployment of an ensemble, called like a member and recorded as arm STACKER_ARM."""

    def __init__(self, router: Router, route: Route, deployment_id: str, deadline: Deadline) -> None:
        self._router = router
        self._route = route
        self._deployment_id = deployment_id
        self._deadline = deadline

    @property
    def input_schema(self) -> pa.Schema:
        return self._router._describe_deployment(self._route, self._deployment_id, STACKER_ARM).input_schema

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        started = time.perf_counter()
        try:
            out, _ = self._router._call_deployment(self._route, self._deployment_id, STACKER_ARM, batch, self._deadline)
        except BaseException:
            self._router.metrics.record(self._route.endpoint, STACKER_ARM, _ms_since(started), None, failed=True)
            raise
        self._router.metrics.record(self._route.endpoint, STACKER_ARM, _ms_since(started), out, failed=False)
        return out


def describe_hosted(hosted: Hosted) -> ModelDescription:
    """A deployment on this agent, described: its version as the data plane reports it, its digest."""
    model = hosted.model
    return ModelDescription(
        model.input_schema, model.output_schema, hosted.version, model.platform,
        hosted.engine, hosted.spec.model, hosted.spec.deployment_id, digest=hosted.spec.version,
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3
