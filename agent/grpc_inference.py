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
"""

from __future__ import annotations

import grpc

from agent.dataplane import ARM_PARAMETER, DataPlane, InferenceRequest, InferenceResponse
from agent.routing.members import DEPLOYMENT_PARAMETER
from agent.statistics import Duration, EndpointStatistics
from milepost.core import deadlines, tensor_codec
from milepost.core.errors import NotFound
from milepost.core.version import __version__
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc

EXTENSIONS = ["model_configuration", "statistics"]


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
        return pb.ServerMetadataResponse(name="milepost", version=__version__, extensions=EXTENSIONS)

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        d = self.core.describe(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=request.name, versions=[d.version], platform=d.platform,
            inputs=d.input_metadata(), outputs=d.output_metadata(),
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.core.describe(request.name, request.version).to_proto(request.name))

    def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext) -> pb.ModelStatisticsResponse:
        router = self.core.router
        if request.name and router.table.get(request.name) is None:
            raise NotFound(f"model {request.name!r} is not served by this agent")
        names = [request.name] if request.name else router.endpoints()
        stats = []
        for name in names:
            # A pushed route has no one version (and describing it may ask another agent);
            # a local deployment's version is its content hash.
            version = "" if router.has_route(name) else self.core.describe(name, request.version).version
            stats.append(_statistics(name, version, self.core.statistics(name)))
        return pb.ModelStatisticsResponse(model_stats=stats)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        core_request = InferenceRequest(
            name=request.model_name,
            decode=lambda schema: tensor_codec.decode_inputs(request, schema, max_rows=self.max_batch_rows),
            version=request.model_version,
            parameters=_parameter_strings(request),
            deadline=deadlines.from_grpc(context),
            size_bytes=request.ByteSize(),
        )
        requested = [o.name for o in request.outputs] or None

        def encode(served: InferenceResponse) -> pb.ModelInferResponse:
            response = pb.ModelInferResponse(model_name=request.model_name, model_version=served.version, id=request.id)
            tensor_codec.encode_outputs(served.batch, response, requested=requested)
            if served.arms:
                response.parameters[ARM_PARAMETER].string_param = ",".join(served.arms)
            response.parameters[DEPLOYMENT_PARAMETER].string_param = ",".join(served.deployments)
            return response

        return self.core.serve(core_request, encode)


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
            success=duration(s.success), fail=duration(s.fail),
            compute_input=duration(s.compute_input), compute_infer=duration(s.compute_infer),
            compute_output=duration(s.compute_output),
        ),
    )
