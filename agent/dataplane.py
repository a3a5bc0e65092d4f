"""The Open Inference Protocol (KServe v2) servicer, with Triton's config and statistics calls.

Thin by design: tensors are decoded into Arrow by milepost.core.tensor_codec, scored,
and encoded back. The model name clients use is an endpoint name; which model
answers is decided here, in this order:

1. request parameter ``milepost-deployment`` (string): exactly that deployment
   on this agent, no routing (other agents' remote members call with it);
   NOT_FOUND if this agent does not host it;
2. an endpoint with a route: the router applies its policy (agent.routing);
3. otherwise the deployment registered on this agent under the endpoint name.

Responses carry ``milepost-deployment`` (the deployment id(s) that scored,
comma-separated) and, for routed endpoints, ``milepost-arm`` (the endpoint's
arm that answered; an ensemble's members that answered, comma-separated).
Metadata calls also accept a deployment id hosted here as the model name, and
ModelConfig describes the Arrow schemas and version in its parameters, which
is how remote members learn them.
"""

from __future__ import annotations

import json
import time

import grpc

from agent.deployments import DeploymentTable, Hosted
from agent.routing.arm_metrics import ArmMetricsBook
from agent.routing.members import DEPLOYMENT_PARAMETER, schema_to_text
from agent.routing.router import Description, Router, describe_hosted
from agent.statistics import EndpointStatistics
from milepost import __version__
from milepost.core import tensor_codec
from milepost.core.errors import DeadlineExceeded, MilepostError, NotFound
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc

MATRIX_INPUT_NAME = "input"
EXTENSIONS = ["model_configuration", "statistics"]
ARM_PARAMETER = "milepost-arm"
_NO_DEADLINE_S = 1e7  # grpc reports a huge time_remaining() when the caller set no deadline


class InferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, table: DeploymentTable, router: Router | None = None, *, max_batch_rows: int = 1 << 20) -> None:
        self.table = table
        self.router = router if router is not None else Router(table, lambda: "", ArmMetricsBook())
        self.max_batch_rows = max_batch_rows
        self.ready = True

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        name = request.name
        if self.router.has_route(name) and not request.version:
            return pb.ModelReadyResponse(ready=self.router.ready(name))
        try:
            self._describe(name, request.version)
        except MilepostError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="milepost", version=__version__, extensions=EXTENSIONS)

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        d = self._describe(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[d.version],
            platform=d.platform,
            inputs=tensor_codec.tensor_metadata(d.input_schema, as_matrix_name=MATRIX_INPUT_NAME),
            outputs=tensor_codec.tensor_metadata(d.output_schema, as_matrix_name=None),
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        d = self._describe(request.name, request.version)
        inputs = tensor_codec.tensor_metadata(d.input_schema, as_matrix_name=MATRIX_INPUT_NAME)
        outputs = tensor_codec.tensor_metadata(d.output_schema, as_matrix_name=None)
        parameters = {
            "feature_names": json.dumps(d.input_schema.names),
            "model": d.model,
            "deployment_id": d.deployment_id,
            "version": d.version,
            "arrow_input_schema": schema_to_text(d.input_schema),
            "arrow_output_schema": schema_to_text(d.output_schema),
        }
        if self.router.has_route(request.name):
            parameters["routing_policy"] = self.router.policy_kind(request.name)
        config = pb.ModelConfig(
            name=request.name,
            platform=d.platform,
            backend=f"milepost-{d.engine}",
            max_batch_size=0,  # dims below include the batch dimension (-1)
            input=[pb.ModelInput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape) for t in inputs],
            output=[pb.ModelOutput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape) for t in outputs],
            parameters={k: pb.ModelParameter(string_value=v) for k, v in parameters.items()},
        )
        return pb.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext) -> pb.ModelStatisticsResponse:
        if request.name:
            if self.router.has_route(request.name):
                selected = [(request.name, "", self.router.statistics(request.name))]
            else:
                hosted = self._resolve(request.name, request.version)
                selected = [(request.name, hosted.model.version, hosted.stats)]
        else:
            routed = self.router.endpoints()
            selected = [(name, "", self.router.statistics(name)) for name in routed]
            for name in self.table.endpoints():
                if name not in routed:
                    hosted = self.table.route(name)
                    selected.append((name, hosted.model.version, hosted.stats))
        return pb.ModelStatisticsResponse(model_stats=[_statistics(*s) for s in selected])

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        deadline = _deadline(context)
        direct = request.parameters.get(DEPLOYMENT_PARAMETER)
        if direct is not None and direct.string_param:
            hosted = self.table.get(direct.string_param)
            if hosted is None:
                raise NotFound(f"deployment {direct.string_param!r} is not hosted by this agent")
            return self._infer_hosted(request, hosted, deadline)
        if self.router.has_route(request.model_name):
            return self._infer_routed(request, deadline)
        return self._infer_hosted(request, self._resolve(request.model_name, request.model_version), deadline)

    def _infer_hosted(self, request: pb.ModelInferRequest, hosted: Hosted, deadline: float | None) -> pb.ModelInferResponse:
        model = hosted.model
        started = time.perf_counter_ns()
        try:
            batch = tensor_codec.decode_inputs(request, model.input_schema, max_rows=self.max_batch_rows)
            decoded = time.perf_counter_ns()
            _check_deadline(deadline, request.model_name)
            result = model.predict(batch)
            scored = time.perf_counter_ns()
            response = pb.ModelInferResponse(
                model_name=request.model_name, model_version=model.version, id=request.id
            )
            tensor_codec.encode_outputs(result, response, requested=[o.name for o in request.outputs] or None)
            response.parameters[DEPLOYMENT_PARAMETER].string_param = hosted.spec.deployment_id
        except BaseException:
            hosted.stats.record_failure(time.perf_counter_ns() - started)
            raise
        hosted.stats.record_success(
            batch.num_rows, decoded - started, scored - decoded, time.perf_counter_ns() - scored
        )
        return response

    def _infer_routed(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        name = request.model_name
        stats: EndpointStatistics = self.router.statistics(name)
        started = time.perf_counter_ns()
        try:
            batch = tensor_codec.decode_inputs(request, self.router.input_schema(name), max_rows=self.max_batch_rows)
            decoded = time.perf_counter_ns()
            _check_deadline(deadline, name)
            served = self.router.infer(name, batch, _parameter_strings(request), deadline, request.model_version)
            scored = time.perf_counter_ns()
            response = pb.ModelInferResponse(model_name=name, model_version=served.version, id=request.id)
            tensor_codec.encode_outputs(served.batch, response, requested=[o.name for o in request.outputs] or None)
            response.parameters[ARM_PARAMETER].string_param = ",".join(served.arms)
            response.parameters[DEPLOYMENT_PARAMETER].string_param = ",".join(served.deployments)
        except BaseException:
            stats.record_failure(time.perf_counter_ns() - started)
            raise
        stats.record_success(batch.num_rows, decoded - started, scored - decoded, time.perf_counter_ns() - scored)
        return response

    def _resolve(self, name: str, version: str) -> Hosted:
        hosted = self.table.route(name)
        if version and not hosted.model.version.startswith(version):
            raise NotFound(
                f"version {version!r} of model {name!r} is not served here; serving {hosted.model.version}"
            )
        return hosted

    def _describe(self, name: str, version: str) -> Description:
        """An endpoint (routed, then local), or a deployment id hosted here."""
        if self.router.has_route(name):
            d = self.router.describe(name)
        elif self.table.has_endpoint(name):
            d = describe_hosted(self.table.route(name))
        else:
            hosted = self.table.get(name)
            if hosted is None:
                raise NotFound(f"model {name!r} is not served by this agent")
            d = describe_hosted(hosted)
        if version and not d.version.startswith(version):
            raise NotFound(f"version {version!r} of model {name!r} is not served here; serving {d.version}")
        return d


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


def _check_deadline(deadline: float | None, name: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"deadline passed before scoring {name!r}")


def _parameter_strings(request: pb.ModelInferRequest) -> dict[str, str]:
    """Request parameters as text, for routing keys: bools as true/false, numbers as Python prints them."""
    found = {}
    for name, parameter in request.parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is None:
            continue
        value = getattr(parameter, which)
        found[name] = ("true" if value else "false") if which == "bool_param" else str(value)
    return found


def _config_type(datatype: str) -> int:
    return pb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _statistics(name: str, version: str, s: EndpointStatistics) -> pb.ModelStatistics:
    def duration(d) -> pb.StatisticDuration:  # type: ignore[no-untyped-def]
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    return pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(s.success), fail=duration(s.fail),
            compute_input=duration(s.compute_input), compute_infer=duration(s.compute_infer),
            compute_output=duration(s.compute_output),
        ),
    )
