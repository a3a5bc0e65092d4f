"""Open Inference Protocol (KServe v2 gRPC) tensors to Arrow and back.

This is the one place where the data plane's protobuf tensors meet Arrow: a
``ModelInferRequest`` becomes a ``pa.RecordBatch`` here, the engines see only
that batch, and their ``pa.RecordBatch`` becomes a ``ModelInferResponse`` here.
Nothing past this module imports the inference stubs.

What it promises:

- Every client mistake is an ``InvalidArgument`` whose message names the input
  (or output) and says what was expected and what arrived, so the caller can fix
  it without reading our code.
- No allocation is sized by a shape the client claims: every shape is checked
  against the bytes (or values) actually sent before anything is built from it,
  so a request cannot make the server allocate memory it did not send.
- The common case is free: a 2-D FP32 tensor in ``raw_input_contents`` becomes
  a fixed-size-list column whose values buffer *is* the request's bytes object,
  and a float32 named input becomes a column over its bytes the same way.
- Raw payloads are little-endian and row-major on the wire, whatever the host.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from milepost.errors import DataLoss, InvalidArgument, MilepostError, ResourceExhausted, Unimplemented
from milepost.inference import grpc_predict_v2_pb2 as pb

__all__ = [
    "decode_inputs", "decode_outputs", "encode_inputs", "encode_outputs", "tensor_metadata", "datatype_of",
]

_LITTLE_ENDIAN_HOST = sys.byteorder == "little"
_PREFIX = struct.Struct("<I")
_MAX_NAMES_IN_MESSAGE = 10


@dataclass(frozen=True)
class _Datatype:
    """One OIP datatype: its wire layout, its Arrow type and where typed values go.

    ``typed_fields`` lists the ``InferTensorContents`` fields that may carry it,
    the protocol's own first; UINT8 and UINT16 also accept ``int_contents``
    because some clients put them there.
    """

    name: str
    wire: np.dtype | None  # little-endian raw layout; None for BYTES
    arrow: pa.DataType
    typed_fields: tuple[str, ...]


_DATATYPES: dict[str, _Datatype] = {
    d.name: d
    for d in (
        _Datatype("BOOL", np.dtype("u1"), pa.bool_(), ("bool_contents",)),
        _Datatype("UINT8", np.dtype("u1"), pa.uint8(), ("uint_contents", "int_contents")),
        _Datatype("UINT16", np.dtype("<u2"), pa.uint16(), ("uint_contents", "int_contents")),
        _Datatype("UINT32", np.dtype("<u4"), pa.uint32(), ("uint_contents",)),
        _Datatype("UINT64", np.dtype("<u8"), pa.uint64(), ("uint64_contents",)),
        _Datatype("INT8", np.dtype("i1"), pa.int8(), ("int_contents",)),
        _Datatype("INT16", np.dtype("<i2"), pa.int16(), ("int_contents",)),
        _Datatype("INT32", np.dtype("<i4"), pa.int32(), ("int_contents",)),
        _Datatype("INT64", np.dtype("<i8"), pa.int64(), ("int64_contents",)),
        # The protocol has no typed field for FP16: it travels raw only.
        _Datatype("FP16", np.dtype("<f2"), pa.float16(), ()),
        _Datatype("FP32", np.dtype("<f4"), pa.float32(), ("fp32_contents",)),
        _Datatype("FP64", np.dtype("<f8"), pa.float64(), ("fp64_contents",)),
        _Datatype("BYTES", None, pa.binary(), ("bytes_contents",)),
    )
}
_SUPPORTED = ", ".join(_DATATYPES)

# The element type protobuf stores each typed field as.
_CONTAINER_DTYPES: dict[str, np.dtype] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


@dataclass(frozen=True)
class _Tensor:
    """An input whose datatype, shape and payload size have been checked."""

    name: str
    datatype: _Datatype
    shape: tuple[int, ...]
    count: int
    raw: bytes | None
    typed_field: str | None
    typed: Any  # the protobuf repeated field named by typed_field, or None

    @property
    def rows(self) -> int:
        return self.shape[0]


# ---------------------------------------------------------------------------
# Requests -> Arrow


def decode_inputs(
    request: pb.ModelInferRequest,
    input_schema: pa.Schema,
    *,
    max_rows: int | None = None,
) -> pa.RecordBatch:
    """Turn a request's input tensors into one record batch for the model.

    Two shapes of request are accepted, so that both matrix clients (numpy,
    tritonclient) and feature-by-feature clients work against the same model:

    (a) one input of shape ``[n, k]``, ``k`` being the number of fields of an
        all-numeric schema: one column named after the input, of type
        ``pa.list_(pa.float32(), k)``. FP32 raw payloads are used in place; any
        other numeric datatype is converted to float32 (one copy).
    (b) one input per schema field, named after it, of shape ``[n]`` or
        ``[n, 1]``: columns in schema order, cast to each field's type.

    ``max_rows`` bounds ``shape[0]`` of every input (ResourceExhausted beyond
    it). Malformed requests raise InvalidArgument naming the input.
    """
    tensors = _checked_inputs(request, max_rows)
    if _is_matrix_request(tensors, input_schema):
        return _decode_matrix(tensors[0], len(input_schema))
    return _decode_named(tensors, input_schema)


def _checked_inputs(request: pb.ModelInferRequest, max_rows: int | None) -> list[_Tensor]:
    """Validate every input's header and payload size; decode nothing yet."""
    inputs = request.inputs
    raws = request.raw_input_contents
    if len(raws) and len(raws) != len(inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raws)} entries but the request has "
            f"{len(inputs)} inputs; when raw_input_contents is used it must hold "
            "exactly one entry per input, in input order"
        )
    tensors: list[_Tensor] = []
    seen: set[str] = set()
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if not name:
            raise InvalidArgument(f"input #{index} has no name")
        if name in seen:
            raise InvalidArgument(f"input {name!r} appears more than once")
        seen.add(name)
        datatype = _datatype_named(name, tensor.datatype)
        shape = tuple(int(d) for d in tensor.shape)
        if not shape:
            raise InvalidArgument(
                f"input {name!r} has no shape (rank 0); inputs need at least one "
                "dimension, the first being the number of rows"
            )
        if any(d < 0 for d in shape):
            raise InvalidArgument(
                f"input {name!r} has shape {_fmt(shape)}; every dimension must be "
                "a concrete non-negative size (-1 only appears in metadata)"
            )
        if max_rows is not None and shape[0] > max_rows:
            raise ResourceExhausted(
                f"input {name!r} has {shape[0]} rows, more than this endpoint's "
                f"limit of {max_rows} rows per request; split the request"
            )
        count = math.prod(shape)
        typed_set = [field.name for field, _ in tensor.contents.ListFields()]
        if len(raws):
            if typed_set:
                raise InvalidArgument(
                    f"input {name!r} has both a raw_input_contents entry and "
                    f"contents.{typed_set[0]}; send its values in one place only"
                )
            raw = raws[index]  # each access copies out of the message: take it once
            _check_raw_size(name, datatype, shape, count, raw)
            tensors.append(_Tensor(name, datatype, shape, count, raw, None, None))
            continue
        field = _check_typed(name, datatype, shape, count, typed_set)
        typed = getattr(tensor.contents, field) if field is not None else None
        if typed is not None and len(typed) != count:
            raise InvalidArgument(
                f"input {name!r} has shape {_fmt(shape)}, which is {count} values, "
                f"but contents.{field} holds {len(typed)}"
            )
        tensors.append(_Tensor(name, datatype, shape, count, None, field, typed))
    return tensors


def _datatype_named(name: str, datatype: str) -> _Datatype:
    found = _DATATYPES.get(datatype)
    if found is not None:
        return found
    if datatype == "BF16":
        raise InvalidArgument(
            f"input {name!r} has datatype BF16, which is unsupported here; "
            f"supported: {_SUPPORTED}"
        )
    raise InvalidArgument(
        f"input {name!r} has datatype {datatype!r}, which is not an Open Inference "
        f"Protocol datatype; supported: {_SUPPORTED}"
    )


def _check_raw_size(
    name: str, datatype: _Datatype, shape: tuple[int, ...], count: int, raw: bytes
) -> None:
    """Compare the claimed shape with the bytes sent, before sizing anything by it."""
    if datatype.wire is None:
        # Each BYTES element costs at least its 4-byte length prefix; the full
        # parse happens when decoding.
        if count * _PREFIX.size > len(raw):
            raise InvalidArgument(
                f"input {name!r} has shape {_fmt(shape)} and datatype BYTES, so its "
                f"raw_input_contents entry needs at least {count * _PREFIX.size} bytes "
                f"({count} elements x a 4-byte length prefix), but it is {len(raw)} bytes"
            )
        return
    itemsize = datatype.wire.itemsize
    expected = count * itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r} has shape {_fmt(shape)} and datatype {datatype.name}, so "
            f"its raw_input_contents entry should be {expected} bytes ({count} values "
            f"x {itemsize} bytes), but it is {len(raw)} bytes"
        )


def _check_typed(
    name: str, datatype: _Datatype, shape: tuple[int, ...], count: int, typed_set: list[str]
) -> str | None:
    """Return the contents field carrying this input's values, or None if it is empty."""
    wrong = [field for field in typed_set if field not in datatype.typed_fields]
    if wrong or len(typed_set) > 1:
        if datatype.typed_fields:
            where = "contents." + " or contents.".join(datatype.typed_fields)
            expected = f"its values belong in exactly one of {where}"
        else:
            expected = "it has no typed contents field; send it in raw_input_contents"
        raise InvalidArgument(
            f"input {name!r} is {datatype.name}, so {expected}, but it sent "
            + ", ".join(f"contents.{field}" for field in typed_set)
        )
    if typed_set:
        return typed_set[0]
    if count > 0:
        where = (
            "raw_input_contents or contents." + " or contents.".join(datatype.typed_fields)
            if datatype.typed_fields
            else "raw_input_contents"
        )
        raise InvalidArgument(
            f"input {name!r} carries no data: shape {_fmt(shape)} needs {count} "
            f"values, in {where}"
        )
    return None


def _is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
    )


def _is_matrix_request(tensors: list[_Tensor], schema: pa.Schema) -> bool:
    """Decide between shape (a) and (b); explain a matrix that fits neither."""
    if len(tensors) != 1 or len(tensors[0].shape) != 2:
        return False
    tensor = tensors[0]
    all_numeric = len(schema) > 0 and all(_is_numeric(f.type) for f in schema)
    k = tensor.shape[1]
    if all_numeric and k == len(schema):
        return True
    if k == 1 and tensor.name in schema.names:
        return False  # a named [n, 1] input: shape (b)
    if not all_numeric:
        others = [f"{f.name}: {f.type}" for f in schema if not _is_numeric(f.type)]
        raise InvalidArgument(
            f"input {tensor.name!r} is a matrix of shape {_fmt(tensor.shape)}, but not "
            f"all of the model's features are numeric ({_names(others)}); send one "
            f"input of shape [n] per feature: {_names(schema.names)}"
        )
    raise InvalidArgument(
        f"input {tensor.name!r} has shape {_fmt(tensor.shape)}, but the model has "
        f"{len(schema)} features ({_names(schema.names)}); send a matrix of shape "
        f"[n, {len(schema)}] or one input of shape [n] per feature"
    )


def _decode_matrix(tensor: _Tensor, k: int) -> pa.RecordBatch:
    if tensor.datatype.wire is None:
        raise InvalidArgument(
            f"input {tensor.name!r} is BYTES, but a matrix input must be numeric "
            f"(one of {', '.join(n for n in _DATATYPES if n != 'BYTES')})"
        )
    values = _numeric_values(tensor)
    if values.dtype != np.float32:
        with np.errstate(over="ignore"):  # FP64 beyond float32's range becomes inf
            values = values.astype(np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values), k)
    return pa.RecordBatch.from_arrays([column], names=[tensor.name])


def _decode_named(tensors: list[_Tensor], schema: pa.Schema) -> pa.RecordBatch:
    by_name = {t.name: t for t in tensors}
    for tensor in tensors:
        if tensor.name not in schema.names:
            raise InvalidArgument(
                f"unknown input {tensor.name!r}; the model expects inputs: "
                f"{_names(schema.names)}"
            )
    missing = [name for name in schema.names if name not in by_name]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InvalidArgument(
            f"missing input {missing[0]!r}{more}; the model expects inputs: "
            f"{_names(schema.names)}"
        )
    first = by_name[schema.names[0]]
    for field in schema:
        tensor = by_name[field.name]
        if not (len(tensor.shape) == 1 or tensor.shape[1:] == (1,)):
            raise InvalidArgument(
                f"input {tensor.name!r} has shape {_fmt(tensor.shape)}; a named input "
                "must have shape [n] or [n, 1]"
            )
        if tensor.rows != first.rows:
            raise InvalidArgument(
                f"input {tensor.name!r} has {tensor.rows} rows but input "
                f"{first.name!r} has {first.rows}; all inputs must have the same "
                "number of rows"
            )
    columns = [_column_for_field(by_name[field.name], field) for field in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _column_for_field(tensor: _Tensor, field: pa.Field) -> pa.Array:
    """Decode one named input and cast it to its schema field's type."""
    target = field.type
    if tensor.datatype.wire is None:
        if not _is_text(target):
            raise InvalidArgument(
                f"input {tensor.name!r} is BYTES, but the model's feature "
                f"{field.name!r} is {target}; send it as {_expected_datatype(target)}"
            )
        try:
            return _bytes_values(tensor).cast(target)
        except pa.ArrowInvalid as err:
            raise InvalidArgument(
                f"input {tensor.name!r} cannot be read as the model's {target} feature "
                f"{field.name!r}: {err}"
            ) from err
    if _is_text(target):
        raise InvalidArgument(
            f"input {tensor.name!r} is {tensor.datatype.name}, but the model's feature "
            f"{field.name!r} is {target}; send it as BYTES"
        )
    if not (_is_numeric(target) or pa.types.is_boolean(target)):
        raise ValueError(
            f"input schema field {field.name!r} has type {target}, which decode_inputs "
            "cannot fill from a tensor"
        )
    column = pa.array(_numeric_values(tensor))
    if column.type == target:
        return column
    try:
        # Float targets take any number, rounding as a float does; integer and
        # bool targets refuse values they cannot hold exactly.
        return column.cast(target, safe=not pa.types.is_floating(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise InvalidArgument(
            f"input {tensor.name!r} ({tensor.datatype.name}) cannot be converted to "
            f"the model's {target} feature {field.name!r}: {err}"
        ) from err


def _expected_datatype(arrow_type: pa.DataType) -> str:
    try:
        return datatype_of(arrow_type)
    except ValueError:
        return "a numeric datatype"


def _numeric_values(tensor: _Tensor) -> np.ndarray:
    """A flat native-endian array of the input's values (bool for BOOL).

    Raw payloads are viewed in place when the wire layout is the host's.
    """
    datatype = tensor.datatype
    assert datatype.wire is not None
    if tensor.raw is not None:
        values = np.frombuffer(tensor.raw, dtype=datatype.wire)
        if datatype.name == "BOOL":
            return values.astype(np.bool_)  # any nonzero byte is true
        if not values.dtype.isnative:
            values = values.astype(values.dtype.newbyteorder("="))
        return values
    target = np.dtype(np.bool_) if datatype.name == "BOOL" else datatype.wire.newbyteorder("=")
    if tensor.typed is None:
        return np.empty(0, dtype=target)
    assert tensor.typed_field is not None
    container = _CONTAINER_DTYPES[tensor.typed_field]
    values = np.fromiter(tensor.typed, dtype=container, count=len(tensor.typed))
    if container != target:
        info = np.iinfo(target)
        bad = values[(values < info.min) | (values > info.max)]
        if bad.size:
            raise InvalidArgument(
                f"input {tensor.name!r} is {datatype.name} but contents."
                f"{tensor.typed_field} holds {bad[0]}, outside [{info.min}, {info.max}]"
            )
        values = values.astype(target)
    return values


def _bytes_values(tensor: _Tensor) -> pa.Array:
    """The input's BYTES elements as a binary array, parsing raw length prefixes."""
    if tensor.typed is not None:
        return pa.array(list(tensor.typed), type=pa.binary())
    if tensor.raw is None:
        return pa.array([], type=pa.binary())
    return _split_bytes(tensor.raw, tensor.count, f"input {tensor.name!r}", tensor.shape, InvalidArgument)


def _split_bytes(
    raw: bytes, count: int, label: str, shape: Sequence[int], error: type[MilepostError]
) -> pa.Array:
    """``count`` length-prefixed BYTES elements of ``raw``; ``error`` (naming ``label``) if malformed."""
    elements: list[bytes] = []
    position = 0
    for index in range(count):
        if position + _PREFIX.size > len(raw):
            raise error(
                f"{label}: BYTES element {index} has a truncated length "
                f"prefix at byte {position} ({len(raw) - position} bytes left, a prefix "
                "takes 4)"
            )
        (length,) = _PREFIX.unpack_from(raw, position)
        position += _PREFIX.size
        if position + length > len(raw):
            raise error(
                f"{label}: BYTES element {index} declares {length} bytes "
                f"but only {len(raw) - position} remain"
            )
        elements.append(raw[position : position + length])
        position += length
    if position != len(raw):
        raise error(
            f"{label} has shape {_fmt(shape)}, which is "
            f"{count} BYTES elements, but its raw payload has "
            f"{len(raw) - position} bytes left over after them"
        )
    return pa.array(elements, type=pa.large_binary() if len(raw) >= 2**31 else pa.binary())


# ---------------------------------------------------------------------------
# Arrow -> responses


def encode_outputs(
    batch: pa.RecordBatch,
    response: pb.ModelInferResponse,
    *,
    requested: list[str] | None = None,
) -> None:
    """Append the batch's columns to ``response`` as raw output tensors.

    One tensor per column, or per ``requested`` name in that order (None or an
    empty list means all, as in the protocol). Payloads go to
    ``raw_output_contents``, little-endian and row-major, which is what
    tritonclient's ``as_numpy`` reads: numeric -> ``[n]``, fixed-size list ->
    ``[n, k]``, bool -> BOOL bytes, string/binary -> length-prefixed BYTES.
    Float nulls become NaN; nulls anywhere else are a model bug (ValueError).
    Nothing is appended unless every output encodes.
    """
    if len(response.raw_output_contents) != len(response.outputs):
        raise ValueError(
            "response already holds outputs with typed contents; raw_output_contents "
            "must carry every output or none"
        )
    names = batch.schema.names
    index_of: dict[str, int] = {}
    for index, name in enumerate(names):
        index_of.setdefault(name, index)
    if requested:
        for name in requested:
            if name not in index_of:
                raise InvalidArgument(
                    f"unknown output {name!r}; the model's outputs are: {_names(names)}"
                )
        if len(set(requested)) != len(requested):
            duplicate = next(n for n in requested if requested.count(n) > 1)
            raise InvalidArgument(f"output {duplicate!r} is requested more than once")
        chosen = [(name, index_of[name]) for name in requested]
    else:
        chosen = list(zip(names, range(len(names))))
    encoded = [(name, *_encode_column(name, batch.column(i), "output")) for name, i in chosen]
    for name, datatype, shape, payload in encoded:
        output = response.outputs.add()
        output.name = name
        output.datatype = datatype
        output.shape.extend(shape)
        response.raw_output_contents.append(payload)


def _encode_column(name: str, column: pa.Array, what: str) -> tuple[str, list[int], bytes]:
    """One column as (datatype, shape, raw payload); ``what`` ("output", "input") names it in errors."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    n = len(column)
    if pa.types.is_fixed_size_list(column.type):
        k = column.type.list_size
        values = column.values.slice(column.offset * k, n * k)
        row_nulls = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        datatype = _tensor_datatype(name, values.type, what)
        return datatype, [n, k], _numeric_payload(name, values, row_nulls, k, what)
    if _is_text(column.type):
        return "BYTES", [n], _bytes_payload(name, column, what)
    datatype = _tensor_datatype(name, column.type, what)
    return datatype, [n], _numeric_payload(name, column, None, 1, what)


def _tensor_datatype(name: str, arrow_type: pa.DataType, what: str) -> str:
    if not (_is_numeric(arrow_type) or pa.types.is_boolean(arrow_type)):
        raise ValueError(
            f"{what} {name!r} has Arrow type {arrow_type}, which has no Open Inference "
            "Protocol tensor form"
        )
    return datatype_of(arrow_type)


def _numeric_payload(
    name: str, values: pa.Array, row_nulls: np.ndarray | None, k: int, what: str
) -> bytes:
    """Little-endian bytes of a flat numeric/bool array; straight from its buffer when possible."""
    has_nulls = values.null_count > 0 or (row_nulls is not None and bool(row_nulls.any()))
    floating = pa.types.is_floating(values.type)
    if has_nulls and not floating:
        raise ValueError(
            f"{what} {name!r} ({values.type}) has null values, which a non-float "
            "tensor cannot represent"
        )
    if len(values) == 0:
        return b""
    if pa.types.is_boolean(values.type):
        return values.to_numpy(zero_copy_only=False).astype(np.uint8).tobytes()
    itemsize = values.type.bit_width // 8
    buffer = values.buffers()[1]
    if not has_nulls and _LITTLE_ENDIAN_HOST:
        return buffer.slice(values.offset * itemsize, len(values) * itemsize).to_pybytes()
    array = np.frombuffer(
        buffer,
        dtype=np.dtype(values.type.to_pandas_dtype()),
        count=len(values),
        offset=values.offset * itemsize,
    )
    if has_nulls:
        array = array.copy()
        if values.null_count:
            array[values.is_null().to_numpy(zero_copy_only=False)] = np.nan
        if row_nulls is not None:
            array[np.repeat(row_nulls, k)] = np.nan
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _bytes_payload(name: str, column: pa.Array, what: str) -> bytes:
    """OIP raw BYTES: each element as a 4-byte little-endian length, then its bytes.

    Built with two vectorised scatters (prefixes, then data into the gaps) rather
    than a Python loop over elements.
    """
    if column.null_count:
        raise ValueError(f"{what} {name!r} has null strings, which BYTES cannot represent")
    n = len(column)
    if n == 0:
        return b""
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    offset_type = np.dtype(np.int64 if large else np.int32)
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(
        offsets_buffer, dtype=offset_type, count=n + 1, offset=column.offset * offset_type.itemsize
    ).astype(np.int64)
    lengths = np.diff(offsets)
    if lengths.max() >= 2**32:
        raise ValueError(f"{what} {name!r} has an element over 4 GiB, too long for BYTES")
    start, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    out = np.empty(_PREFIX.size * n + total, dtype=np.uint8)
    is_prefix = np.zeros(out.size, dtype=np.bool_)
    prefix_at = (offsets[:-1] - start) + _PREFIX.size * np.arange(n, dtype=np.int64)
    is_prefix[prefix_at[:, None] + np.arange(_PREFIX.size)] = True
    out[is_prefix] = lengths.astype("<u4").view(np.uint8)
    if total:
        out[~is_prefix] = np.frombuffer(data_buffer, dtype=np.uint8, count=total, offset=start)
    return out.tobytes()


# ---------------------------------------------------------------------------
# The calling side: Arrow -> requests, responses -> Arrow
#
# A remote member (a model on another agent) and the Python client speak the
# protocol from the other end; these two are the mirror images of
# decode_inputs and encode_outputs, so a batch survives the round trip.


def encode_inputs(batch: pa.RecordBatch, request: pb.ModelInferRequest) -> None:
    """Append the batch's columns to ``request`` as raw input tensors, in column order.

    The layouts are those of ``encode_outputs`` (numeric -> ``[n]``, fixed-size
    list -> ``[n, k]``, bool -> BOOL, string/binary -> BYTES), which are what
    ``decode_inputs`` reads: a batch of one fixed-size-list column travels as the
    matrix shape (a), a batch of named columns as shape (b). Nothing is appended
    unless every column encodes. Columns with no tensor form raise ValueError
    (the batch is ours, not the caller's); duplicate names raise InvalidArgument.
    """
    if len(request.raw_input_contents) != len(request.inputs):
        raise ValueError(
            "request already holds inputs with typed contents; raw_input_contents "
            "must carry every input or none"
        )
    names = batch.schema.names
    taken = {t.name for t in request.inputs}
    for name in names:
        if name in taken:
            raise InvalidArgument(f"input {name!r} appears more than once")
        taken.add(name)
    encoded = [(name, *_encode_column(name, batch.column(i), "input")) for i, name in enumerate(names)]
    for name, datatype, shape, payload in encoded:
        tensor = request.inputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(payload)


def decode_outputs(response: pb.ModelInferResponse) -> pa.RecordBatch:
    """A response's output tensors as one record batch, one column per output, in order.

    ``[n]`` becomes a column of the datatype's Arrow type, ``[n, k]`` a
    fixed-size list of width k (higher ranks flatten their trailing dimensions
    into k), BYTES a binary column. Raw little-endian payloads become columns
    over the response's own bytes, without a copy; typed contents are read too.
    A response whose payloads do not match their shapes, or whose outputs
    disagree on the number of rows, raises DataLoss naming the output: the
    bytes that arrived are not what the sender described.
    """
    outputs = response.outputs
    raws = response.raw_output_contents
    if len(raws) and len(raws) != len(outputs):
        raise DataLoss(
            f"response has {len(outputs)} outputs but {len(raws)} raw_output_contents entries"
        )
    columns: list[pa.Array] = []
    names: list[str] = []
    rows: int | None = None
    for index, tensor in enumerate(outputs):
        label = f"output {tensor.name!r}"
        datatype = _DATATYPES.get(tensor.datatype)
        if datatype is None:
            raise DataLoss(f"{label} has datatype {tensor.datatype!r}, which is not an OIP datatype")
        shape = tuple(int(d) for d in tensor.shape)
        if not shape or any(d < 0 for d in shape):
            raise DataLoss(f"{label} has shape {_fmt(shape)}; outputs need concrete dimensions, rows first")
        n = shape[0]
        width = math.prod(shape[1:]) if len(shape) > 1 else None
        count = n * (width if width is not None else 1)
        if rows is not None and n != rows:
            raise DataLoss(f"{label} has {n} rows but {names[0]!r} has {rows}")
        rows = n
        raw = raws[index] if len(raws) else None
        values = _output_values(label, datatype, shape, count, raw, tensor.contents)
        if width is not None:
            if width == 0:
                raise Unimplemented(f"{label} has shape {_fmt(shape)}; Arrow has no fixed-size list of width 0")
            if datatype.wire is None:
                raise DataLoss(f"{label} is BYTES of shape {_fmt(shape)}; only [n] BYTES outputs have an Arrow form")
            values = pa.FixedSizeListArray.from_arrays(values, width)
        columns.append(values)
        names.append(tensor.name)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _output_values(
    label: str, datatype: _Datatype, shape: tuple[int, ...], count: int,
    raw: bytes | None, contents: pb.InferTensorContents,
) -> pa.Array:
    """The flat values of one output tensor, from its raw payload or its typed contents."""
    if raw is not None:
        if datatype.wire is None:
            return _split_bytes(raw, count, label, shape, DataLoss)
        expected = count * datatype.wire.itemsize
        if len(raw) != expected:
            raise DataLoss(
                f"{label} has shape {_fmt(shape)} and datatype {datatype.name}, so its payload "
                f"should be {expected} bytes, but it is {len(raw)} bytes"
            )
        if datatype.name == "BOOL":
            return pa.array(np.frombuffer(raw, dtype=np.uint8).astype(np.bool_))
        if _LITTLE_ENDIAN_HOST or datatype.wire.itemsize == 1:
            return pa.Array.from_buffers(datatype.arrow, count, [None, pa.py_buffer(raw)])
        return pa.array(np.frombuffer(raw, dtype=datatype.wire).astype(datatype.wire.newbyteorder("=")))
    fields = [f.name for f, _ in contents.ListFields()]
    if not fields:
        if count:
            raise DataLoss(f"{label} has shape {_fmt(shape)} but carries no values")
        return pa.array([], type=datatype.arrow)
    field = fields[0]
    if len(fields) > 1 or field not in datatype.typed_fields:
        raise DataLoss(f"{label} is {datatype.name} but its values are in contents.{', contents.'.join(fields)}")
    typed = getattr(contents, field)
    if len(typed) != count:
        raise DataLoss(f"{label} has shape {_fmt(shape)}, which is {count} values, but holds {len(typed)}")
    if datatype.wire is None:
        return pa.array(list(typed), type=pa.binary())
    values = np.fromiter(typed, dtype=_CONTAINER_DTYPES[field], count=count)
    return pa.array(values).cast(datatype.arrow, safe=False)


# ---------------------------------------------------------------------------
# Metadata


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
    if as_matrix_name is not None and len(schema) and all(_is_numeric(f.type) for f in schema):
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
        if pa.types.is_fixed_size_list(element) or _is_text(element):
            raise ValueError(
                f"Arrow type {arrow_type} has no Open Inference Protocol datatype: "
                "only fixed-size lists of numbers or bools are tensors"
            )
    if pa.types.is_dictionary(element) and _is_text(element.value_type):
        return "BYTES"
    if _is_text(element):
        return "BYTES"
    for datatype in _DATATYPES.values():
        if datatype.wire is not None and datatype.arrow == element:
            return datatype.name
    raise ValueError(
        f"Arrow type {arrow_type} has no Open Inference Protocol datatype; supported: "
        "bool, (u)int8-64, float16/32/64, string/binary, and fixed-size lists of those numbers"
    )


# ---------------------------------------------------------------------------
# Message helpers


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _names(names: Iterable[str]) -> str:
    """A readable, bounded list of names for an error message."""
    names = list(names)
    shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    if len(names) > _MAX_NAMES_IN_MESSAGE:
        shown += f", ... ({len(names) - _MAX_NAMES_IN_MESSAGE} more)"
    return shown
