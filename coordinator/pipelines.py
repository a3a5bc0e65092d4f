"""Pipeline runs: validate a DAG of stages, then drive it, stage by stage, on agents.

A run is persisted before anything starts, and every stage change is written
as it happens, so `milepost run ID` shows live progress and a coordinator
restart keeps the record (stages it interrupted are marked so, with the reason).
Stages whose dependencies succeeded are placed like deployments (engine,
resources, labels; ``resources.device`` resolved by the deployments' rule,
``stage_requirements``) and run with AgentService.RunStage; deploy stages run here,
through the Endpoints manager. A failed stage fails its run and skips every
stage downstream of it, saying which upstream failed and why.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from coordinator import placement
from coordinator.agent_client import AgentClients
from coordinator.endpoints import Endpoints, Placement, policy_of
from coordinator.reconciler import Reconciler
from coordinator.store import EndpointRecord, RunRecord, Store
from milepost.core import bounded_json
from milepost.core.errors import FailedPrecondition, InvalidArgument, MilepostError, NotFound, ResourceExhausted, shown
from milepost.core.model_refs import split_model_ref
from milepost.core.names import check_name
from milepost.core.requirements import Requirements, stage_holder
from milepost.core.routing import spec as routing_spec
from milepost.core.routing.policy import Arm
from milepost.core.settings import get_settings
from milepost.v1 import agent_pb2, pipelines_pb2, routing_pb2

log = logging.getLogger("milepost.coordinator")
KINDS = ("training", "batch_scoring", "deploy", "custom")
FINISHED = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\.([A-Za-z0-9_]+)\}")


def parse_params(stage: pipelines_pb2.StageSpec) -> dict[str, Any]:
    """A stage's params: a JSON object no deeper than the setting max_pipeline_spec_depth,
    its numbers finite."""
    params = bounded_json.loads(
        stage.params_json or "{}", max_depth=get_settings().max_pipeline_spec_depth,
        what=f"stage {shown(stage.name)}: params", setting="max_pipeline_spec_depth",
    )
    if not isinstance(params, dict):
        raise InvalidArgument(f"stage {shown(stage.name)}: params must be a JSON object")
    return params


def validate(spec: pipelines_pb2.PipelineSpec) -> list[str]:
    """Check the spec's size and the DAG; returns the stage names in an order that respects
    dependencies."""
    limit = get_settings().max_pipeline_spec_bytes
    if spec.ByteSize() > limit:
        # Runs keep their spec, and ListRuns sends many: a huge one would break it for everyone.
        raise ResourceExhausted(
            f"pipeline spec is {spec.ByteSize()} bytes, over the limit of {limit} (max_pipeline_spec_bytes)"
        )
    if not spec.name:
        raise InvalidArgument("pipeline name is required")
    check_name("pipeline", spec.name)
    names = [s.name for s in spec.stages]
    if not names:
        raise InvalidArgument(f"pipeline {spec.name!r} has no stages")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"pipeline {spec.name!r}: stage names must be unique, got {shown(names)}")
    stages = {s.name: s for s in spec.stages}
    for s in spec.stages:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", s.name):
            raise InvalidArgument(f"stage name {shown(s.name)} is invalid: 1-64 letters, digits, '_', '.', '-'")
        if s.kind not in KINDS:
            raise InvalidArgument(f"stage {s.name!r}: kind {shown(s.kind)} is unknown; use one of {', '.join(KINDS)}")
        if s.kind != "deploy" and not s.engine:
            raise InvalidArgument(f"stage {s.name!r}: engine is required (native, spark, ray, torch, python)")
        for dep in s.depends_on:
            if dep not in stages:
                raise InvalidArgument(f"stage {s.name!r} depends on unknown stage {shown(dep)}")
        for ref_stage, _ in REFERENCE.findall(s.params_json):
            if ref_stage not in _ancestors(s.name, stages):
                raise InvalidArgument(
                    f"stage {s.name!r} uses an output of {shown(ref_stage)}, which is not one of its dependencies"
                )
        params = parse_params(s)
        if s.kind == "deploy":
            _check_deploy_params(s.name, params)
        else:
            stage_requirements(s, params)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise InvalidArgument(f"pipeline {spec.name!r} has a dependency cycle through stage {name!r}")
        visiting.add(name)
        for dep in stages[name].depends_on:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)
    return order


def stage_requirements(stage: pipelines_pb2.StageSpec, params: dict[str, Any]) -> Requirements:
    """What the stage needs from an agent, ``resources.device`` resolved as a deployment's is
    (Requirements.on_device): a batch scoring stage's batch is its ``batch_rows``, so "auto"
    gives it a GPU from gpu_crossover_rows rows a call; other stages have no batch ("auto":
    CPU). The agent then holds the GPUs this asks for and scores on the one it assigned."""
    settings = get_settings()
    rows = params.get("batch_rows", settings.batch_rows) if stage.kind == "batch_scoring" else 0
    try:
        return Requirements.from_proto(stage.resources, stage.selector, stage.engine).on_device(
            stage.resources.device, rows if isinstance(rows, int) else settings.batch_rows,
            settings.gpu_crossover_rows)
    except InvalidArgument as err:
        raise InvalidArgument(f"stage {stage.name!r}: {err.message}") from err


def _check_deploy_params(stage: str, params: dict[str, Any]) -> None:
    """What a deploy stage names, checked at submission where it is known then: the endpoint
    by the one name rule (so ``../x`` never gets as far as running), the policy."""
    endpoint = params.get("endpoint")
    if isinstance(endpoint, str) and endpoint and "${" not in endpoint:
        try:
            check_name("endpoint", endpoint)
        except InvalidArgument as err:
            raise InvalidArgument(f"stage {stage!r}: {err.message}") from err
    elif endpoint is not None and not isinstance(endpoint, str):
        raise InvalidArgument(f"stage {stage!r}: params.endpoint must be a string")
    policy = params.get("policy", "single")
    if policy not in ("single", "canary"):
        raise InvalidArgument(f"stage {stage!r}: a deploy stage's policy is single or canary, got {shown(policy)}")


def _ancestors(name: str, stages: dict[str, pipelines_pb2.StageSpec]) -> set[str]:
    seen: set[str] = set()
    todo = list(stages[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in stages:
            continue
        seen.add(dep)
        todo.extend(stages[dep].depends_on)
    return seen


def resolve(value: Any, outputs: dict[str, dict[str, str]]) -> Any:
    """Replace ${stage.output} in strings (recursively in lists and dicts)."""
    if isinstance(value, str):
        def lookup(match: re.Match) -> str:
            stage, key = match.groups()
            if key not in outputs.get(stage, {}):
                raise FailedPrecondition(f"stage {stage!r} has no output {key!r} (it has {sorted(outputs.get(stage, {}))})")
            return outputs[stage][key]
        return REFERENCE.sub(lookup, value)
    if isinstance(value, list):
        return [resolve(v, outputs) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, outputs) for k, v in value.items()}
    return value


class Pipelines:
    def __init__(
        self, store: Store, reconciler: Reconciler, agents: AgentClients, endpoints: Endpoints,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.reconciler = reconciler
        self.agents = agents
        self.endpoints = endpoints
        self.clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._calls: dict[tuple[str, str], Any] = {}  # in-flight RunStage calls, to cancel
        self._cancelled: set[str] = set()

    # ---- the API ----
    def submit(self, spec: pipelines_pb2.PipelineSpec) -> RunRecord:
        order = validate(spec)
        run_id = uuid.uuid4().hex[:12]
        self.store.add_run(run_id, spec.name, spec.SerializeToString(), order, self.clock())
        threading.Thread(target=self._drive, args=(run_id,), name=f"run-{run_id}", daemon=True).start()
        return self.get(run_id)

    def get(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"pipeline run {run_id!r} does not exist; see `milepost runs`")
        return run

    def cancel(self, run_id: str) -> RunRecord:
        run = self.get(run_id)
        if run.state in FINISHED:
            return run
        with self._lock:
            self._cancelled.add(run_id)
            for (rid, _), call in list(self._calls.items()):
                if rid == run_id:
                    call.cancel()
            self._changed.notify_all()
        return self.get(run_id)

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def recover(self) -> None:
        """After a restart: runs that were in flight are over; say so on each of them."""
        now = self.clock()
        for run in self.store.list_runs(limit=10_000, states=("PENDING", "RUNNING")):
            for stage in run.stages:
                if stage.state == "RUNNING":
                    self.store.update_stage(run.run_id, stage.name, state="FAILED", finished_at=now,
                                            message="interrupted: the coordinator restarted")
                elif stage.state == "PENDING":
                    self.store.update_stage(run.run_id, stage.name, state="SKIPPED",
                                            message="not started: the coordinator restarted")
            self.store.set_run_state(run.run_id, "FAILED", now)

    # ---- driving a run ----
    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _drive(self, run_id: str) -> None:
        run = self.get(run_id)
        spec = pipelines_pb2.PipelineSpec.FromString(run.spec)
        stages = {s.name: s for s in spec.stages}
        self.store.set_run_state(run_id, "RUNNING")
        self._notify()
        threads: dict[str, threading.Thread] = {}
        while True:
            run = self.get(run_id)
            by_name = {s.name: s for s in run.stages}
            cancelled = run_id in self._cancelled
            for name, s in stages.items():
                if by_name[name].state != "PENDING" or name in threads:
                    continue
                deps = [by_name[d] for d in s.depends_on]
                bad = next((d for d in deps if d.state in ("FAILED", "SKIPPED", "CANCELLED")), None)
                if cancelled:
                    self.store.update_stage(run_id, name, state="CANCELLED", message="run cancelled")
                elif bad is not None:
                    why = f"upstream stage {bad.name!r} {bad.state.lower()}" + (f": {bad.message}" if bad.message else "")
                    self.store.update_stage(run_id, name, state="SKIPPED", message=why)
                elif all(d.state == "SUCCEEDED" for d in deps):
                    outputs = {d.name: json.loads(d.outputs_json) for d in run.stages if d.state == "SUCCEEDED"}
                    t = threading.Thread(target=self._run_stage, args=(run_id, s, outputs), daemon=True)
                    threads[name] = t
                    t.start()
            run = self.get(run_id)
            if all(s.state in FINISHED for s in run.stages):
                break
            self.wait_for_change(1.0)
        final = [s.state for s in self.get(run_id).stages]
        state = "CANCELLED" if run_id in self._cancelled else "SUCCEEDED" if set(final) == {"SUCCEEDED"} else "FAILED"
        self.store.set_run_state(run_id, state, self.clock())
        with self._lock:
            self._cancelled.discard(run_id)
        self._notify()
        log.info("pipeline run %s %s", run_id, state.lower())

    def _run_stage(self, run_id: str, stage: pipelines_pb2.StageSpec, outputs: dict[str, dict[str, str]]) -> None:
        self.store.update_stage(run_id, stage.name, state="RUNNING", started_at=self.clock())
        self._notify()
        try:
            params = resolve(parse_params(stage), outputs)
            if stage.kind == "deploy":
                result = self._deploy(params)
            else:
                result = self._on_agent(run_id, stage, params)
        except MilepostError as err:
            cancelled = run_id in self._cancelled
            self.store.update_stage(
                run_id, stage.name, state="CANCELLED" if cancelled else "FAILED", finished_at=self.clock(),
                message="run cancelled" if cancelled else err.message,
            )
        except Exception as err:  # noqa: BLE001 - a stage's bug must fail the stage, not the driver
            log.exception("stage %s of run %s", stage.name, run_id)
            self.store.update_stage(run_id, stage.name, state="FAILED", finished_at=self.clock(),
                                    message=f"internal error: {type(err).__name__}; see the coordinator log")
        else:
            self.store.update_stage(run_id, stage.name, state="SUCCEEDED", finished_at=self.clock(),
                                    outputs_json=json.dumps(result, sort_keys=True))
        self._notify()

    def _on_agent(self, run_id: str, stage: pipelines_pb2.StageSpec, params: dict[str, Any]) -> dict[str, str]:
        if stage.kind == "batch_scoring" and isinstance(params.get("model"), str):
            name, version = split_model_ref(params["model"])
            if version and len(version) != 64:
                # The agent fetches by content hash (or the newest, for a bare name, which it
                # asks for itself): a number, an alias or a prefix is resolved here, once.
                record = self.endpoints.model(name, version)
                params = {**params, "model": f"{record.name}:{record.version}"}
        req = stage_requirements(stage, params)
        holder = stage_holder(run_id, stage.name)
        # While the stage runs, placement counts its CPU, memory and GPUs on its agent (agents report
        # only GPUs), so that a Deploy or another stage placed meanwhile does not take the same room.
        with self.reconciler.placing:
            (agent_id,) = placement.place(self.reconciler.candidates(), req, 1, strategy=self.reconciler.strategy)
            self.reconciler.stage_started(holder, agent_id, req)
        try:
            return self._run_on(agent_id, run_id, stage, req, params)
        finally:
            self.reconciler.stage_ended(holder)

    def _run_on(
        self, agent_id: str, run_id: str, stage: pipelines_pb2.StageSpec, req: Requirements, params: dict[str, Any],
    ) -> dict[str, str]:
        agent = self.store.get_agent(agent_id)
        assert agent is not None
        self.store.update_stage(run_id, stage.name, agent_id=agent_id)
        resolved = pipelines_pb2.StageSpec()
        resolved.CopyFrom(stage)
        resolved.resources.CopyFrom(req.to_proto())  # the GPUs the device resolved to; device itself cleared
        request = agent_pb2.RunStageRequest(run_id=run_id, stage=resolved, params_json=json.dumps(params))
        call = self.agents.run_stage(agent.address, request, timeout=get_settings().stage_timeout_s)
        with self._lock:
            if run_id in self._cancelled:
                call.cancel()
            self._calls[(run_id, stage.name)] = call
        try:
            for progress in call:
                self.store.update_stage(run_id, stage.name, rows=progress.rows, message=progress.message)
                self._notify()
                if progress.done:
                    return dict(progress.outputs)
        except grpc.RpcError as err:
            raise MilepostError.from_status(err, f"agent {agent_id}") from err
        finally:
            with self._lock:
                self._calls.pop((run_id, stage.name), None)
        raise MilepostError(f"agent {agent_id} ended stage {stage.name!r} without a result")

    def _deploy(self, params: dict[str, Any]) -> dict[str, str]:
        """Serve a model under an endpoint, composing with what the endpoint does now: a new
        endpoint simply serves it; a ``single`` one is redeployed (policy single) or starts a
        canary from its model (policy canary); any other policy is FailedPrecondition
        (routing_spec.single_arm), never replaced. A canary's unset gates, steps and window
        take the floor's defaults (routing_spec), the same as the CLI's."""
        endpoint, ref = params.get("endpoint"), params.get("model")
        if not endpoint or not ref:
            raise InvalidArgument("a deploy stage needs params.endpoint and params.model (NAME[:VERSION] or NAME@ALIAS)")
        endpoint = check_name("endpoint", endpoint)  # what a ${stage.output} resolved to, too
        name, version = split_model_ref(str(ref))
        policy = params.get("policy", "single")
        if policy not in ("single", "canary"):
            raise InvalidArgument(f"a deploy stage's policy is single or canary, got {shown(policy)}")
        current = self.store.get_endpoint(endpoint)
        baseline = None
        if current is not None and current.policy_blob:
            baseline = _baseline(current, routing_spec.single_arm(endpoint, policy_of(current), f"a {policy} deploy stage"))
        if policy == "canary" and baseline is not None:
            spec = _canary_policy(params)
            arms = [baseline, Arm("candidate", model=name, version=version)]
        else:
            # A canary with nothing serving yet has no baseline: the model simply goes live.
            spec, arms = routing_pb2.RoutingPolicy(kind="single"), [Arm("primary", model=name, version=version)]
        replicas = int(_number("replicas", params.get("replicas", 1)))
        result = self.endpoints.set_policy(endpoint, spec, arms, Placement(replicas=replicas), event="pipeline")
        return {"endpoint": endpoint, "policy": result.policy}


def _baseline(current: EndpointRecord, arm: routing_pb2.Arm) -> Arm:
    """The arm a canary of ``current`` starts from: what its single arm serves now."""
    if arm.endpoint:
        return Arm("baseline", endpoint=arm.endpoint)
    d = next(d for d in current.deployments if d.deployment_id == arm.deployment_id)
    return Arm("baseline", model=d.model, version=d.version)


def _canary_policy(params: dict[str, Any]) -> routing_pb2.RoutingPolicy:
    """A deploy stage's canary: what its params set, the rest left unset for routing_spec.check
    to fill with the one set of defaults."""
    spec = routing_pb2.RoutingPolicy(kind="canary")
    if "steps" in params:
        steps = params["steps"]
        if not isinstance(steps, list):
            raise InvalidArgument(f"a deploy stage's steps must be a list of percentages, got {shown(steps)}")
        spec.steps.extend(_number("steps", s, high=100) for s in steps)
    if "window_s" in params:
        spec.window_s = _number("window_s", params["window_s"])
    gates = spec.gates
    p99, divergence = routing_spec.DEFAULT_MAX_P99_LATENCY_MS, routing_spec.DEFAULT_MAX_DIVERGENCE
    gates.max_p99_latency_ms = _number("max_p99_latency_ms", params.get("max_p99_latency_ms", p99))
    gates.max_divergence = _number("max_divergence", params.get("max_divergence", divergence))
    if "max_error_rate" in params:
        gates.max_error_rate = _number("max_error_rate", params["max_error_rate"], high=1)
    if "min_requests" in params:
        gates.min_requests = int(_number("min_requests", params["min_requests"], low=1))
    return spec


def _number(key: str, value: Any, low: float = 0.0, high: float = 1e12) -> float:
    """A deploy stage's numeric parameter (a number, or the text of one from a ${stage.output}),
    finite and in [low, high]; otherwise InvalidArgument naming it."""
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except (ValueError, OverflowError):
        number = math.nan
    if not low <= number <= high:  # NaN fails this too
        raise InvalidArgument(f"a deploy stage's {key} must be a finite number in [{low:g}, {high:g}], got {shown(value)}")
    return number
