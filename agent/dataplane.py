"""The Open Inference Protocol (KServe v2) servicer, with Triton's config and statistics calls.

Thin by design: tensors are decoded into Arrow by agent.tensor_codec, scored by
the deployment's LoadedModel, and encoded back. The endpoint name is the
model name clients use.
"""

from __future__ import annotations

import json
import time

import grpc

from agent import tensor_codec
from agent.deployments import DeploymentTable, Hosted
from milepost import __version__
from milepost.errors import DeadlineExceeded, NotFound
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc

MATRIX_INPUT_NAME = "input"
EXTENSIONS = ["model_configuration", "statistics"]


class InferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, table: DeploymentTable, *, max_batch_rows: int = 1 << 20) -> None:
        self.table = table
        self.max_batch_rows = max_batch_rows
        self.ready = True

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        try:
            self._resolve(request.name, request.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="milepost", version=__version__, extensions=EXTENSIONS)

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        hosted = self._resolve(request.name, request.version)
        model = hosted.model
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[model.version],
            platform=model.platform,
            inputs=tensor_codec.tensor_metadata(model.input_schema, as_matrix_name=MATRIX_INPUT_NAME),
            outputs=tensor_codec.tensor_metadata(model.output_schema, as_matrix_name=None),
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        hosted = self._resolve(request.name, request.version)
        model = hosted.model
        inputs = tensor_codec.tensor_metadata(model.input_schema, as_matrix_name=MATRIX_INPUT_NAME)
        outputs = tensor_codec.tensor_metadata(model.output_schema, as_matrix_name=None)
        config = pb.ModelConfig(
            name=request.name,
            platform=model.platform,
            backend=f"milepost-{hosted.engine}",
            max_batch_size=0,  # dims below include the batch dimension (-1)
            input=[pb.ModelInput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape) for t in inputs],
            output=[pb.ModelOutput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape) for t in outputs],
            parameters={
                "feature_names": pb.ModelParameter(string_value=json.dumps(model.input_schema.names)),
                "model": pb.ModelParameter(string_value=hosted.spec.model),
                "deployment_id": pb.ModelParameter(string_value=hosted.spec.deployment_id),
            },
        )
        return pb.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext) -> pb.ModelStatisticsResponse:
        if request.name:
            selected = [(request.name, self._resolve(request.name, request.version))]
        else:
            selected = [(name, self.table.route(name)) for name in self.table.endpoints()]
        return pb.ModelStatisticsResponse(model_stats=[_statistics(name, h) for name, h in selected])

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        hosted = self._resolve(request.model_name, request.model_version)
        model = hosted.model
        started = time.perf_counter_ns()
        try:
            batch = tensor_codec.decode_inputs(request, model.input_schema, max_rows=self.max_batch_rows)
            decoded = time.perf_counter_ns()
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"deadline passed before scoring {request.model_name!r}")
            result = model.predict(batch)
            scored = time.perf_counter_ns()
            response = pb.ModelInferResponse(
                model_name=request.model_name, model_version=model.version, id=request.id
            )
            tensor_codec.encode_outputs(result, response, requested=[o.name for o in request.outputs] or None)
        except BaseException:
            hosted.stats.record_failure(time.perf_counter_ns() - started)
            raise
        hosted.stats.record_success(
            batch.num_rows, decoded - started, scored - decoded, time.perf_counter_ns() - scored
        )
        return response

    def _resolve(self, name: str, version: str) -> Hosted:
        hosted = self.table.route(name)
        if version and not hosted.model.version.startswith(version):
            raise NotFound(
                f"version {version!r} of model {name!r} is not served here; serving {hosted.model.version}"
            )
        return hosted


def _config_type(datatype: str) -> int:
    return pb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _statistics(name: str, hosted: Hosted) -> pb.ModelStatistics:
    s = hosted.stats

    def duration(d) -> pb.StatisticDuration:  # type: ignore[no-untyped-def]
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    return pb.ModelStatistics(
        name=name,
        version=hosted.model.version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(s.success), fail=duration(s.fail),
            compute_input=duration(s.compute_input), compute_infer=duration(s.compute_infer),
            compute_output=duration(s.compute_output),
        ),
    )
