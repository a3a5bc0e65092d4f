"""encode_inputs and decode_outputs: the calling side of the protocol, mirror of decode_inputs/encode_outputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from milepost.core.errors import DataLoss, InvalidArgument, Unimplemented
from milepost.core.tensor_codec import decode_inputs, decode_outputs, encode_inputs, encode_outputs
from milepost.inference import grpc_predict_v2_pb2 as pb


def test_a_matrix_batch_travels_as_one_matrix_input() -> None:
    values = np.arange(24, dtype=np.float32)
    batch = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(values), 8)], names=["input"])
    request = pb.ModelInferRequest()
    encode_inputs(batch, request)
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("input", "FP32", [3, 8])]
    schema = pa.schema([pa.field(f"f{i}", pa.float32()) for i in range(8)])
    assert decode_inputs(request, schema).equals(batch)


def test_named_columns_of_every_kind_survive_the_round_trip() -> None:
    schema = pa.schema([("x", pa.float64()), ("n", pa.int64()), ("flag", pa.bool_()), ("city", pa.string()), ("h", pa.float16())])
    batch = pa.RecordBatch.from_arrays([
        pa.array([1.5, -2.0]), pa.array([7, -9], pa.int64()), pa.array([True, False]),
        pa.array(["Zürich", ""]), pa.array(np.array([0.5, 2.0], np.float16)),
    ], schema=schema)
    request = pb.ModelInferRequest()
    encode_inputs(batch, request)
    assert [t.datatype for t in request.inputs] == ["FP64", "INT64", "BOOL", "BYTES", "FP16"]
    assert decode_inputs(request, schema).equals(batch)


def test_encode_inputs_refuses_duplicates_and_appends_nothing_on_error() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["x", "x"])
    request = pb.ModelInferRequest()
    with pytest.raises(InvalidArgument, match="'x'"):
        encode_inputs(batch, request)
    assert len(request.inputs) == 0
    with pytest.raises(ValueError, match="input 'ts'"):
        encode_inputs(pa.RecordBatch.from_arrays([pa.array([1], pa.timestamp("s"))], names=["ts"]), request)
    assert len(request.inputs) == 0


def test_outputs_round_trip_through_encode_outputs_and_decode_outputs() -> None:
    batch = pa.RecordBatch.from_arrays([
        pa.FixedSizeListArray.from_arrays(pa.array([0.25, 0.75, 1.0, 0.0]), 2),
        pa.array([1.5, 2.5], pa.float32()), pa.array([3, 4], pa.int32()), pa.array([True, False]),
        pa.array([b"a", b"bc"]),
    ], names=["probabilities", "score", "label", "flag", "blob"])
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert decode_outputs(response).equals(batch)
    requested = pb.ModelInferResponse()
    encode_outputs(batch, requested, requested=["label", "probabilities"])
    assert decode_outputs(requested).schema.names == ["label", "probabilities"]


def test_decode_outputs_reads_typed_contents() -> None:
    response = pb.ModelInferResponse()
    out = response.outputs.add(name="p", datatype="FP32", shape=[2, 2])
    out.contents.fp32_contents.extend([0.1, 0.9, 0.4, 0.6])
    label = response.outputs.add(name="label", datatype="INT8", shape=[2])
    label.contents.int_contents.extend([1, -1])
    batch = decode_outputs(response)
    assert batch.schema.field("p").type == pa.list_(pa.float32(), 2)
    assert batch.column(1).to_pylist() == [1, -1] and batch.schema.field("label").type == pa.int8()


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r.raw_output_contents.__setitem__(0, r.raw_output_contents[0][:-1]), ["'p'", "bytes"]),
    (lambda r: r.outputs[1].shape.__setitem__(0, 5), ["'q'", "rows"]),
    (lambda r: setattr(r.outputs[0], "datatype", "FP42"), ["'p'", "FP42"]),
    (lambda r: r.raw_output_contents.append(b""), ["raw_output_contents"]),
    (lambda r: r.outputs[0].shape.extend([0]), ["'p'", "0"]),
])
def test_decode_outputs_raises_data_loss_naming_the_output(mutate, words) -> None:
    response = pb.ModelInferResponse()
    encode_outputs(pa.RecordBatch.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["p", "q"]), response)
    mutate(response)
    with pytest.raises((DataLoss, Unimplemented)) as info:
        decode_outputs(response)
    for word in words:
        assert word in info.value.message


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.int16]),
    shape=st.tuples(st.integers(0, 6), st.integers(1, 6)),
))
def test_any_numeric_matrix_round_trips_as_an_output(matrix: np.ndarray) -> None:
    n, k = matrix.shape
    column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), k)
    batch = pa.RecordBatch.from_arrays([column], names=["m"])
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    back = decode_outputs(response)
    assert back.num_rows == n
    np.testing.assert_array_equal(
        back.column(0).values.to_numpy(zero_copy_only=False).reshape(n, k), matrix
    )
