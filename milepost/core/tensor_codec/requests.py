"""ModelInferRequest inputs to one Arrow record batch (the serving side)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from milepost.core.errors import InvalidArgument, ResourceExhausted
from milepost.core.tensor_codec.datatypes import (
    CONTAINER_DTYPES,
    DATATYPES,
    LENGTH_PREFIX,
    LITTLE_ENDIAN_HOST,
    MATRIX_INPUT_NAME,
    SUPPORTED,
    Datatype,
    datatype_of,
    fmt_shape,
    is_numeric,
    is_text,
    matrix_names,
    names_list,
    split_bytes,
)
from milepost.inference import grpc_predict_v2_pb2 as pb

RAW_INPUT_CONTENTS = "raw_input_contents entry"  # an input's raw bytes, as gRPC users know them


@dataclass(frozen=True)
class _Tensor:
    """An input whose datatype, shape and payload size have been checked."""

    name: str
    datatype: Datatype
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
    raw_label: str = RAW_INPUT_CONTENTS,
) -> pa.RecordBatch:
    """Turn a request's input tensors into one record batch for the model.

    Two shapes of request are accepted, so that both matrix clients (numpy,
    tritonclient) and feature-by-feature clients work against the same model:

    (a) one input named ``MATRIX_INPUT_NAME`` ("input", as the model's metadata says) of
        shape ``[n, k]``, ``k`` being the number of fields of an
        all-numeric schema: one column named after the input, of type
        ``pa.list_(pa.float32(), k)``. FP32 raw payloads are used in place; any
        other numeric datatype is converted to float32 (one copy).
    (b) one input per schema field, named after it, of shape ``[n]`` or
        ``[n, 1]``: columns in schema order, cast to each field's type.

    ``max_rows`` bounds ``shape[0]`` of every input (ResourceExhausted beyond
    it). Malformed requests raise InvalidArgument naming the input; ``raw_label`` is what
    the front end's users call an input's raw bytes in those messages (gRPC's
    raw_input_contents entry; on HTTP, the bytes its binary_data_size claims).
    """
    tensors = _checked_inputs(request, max_rows, raw_label)
    if _is_matrix_request(tensors, input_schema):
        _check_matrix_name(tensors[0].name, input_schema)
        return _decode_matrix(tensors[0], len(input_schema))
    return _decode_named(tensors, input_schema)


def _checked_inputs(
    request: pb.ModelInferRequest, max_rows: int | None, raw_label: str = RAW_INPUT_CONTENTS,
) -> list[_Tensor]:
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
                f"input {name!r} has shape {fmt_shape(shape)}; every dimension must be "
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
            _check_raw_size(name, datatype, shape, count, raw, raw_label)
            tensors.append(_Tensor(name, datatype, shape, count, raw, None, None))
            continue
        field = _check_typed(name, datatype, shape, count, typed_set)
        typed = getattr(tensor.contents, field) if field is not None else None
        if typed is not None and len(typed) != count:
            raise InvalidArgument(
                f"input {name!r} has shape {fmt_shape(shape)}, which is {count} values, "
                f"but contents.{field} holds {len(typed)}"
            )
        tensors.append(_Tensor(name, datatype, shape, count, None, field, typed))
    return tensors


def _datatype_named(name: str, datatype: str) -> Datatype:
    found = DATATYPES.get(datatype)
    if found is not None:
        return found
    if datatype == "BF16":
        raise InvalidArgument(
            f"input {name!r} has datatype BF16, which is unsupported here; "
            f"supported: {SUPPORTED}"
        )
    raise InvalidArgument(
        f"input {name!r} has datatype {datatype!r}, which is not an Open Inference "
        f"Protocol datatype; supported: {SUPPORTED}"
    )


def _check_raw_size(
    name: str, datatype: Datatype, shape: tuple[int, ...], count: int, raw: bytes, raw_label: str
) -> None:
    """Compare the claimed shape with the bytes sent, before sizing anything by it."""
    if datatype.wire is None:
        # Each BYTES element costs at least its 4-byte length prefix; the full
        # parse happens when decoding.
        if count * LENGTH_PREFIX.size > len(raw):
            raise InvalidArgument(
                f"input {name!r} has shape {fmt_shape(shape)} and datatype BYTES, so its "
                f"{raw_label} needs at least {count * LENGTH_PREFIX.size} bytes "
                f"({count} elements x a 4-byte length prefix), but it is {len(raw)} bytes"
            )
        return
    itemsize = datatype.wire.itemsize
    expected = count * itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r} has shape {fmt_shape(shape)} and datatype {datatype.name}, so "
            f"its {raw_label} should be {expected} bytes ({count} values "
            f"x {itemsize} bytes), but it is {len(raw)} bytes"
        )


def _check_typed(
    name: str, datatype: Datatype, shape: tuple[int, ...], count: int, typed_set: list[str]
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
            f"input {name!r} carries no data: shape {fmt_shape(shape)} needs {count} "
            f"values, in {where}"
        )
    return None


_all_numeric_seen: dict[int, tuple[pa.Schema, bool]] = {}  # id(schema) -> (schema, every field numeric)


def _all_numeric(schema: pa.Schema) -> bool:
    """Whether every field of ``schema`` is numeric, worked out once per schema object: a
    request would otherwise check a 30-feature schema again each time (13 us of 20)."""
    seen = _all_numeric_seen.get(id(schema))
    if seen is not None and seen[0] is schema:
        return seen[1]
    answer = len(schema) > 0 and all(is_numeric(f.type) for f in schema)
    if len(_all_numeric_seen) >= 256:  # models' schemas are few; anything more is churn
        _all_numeric_seen.clear()
    _all_numeric_seen[id(schema)] = (schema, answer)  # holding the schema keeps its id from being reused
    return answer


def _is_matrix_request(tensors: list[_Tensor], schema: pa.Schema) -> bool:
    """Decide between shape (a) and (b); explain a matrix that fits neither."""
    if len(tensors) != 1 or len(tensors[0].shape) != 2:
        return False
    tensor = tensors[0]
    all_numeric = _all_numeric(schema)
    k = tensor.shape[1]
    if all_numeric and k == len(schema):
        return True
    if k == 1 and tensor.name in schema.names:
        return False  # a named [n, 1] input: shape (b)
    if not all_numeric:
        others = [f"{f.name}: {f.type}" for f in schema if not is_numeric(f.type)]
        raise InvalidArgument(
            f"input {tensor.name!r} is a matrix of shape {fmt_shape(tensor.shape)}, but not "
            f"all of the model's features are numeric ({names_list(others)}); send one "
            f"input of shape [n] per feature: {names_list(schema.names)}"
        )
    raise InvalidArgument(
        f"input {tensor.name!r} has shape {fmt_shape(tensor.shape)}, but the model has "
        f"{len(schema)} features ({names_list(schema.names)}); send a matrix of shape "
        f"[n, {len(schema)}] or one input of shape [n] per feature"
    )


def _check_matrix_name(name: str, schema: pa.Schema) -> None:
    """A matrix goes by the name the model's metadata gives it (MATRIX_INPUT_NAME), by the
    model's own name for it (an ONNX graph's input, ``matrix_names``), or, for a model of one
    feature, by that feature's name: a typo is an error, not a guess."""
    accepted = matrix_names(schema)
    if name not in accepted and not (len(schema) == 1 and name == schema.names[0]):
        raise InvalidArgument(
            f"unknown input {name!r}; the model expects one matrix input {' or '.join(map(repr, accepted))} "
            f"of shape [n, {len(schema)}], or one input of shape [n] per feature: {names_list(schema.names)}"
        )


def _decode_matrix(tensor: _Tensor, k: int) -> pa.RecordBatch:
    if tensor.datatype.wire is None:
        raise InvalidArgument(
            f"input {tensor.name!r} is BYTES, but a matrix input must be numeric "
            f"(one of {', '.join(n for n in DATATYPES if n != 'BYTES')})"
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
            if tensor.name in matrix_names(schema) and len(tensor.shape) != 2:
                raise InvalidArgument(
                    f"input {tensor.name!r} is the model's matrix input, so it must be 2-D [n, {len(schema)}] "
                    f"(n rows of the model's {len(schema)} features), but its shape is {fmt_shape(tensor.shape)}"
                )
            raise InvalidArgument(
                f"unknown input {tensor.name!r}; the model expects inputs: "
                f"{names_list(schema.names)}"
            )
    missing = [name for name in schema.names if name not in by_name]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InvalidArgument(
            f"missing input {missing[0]!r}{more}; the model expects inputs: "
            f"{names_list(schema.names)}"
        )
    first = by_name[schema.names[0]]
    for field in schema:
        tensor = by_name[field.name]
        if not (len(tensor.shape) == 1 or tensor.shape[1:] == (1,)):
            raise InvalidArgument(
                f"input {tensor.name!r} has shape {fmt_shape(tensor.shape)}; a named input "
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
        if not is_text(target):
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
    if is_text(target):
        raise InvalidArgument(
            f"input {tensor.name!r} is {tensor.datatype.name}, but the model's feature "
            f"{field.name!r} is {target}; send it as BYTES"
        )
    if not (is_numeric(target) or pa.types.is_boolean(target)):
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
    container = CONTAINER_DTYPES[tensor.typed_field]
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
    return split_bytes(tensor.raw, tensor.count, f"input {tensor.name!r}", tensor.shape, InvalidArgument)


# ---------------------------------------------------------------------------
# The matrix lane: the common request, without Arrow


def raw_matrix(request: pb.ModelInferRequest, max_rows: int | None = None) -> np.ndarray | None:
    """The (n, k) float32 matrix of a request that is exactly one FP32 input named
    ``MATRIX_INPUT_NAME``, of shape ``[n, k]`` with ``0 < n <= max_rows``, in one
    ``raw_input_contents`` entry of ``n * k * 4`` bytes and nothing in ``contents``:
    shape (a) of ``decode_inputs`` in its common form, viewed in place (read-only).

    None for every other request, well formed or not: ``decode_inputs`` decides those,
    with its errors, so that each rule about a request is written there once. What a
    model needs of the matrix (its width) is the caller's to check."""
    inputs = request.inputs
    if len(inputs) != 1:
        return None
    tensor = inputs[0]
    if tensor.datatype != "FP32" or tensor.name != MATRIX_INPUT_NAME:
        return None
    shape = tensor.shape
    if len(shape) != 2:
        return None
    n, k = shape
    raws = request.raw_input_contents
    if n <= 0 or k <= 0 or len(raws) != 1 or (max_rows is not None and n > max_rows):
        return None
    raw = raws[0]  # each access copies out of the message: take it once
    if len(raw) != n * k * 4 or tensor.HasField("contents"):
        return None
    values = np.frombuffer(raw, dtype=_FP32_WIRE)
    return values.reshape(n, k) if LITTLE_ENDIAN_HOST else values.astype(np.float32).reshape(n, k)


_FP32_WIRE = np.dtype("<f4")
