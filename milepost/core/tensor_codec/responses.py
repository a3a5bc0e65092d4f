"""An Arrow record batch to ModelInferResponse outputs (the serving side)."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from milepost.core.errors import InvalidArgument
from milepost.core.tensor_codec.datatypes import (
    LENGTH_PREFIX,
    LITTLE_ENDIAN_HOST,
    datatype_of,
    is_numeric,
    is_text,
    names_list,
)
from milepost.inference import grpc_predict_v2_pb2 as pb

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
                    f"unknown output {name!r}; the model's outputs are: {names_list(names)}"
                )
        if len(set(requested)) != len(requested):
            duplicate = next(n for n in requested if requested.count(n) > 1)
            raise InvalidArgument(f"output {duplicate!r} is requested more than once")
        chosen = [(name, index_of[name]) for name in requested]
    else:
        chosen = list(zip(names, range(len(names))))
    encoded = [(name, *encode_column(name, batch.column(i), "output")) for name, i in chosen]
    for name, datatype, shape, payload in encoded:
        output = response.outputs.add()
        output.name = name
        output.datatype = datatype
        output.shape.extend(shape)
        response.raw_output_contents.append(payload)


def encode_column(name: str, column: pa.Array, what: str) -> tuple[str, list[int], bytes]:
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
    if is_text(column.type):
        return "BYTES", [n], _bytes_payload(name, column, what)
    datatype = _tensor_datatype(name, column.type, what)
    return datatype, [n], _numeric_payload(name, column, None, 1, what)


def _tensor_datatype(name: str, arrow_type: pa.DataType, what: str) -> str:
    if not (is_numeric(arrow_type) or pa.types.is_boolean(arrow_type)):
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
    if not has_nulls and LITTLE_ENDIAN_HOST:
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
    out = np.empty(LENGTH_PREFIX.size * n + total, dtype=np.uint8)
    is_prefix = np.zeros(out.size, dtype=np.bool_)
    prefix_at = (offsets[:-1] - start) + LENGTH_PREFIX.size * np.arange(n, dtype=np.int64)
    is_prefix[prefix_at[:, None] + np.arange(LENGTH_PREFIX.size)] = True
    out[is_prefix] = lengths.astype("<u4").view(np.uint8)
    if total:
        out[~is_prefix] = np.frombuffer(data_buffer, dtype=np.uint8, count=total, offset=start)
    return out.tobytes()


# ---------------------------------------------------------------------------
# The calling side: Arrow -> requests, responses -> Arrow
#
# A remote member (a model on another agent) and the Python client speak the


def matrix_response(model_name: str, version: str, request_id: str, parameters: tuple[tuple[str, str], ...],
                    output_name: str, values: np.ndarray, *, rows_only: bool) -> bytes:
    """The serialized ModelInferResponse of a matrix lane answer: ``values`` (n, k) float64, as
    a model of the lane scored them, as output ``name`` of ``[n]`` when ``rows_only`` (a one-value
    output column), else ``[n, k]`` (a fixed-size-list column), the tensor ``encode_outputs``
    writes for that column; ``parameters`` (name, text) as string parameters.

    Built as bytes, not as a message: what is the same for every answer of a route (names,
    version, parameters) and for every batch size (the output tensor's header) is serialized
    once, by protobuf, and only the id and the scores are framed per request. A protobuf
    message's fields may come in any order and concatenated serializations merge, so these
    bytes parse as the message (tests compare them field by field)."""
    n = values.shape[0]
    shape = (n,) if rows_only else (n, values.shape[1])
    data = (values if values.dtype == _FP64_WIRE and values.flags.c_contiguous
            else np.ascontiguousarray(values, dtype=_FP64_WIRE)).tobytes()
    return b"".join((
        _response_head(model_name, version, parameters),
        _length_delimited(_ID_TAG, request_id.encode()) if request_id else b"",
        _output_head(output_name, shape),
        _length_delimited(_RAW_OUTPUT_TAG, data),
    ))


_FP64_WIRE = np.dtype("<f8")
_ID_TAG, _RAW_OUTPUT_TAG = b"\x1a", b"\x32"  # ModelInferResponse fields 3 (id) and 6 (raw_output_contents)


@functools.lru_cache(maxsize=1024)
def _response_head(model_name: str, version: str, parameters: tuple[tuple[str, str], ...]) -> bytes:
    response = pb.ModelInferResponse(model_name=model_name, model_version=version)
    for name, text in parameters:
        response.parameters[name].string_param = text
    return response.SerializeToString()


@functools.lru_cache(maxsize=1024)
def _output_head(name: str, shape: tuple[int, ...]) -> bytes:
    return pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(
        name=name, datatype="FP64", shape=shape)]).SerializeToString()


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited protobuf field: its tag, the payload's length as a varint, the payload."""
    n = len(payload)
    length = bytearray()
    while n >= 0x80:
        length.append((n & 0x7F) | 0x80)
        n >>= 7
    length.append(n)
    return tag + length + payload
