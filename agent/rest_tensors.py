"""Open Inference Protocol REST bodies to the protocol's messages and back: JSON tensors and
Triton's binary tensor extension.

The REST front end (agent.rest) speaks the same messages as the gRPC one: a request body
becomes a ``ModelInferRequest`` whose inputs all travel in ``raw_input_contents``, which
milepost.core.tensor_codec then decodes against the model's schema, exactly as for a gRPC
caller (same checks, same messages, same values); the ``ModelInferResponse`` it encodes
becomes JSON ``data`` or binary outputs here. Only what JSON adds is checked here: the
body's structure, and that each input's ``data`` holds as many values of its datatype as its
shape says (or its ``binary_data_size`` bytes are there), before anything is sized by it.

The binary extension: with an ``Inference-Header-Content-Length: N`` header, the body's first
N bytes are the JSON and the rest are the inputs that carry ``"parameters":
{"binary_data_size": B}``, concatenated in input order. Outputs are binary when the request
asks (per output ``"binary_data": true``, or ``"binary_data_output": true`` for all), and then
follow the JSON the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, shown
from milepost.core.tensor_codec.datatypes import DATATYPES, LENGTH_PREFIX, fmt_shape, split_bytes
from milepost.inference import grpc_predict_v2_pb2 as pb

# Request parameters that shape the REST answer; they are not passed on to routing.
BINARY_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data_size"  # what an input's raw bytes are called in tensor_codec's messages on HTTP
TIMEOUT = "timeout"  # microseconds, as tritonclient's `timeout=` sends it
_UNSUPPORTED_TENSOR_PARAMETERS = {
    "shared_memory_region": "shared memory is not supported; send the tensor's data in the body",
    "classification": "the classification extension is not supported; ask for the output itself",
}


@dataclass(frozen=True)
class InferBody:
    """A request body, its structure checked; its tensors are read by ``to_protobuf``."""

    id: str
    parameters: dict[str, str]  # as text, as the gRPC front end gives them to the core
    timeout_s: float | None
    inputs: list[dict[str, Any]]
    binary: memoryview
    requested: list[str] | None  # outputs asked for by name, in order; None: all
    binary_outputs: dict[str, bool] = field(default_factory=dict)  # per requested output
    binary_default: bool = False

    def wants_binary(self, name: str) -> bool:
        return self.binary_outputs.get(name, self.binary_default)


def parse(body: bytes, header_length: str | None) -> InferBody:
    """The JSON header of an infer body (the whole body without ``header_length``) and its binary rest."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view):]
    else:
        size = _header_size(header_length, len(view))
        header, binary = view[:size], view[size:]
    try:
        message = json.loads(header.tobytes())
    except ValueError as err:  # also UnicodeDecodeError
        raise InvalidArgument(f"the request body is not valid JSON: {err}") from err
    if not isinstance(message, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(message).__name__}")
    request_id = message.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {shown(request_id)}")
    parameters = _object(message, "parameters", "the request")
    binary_default = _flag(parameters.pop(BINARY_OUTPUT, False), BINARY_OUTPUT)
    timeout = parameters.pop(TIMEOUT, None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise InvalidArgument(f"parameter 'timeout' must be a positive number of microseconds, got {shown(timeout)}")
    inputs = message.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise InvalidArgument("'inputs' must be a list of tensors: {\"name\", \"shape\", \"datatype\", \"data\"}")
    requested, binary_outputs = _outputs(message.get("outputs"))
    return InferBody(
        id=request_id, parameters={k: _parameter_text(k, v) for k, v in parameters.items()},
        timeout_s=None if timeout is None else timeout / 1e6, inputs=inputs, binary=binary,
        requested=requested, binary_outputs=binary_outputs, binary_default=binary_default,
    )


def to_protobuf(body: InferBody, name: str, version: str) -> pb.ModelInferRequest:
    """The request as ModelInfer takes it, every input's values in ``raw_input_contents``."""
    request = pb.ModelInferRequest(model_name=name, model_version=version, id=body.id)
    offset = 0
    for index, tensor in enumerate(body.inputs):
        input_name = tensor.get("name")
        if not isinstance(input_name, str) or not input_name:
            raise InvalidArgument(f"input #{index} has no name")
        label = f"input {shown(input_name)}"
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if not isinstance(datatype, str):
            raise InvalidArgument(f"{label} has no datatype (a string such as \"FP32\")")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise InvalidArgument(f"{label} has no shape (a list of integers, the first being the number of rows)")
        request.inputs.add(name=input_name, datatype=datatype, shape=shape)
        parameters = _object(tensor, "parameters", label)
        _refuse_unsupported(parameters, label)
        if "binary_data_size" in parameters:
            size = parameters["binary_data_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidArgument(f"{label}: binary_data_size must be a non-negative integer, got {shown(size)}")
            if offset + size > len(body.binary):
                raise InvalidArgument(
                    f"{label} has binary_data_size {size}, but only {len(body.binary) - offset} bytes of binary "
                    "data remain after the JSON header (Inference-Header-Content-Length)"
                )
            raw = body.binary[offset:offset + size].tobytes()
            offset += size
        elif "data" in tensor:
            raw = _json_values(tensor["data"], datatype, shape, label)
        else:
            raise InvalidArgument(f"{label} has neither 'data' nor a binary_data_size parameter")
        request.raw_input_contents.append(raw)
    if offset != len(body.binary):
        raise InvalidArgument(
            f"the body has {len(body.binary) - offset} bytes of binary data that no input's binary_data_size claims"
        )
    return request


def render(response: pb.ModelInferResponse, body: InferBody) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when binary outputs follow it."""
    outputs: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        out: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if body.wants_binary(tensor.name):
            out["parameters"] = {"binary_data_size": len(raw)}
            payloads.append(raw)
        else:
            out["data"] = _output_values(tensor, raw)
        outputs.append(out)
    message: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        message["id"] = response.id
    if response.parameters:
        message["parameters"] = parameter_values(response.parameters)
    message["outputs"] = outputs
    header = json.dumps(message, separators=(",", ":")).encode()
    if not payloads:
        return header, None
    return b"".join([header, *payloads]), len(header)


def parameter_values(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as JSON values."""
    values = {}
    for name, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is not None:
            values[name] = getattr(parameter, which)
    return values


# ---------------------------------------------------------------------------
# Request parts


def _header_size(text: str, body_size: int) -> int:
    try:
        size = int(text)
    except ValueError:
        size = -1
    if not 0 <= size <= body_size:
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {shown(text)}, but it must be the length of the JSON header "
            f"at the start of the body (0 to {body_size})"
        )
    return size


def _object(message: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = message.get(key, {})
    if not isinstance(value, dict):
        raise InvalidArgument(f"'{key}' of {where} must be a JSON object, got {type(value).__name__}")
    return dict(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"parameter {name!r} must be true or false, got {shown(value)}")
    return value


def _parameter_text(name: str, value: Any) -> str:
    """A request parameter as text, as the gRPC front end gives it to routing (bools as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidArgument(f"parameter {shown(name)} must be a string, number or bool, got {type(value).__name__}")


def _refuse_unsupported(parameters: dict[str, Any], label: str) -> None:
    for key, why in _UNSUPPORTED_TENSOR_PARAMETERS.items():
        if key in parameters:
            raise InvalidArgument(f"{label}: {why}")


def _outputs(outputs: Any) -> tuple[list[str] | None, dict[str, bool]]:
    if outputs is None:
        return None, {}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidArgument("'outputs' must be a list of {\"name\": ..., \"parameters\": {...}}")
    names, binary = [], {}
    for index, output in enumerate(outputs):
        name = output.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"output #{index} has no name")
        parameters = _object(output, "parameters", f"output {shown(name)}")
        _refuse_unsupported(parameters, f"output {shown(name)}")
        if "binary_data" in parameters:
            binary[name] = _flag(parameters["binary_data"], "binary_data")
        names.append(name)
    return names or None, binary


def _json_values(data: Any, datatype: str, shape: Sequence[int], label: str) -> bytes:
    """An input's JSON ``data`` (flat or nested, row-major) as its raw little-endian payload."""
    found = DATATYPES.get(datatype)
    if found is None or any(d < 0 for d in shape):
        return b""  # tensor_codec names the datatype or shape that is wrong
    if not isinstance(data, list):
        raise InvalidArgument(f"{label}: 'data' must be a list of values, got {type(data).__name__}")
    count = math.prod(shape)
    if found.wire is None:
        values = _flat_strings(data, label)
        _check_count(label, shape, count, len(values))
        return b"".join(LENGTH_PREFIX.pack(len(v)) + v for v in values)
    try:
        array = np.asarray(data)
    except ValueError as err:  # a ragged nesting
        raise InvalidArgument(f"{label}: 'data' is not a list of {datatype} values nested evenly: {err}") from err
    _check_count(label, shape, count, array.size)
    if array.size and array.dtype.kind not in _KINDS[found.name]:
        raise InvalidArgument(f"{label} is {datatype}, but its data holds {_what(array)}")
    if array.size and found.wire.kind in "iu":
        info = np.iinfo(found.wire)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise InvalidArgument(f"{label} is {datatype}, but its data holds {low if low < info.min else high}, "
                                  f"outside [{info.min}, {info.max}]")
    return array.astype(found.wire, copy=False).tobytes()


# Which numpy kinds of parsed JSON each datatype takes: JSON numbers parse as int or float, true/false as bool.
_KINDS = {name: ("b" if name == "BOOL" else "iu" if d.wire is not None and d.wire.kind in "iu" else "iuf")
          for name, d in DATATYPES.items()}


def _what(array: np.ndarray) -> str:
    kind = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers with a fraction", "U": "strings"}
    return kind.get(array.dtype.kind, "values that are not numbers (null, objects, mixed types or huge integers)")


def _check_count(label: str, shape: Sequence[int], count: int, found: int) -> None:
    if found != count:
        raise InvalidArgument(f"{label} has shape {fmt_shape(shape)}, which is {count} values, but its data holds {found}")


def _flat_strings(data: list[Any], label: str) -> list[bytes]:
    """BYTES data: strings, flat or nested, as UTF-8."""
    flat: list[bytes] = []
    pending = [iter(data)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, list):
                pending.append(iter(item))
                break
            if not isinstance(item, str):
                raise InvalidArgument(f"{label} is BYTES, so its data must hold strings, got {shown(item)}")
            flat.append(item.encode())
        else:
            pending.pop()
    return flat


# ---------------------------------------------------------------------------
# Response parts


def _output_values(tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes) -> list[Any]:
    """An output's raw payload as a flat JSON list (row-major, as its shape says)."""
    found = DATATYPES[tensor.datatype]
    if found.wire is None:
        count = math.prod(tensor.shape)
        elements = split_bytes(raw, count, f"output {tensor.name!r}", list(tensor.shape), InvalidArgument)
        try:
            return [value.decode() for value in elements.to_pylist()]
        except UnicodeDecodeError as err:
            raise InvalidArgument(
                f"output {tensor.name!r} holds bytes that are not UTF-8 text; ask for it as binary data "
                "(\"parameters\": {\"binary_data\": true})"
            ) from err
    values = np.frombuffer(raw, dtype=found.wire)
    return values.astype(np.bool_).tolist() if found.name == "BOOL" else values.tolist()
