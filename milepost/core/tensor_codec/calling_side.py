"""The calling side: a batch into a request's inputs, a response's outputs back into a batch.

The layouts mirror the serving side's, so a batch survives the round trip."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from milepost.core.errors import DataLoss, InvalidArgument, Unimplemented
from milepost.core.tensor_codec.datatypes import (
    CONTAINER_DTYPES,
    DATATYPES,
    LITTLE_ENDIAN_HOST,
    Datatype,
    fmt_shape,
    split_bytes,
)
from milepost.core.tensor_codec.responses import encode_column
from milepost.inference import grpc_predict_v2_pb2 as pb

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
    encoded = [(name, *encode_column(name, batch.column(i), "input")) for i, name in enumerate(names)]
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
        datatype = DATATYPES.get(tensor.datatype)
        if datatype is None:
            raise DataLoss(f"{label} has datatype {tensor.datatype!r}, which is not an OIP datatype")
        shape = tuple(int(d) for d in tensor.shape)
        if not shape or any(d < 0 for d in shape):
            raise DataLoss(f"{label} has shape {fmt_shape(shape)}; outputs need concrete dimensions, rows first")
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
                raise Unimplemented(f"{label} has shape {fmt_shape(shape)}; Arrow has no fixed-size list of width 0")
            if datatype.wire is None:
                raise DataLoss(f"{label} is BYTES of shape {fmt_shape(shape)}; only [n] BYTES outputs have an Arrow form")
            values = pa.FixedSizeListArray.from_arrays(values, width)
        columns.append(values)
        names.append(tensor.name)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _output_values(
    label: str, datatype: Datatype, shape: tuple[int, ...], count: int,
    raw: bytes | None, contents: pb.InferTensorContents,
) -> pa.Array:
    """The flat values of one output tensor, from its raw payload or its typed contents."""
    if raw is not None:
        if datatype.wire is None:
            return split_bytes(raw, count, label, shape, DataLoss)
        expected = count * datatype.wire.itemsize
        if len(raw) != expected:
            raise DataLoss(
                f"{label} has shape {fmt_shape(shape)} and datatype {datatype.name}, so its payload "
                f"should be {expected} bytes, but it is {len(raw)} bytes"
            )
        if datatype.name == "BOOL":
            return pa.array(np.frombuffer(raw, dtype=np.uint8).astype(np.bool_))
        if LITTLE_ENDIAN_HOST or datatype.wire.itemsize == 1:
            return pa.Array.from_buffers(datatype.arrow, count, [None, pa.py_buffer(raw)])
        return pa.array(np.frombuffer(raw, dtype=datatype.wire).astype(datatype.wire.newbyteorder("=")))
    fields = [f.name for f, _ in contents.ListFields()]
    if not fields:
        if count:
            raise DataLoss(f"{label} has shape {fmt_shape(shape)} but carries no values")
        return pa.array([], type=datatype.arrow)
    field = fields[0]
    if len(fields) > 1 or field not in datatype.typed_fields:
        raise DataLoss(f"{label} is {datatype.name} but its values are in contents.{', contents.'.join(fields)}")
    typed = getattr(contents, field)
    if len(typed) != count:
        raise DataLoss(f"{label} has shape {fmt_shape(shape)}, which is {count} values, but holds {len(typed)}")
    if datatype.wire is None:
        return pa.array(list(typed), type=pa.binary())
    values = np.fromiter(typed, dtype=CONTAINER_DTYPES[field], count=count)
    return pa.array(values).cast(datatype.arrow, safe=False)


# ---------------------------------------------------------------------------
# Metadata
