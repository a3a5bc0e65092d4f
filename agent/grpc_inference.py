"""The Open Inference Protocol (KServe v2) gRPC front end, with Triton's config and statistics calls.

A thin translator: protobuf tensors are decoded into Arrow by
milepost.core.tensor_codec against the schema the core asks for, the core
(agent.dataplane) serves the request, and the answer is encoded back.
Responses carry ``milepost-deployment`` (the deployment id(s) that scored,
comma-separated) and, for routed endpoints, ``milepost-arm`` (the endpoint's
arm that answered; an ensemble's members that answered, comma-separated).
Metadata calls also accept a deployment id hosted here as the model name, and
ModelConfig describes the Arrow schemas and version in its parameters, which
is how remote members learn them.

ModelStreamInfer (Triton's bidirectional stream) serves each request of the
stream as ModelInfer does, in order: its answer, or its error in
``error_message``, and the stream goes on; a request with
``triton_enable_empty_final_response`` gets ``triton_final_response`` = true on
its answer. The stream holds a worker of the server's streams pool while it is
open, and ends with DEADLINE_EXCEEDED when no request comes for
``stream_idle_timeout_s`` (milepost.core.grpc_server).

ModelInfer is tried first on the server's event loop (INLINE_METHODS; milepost.core.inline):
a small request to a model hosted here is answered without a thread hop.

The metadata answers are built by the functions below, once: the REST front
end (agent.rest) renders the same messages as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from agent.dataplane import ARM_PARAMETER, DataPlane, InferenceRequest, InferenceResponse
from agent.routing.members import DEPLOYMENT_PARAMETER
from agent.routing.router import MatrixServed
from agent.statistics import Duration, EndpointStatistics
from milepost.core import deadlines, tensor_codec, tracing
from milepost.core.errors import DeadlineExceeded, MilepostError, NotFound, Unavailable
from milepost.core.version import __version__
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc

EXTENSIONS = ["model_configuration", "statistics"]
# Triton's stream flags: a client asking for the first gets the second on the last answer to each
# request; every model here answers a request once, so each answer is the final one (as Triton
# marks a non-decoupled model's), and no empty answer follows.
ENABLE_FINAL_RESPONSE = "triton_enable_empty_final_response"
FINAL_RESPONSE = "triton_final_response"
INLINE_METHODS = frozenset({"/inference.GRPCInferenceService/ModelInfer"})
log = logging.getLogger("milepost.agent")


class InferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: DataPlane, *, max_batch_rows: int = 1 << 20) -> None:
        self.core = core
        self.max_batch_rows = max_batch_rows

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready)

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.core.is_ready(request.name, request.version))

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return server_metadata()

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        return model_metadata(self.core, request.name, request.version)

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        return model_config(self.core, request.name, request.version)

    def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext) -> pb.ModelStatisticsResponse:
        return model_statistics(self.core, request.name, request.version)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse | bytes:
        """The answer, as a message or (the matrix lane's) already serialized: the server's
        serializer passes bytes through (milepost.core.handlers)."""
        answered = self._matrix_lane(request, context)
        if answered is not None:
            return answered
        core_request = InferenceRequest(
            name=request.model_name,
            decode=lambda schema: tensor_codec.decode_inputs(request, schema, max_rows=self.max_batch_rows),
            version=request.model_version,
            parameters=_parameter_strings(request),
            deadline=deadlines.from_grpc(context),
            size_bytes=request.ByteSize(),
            request_id=request.id,
            trace=tracing.from_grpc(context),
        )
        requested = [o.name for o in request.outputs] or None
        return self.core.serve(core_request, lambda served: response_of(request.model_name, request.id, served, requested))

    def _matrix_lane(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> bytes | None:
        """The common request (one raw FP32 matrix, no outputs named) served by the
        core's matrix lane (DataPlane.serve_matrix); None where ModelInfer's way must serve it."""
        if request.outputs:
            return None
        X = tensor_codec.raw_matrix(request, self.max_batch_rows)
        if X is None:
            return None
        parameters = _parameter_strings(request) if request.parameters else {}
        name, request_id = request.model_name, request.id
        return self.core.serve_matrix(name, X, parameters, lambda served: matrix_response(name, request_id, served),
                                      size_bytes=request.ByteSize(), deadline=deadlines.from_grpc(context),
                                      request_id=request_id, version=request.model_version)

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext,
    ) -> Iterator[pb.ModelStreamInferResponse]:
        for request in request_iterator:
            try:
                answered = self.ModelInfer(request, context)
                if isinstance(answered, bytes):
                    answered = pb.ModelInferResponse.FromString(answered)
                answer = pb.ModelStreamInferResponse(infer_response=answered)
            except MilepostError as err:
                answer = _stream_error(request, err.message)
            except Exception:  # noqa: BLE001 - our bug: a generic message, the traceback logged, the stream goes on
                log.exception("unhandled error in ModelStreamInfer")
                answer = _stream_error(request, "internal error in ModelStreamInfer; see the server log")
            if _wants_final_flag(request):
                answer.infer_response.parameters[FINAL_RESPONSE].bool_param = True
            yield answer


def response_of(name: str, request_id: str, served: InferenceResponse | MatrixServed,
                requested: list[str] | None = None) -> pb.ModelInferResponse:
    """The ModelInferResponse of an answer of the core (``serve`` or its matrix lane), as both
    front ends send it: outputs (``requested`` ones, in that order; None: all), the version
    that answered, and who did (``milepost-arm``, ``milepost-deployment``)."""
    if isinstance(served, MatrixServed):
        return pb.ModelInferResponse.FromString(matrix_response(name, request_id, served))
    response = pb.ModelInferResponse(model_name=name, model_version=served.version, id=request_id)
    tensor_codec.encode_outputs(served.batch, response, requested=requested)
    for key, text in _who_answered(served):
        response.parameters[key].string_param = text
    return response


def matrix_response(name: str, request_id: str, served: MatrixServed) -> bytes:
    """``response_of`` a matrix lane answer, serialized (tensor_codec.matrix_response): how
    ModelInfer sends it."""
    return tensor_codec.matrix_response(name, served.version, request_id, _who_answered(served),
                                        served.output_name, served.values, rows_only=served.rows_only)


def _who_answered(served: InferenceResponse | MatrixServed) -> tuple[tuple[str, str], ...]:
    """The answer's string parameters: the arm(s) that answered, if routed, and the deployments."""
    deployments = (DEPLOYMENT_PARAMETER, ",".join(served.deployments))
    return ((ARM_PARAMETER, ",".join(served.arms)), deployments) if served.arms else (deployments,)


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name="milepost", version=__version__, extensions=EXTENSIONS)


def model_metadata(core: DataPlane, name: str, version: str) -> pb.ModelMetadataResponse:
    """The model a name (and version) stands for, listing every version a request may name."""
    d = core.describe(name, version)
    return pb.ModelMetadataResponse(
        name=name, versions=core.versions(name), platform=d.platform, inputs=d.input_metadata(),
        outputs=d.output_metadata(),
    )


def model_config(core: DataPlane, name: str, version: str) -> pb.ModelConfigResponse:
    return pb.ModelConfigResponse(config=core.describe(name, version).to_proto(name))


def model_statistics(core: DataPlane, name: str, version: str) -> pb.ModelStatisticsResponse:
    """The statistics of ``name``, or of every name served when it is empty: one entry per name,
    or per version for an endpoint whose arms serve different ones (EndpointStatistics.by_version),
    only ``version``'s when one is asked for."""
    router = core.router
    if name and router.table.get(name) is None:
        raise NotFound(f"model {name!r} is not served by this agent")
    stats = []
    for served in [name] if name else router.endpoints():
        # The version described: a deployment's number, or a routed endpoint's first arm's (which
        # perf_analyzer reads as an integer); "" when that needs an agent that does not answer now.
        try:
            served_version = core.describe(served, version).version
            arm_versions = router.arm_versions(router.table, served)
            first = core.describe(served).version if version else served_version
        except (Unavailable, DeadlineExceeded):
            served_version, arm_versions, first = "", {}, ""
        counted = core.statistics(served)
        if not first or len(counted.versions() | set(arm_versions.values())) < 2:
            stats.append(_statistics(served, served_version, counted))
            continue
        for each, share in counted.by_version(first, arm_versions.values()).items():
            if not version or each == served_version:
                stats.append(_statistics(served, each, share))
    return pb.ModelStatisticsResponse(model_stats=stats)


def _wants_final_flag(request: pb.ModelInferRequest) -> bool:
    parameter = request.parameters.get(ENABLE_FINAL_RESPONSE)
    return parameter is not None and parameter.WhichOneof("parameter_choice") == "bool_param" and parameter.bool_param


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """A stream's answer to a request that failed: its error, and the request's id to match it by."""
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                             id=request.id),
    )


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


def _statistics(name: str, version: str, s: EndpointStatistics) -> pb.ModelStatistics:
    def duration(d: Duration) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    return pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(s.success), fail=duration(s.fail), queue=duration(s.queue),
            compute_input=duration(s.compute_input), compute_infer=duration(s.compute_infer),
            compute_output=duration(s.compute_output),
        ),
    )
