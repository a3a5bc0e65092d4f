"""Client side of the Open Inference Protocol: numpy/Arrow to request tensors, response tensors to Arrow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from milepost.errors import InvalidArgument
from milepost.inference import grpc_predict_v2_pb2 as oip

_NUMPY_DATATYPES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}
_DATATYPE_NUMPY = {v: k for k, v in _NUMPY_DATATYPES.items()}


def _add_tensor(request: oip.ModelInferRequest, name: str, array: np.ndarray) -> None:
    if array.dtype.kind in "OUS":
        items = [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)]
        raw = b"".join(len(x).to_bytes(4, "little") + x for x in items)
        datatype = "BYTES"
    else:
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        try:
            datatype = _NUMPY_DATATYPES[array.dtype.newbyteorder("=")]
        except KeyError:
            raise InvalidArgument(f"input {name!r}: numpy dtype {array.dtype} has no OIP datatype") from None
        raw = array.tobytes()
    request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    request.raw_input_contents.append(raw)


def add_inputs(request: oip.ModelInferRequest, data: Any) -> None:
    """A 2-D array becomes one [n, k] tensor named 'input'; a table becomes one tensor per column."""
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise InvalidArgument(f"input array must be 2-D (rows, features), got shape {data.shape}")
        _add_tensor(request, "input", data)
        return
    if hasattr(data, "to_numpy") and hasattr(data, "columns") and not isinstance(data, (pa.Table, pa.RecordBatch)):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        for name, column in zip(data.schema.names, data.columns):
            _add_tensor(request, name, column.to_numpy(zero_copy_only=False))
        return
    raise InvalidArgument(f"cannot score data of type {type(data).__name__}; pass a 2-D numpy array or a table")


def outputs_table(response: oip.ModelInferResponse) -> pa.Table:
    """Decode raw_output_contents; an [n, k] output becomes a fixed-size list column."""
    columns: dict[str, pa.Array] = {}
    for i, out in enumerate(response.outputs):
        raw = response.raw_output_contents[i] if i < len(response.raw_output_contents) else b""
        shape = list(out.shape)
        if out.datatype == "BYTES":
            items, pos = [], 0
            while pos < len(raw):
                size = int.from_bytes(raw[pos : pos + 4], "little")
                items.append(raw[pos + 4 : pos + 4 + size])
                pos += 4 + size
            columns[out.name] = pa.array(items, type=pa.binary())
            continue
        values = np.frombuffer(raw, dtype=_DATATYPE_NUMPY[out.datatype].newbyteorder("<"))
        if len(shape) == 2:
            columns[out.name] = pa.FixedSizeListArray.from_arrays(pa.array(values), shape[1])
        else:
            columns[out.name] = pa.array(values)
    return pa.table(columns)
