"""What a served name stands for: one description for metadata calls, remote members and routing.

An agent describes an endpoint or a deployment in Triton's ``ModelConfig``
(``to_proto``), with the Arrow schemas, version (the registry's number, "3"),
digest (the content hash) and model in its parameters;
another agent learns a remote deployment from that same message
(``from_proto``). The tensors listed are the ones ``tensor_codec`` decodes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

import pyarrow as pa

from milepost.core import tensor_codec
from milepost.core.errors import FailedPrecondition
from milepost.inference import grpc_predict_v2_pb2 as pb


@dataclass(frozen=True)
class ModelDescription:
    input_schema: pa.Schema
    output_schema: pa.Schema
    version: str
    platform: str
    engine: str
    model: str
    deployment_id: str
    routing_policy: str = ""  # the kind of a pushed route's policy; empty for a deployment
    digest: str = ""  # the hex content hash; ``version`` is what the data plane reports (model_refs.served_version)

    def with_outputs_of(self, other: ModelDescription) -> ModelDescription:
        """These inputs, ``other``'s outputs and identity (a stacking ensemble answers its stacker's)."""
        return replace(other, input_schema=self.input_schema, routing_policy=self.routing_policy)

    def input_metadata(self) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return tensor_codec.tensor_metadata(self.input_schema, as_matrix_name=tensor_codec.MATRIX_INPUT_NAME)

    def output_metadata(self) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return tensor_codec.tensor_metadata(self.output_schema, as_matrix_name=None)

    def to_proto(self, name: str) -> pb.ModelConfig:
        parameters = {
            "feature_names": json.dumps(self.input_schema.names),
            "model": self.model,
            "deployment_id": self.deployment_id,
            "version": self.version,
            "digest": self.digest,
            "arrow_input_schema": _schema_to_text(self.input_schema),
            "arrow_output_schema": _schema_to_text(self.output_schema),
        }
        if self.routing_policy:
            parameters["routing_policy"] = self.routing_policy
        return pb.ModelConfig(
            name=name,
            platform=self.platform,
            backend=f"milepost-{self.engine}",
            max_batch_size=0,  # dims below include the batch dimension (-1)
            input=[pb.ModelInput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape)
                   for t in self.input_metadata()],
            output=[pb.ModelOutput(name=t.name, data_type=_config_type(t.datatype), dims=t.shape)
                    for t in self.output_metadata()],
            parameters={k: pb.ModelParameter(string_value=v) for k, v in parameters.items()},
        )

    @classmethod
    def from_proto(cls, config: pb.ModelConfig) -> ModelDescription:
        """A Milepost agent's ModelConfig; FailedPrecondition when it lacks the Arrow schemas."""
        params = config.parameters
        try:
            return cls(
                input_schema=_schema_from_text(params["arrow_input_schema"].string_value),
                output_schema=_schema_from_text(params["arrow_output_schema"].string_value),
                version=params["version"].string_value,
                platform=config.platform,
                engine=config.backend.removeprefix("milepost-"),
                model=params["model"].string_value,
                deployment_id=params["deployment_id"].string_value,
                # An agent of an older release reported the digest as the version.
                digest=params["digest"].string_value if "digest" in params else params["version"].string_value,
            )
        except (KeyError, ValueError, pa.ArrowInvalid) as err:
            raise FailedPrecondition(
                f"the agent serving {config.name!r} does not describe its Arrow schemas "
                f"(is it a Milepost agent of this release?): {err}"
            ) from err


def _config_type(datatype: str) -> str:
    """The ModelConfig enum name of an OIP datatype (BYTES is TYPE_STRING there)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
