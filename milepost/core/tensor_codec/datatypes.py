"""The OIP datatype table, tensor metadata and the helpers both directions share."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from milepost.core.errors import MilepostError
from milepost.inference import grpc_predict_v2_pb2 as pb

LITTLE_ENDIAN_HOST = sys.byteorder == "little"
LENGTH_PREFIX = struct.Struct("<I")
MAX_NAMES_IN_MESSAGE = 10
# The name of the one [n, k] input of an all-numeric model: in its metadata, and in requests.
MATRIX_INPUT_NAME = "input"
# The input schema's metadata key for the model's own name of that matrix (an ONNX graph's
# input, "x"), which requests may use as well as MATRIX_INPUT_NAME.
MATRIX_NAME_KEY = b"milepost.matrix_input"


def with_matrix_name(schema: pa.Schema, name: str | None) -> pa.Schema:
    """``schema`` telling decode_inputs that its matrix also goes by ``name`` (the model's
    own name for its one tensor input); ``schema`` itself where there is none to add."""
    if not name or name == MATRIX_INPUT_NAME:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), MATRIX_NAME_KEY: name.encode()})


def matrix_names(schema: pa.Schema) -> tuple[str, ...]:
    """The names a request's matrix may have: MATRIX_INPUT_NAME, then the model's own, if any."""
    own = (schema.metadata or {}).get(MATRIX_NAME_KEY)
    return (MATRIX_INPUT_NAME, own.decode()) if own else (MATRIX_INPUT_NAME,)


@dataclass(frozen=True)
class Datatype:
    """One OIP datatype: its wire layout, its Arrow type and where typed values go.

    ``typed_fields`` lists the ``InferTensorContents`` fields that may carry it,
    the protocol's own first; UINT8 and UINT16 also accept ``int_contents``
    because some clients put them there.
    """

    name: str
    wire: np.dtype | None  # little-endian raw layout; None for BYTES
    arrow: pa.DataType
    typed_fields: tuple[str, ...]


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", np.dtype("u1"), pa.bool_(), ("bool_contents",)),
        Datatype("UINT8", np.dtype("u1"), pa.uint8(), ("uint_contents", "int_contents")),
        Datatype("UINT16", np.dtype("<u2"), pa.uint16(), ("uint_contents", "int_contents")),
        Datatype("UINT32", np.dtype("<u4"), pa.uint32(), ("uint_contents",)),
        Datatype("UINT64", np.dtype("<u8"), pa.uint64(), ("uint64_contents",)),
        Datatype("INT8", np.dtype("i1"), pa.int8(), ("int_contents",)),
        Datatype("INT16", np.dtype("<i2"), pa.int16(), ("int_contents",)),
        Datatype("INT32", np.dtype("<i4"), pa.int32(), ("int_contents",)),
        Datatype("INT64", np.dtype("<i8"), pa.int64(), ("int64_contents",)),
        # The protocol has no typed field for FP16: it travels raw only.
        Datatype("FP16", np.dtype("<f2"), pa.float16(), ()),
        Datatype("FP32", np.dtype("<f4"), pa.float32(), ("fp32_contents",)),
        Datatype("FP64", np.dtype("<f8"), pa.float64(), ("fp64_contents",)),
        Datatype("BYTES", None, pa.binary(), ("bytes_contents",)),
    )
}
SUPPORTED = ", ".join(DATATYPES)

# The element type protobuf stores each typed field as.
CONTAINER_DTYPES: dict[str, np.dtype] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}



def is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
    )



def split_bytes(
    raw: bytes, count: int, label: str, shape: Sequence[int], error: type[MilepostError]
) -> pa.Array:
    """``count`` length-prefixed BYTES elements of ``raw``; ``error`` (naming ``label``) if malformed."""
    elements: list[bytes] = []
    position = 0
    for index in range(count):
        if position + LENGTH_PREFIX.size > len(raw):
            raise error(
                f"{label}: BYTES element {index} has a truncated length "
                f"prefix at byte {position} ({len(raw) - position} bytes left, a prefix "
                "takes 4)"
            )
        (length,) = LENGTH_PREFIX.unpack_from(raw, position)
        position += LENGTH_PREFIX.size
        if position + length > len(raw):
            raise error(
                f"{label}: BYTES element {index} declares {length} bytes "
                f"but only {len(raw) - position} remain"
            )
        elements.append(raw[position : position + length])
        position += length
    if position != len(raw):
        raise error(
            f"{label} has shape {fmt_shape(shape)}, which is "
            f"{count} BYTES elements, but its raw payload has "
            f"{len(raw) - position} bytes left over after them"
        )
    return pa.array(elements, type=pa.large_binary() if len(raw) >= 2**31 else pa.binary())



def tensor_metadata(
    schema: pa.Schema, *, as_matrix_name: str | None
) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    """Describe a schema as ModelMetadata tensors, the way decode_inputs reads them.

    With ``as_matrix_name`` and an all-numeric schema, one ``[-1, k]`` FP32
    tensor: that is the matrix shape (a) of decode_inputs, which hands the model
    float32 whatever numeric datatype is sent, so FP32 is what a client should
    send (and the only zero-copy one). Otherwise one tensor per field, ``[-1]``
    (or ``[-1, k]`` for a fixed-size list field).
    """
    Metadata = pb.ModelMetadataResponse.TensorMetadata
    if as_matrix_name is not None and len(schema) and all(is_numeric(f.type) for f in schema):
        return [Metadata(name=as_matrix_name, datatype="FP32", shape=[-1, len(schema)])]
    entries = []
    for field in schema:
        shape = [-1, field.type.list_size] if pa.types.is_fixed_size_list(field.type) else [-1]
        entries.append(Metadata(name=field.name, datatype=datatype_of(field.type), shape=shape))
    return entries


def datatype_of(arrow_type: pa.DataType) -> str:
    """The OIP datatype string of an Arrow type (a fixed-size list: its elements').

    Raises ValueError for types with no tensor form (nested lists, structs,
    timestamps...): a schema holding one cannot be served over the protocol.
    """
    element = arrow_type
    if pa.types.is_fixed_size_list(element):
        element = element.value_type
        if pa.types.is_fixed_size_list(element) or is_text(element):
            raise ValueError(
                f"Arrow type {arrow_type} has no Open Inference Protocol datatype: "
                "only fixed-size lists of numbers or bools are tensors"
            )
    if pa.types.is_dictionary(element) and is_text(element.value_type):
        return "BYTES"
    if is_text(element):
        return "BYTES"
    for datatype in DATATYPES.values():
        if datatype.wire is not None and datatype.arrow == element:
            return datatype.name
    raise ValueError(
        f"Arrow type {arrow_type} has no Open Inference Protocol datatype; supported: "
        "bool, (u)int8-64, float16/32/64, string/binary, and fixed-size lists of those numbers"
    )


# ---------------------------------------------------------------------------
# Message helpers


def fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def names_list(names: Iterable[str]) -> str:
    """A readable, bounded list of names for an error message."""
    names = list(names)
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    if len(names) > MAX_NAMES_IN_MESSAGE:
        shown += f", ... ({len(names) - MAX_NAMES_IN_MESSAGE} more)"
    return shown
