"""The data-plane core: ``serve(request) -> response`` over the one route table.

Front ends (the Open Inference Protocol gRPC servicer today; REST and
streaming later) translate their wire format into an ``InferenceRequest`` and
the ``InferenceResponse`` back, and nothing else: which model answers, the
deadline, the statistics and the errors are decided here, once.

Which model answers a name:

1. request parameter ``milepost-deployment``: exactly that deployment on this
   agent, no routing (other agents' remote members call with it); NOT_FOUND
   if this agent does not host it. Its decisions are logged under the endpoint the
   deployment was loaded for, as that endpoint's route samples them, unless the caller is
   this cluster's own (an agent or coordinator identity: ``internal_call``), whose
   routing agent logged the decision already;
2. otherwise the name's route (agent.routing.route_table): a pushed route, or
   the synthesised single route of a deployment loaded here.

A request reads the route table once; its inputs are decoded against the
schema that table says, and served by the same table.

Admission is by bytes in flight: the requests being served hold at most
``max_inflight_bytes`` (the setting of that name) of request bytes; one more
that would pass it gets RESOURCE_EXHAUSTED at once (a single request is always
admitted when nothing else is in flight), so a burst of large requests cannot
take the agent's memory; once it is over, the memory goes back to the system
(agent.memory).

The matrix lane (``serve_matrix``): the common request, one float32 matrix to a route
whose arms are models on this agent that score matrices, is served without Arrow: the
front end views the matrix in the request's bytes (tensor_codec.raw_matrix), the router
chooses the arm as ``serve`` does (Router.serve_matrix), and the scores go back from
numpy (tensor_codec.matrix_response). That halves a one-row request's time in the handler
(benchmarks/serving_peers.py); the answer, statistics, arm metrics, logged decisions and
errors are those of ``serve``, which takes every request the lane does not (a key, tracing,
explanations, ensembles, shadows, Arrow-only models). Drift is counted from the matrix as
from the batch (scoring_core.drift); a sampled decision is queued as the matrix and its
scores (DecisionLog.offer_matrix), its Arrow columns built by the log's writer.

On an event loop (milepost.core.inline: the gRPC and REST front ends try small requests
there first), a request is refused with WouldBlock before anything is counted when it is
larger than ``inline_max_bytes`` or its route could block (Router.serves_inline); the model's
batcher may refuse it too, before scoring. A refused request is served again from a worker and
counted once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import pyarrow as pa

from agent import explanations
from agent.decision_log import DecisionLog
from agent.deployments import DeploymentTable
from agent.registration import ScoredKeys
from agent.routing.members import DEPLOYMENT_PARAMETER
from agent.routing.route_table import Route
from agent.routing.router import MatrixServed, Router, describe_hosted
from agent.statistics import EndpointStatistics
from engines.batching import queue_wait_ns
from milepost.core import auth, deadlines, logs, memory, tracing
from milepost.core.deadlines import Deadline
from milepost.core.description import ModelDescription
from milepost.core.errors import MilepostError, NotFound, ResourceExhausted
from milepost.core.inline import WouldBlock, must_not_block, refuse_blocking
from milepost.core.model_refs import serves

ARM_PARAMETER = "milepost-arm"
Encoded = TypeVar("Encoded")


@dataclass(frozen=True)
class InferenceRequest:
    """One request as the core sees it; ``decode`` turns the front end's inputs into a batch
    of the given schema (raising InvalidArgument naming the input when they do not fit)."""

    name: str
    decode: Callable[[pa.Schema], pa.RecordBatch]
    version: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    deadline: Deadline = None
    size_bytes: int = 0  # the request's size on the wire, for admission
    request_id: str = ""  # the caller's id for it, on every log line written while it is served
    trace: object = None  # the caller's trace context (milepost.core.tracing.from_grpc), parent of its spans


@dataclass(frozen=True)
class InferenceResponse:
    batch: pa.RecordBatch
    version: str
    arms: tuple[str, ...]  # the endpoint's arm(s) that answered; empty for a direct deployment call
    deployments: tuple[str, ...]  # the deployments that scored


class DataPlane:
    def __init__(
        self, deployments: DeploymentTable, router: Router, *, max_inflight_bytes: int, inline_max_bytes: int = 16 << 10,
    ) -> None:
        self.deployments = deployments
        self.router = router
        self.inline_max_bytes = inline_max_bytes
        self.ready = True
        self._stats: dict[str, EndpointStatistics] = {}
        self._max_inflight_bytes = max_inflight_bytes
        self._inflight_bytes = 0
        # Requests under way and answered so far (heartbeats report load; a drain waits for quiet).
        self.inflight_requests = 0
        self.answered = 0
        self.answered_on_loop = 0  # of those, answered on a front end's event loop (milepost.core.inline)
        self.answered_by_matrix = 0  # of those, answered by the matrix lane (serve_matrix)
        self.last_request_at = 0.0  # time.monotonic() of the last request admitted
        self._admission = threading.Lock()
        self._after_burst = memory.AfterBurst(self._admission)
        self.decisions: DecisionLog | None = None  # sampled decisions of routed endpoints (agent.decision_log)
        self.scored_keys: ScoredKeys | None = None  # requests with a key, for the outcomes fed back (agent.registration)

    @property
    def inflight_bytes(self) -> int:
        return self._inflight_bytes

    def _admit(self, size: int) -> None:
        with self._admission:
            if self._inflight_bytes and self._inflight_bytes + size > self._max_inflight_bytes:
                raise ResourceExhausted(
                    f"this agent is serving {self._inflight_bytes} bytes of requests (limit {self._max_inflight_bytes}, "
                    "max_inflight_bytes); retry with backoff or on another replica"
                )
            self._inflight_bytes += size
            self.inflight_requests += 1
            self.last_request_at = now = time.monotonic()
            self._after_burst.admitted(size, now)

    def _release(self, size: int, *, answered: bool = True) -> None:
        with self._admission:
            self._inflight_bytes -= size
            self.inflight_requests -= 1
            self.answered += answered
            self._after_burst.released(self._inflight_bytes)

    def serve(self, request: InferenceRequest, encode: Callable[[InferenceResponse], Encoded]) -> Encoded:
        """Serve ``request`` and return ``encode(response)``: the front end's reply, timed here too;
        log lines written meanwhile carry its request id (milepost.core.logs)."""
        token = logs.request_id.set(request.request_id)
        waited = queue_wait_ns.set(0)
        try:
            if tracing.enabled():
                return self._traced(request, encode)
            return self._serve(request, encode)
        finally:
            queue_wait_ns.reset(waited)
            logs.request_id.reset(token)

    def _traced(self, request: InferenceRequest, encode: Callable[[InferenceResponse], Encoded]) -> Encoded:
        """``_serve`` inside the request's span (milepost.core.tracing), which the answer's arms,
        deployments, version and rows are added to. On an event loop it is refused first: an
        attempt refused there would leave a failed span behind."""
        if must_not_block():
            refuse_blocking("a traced request is served on a worker")
        with tracing.span("milepost.infer", request.trace) as span:
            span.set_attribute("milepost.endpoint", request.name)
            if request.request_id:
                span.set_attribute("milepost.request_id", request.request_id)

            def traced(response: InferenceResponse) -> Encoded:
                span.set_attribute("milepost.rows", response.batch.num_rows)
                span.set_attribute("milepost.model_version", response.version)
                span.set_attribute("milepost.deployment", ",".join(response.deployments))
                if response.arms:
                    span.set_attribute("milepost.arm", ",".join(response.arms))
                return encode(response)

            return self._serve(request, traced)

    def _serve(self, request: InferenceRequest, encode: Callable[[InferenceResponse], Encoded]) -> Encoded:
        """Serve ``request`` and return ``encode(response)``: the front end's reply, timed here too.

        Statistics count under the name served: the endpoint, or for a direct deployment
        call (another agent's remote member) the endpoint the deployment was loaded for."""
        started = time.perf_counter_ns()
        direct = request.parameters.get(DEPLOYMENT_PARAMETER)
        table = self.router.table
        hosted = self.deployments.get(direct) if direct else None
        if direct and hosted is None:
            raise NotFound(f"deployment {direct!r} is not hosted by this agent")
        if not direct and table.get(request.name) is None:
            raise NotFound(f"model {request.name!r} is not served by this agent")
        if must_not_block():
            if request.size_bytes > self.inline_max_bytes:
                refuse_blocking(f"a request of {request.size_bytes} bytes decodes on a worker")
            if hosted is None and not self.router.serves_inline(table, request.name):
                refuse_blocking(f"the route of {request.name!r} may call other agents or wait")
        stats = self.statistics(hosted.spec.endpoint if hosted is not None else request.name)
        self._admit(request.size_bytes)
        try:
            if hosted is not None:
                batch = request.decode(hosted.model.input_schema)
                decoded = time.perf_counter_ns()
                deadlines.check(request.deadline, f"scoring {request.name!r}")
                out = hosted.model.predict(batch, request.deadline)
                response = InferenceResponse(out, hosted.version, (), (hosted.spec.deployment_id,))
            else:
                batch = request.decode(self.router.input_schema(table, request.name))
                decoded = time.perf_counter_ns()
                deadlines.check(request.deadline, f"scoring {request.name!r}")
                served = self.router.serve(
                    table, request.name, batch, request.parameters, request.deadline, request.version
                )
                response = InferenceResponse(served.batch, served.version, served.arms, served.deployments)
            decided = response  # what the decision log keeps: the model's answer, not its explanation
            if explanations.requested(request.parameters):  # request parameter "explain" (agent.explanations)
                response = explanations.attach(self.deployments, response, batch)
            scored = time.perf_counter_ns()
            reply = encode(response)
        except WouldBlock:
            self._release(request.size_bytes, answered=False)
            raise
        except BaseException:
            self._release(request.size_bytes)
            stats.record_failure(time.perf_counter_ns() - started)
            raise
        self._release(request.size_bytes)
        if must_not_block():
            self.answered_on_loop += 1
        waited = queue_wait_ns.get()
        stats.record_success(batch.num_rows, decoded - started, scored - decoded - waited, time.perf_counter_ns() - scored,
                             waited, response.arms, response.version)
        if self.decisions is not None:  # queues references at most; never blocks or raises
            if hosted is None:
                self.decisions.offer(table.get(request.name), request, batch, decided)
            elif not internal_call():
                route = table.get(hosted.spec.endpoint)
                self.decisions.offer(route, request, batch, _as_arm_of(route, decided))
        if self.scored_keys is not None and response.arms:  # bounded, no I/O, never raises on a request without a key
            self.scored_keys.offer(table.get(request.name), request, batch, response)
        return reply

    def serve_matrix(
        self, name: str, X: np.ndarray, parameters: Mapping[str, str], encode: Callable[[MatrixServed], Encoded], *,
        size_bytes: int, deadline: Deadline = None, request_id: str = "", version: str = "",
    ) -> Encoded | None:
        """``serve`` for the common request, a float32 matrix ``X`` to ``name``'s route, without
        Arrow (the matrix lane: Router.serve_matrix); ``encode(answer)`` or None, before
        anything is counted, where ``serve`` must take the request (a deployment, version or
        explanation asked for, tracing on, a route the lane does not serve, or a request the
        event loop may not take). Same admission, statistics and errors as ``serve``."""
        if version or tracing.enabled() or (parameters and (DEPLOYMENT_PARAMETER in parameters
                                                            or explanations.requested(parameters))):
            return None
        table = self.router.table
        route = table.get(name)
        if route is None:
            return None
        on_loop = must_not_block()
        if on_loop and (size_bytes > self.inline_max_bytes or not self.router.serves_inline(table, name)):
            return None
        stats = self.statistics(name)
        started = time.perf_counter_ns()
        self._admit(size_bytes)
        token = logs.request_id.set(request_id) if request_id else None  # "" is what it holds otherwise
        try:
            if deadline is not None:
                deadlines.check(deadline, f"scoring {name!r}")
            served = self.router.serve_matrix(table, name, X, parameters)
            if served is None:
                self._release(size_bytes, answered=False)
                return None
            scored = time.perf_counter_ns()
            reply = encode(served)
        except BaseException:
            self._release(size_bytes)
            stats.record_failure(time.perf_counter_ns() - started)
            raise
        finally:
            if token is not None:
                logs.request_id.reset(token)
        self._release(size_bytes)
        self.answered_by_matrix += 1
        self.answered_on_loop += on_loop
        stats.record_success(X.shape[0], 0, scored - started, time.perf_counter_ns() - scored, arms=served.arms,
                             version=served.version)
        if self.decisions is not None:  # a coin toss and a queued reference at most
            self.decisions.offer_matrix(route, request_id, size_bytes, X, served)
        return reply

    def describe(self, name: str, version: str = "") -> ModelDescription:
        """A served name, or a deployment id hosted here (how remote members learn schemas). With
        ``version``, the model that serves that version: on an endpoint, the arm a request naming
        it is served by (Router.pinned), with the same NOT_FOUND or ambiguous-prefix errors."""
        table = self.router.table
        route = table.get(name)
        if route is not None and version:
            _, described = self.router.pinned(table, name, version)
            return replace(described, routing_policy=route.policy.kind) if route.pushed and route.policy else described
        if route is not None:
            return self.router.describe(table, name)
        hosted = self.deployments.get(name)
        if hosted is None:
            raise NotFound(f"model {name!r} is not served by this agent")
        described = describe_hosted(hosted)
        if version and not serves(version, described.version, described.digest):
            raise NotFound(f"version {version!r} of model {name!r} is not served here; serving {described.version}")
        return described

    def versions(self, name: str) -> list[str]:
        """The model versions ``name`` serves, the one it describes first: each arm's of an
        endpoint whose arms serve different versions (Router.arm_versions), so that every version
        a request may name is listed; a deployment's one."""
        first = self.describe(name).version
        table = self.router.table
        if table.get(name) is None:
            return [first]
        return list(dict.fromkeys([first, *self.router.arm_versions(table, name).values()]))

    def is_ready(self, name: str, version: str = "") -> bool:
        table = self.router.table
        if table.get(name) is not None and not version:
            return self.router.ready(table, name)
        try:
            self.describe(name, version)
        except MilepostError:
            return False
        return True

    def statistics(self, name: str) -> EndpointStatistics:
        """ModelStatistics-style counters of the requests made to a name (an endpoint or a deployment id)."""
        found = self._stats.get(name)
        if found is None:
            found = self._stats.setdefault(name, EndpointStatistics())
        return found

    def all_statistics(self) -> dict[str, EndpointStatistics]:
        """The counters of every name served now; those of names no longer served are dropped."""
        served = set(self.router.endpoints())
        for gone in [name for name in list(self._stats) if name not in served]:
            self._stats.pop(gone, None)
        return {name: s for name, s in list(self._stats.items()) if name in served}


def internal_call() -> bool:
    """Whether the request being served comes from this cluster itself (a remote member of
    another agent's route, calling with its identity), not from a client: its decision is the
    routing agent's to log. A client cannot pass for one without the cluster's own token."""
    identity = auth.current_identity()
    return identity is not None and identity.role in (auth.AGENT, auth.COORDINATOR)


def _as_arm_of(route: Route | None, response: InferenceResponse) -> InferenceResponse:
    """A direct deployment call's answer as its endpoint's decision: with the arm of ``route``
    that the deployment is (none when it is no arm of it)."""
    if route is None or route.policy is None:
        return response
    (deployment,) = response.deployments
    arms = tuple(arm.name for arm in route.policy.arms if arm.deployment_id == deployment)[:1]
    return replace(response, arms=arms)
