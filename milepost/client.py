"""The Python client: the registry and endpoints on the coordinator, scoring on agents.

Every call takes the coordinator's word for where things are (scoring, its word as last
heard: milepost.replicas), raises a
milepost.core.errors.MilepostError subclass carrying the server's status and
message, and honours a deadline (``timeout`` seconds).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa

from milepost.core import auth, model_upload, tensor_codec
from milepost.core.batching import BatchingSettings
from milepost.core.errors import DataLoss, FailedPrecondition, InvalidArgument, MilepostError, NotFound, Unimplemented
from milepost.core.model_refs import parse_version, split_model_ref
from milepost.core.routing import spec
from milepost.core.settings import get_settings
from milepost.core.tls import Tls, open_channel
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.replicas import ReplicaBook
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, pipelines_pb2, routing_pb2, types_pb2

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
# Scoring is idempotent: gRPC itself retries a call an agent refused as UNAVAILABLE (a reset
# connection, a GOAWAY while it drains) once, before infer passes to the next replica.
_AGENT_CHANNEL_OPTIONS = [*_CHANNEL_OPTIONS, ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps({
    "methodConfig": [{"name": [{"service": "inference.GRPCInferenceService"}], "retryPolicy": {
        "maxAttempts": 2, "initialBackoff": "0.02s", "maxBackoff": "0.1s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]}))]


def embedded_admin_token(home: Path) -> str:
    """The admin token `milepost up` (HOME/admin.token) or `milepost coordinator`
    (HOME/coordinator/admin.token) wrote, if this user can read one; else empty."""
    for path in (home / "admin.token", home / "coordinator" / "admin.token"):
        try:
            return path.read_text().strip()
        except OSError:
            continue
    return ""


def _reporting(requests: Iterator[pb.PushModelRequest], total: int,
               progress: Callable[[int, int], None]) -> Iterator[pb.PushModelRequest]:
    sent = 0
    for request in requests:
        yield request
        sent += len(request.data)
        progress(sent, total)


class Client:
    def __init__(
        self, coordinator: str | None = None, *, timeout: float | None = None, token: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        """``coordinator`` and ``timeout`` (seconds per call) default to the settings
        ``coordinator`` and ``client_timeout_s`` ($MILEPOST_COORDINATOR, $MILEPOST_CLIENT_TIMEOUT_S).
        ``token`` (the bearer token every call carries) defaults to $MILEPOST_TOKEN, then to the
        admin.token the embedded default (`milepost up`) wrote in its data directory. ``tls``
        (verify the servers against a CA, present a client certificate) defaults to the
        tls_cert, tls_key and tls_ca settings."""
        settings = get_settings()
        self.coordinator = coordinator or settings.coordinator
        self.timeout = timeout or settings.client_timeout_s
        self.token = token or settings.token or embedded_admin_token(settings.home)
        self.tls = tls or Tls.from_paths(settings.tls_cert, settings.tls_key, settings.tls_ca)
        coordinator = self.coordinator
        self._channel = auth.with_token(open_channel(coordinator, self.tls, _CHANNEL_OPTIONS), self.token)
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self._agent_channels: dict[str, grpc.Channel] = {}
        self._replicas = ReplicaBook(self.status, settings.endpoint_cache_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()
        for channel in self._agent_channels.values():
            channel.close()
        self._agent_channels.clear()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise MilepostError.from_status(err) from err

    # ---- identities ----
    def create_token(self, name: str, role: str, ttl_s: float = 0.0) -> pb.CreateTokenResponse:
        """A new bearer token (shown only in this answer) for ``name`` with ``role``; ttl_s 0: never expires."""
        return self._call("CreateToken", pb.CreateTokenRequest(name=name, role=role, ttl_s=ttl_s))

    def audit(self, after_seq: int = 0) -> Iterator[pb.AuditEntry]:
        """Every audit entry after ``after_seq``, oldest first, a page per call (role approver)."""
        while True:
            page = self._call("ListAudit", pb.ListAuditRequest(after_seq=after_seq)).entries
            yield from page
            if not page:
                return
            after_seq = page[-1].seq

    def verify_audit(self, expect_head: str = "") -> pb.VerifyAuditResponse:
        """Check the audit chain; ``expect_head``: a "SEQ:SHA256" an earlier check printed."""
        return self._call("VerifyAudit", pb.VerifyAuditRequest(expect_head=expect_head))

    def list_tokens(self) -> list[pb.TokenInfo]:
        return list(self._call("ListTokens", pb.ListTokensRequest()).tokens)

    def revoke_token(self, token: str) -> pb.TokenInfo:
        """Revoke by token id or name; calls with it are refused from now on."""
        return self._call("RevokeToken", pb.RevokeTokenRequest(token=token))

    # ---- registry ----
    def push_model(self, path: str | Path, name: str, *,
                   progress: Callable[[int, int], None] | None = None) -> types_pb2.ModelVersion:
        """Register a model version from a bundle directory, an XGBoost JSON, a LightGBM text, an
        ONNX model or a saved Spark ML model directory.

        Framework files are compiled into a bundle here, by the scoring core, so the
        coordinator only ever stores verified bundles; an ONNX graph with operators the core
        cannot express becomes an onnx-engine bundle holding the graph as it is. The answer
        carries the version's ``number`` (1, 2, 3... per name) and ``digest``; pushing content
        the name already has returns that version again. ``progress(sent, total)`` is called
        as the archive's bytes go out.
        """
        from scoring_core import bundle

        path = Path(path)
        if (path / bundle.MANIFEST).is_file():
            archive = bundle.pack(path)
        elif path.exists():
            archive = _compile_file(path)
        else:
            raise NotFound(f"no such file or directory: {path}")
        requests = model_upload.push_requests(name, archive)
        if progress is not None:
            requests = _reporting(requests, len(archive), progress)
        return self._call("PushModel", requests)

    def fetch_model(self, name: str, version: str, dest: str | Path) -> str:
        """Download a model version (newest when version is empty; a number, an alias, a digest
        or a prefix of one, see milepost.core.model_refs) into ``dest``, unpacked and verified
        against its content hash; returns the content hash."""
        from scoring_core import bundle

        try:
            chunks = [c.data for c in self._stub.FetchModel(
                pb.FetchModelRequest(name=name, version=version), timeout=self.timeout)]
        except grpc.RpcError as err:
            raise MilepostError.from_status(err) from err
        got = bundle.unpack(b"".join(chunks), Path(dest))
        asked = parse_version(split_model_ref(name, version)[1]).digest
        if len(asked) == 64 and got != asked:
            raise DataLoss(f"model {name}:{version} arrived with content hash {got}")
        return got

    def list_models(self, name: str = "") -> list[types_pb2.ModelVersion]:
        """Every version (of ``name``, when given), by name and number, with their aliases."""
        return list(self._call("ListModels", pb.ListModelsRequest(name=name)).models)

    def set_alias(self, name: str, alias: str, version: str) -> types_pb2.ModelVersion:
        """Point ``name@alias`` at a version (a number, another alias, a digest or a prefix),
        moving it if it named another; the version it names now. ``NAME@ALIAS`` then works
        wherever a version goes (deploy, arms, fetch, pipelines)."""
        if not version:
            raise InvalidArgument("set_alias needs the version the alias names; remove_alias removes one")
        return self._call("SetAlias", pb.SetAliasRequest(name=name, alias=alias, version=version))

    def remove_alias(self, name: str, alias: str) -> types_pb2.ModelVersion:
        """Remove ``name@alias``; the version it named."""
        return self._call("SetAlias", pb.SetAliasRequest(name=name, alias=alias))

    def delete_model(self, model: str, version: str = "") -> types_pb2.ModelVersion:
        """Delete one version, named explicitly (``churn:3``, or name and version): its record,
        aliases and stored bundle; FailedPrecondition naming the endpoints while one serves it."""
        return self._call("DeleteModel", pb.DeleteModelRequest(name=model, version=version))

    # ---- review (coordinator.governance) ----
    def model_details(self, model: str, version: str = "") -> pb.ModelDetails:
        """One version whole: its record and stage, validations, approvals, where it runs, its audit entries."""
        return self._call("GetModel", pb.GetModelRequest(name=model, version=version))

    def record_validation(self, model: str, version: str, passed: bool, report: dict[str, Any]) -> types_pb2.ModelVersion:
        """Attach a validation report (what ``milepost.validation.validate`` returns) to a version."""
        return self._call("RecordValidation", pb.RecordValidationRequest(
            name=model, version=version, passed=passed, report_json=json.dumps(report, sort_keys=True)))

    def approve_model(self, model: str, version: str = "", *, note: str) -> types_pb2.ModelVersion:
        """Approve a version for production endpoints (role approver; not the identity that pushed it)."""
        return self._call("ApproveModel", pb.ApproveModelRequest(name=model, version=version, note=note))

    def retire_model(self, model: str, version: str = "", *, note: str) -> types_pb2.ModelVersion:
        """Take a version out of review: no new deployments anywhere (where it serves, it goes on serving)."""
        return self._call("RetireModel", pb.RetireModelRequest(name=model, version=version, note=note))

    def set_endpoint_approval(self, endpoint: str, required: bool) -> types_pb2.Endpoint:
        """Mark an endpoint production (approved versions only), or lift that (role approver)."""
        return self._call("SetEndpointApproval", pb.SetEndpointApprovalRequest(endpoint=endpoint, require_approval=required))

    # ---- endpoints ----
    def deploy(
        self, endpoint: str, model: str, version: str = "", *, replicas: int = 1,
        max_batch_size: int = 0, max_delay_ms: float = 0.0, max_queue_rows: int = 0,
        cpu: float = 0.0, memory_bytes: int = 0, gpus: int = 0, selector: dict[str, str] | None = None,
        engine: str = "", require_approval: bool = False, gpu_memory_bytes: int = 0, device: str = "",
        wait: bool = True,
    ) -> types_pb2.Endpoint:
        """Serve a model version under an endpoint: ``version`` a number, an alias, a digest or a
        prefix of one (the newest when empty), or the whole reference in ``model`` (``churn@champion``).

        Redeploying an endpoint switches it to the new version once that is loaded. The call
        answers once the new version is loaded and serving; with ``wait=False``, once it is
        placed (its deployments PENDING), the loading and the switch going on after.
        Batching settings of 0 take the agent's defaults. Replicas go to distinct live
        agents that run the engine (by default the one the model's flavor needs), carry
        every ``selector`` label and have ``cpu``, ``memory_bytes`` and ``gpus`` free;
        ``gpu_memory_bytes``: each of a replica's GPUs must have that much unreserved (then
        GPUs are shared by replicas that fit). ``device``: "cpu", "gpu" (at least one GPU) or
        "auto" (a GPU only when ``max_batch_size`` reaches the coordinator's
        gpu_crossover_rows setting); empty: as ``gpus`` says.
        ``require_approval`` marks the endpoint production: from this deploy on, it takes
        approved versions only (``approve_model``).
        """
        batching = BatchingSettings.from_ms(max_batch_size, max_delay_ms, max_queue_rows).to_proto()
        request = pb.DeployRequest(
            endpoint=endpoint, model=model, version=version, replicas=replicas, batching=batching,
            resources=types_pb2.ResourceRequest(
                cpu=cpu, memory_bytes=memory_bytes, gpus=gpus, gpu_memory_bytes=gpu_memory_bytes, device=device),
            selector=selector or {}, engine=engine, require_approval=require_approval, no_wait=not wait,
        )
        return self._call("Deploy", request)

    def set_policy(
        self, endpoint: str, policy: routing_pb2.RoutingPolicy, arms: list[pb.ArmSpec], *,
        stacker: pb.ArmSpec | None = None, replicas: int = 1,
    ) -> types_pb2.Endpoint:
        """Route an endpoint by a policy over arms; arms' models are deployed as needed.

        Arms that keep a model version already serving on the endpoint keep its
        deployment (no reload). See ``milepost.v1.RoutingPolicy`` for the kinds.
        """
        request = pb.SetPolicyRequest(endpoint=endpoint, policy=policy, arms=arms, replicas=replicas)
        if stacker is not None:
            request.stacker.CopyFrom(stacker)
        return self._call("SetPolicy", request)

    def split(self, endpoint: str, arms: dict[str, tuple[str, str, float]], *, key_parameter: str = "") -> types_pb2.Endpoint:
        """A/B split: arms maps a name to (model, version, weight); sticky by the key parameter."""
        specs = [pb.ArmSpec(name=n, model=m, version=v, weight=w) for n, (m, v, w) in arms.items()]
        return self.set_policy(endpoint, routing_pb2.RoutingPolicy(kind="split", key_parameter=key_parameter), specs)

    def canary(
        self, endpoint: str, model: str, version: str = "", *, steps: tuple[float, ...] = spec.DEFAULT_CANARY_STEPS,
        window_s: float = spec.DEFAULT_CANARY_WINDOW_S, max_error_rate: float = spec.DEFAULT_MAX_ERROR_RATE,
        max_p99_latency_ms: float = spec.DEFAULT_MAX_P99_LATENCY_MS, max_divergence: float = spec.DEFAULT_MAX_DIVERGENCE,
        min_requests: int = spec.DEFAULT_MIN_REQUESTS, max_drift: dict[str, float] | None = None,
        max_impact_ratio_drop: float = 0.0,
    ) -> types_pb2.Endpoint:
        """Ramp a candidate against the endpoint's current model; promoted or rolled back by the gates
        (defaults: milepost.core.routing.spec, the same as the CLI's and a pipeline deploy stage's).
        ``max_drift``: statistic -> threshold on the candidate's prediction drift; ``max_impact_ratio_drop``:
        how far its lowest impact ratio may fall below the baseline's (coordinator.health; 0: off)."""
        baseline = self._primary(endpoint)
        policy = routing_pb2.RoutingPolicy(
            kind="canary", steps=steps, window_s=window_s,
            gates=routing_pb2.CanaryGates(
                max_error_rate=max_error_rate, max_p99_latency_ms=max_p99_latency_ms,
                max_divergence=max_divergence, min_requests=min_requests, max_drift=max_drift or {},
                max_impact_ratio_drop=max_impact_ratio_drop,
            ),
        )
        return self.set_policy(endpoint, policy, [baseline, pb.ArmSpec(name="candidate", model=model, version=version)])

    def shadow(self, endpoint: str, model: str, version: str = "", *, fraction: float = 0.1) -> types_pb2.Endpoint:
        """Mirror a fraction of traffic to a candidate whose answers are compared and discarded."""
        baseline = self._primary(endpoint)
        policy = routing_pb2.RoutingPolicy(kind="shadow", shadow_fraction=fraction)
        return self.set_policy(endpoint, policy, [baseline, pb.ArmSpec(name="shadow", model=model, version=version)])

    def ensemble(
        self, endpoint: str, members: dict[str, tuple[str, str, float]], *, combiner: str = "mean",
        stacker: tuple[str, str] | None = None, on_member_failure: str = "fail", member_timeout_s: float = 0.0,
    ) -> types_pb2.Endpoint:
        """Every member scores each request; the combiner (mean, weighted, vote, stacking) merges them."""
        specs = [pb.ArmSpec(name=n, model=m, version=v, weight=w) for n, (m, v, w) in members.items()]
        policy = routing_pb2.RoutingPolicy(
            kind="ensemble", combiner=combiner, on_member_failure=on_member_failure, member_timeout_s=member_timeout_s,
        )
        stack = pb.ArmSpec(name="stacker", model=stacker[0], version=stacker[1]) if stacker else None
        return self.set_policy(endpoint, policy, specs, stacker=stack)

    def bandit(
        self, endpoint: str, arms: dict[str, tuple[str, str]], *, algorithm: str = "thompson", epsilon: float = 0.1,
    ) -> types_pb2.Endpoint:
        """Multi-armed bandit over arms, learning from `feedback`."""
        specs = [pb.ArmSpec(name=n, model=m, version=v) for n, (m, v) in arms.items()]
        policy = routing_pb2.RoutingPolicy(kind="bandit", bandit=algorithm, epsilon=epsilon)
        return self.set_policy(endpoint, policy, specs)

    def _primary(self, endpoint: str) -> pb.ArmSpec:
        current = next((e for e in self.endpoints() if e.name == endpoint), None)
        if current is None:
            raise NotFound(f"endpoint {endpoint!r} does not exist; deploy a baseline first")
        if current.policy != "single":
            raise FailedPrecondition(
                f"endpoint {endpoint!r} is a {current.policy}; promote or roll back before starting another"
            )
        arm = current.routing.arms[0]
        d = next(d for d in current.deployments if d.deployment_id == arm.deployment_id)
        return pb.ArmSpec(name="baseline", model=d.model, version=d.version)

    def promote(self, endpoint: str, arm: str = "") -> types_pb2.Endpoint:
        return self._call("Promote", pb.PromoteRequest(endpoint=endpoint, arm=arm))

    def rollback(self, endpoint: str) -> types_pb2.Endpoint:
        return self._call("Rollback", pb.RollbackRequest(endpoint=endpoint))

    def report(self, endpoint: str) -> pb.ReportResponse:
        return self._call("Report", pb.ReportRequest(endpoint=endpoint))

    def feedback(self, endpoint: str, key: str, value: float | Sequence[float], *, arm: str = "") -> str:
        """Record the outcome of the request made with ``key`` (of a request of n rows: its n
        rows' outcomes, in row order); returns the arm credited."""
        values = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
        if not values:
            raise InvalidArgument("feedback needs an outcome")
        request = pb.FeedbackRequest(endpoint=endpoint, key=key, value=values[0], arm=arm,
                                     values=values if len(values) > 1 else [])
        return self._call("Feedback", request).arm

    def events(self, endpoint: str = "", limit: int = 100) -> list[types_pb2.Event]:
        return list(self._call("ListEvents", pb.ListEventsRequest(endpoint=endpoint, limit=limit)).events)

    # ---- ML health (coordinator.health) ----
    def health(self, endpoint: str, windows: int = 1) -> pb.GetHealthResponse:
        """Drift of each deployment's newest ``windows`` windows against its training baseline,
        and realised performance per arm from the outcomes fed back."""
        return self._call("GetHealth", pb.GetHealthRequest(endpoint=endpoint, windows=windows))

    def fairness(self, endpoint: str) -> pb.GetFairnessResponse:
        """Selection rate, impact ratio and TPR/FPR per group of the endpoint's group attributes,
        over each group's newest ``fairness_window`` rows (``window``)."""
        return self._call("GetFairness", pb.GetFairnessRequest(endpoint=endpoint))

    def set_health_config(
        self, endpoint: str, *, thresholds: dict[str, float] | None = None, group_attributes: list[str] | None = None,
        favourable: str | None = None, webhook_url: str | None = None, performance_window: int | None = None,
        fallback_arm: str | None = None, fairness_window: int | None = None,
    ) -> pb.HealthConfig:
        """Change an endpoint's health settings; what is not given keeps its value."""
        config = self.health(endpoint).config
        config.thresholds.update(thresholds or {})
        if group_attributes is not None:
            del config.group_attributes[:]
            config.group_attributes.extend(group_attributes)
        if favourable is not None:
            config.favourable = favourable
        if webhook_url is not None:
            config.webhook_url = webhook_url
        if performance_window is not None:
            config.performance_window = performance_window
        if fallback_arm is not None:
            config.fallback_arm = fallback_arm
        if fairness_window is not None:
            config.fairness_window = fairness_window
        return self._call("SetHealthConfig", pb.SetHealthConfigRequest(config=config))

    # ---- pipelines ----
    def submit_pipeline(self, spec: pipelines_pb2.PipelineSpec | str | Path) -> pipelines_pb2.PipelineRun:
        """Start a pipeline run from a PipelineSpec or a YAML/JSON spec file."""
        if not isinstance(spec, pipelines_pb2.PipelineSpec):
            from milepost.pipeline_spec import load_spec

            spec = load_spec(Path(spec))
        return self._call("SubmitPipeline", spec)

    def runs(self, limit: int = 50) -> list[pipelines_pb2.PipelineRun]:
        return list(self._call("ListRuns", pb.ListRunsRequest(limit=limit)).runs)

    def run(self, run_id: str) -> pipelines_pb2.PipelineRun:
        return self._call("GetRun", pb.GetRunRequest(run_id=run_id))

    def watch_run(self, run_id: str, timeout: float | None = None) -> Iterator[pipelines_pb2.PipelineRun]:
        """Snapshots of a run as it changes, until it finishes."""
        try:
            yield from self._stub.WatchRun(pb.GetRunRequest(run_id=run_id), timeout=timeout)
        except grpc.RpcError as err:
            raise MilepostError.from_status(err) from err

    def cancel_run(self, run_id: str) -> pipelines_pb2.PipelineRun:
        return self._call("CancelRun", pb.GetRunRequest(run_id=run_id))

    def undeploy(self, endpoint: str) -> None:
        self._call("Undeploy", pb.UndeployRequest(endpoint=endpoint))

    def set_decision_log(self, endpoint: str, sample_rate: float) -> pb.SetDecisionLogResponse:
        """Have agents log this share of the endpoint's requests (0: none); read them with milepost.decisions."""
        return self._call("SetDecisionLog", pb.SetDecisionLogRequest(endpoint=endpoint, sample_rate=sample_rate))

    def endpoints(self) -> list[types_pb2.Endpoint]:
        return list(self._call("ListEndpoints", pb.ListEndpointsRequest()).endpoints)

    def status(self) -> pb.GetStatusResponse:
        return self._call("GetStatus", pb.GetStatusRequest())

    # ---- scoring ----
    def agent_for(self, endpoint: str) -> str:
        """The address of a live agent that serves the endpoint (the next in turn)."""
        return self._replicas.candidates(endpoint)[0]

    def infer(
        self, endpoint: str, data: Any, *, agent: str | None = None, timeout: float | None = None,
        key: str = "", parameters: dict[str, str] | None = None,
    ) -> pa.Table:
        """Score rows on the endpoint over the Open Inference Protocol; returns a table of outputs.

        ``data`` is a 2-D numpy array (sent as one [n, k] tensor), or a pyarrow
        Table / RecordBatch or pandas DataFrame (sent as one 1-D tensor per column).
        The call goes to one of the agents that serve the endpoint (milepost.replicas: known
        without asking the coordinator each time, and while it is down); one that answers
        UNAVAILABLE, or NOT_FOUND (it no longer serves the endpoint), is passed over for the next
        within the same deadline: scoring is idempotent. ``agent``: that address only.
        """
        request = oip.ModelInferRequest(model_name=endpoint)
        if key:
            request.parameters["milepost-key"].string_param = key
        for name, value in (parameters or {}).items():
            request.parameters[name].string_param = value
        tensor_codec.encode_inputs(_as_batch(data), request)
        deadline = time.monotonic() + (timeout or self.timeout)
        tried: set[str] = set()
        error: grpc.RpcError | None = None
        for fresh in (False, True):  # the second round asks the coordinator anew, for replicas not yet tried
            for address in [agent] if agent else self._replicas.candidates(endpoint, fresh=fresh):
                if address in tried:
                    continue
                tried.add(address)
                stub = oip_grpc.GRPCInferenceServiceStub(self._agent_channel(address))
                try:
                    response = stub.ModelInfer(request, timeout=max(0.001, deadline - time.monotonic()))
                except grpc.RpcError as err:
                    if agent or err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                        raise MilepostError.from_status(err) from err
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        self._replicas.failed(address)
                    error = err
                    continue
                return pa.Table.from_batches([tensor_codec.decode_outputs(response)])
            if agent:
                break
        assert error is not None
        raise MilepostError.from_status(error, f"every agent serving {endpoint!r} failed ({len(tried)} tried)") from error

    def _agent_channel(self, address: str) -> grpc.Channel:
        channel = self._agent_channels.get(address)
        if channel is None:
            channel = auth.with_token(open_channel(address, self.tls, _AGENT_CHANNEL_OPTIONS), self.token)
            self._agent_channels[address] = channel
        return channel


def _as_batch(data: Any) -> pa.RecordBatch:
    """A 2-D array becomes one [n, k] tensor named 'input'; a table, one tensor per column."""
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise InvalidArgument(f"input array must be 2-D (rows, features), got shape {data.shape}")
        values = pa.array(np.ascontiguousarray(data).reshape(-1))
        return pa.record_batch([pa.FixedSizeListArray.from_arrays(values, data.shape[1])], names=["input"])
    if isinstance(data, pa.Table):
        return data.combine_chunks().to_batches()[0] if data.num_rows else pa.RecordBatch.from_pylist([], schema=data.schema)
    if isinstance(data, pa.RecordBatch):
        return data
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return pa.RecordBatch.from_pandas(data, preserve_index=False)
    raise InvalidArgument(f"cannot score data of type {type(data).__name__}; pass a 2-D numpy array or a table")


def _compile_file(path: Path) -> bytes:
    """The bundle archive of a model file or a model directory that is not a bundle (a saved
    Spark ML model): compiled by the scoring core (a native bundle), or, for an ONNX graph the
    core cannot express, the graph itself as an onnx-engine bundle."""
    import scoring_core
    from scoring_core import bundle
    from scoring_core.convert import converter_for

    suffix = path.suffix.lower()
    known = converter_for(path) is not None if path.is_dir() else suffix in (".json", ".txt", ".model", ".onnx")
    if not known:
        raise InvalidArgument(
            f"{path}: expected a bundle directory (with {bundle.MANIFEST}), a saved Spark ML model directory, "
            "an XGBoost .json model, a LightGBM .txt model or an .onnx model"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            scoring_core.compile(path).save(Path(tmp) / "bundle")
        except Unimplemented:
            if suffix != ".onnx":
                raise
            from engines.onnx import save_bundle

            save_bundle(path, Path(tmp) / "bundle")
        return bundle.pack(Path(tmp) / "bundle")


__all__ = ["Client"]
