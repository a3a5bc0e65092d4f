"""Open Inference Protocol tensors <-> Arrow, through real protobuf messages."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from milepost.core.errors import InvalidArgument, ResourceExhausted
from milepost.core.tensor_codec import datatype_of, decode_inputs, encode_outputs, tensor_metadata
from milepost.core.tensor_codec import requests as codec_requests
from milepost.inference import grpc_predict_v2_pb2 as pb

Input = pb.ModelInferRequest.InferInputTensor


def _input(name: str, datatype: str, shape: list[int], **contents: Any) -> Input:
    return Input(name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents))


def _raw_request(*tensors: tuple[str, str, list[int], bytes]) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        inputs=[Input(name=n, datatype=d, shape=s) for n, d, s, _ in tensors],
        raw_input_contents=[raw for *_, raw in tensors],
    )


def _typed_request(*inputs: Input) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(inputs=list(inputs))


def _bytes_raw(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


_NUMPY_OF = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def _as_numpy(response: pb.ModelInferResponse, index: int) -> np.ndarray:
    """Read an output the way tritonclient's as_numpy does."""
    output = response.outputs[index]
    raw = response.raw_output_contents[index]
    if output.datatype == "BYTES":
        elements, position = [], 0
        while position < len(raw):
            (length,) = struct.unpack_from("<I", raw, position)
            elements.append(raw[position + 4 : position + 4 + length])
            position += 4 + length
        return np.array(elements, dtype=np.object_).reshape(list(output.shape))
    return np.frombuffer(raw, dtype=_NUMPY_OF[output.datatype]).reshape(list(output.shape))


# datatype, Arrow type, typed contents field, sample values (extremes included)
_CASES: list[tuple[str, pa.DataType, str | None, list[Any]]] = [
    ("BOOL", pa.bool_(), "bool_contents", [True, False, True]),
    ("UINT8", pa.uint8(), "uint_contents", [0, 7, 255]),
    ("UINT16", pa.uint16(), "uint_contents", [0, 7, 65535]),
    ("UINT32", pa.uint32(), "uint_contents", [0, 7, 2**32 - 1]),
    ("UINT64", pa.uint64(), "uint64_contents", [0, 7, 2**64 - 1]),
    ("INT8", pa.int8(), "int_contents", [-128, 0, 127]),
    ("INT16", pa.int16(), "int_contents", [-(2**15), 0, 2**15 - 1]),
    ("INT32", pa.int32(), "int_contents", [-(2**31), 0, 2**31 - 1]),
    ("INT64", pa.int64(), "int64_contents", [-(2**63), 0, 2**63 - 1]),
    ("FP16", pa.float16(), None, [-2.0, 0.5, 65504.0]),
    ("FP32", pa.float32(), "fp32_contents", [-1.5, 0.0, 3.4e38]),
    ("FP64", pa.float64(), "fp64_contents", [-1.5, 0.0, 1e300]),
]
_TYPED_CASES = [case for case in _CASES if case[2] is not None]


# -- every datatype, raw and typed, round-trips -------------------------------


@pytest.mark.parametrize(("datatype", "arrow_type", "field", "values"), _CASES, ids=[c[0] for c in _CASES])
def test_raw_named_input_round_trips(datatype: str, arrow_type: pa.DataType, field: str | None, values: list[Any]) -> None:
    expected = np.array(values, dtype=_NUMPY_OF[datatype])
    raw = expected.tobytes()
    request = _raw_request(("v", datatype, [3], raw))

    batch = decode_inputs(request, pa.schema([("v", arrow_type)]))

    assert batch.schema.field("v").type == arrow_type
    np.testing.assert_array_equal(batch.column(0).to_numpy(zero_copy_only=False), expected)
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == (datatype, [3])
    assert response.raw_output_contents[0] == raw


@pytest.mark.parametrize(("datatype", "arrow_type", "field", "values"), _TYPED_CASES, ids=[c[0] for c in _TYPED_CASES])
def test_typed_named_input_round_trips(datatype: str, arrow_type: pa.DataType, field: str, values: list[Any]) -> None:
    request = _typed_request(_input("v", datatype, [3], **{field: values}))

    batch = decode_inputs(request, pa.schema([("v", arrow_type)]))

    assert batch.schema.field("v").type == arrow_type
    expected = np.array(values, dtype=_NUMPY_OF[datatype])
    np.testing.assert_array_equal(batch.column(0).to_numpy(zero_copy_only=False), expected)
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert response.outputs[0].datatype == datatype
    assert response.raw_output_contents[0] == expected.tobytes()


@pytest.mark.parametrize("datatype", ["UINT8", "UINT16"])
def test_small_unsigned_also_accepted_in_int_contents(datatype: str) -> None:
    request = _typed_request(_input("v", datatype, [2], int_contents=[0, 200]))
    batch = decode_inputs(request, pa.schema([("v", pa.float32())]))
    assert batch.column(0).to_pylist() == [0.0, 200.0]


@pytest.mark.parametrize("datatype", [c[0] for c in _CASES])
def test_matrix_of_any_numeric_datatype_becomes_float32(datatype: str) -> None:
    values = np.array([[1, 0, 1], [0, 1, 1]], dtype=_NUMPY_OF[datatype])
    schema = pa.schema([(c, pa.float32()) for c in "abc"])
    request = _raw_request(("input", datatype, [2, 3], values.tobytes()))

    batch = decode_inputs(request, schema)

    assert batch.schema.names == ["input"]
    assert batch.schema.field(0).type == pa.list_(pa.float32(), 3)
    assert batch.column(0).to_pylist() == values.astype(np.float32).tolist()


@pytest.mark.parametrize(("datatype", "arrow_type", "field", "values"), _TYPED_CASES, ids=[c[0] for c in _TYPED_CASES])
def test_typed_matrix_becomes_float32(datatype: str, arrow_type: pa.DataType, field: str, values: list[Any]) -> None:
    request = _typed_request(_input("input", datatype, [1, 3], **{field: values}))
    batch = decode_inputs(request, pa.schema([(c, pa.float64()) for c in "abc"]))
    with np.errstate(over="ignore"):
        expected = np.array(values, dtype=_NUMPY_OF[datatype]).astype(np.float32)
    np.testing.assert_array_equal(batch.column(0).flatten().to_numpy(), expected)


def test_single_feature_matrix_n_by_1() -> None:
    request = _raw_request(("x", "FP32", [2, 1], np.array([1, 2], "<f4").tobytes()))
    batch = decode_inputs(request, pa.schema([("x", pa.float32())]))
    assert batch.schema.field("x").type == pa.list_(pa.float32(), 1)
    assert batch.column(0).to_pylist() == [[1.0], [2.0]]


def test_empty_matrix() -> None:
    request = _raw_request(("input", "FP32", [0, 2], b""))
    batch = decode_inputs(request, pa.schema([("a", pa.float32()), ("b", pa.float32())]))
    assert batch.num_rows == 0 and batch.schema.field(0).type == pa.list_(pa.float32(), 2)


# -- zero copy ----------------------------------------------------------------


def test_fp32_matrix_values_are_the_request_bytes() -> None:
    request = _raw_request(("x", "FP32", [4, 2], np.arange(8, dtype="<f4").tobytes()))
    (tensor,) = codec_requests._checked_inputs(request, None)

    batch = codec_requests._decode_matrix(tensor, 2)

    values = batch.column(0).values.buffers()[1]
    assert values.address == pa.py_buffer(tensor.raw).address
    assert values.size == len(tensor.raw)


def test_fp32_matrix_decode_makes_no_copy() -> None:
    """Protobuf hands out one copy of each raw entry; decoding must add none."""
    n, k = 32_768, 8
    payload = np.random.default_rng(0).random((n, k), dtype=np.float32).tobytes()
    request = _raw_request(("input", "FP32", [n, k], payload))
    schema = pa.schema([(f"f{i}", pa.float32()) for i in range(k)])
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        batch = decode_inputs(request, schema)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pa.total_allocated_bytes() - arrow_before < len(payload) // 4
    assert peak < 1.5 * len(payload)
    assert not batch.column(0).values.buffers()[1].is_mutable  # foreign, read-only bytes
    np.testing.assert_array_equal(batch.column(0).flatten().to_numpy(), np.frombuffer(payload, "<f4"))


# -- named inputs ---------------------------------------------------------------


def test_named_inputs_map_onto_schema_order_and_types() -> None:
    schema = pa.schema([("a", pa.float32()), ("b", pa.int64()), ("c", pa.string()), ("d", pa.float64())])
    request = _raw_request(
        ("c", "BYTES", [2], _bytes_raw(["zürich".encode(), b""])),
        ("d", "FP32", [2, 1], np.array([0.5, 1.5], "<f4").tobytes()),
        ("a", "FP64", [2], np.array([1.25, -2.0], "<f8").tobytes()),
        ("b", "INT32", [2], np.array([7, -7], "<i4").tobytes()),
    )

    batch = decode_inputs(request, schema)

    assert batch.schema == schema
    assert batch.to_pydict() == {"a": [1.25, -2.0], "b": [7, -7], "c": ["zürich", ""], "d": [0.5, 1.5]}


def test_named_typed_inputs() -> None:
    schema = pa.schema([("a", pa.float32()), ("c", pa.string()), ("f", pa.bool_())])
    request = _typed_request(
        _input("f", "BOOL", [2], bool_contents=[True, False]),
        _input("c", "BYTES", [2], bytes_contents=[b"x", b"yz"]),
        _input("a", "INT64", [2], int64_contents=[3, 4]),
    )
    assert decode_inputs(request, schema).to_pydict() == {"a": [3.0, 4.0], "c": ["x", "yz"], "f": [True, False]}


def test_named_fp32_input_is_zero_copy_too() -> None:
    request = _raw_request(("a", "FP32", [3], np.array([1, 2, 3], "<f4").tobytes()))
    tensors = codec_requests._checked_inputs(request, None)
    column = codec_requests._column_for_field(tensors[0], pa.field("a", pa.float32()))
    assert column.buffers()[1].address == pa.py_buffer(tensors[0].raw).address


def test_bytes_to_binary_field_keeps_arbitrary_bytes() -> None:
    elements = [b"\xff\x00", b"", b"abc"]
    for request in (
        _raw_request(("blob", "BYTES", [3], _bytes_raw(elements))),
        _typed_request(_input("blob", "BYTES", [3], bytes_contents=elements)),
    ):
        batch = decode_inputs(request, pa.schema([("blob", pa.binary())]))
        assert batch.column(0).to_pylist() == elements
        response = pb.ModelInferResponse()
        encode_outputs(batch, response)
        assert response.outputs[0].datatype == "BYTES"
        assert response.raw_output_contents[0] == _bytes_raw(elements)


def test_zero_rows_named() -> None:
    schema = pa.schema([("a", pa.float32()), ("s", pa.string())])
    request = _typed_request(_input("a", "FP32", [0]), _input("s", "BYTES", [0]))
    assert decode_inputs(request, schema).num_rows == 0
    request = _raw_request(("a", "FP32", [0], b""), ("s", "BYTES", [0], b""))
    assert decode_inputs(request, schema).num_rows == 0


# -- errors: InvalidArgument naming the input ----------------------------------

_ABC = pa.schema([(c, pa.float32()) for c in "abc"])
_F4_6 = np.zeros(6, "<f4").tobytes()


def _error_cases() -> list[Any]:
    one = pa.schema([("x", pa.float32())])
    text = pa.schema([("x", pa.string())])
    ints = pa.schema([("x", pa.int8())])
    cases = [
        ("unknown datatype", _raw_request(("x", "FLOAT32", [1], b"1234")), one, ["'x'", "'FLOAT32'", "FP32, FP64, BYTES"]),
        ("bf16", _raw_request(("x", "BF16", [1], b"12")), one, ["'x'", "unsupported"]),
        ("rank 0", _raw_request(("x", "FP32", [], b"1234")), one, ["'x'", "rank 0"]),
        ("negative dim", _raw_request(("x", "FP32", [-1, 3], _F4_6)), _ABC, ["'x'", "[-1, 3]"]),
        ("raw size", _raw_request(("x", "FP32", [2, 3], _F4_6[:20])), _ABC, ["'x'", "24 bytes", "20 bytes"]),
        ("typed count", _typed_request(_input("x", "FP32", [2, 3], fp32_contents=[1.0] * 5)), _ABC, ["'x'", "6 values", "holds 5"]),
        ("bytes truncated prefix", _raw_request(("x", "BYTES", [2], _bytes_raw([b"ab"]) + b"\x01\x00")), text, ["'x'", "truncated length prefix"]),
        ("bytes overrun", _raw_request(("x", "BYTES", [1], struct.pack("<I", 9) + b"abc")), text, ["'x'", "declares 9 bytes", "only 3 remain"]),
        ("bytes trailing", _raw_request(("x", "BYTES", [1], _bytes_raw([b"ab"]) + b"zz")), text, ["'x'", "2 bytes left over"]),
        ("bytes too short", _raw_request(("x", "BYTES", [3], b"\x00\x00\x00\x00")), text, ["'x'", "at least 12 bytes", "4 bytes"]),
        ("raw and typed", pb.ModelInferRequest(inputs=[_input("x", "FP32", [1], fp32_contents=[1.0])], raw_input_contents=[b"\x00" * 4]), one, ["'x'", "both"]),
        ("no data", _typed_request(_input("x", "FP32", [2])), one, ["'x'", "no data", "fp32_contents"]),
        ("raw count", pb.ModelInferRequest(inputs=[Input(name="x", datatype="FP32", shape=[1]), Input(name="y", datatype="FP32", shape=[1])], raw_input_contents=[b"\x00" * 4]), one, ["raw_input_contents has 1 entries", "2 inputs"]),
        ("wrong typed field", _typed_request(_input("x", "FP32", [1], int_contents=[1])), one, ["'x'", "fp32_contents", "int_contents"]),
        ("fp16 typed", _typed_request(_input("x", "FP16", [1], fp32_contents=[1.0])), one, ["'x'", "raw_input_contents"]),
        ("int8 out of range", _typed_request(_input("x", "INT8", [2], int_contents=[1, 300])), ints, ["'x'", "300", "[-128, 127]"]),
        ("duplicate", _raw_request(("x", "FP32", [1], b"\x00" * 4), ("x", "FP32", [1], b"\x00" * 4)), one, ["'x'", "more than once"]),
        ("missing", _raw_request(("a", "FP32", [2], _F4_6[:8]), ("c", "FP32", [2], _F4_6[:8])), _ABC, ["missing input 'b'", "a, b, c"]),
        ("unknown input", _raw_request(("a", "FP32", [1], b"\x00" * 4), ("zz", "FP32", [1], b"\x00" * 4)), _ABC, ["unknown input 'zz'", "a, b, c"]),
        ("rows disagree", _raw_request(("a", "FP32", [2], _F4_6[:8]), ("b", "FP32", [3], _F4_6[:12]), ("c", "FP32", [2], _F4_6[:8])), _ABC, ["'b' has 3 rows", "'a' has 2"]),
        ("named rank", _raw_request(("a", "FP32", [1, 2], _F4_6[:8]), ("b", "FP32", [1], _F4_6[:4]), ("c", "FP32", [1], _F4_6[:4])), _ABC, ["'a'", "[1, 2]", "[n] or [n, 1]"]),
        ("matrix width", _raw_request(("m", "FP32", [3, 2], _F4_6)), _ABC, ["'m'", "[3, 2]", "3 features", "[n, 3]"]),
        ("matrix non-numeric", _raw_request(("m", "FP32", [1, 2], _F4_6[:8])), pa.schema([("a", pa.float32()), ("s", pa.string())]), ["'m'", "s: string"]),
        ("bytes matrix", _raw_request(("input", "BYTES", [1, 3], _bytes_raw([b"a", b"b", b"c"]))), _ABC, ["'input'", "must be numeric"]),
        ("matrix name", _raw_request(("inputs", "FP32", [1, 3], _F4_6[:12])), _ABC, ["unknown input 'inputs'", "'input'", "[n, 3]", "a, b, c"]),
        ("matrix rank 1", _raw_request(("input", "FP32", [3], _F4_6[:12])), _ABC, ["'input'", "must be 2-D [n, 3]", "shape is [3]"]),
        ("matrix rank 3", _raw_request(("input", "FP32", [1, 1, 3], _F4_6[:12])), _ABC, ["'input'", "2-D [n, 3]", "[1, 1, 3]"]),
        ("bytes to numeric", _raw_request(("x", "BYTES", [1], _bytes_raw([b"1"]))), one, ["'x'", "BYTES", "FP32"]),
        ("numeric to string", _raw_request(("x", "FP32", [1], b"\x00" * 4)), text, ["'x'", "send it as BYTES"]),
        ("invalid utf8", _raw_request(("x", "BYTES", [1], _bytes_raw([b"\xff"]))), text, ["'x'", "UTF8"]),
        ("fraction to int", _typed_request(_input("x", "FP32", [1], fp32_contents=[1.5])), ints, ["'x'", "truncated"]),
    ]
    return [pytest.param(request, schema, needles, id=case) for case, request, schema, needles in cases]


@pytest.mark.parametrize(("request_", "schema", "needles"), _error_cases())
def test_invalid_requests_name_the_input(request_: pb.ModelInferRequest, schema: pa.Schema, needles: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_inputs(request_, schema)
    for needle in needles:
        assert needle in caught.value.message


def test_missing_input_list_is_truncated() -> None:
    schema = pa.schema([(f"f{i:02d}", pa.float32()) for i in range(40)])
    request = _raw_request(("f00", "FP32", [1], b"\x00" * 4))
    with pytest.raises(InvalidArgument, match=r"missing input 'f01' \(and 38 more\)") as caught:
        decode_inputs(request, schema)
    assert "f09, ... (30 more)" in caught.value.message
    assert "f39" not in caught.value.message


def test_max_rows_is_resource_exhausted() -> None:
    request = _raw_request(("input", "FP32", [5, 3], np.zeros(15, "<f4").tobytes()))
    with pytest.raises(ResourceExhausted, match=r"'input' has 5 rows.*limit of 4 rows"):
        decode_inputs(request, _ABC, max_rows=4)
    assert decode_inputs(request, _ABC, max_rows=5).num_rows == 5


@pytest.mark.parametrize(
    "request_",
    [
        _raw_request(("x", "FP32", [10**12, 100], b"\x00" * 8)),
        _raw_request(("x", "BYTES", [10**12, 100], b"\x00" * 8)),
        _typed_request(_input("x", "FP32", [10**12, 100], fp32_contents=[1.0, 2.0])),
        _typed_request(_input("x", "FP32", [10**12, 10**12, 10**12])),
    ],
    ids=["raw", "raw-bytes", "typed", "typed-empty"],
)
def test_huge_claimed_shape_fails_before_allocating(request_: pb.ModelInferRequest) -> None:
    schema = pa.schema([(f"f{i}", pa.float32()) for i in range(100)])
    with pytest.raises(InvalidArgument, match="'x'"):
        decode_inputs(request_, schema)
    with pytest.raises(ResourceExhausted, match="1000000"):
        decode_inputs(request_, schema, max_rows=1_000_000)


def test_errors_carry_their_status() -> None:
    import grpc

    assert InvalidArgument.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ResourceExhausted.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- encode_outputs ------------------------------------------------------------


def test_encode_float64_with_null_becomes_nan() -> None:
    batch = pa.record_batch({"score": pa.array([0.25, None, 1.0], pa.float64())})
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert (response.outputs[0].name, response.outputs[0].datatype, list(response.outputs[0].shape)) == ("score", "FP64", [3])
    np.testing.assert_array_equal(_as_numpy(response, 0), [0.25, np.nan, 1.0])


def test_encode_fixed_size_list_uses_values_bytes() -> None:
    values = np.arange(12, dtype=np.float64)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values), 3)
    response = pb.ModelInferResponse()
    encode_outputs(pa.record_batch({"proba": column}), response)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("FP64", [4, 3])
    assert response.raw_output_contents[0] == values.tobytes()


def test_encode_sliced_fixed_size_list_and_null_row() -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float32)), 3)
    response = pb.ModelInferResponse()
    encode_outputs(pa.record_batch({"p": column.slice(1, 2)}), response)
    np.testing.assert_array_equal(_as_numpy(response, 0), [[3, 4, 5], [6, 7, 8]])

    with_null = pa.array([[1.0, 2.0], None, [5.0, None]], pa.list_(pa.float32(), 2))
    response = pb.ModelInferResponse()
    encode_outputs(pa.record_batch({"p": with_null}), response)
    np.testing.assert_array_equal(_as_numpy(response, 0), [[1, 2], [np.nan, np.nan], [5, np.nan]])


def test_encode_int64_bool_and_string() -> None:
    batch = pa.record_batch(
        {
            "label": pa.array([3, -1, 2**62], pa.int64()),
            "flag": pa.array([True, False, True]),
            "name": pa.array(["skip", "a", "", "zürich"]).slice(1),
        }
    )
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [3]),
        ("flag", "BOOL", [3]),
        ("name", "BYTES", [3]),
    ]
    np.testing.assert_array_equal(_as_numpy(response, 0), [3, -1, 2**62])
    assert response.raw_output_contents[1] == b"\x01\x00\x01"
    assert response.raw_output_contents[2] == _bytes_raw([b"a", b"", "zürich".encode()])


def test_encode_large_string_and_dictionary() -> None:
    batch = pa.record_batch(
        {
            "big": pa.array(["x", "yy"], pa.large_string()),
            "cat": pa.array(["lo", "hi"]).dictionary_encode(),
        }
    )
    response = pb.ModelInferResponse()
    encode_outputs(batch, response)
    assert response.raw_output_contents[0] == _bytes_raw([b"x", b"yy"])
    assert response.raw_output_contents[1] == _bytes_raw([b"lo", b"hi"])


def test_encode_nulls_in_non_floats_are_our_bug() -> None:
    for column in (pa.array([1, None], pa.int64()), pa.array([True, None]), pa.array(["a", None])):
        with pytest.raises(ValueError, match="'out'"):
            encode_outputs(pa.record_batch({"out": column}), pb.ModelInferResponse())


def test_encode_requested_subset_in_requested_order() -> None:
    batch = pa.record_batch({"a": pa.array([1.0]), "b": pa.array([2], pa.int32()), "c": pa.array(["z"])})
    response = pb.ModelInferResponse()
    encode_outputs(batch, response, requested=["c", "a"])
    assert [o.name for o in response.outputs] == ["c", "a"]
    assert len(response.raw_output_contents) == 2
    np.testing.assert_array_equal(_as_numpy(response, 1), [1.0])


def test_encode_unknown_requested_output() -> None:
    batch = pa.record_batch({"a": pa.array([1.0]), "b": pa.array([2.0])})
    response = pb.ModelInferResponse()
    with pytest.raises(InvalidArgument, match=r"unknown output 'zz'.*a, b"):
        encode_outputs(batch, response, requested=["a", "zz"])
    assert len(response.outputs) == 0  # nothing half-written


def test_encode_unsupported_column_type() -> None:
    with pytest.raises(ValueError, match="'when'"):
        encode_outputs(pa.record_batch({"when": pa.array([1], pa.timestamp("s"))}), pb.ModelInferResponse())


# -- metadata --------------------------------------------------------------------


def test_tensor_metadata_matrix_and_per_field() -> None:
    (matrix,) = tensor_metadata(_ABC, as_matrix_name="features")
    assert (matrix.name, matrix.datatype, list(matrix.shape)) == ("features", "FP32", [-1, 3])

    schema = pa.schema([("age", pa.float64()), ("city", pa.string()), ("emb", pa.list_(pa.float32(), 4))])
    entries = tensor_metadata(schema, as_matrix_name="features")
    assert [(e.name, e.datatype, list(e.shape)) for e in entries] == [
        ("age", "FP64", [-1]),
        ("city", "BYTES", [-1]),
        ("emb", "FP32", [-1, 4]),
    ]
    assert len(tensor_metadata(_ABC, as_matrix_name=None)) == 3


def test_datatype_of() -> None:
    for datatype, arrow_type, _, _ in _CASES:
        assert datatype_of(arrow_type) == datatype
    assert datatype_of(pa.string()) == "BYTES"
    assert datatype_of(pa.large_binary()) == "BYTES"
    assert datatype_of(pa.list_(pa.int64(), 2)) == "INT64"
    for unsupported in (pa.timestamp("s"), pa.list_(pa.float32()), pa.struct([("a", pa.int8())])):
        with pytest.raises(ValueError):
            datatype_of(unsupported)


# -- property: decode then encode preserves float32 values ----------------------

_float32_matrices = hnp.arrays(
    dtype=np.dtype("<f4"),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12).filter(lambda s: s[1] > 0),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=60, deadline=None)
@given(_float32_matrices)
def test_matrix_decode_encode_preserves_values(matrix: np.ndarray) -> None:
    n, k = matrix.shape
    schema = pa.schema([(f"f{i}", pa.float32()) for i in range(k)])
    request = _raw_request(("input", "FP32", [n, k], matrix.tobytes()))
    response = pb.ModelInferResponse()

    encode_outputs(decode_inputs(request, schema), response)

    assert (response.outputs[0].name, list(response.outputs[0].shape)) == ("input", [n, k])
    assert response.raw_output_contents[0] == matrix.tobytes()  # bit for bit, NaNs included


@settings(max_examples=40, deadline=None)
@given(_float32_matrices, st.booleans())
def test_named_decode_encode_preserves_values(matrix: np.ndarray, typed: bool) -> None:
    n, k = matrix.shape
    names = [f"f{i}" for i in range(k)]
    schema = pa.schema([(name, pa.float32()) for name in names])
    if typed:
        request = _typed_request(
            *(_input(name, "FP32", [n], fp32_contents=matrix[:, i].tolist()) for i, name in enumerate(names))
        )
    else:
        request = _raw_request(*((name, "FP32", [n], matrix[:, i].tobytes()) for i, name in enumerate(names)))
    response = pb.ModelInferResponse()

    encode_outputs(decode_inputs(request, schema), response)

    decoded = np.stack([_as_numpy(response, i) for i in range(k)], axis=1).reshape(n, k)
    if typed:  # values pass through Python floats, which may quiet a signalling NaN
        np.testing.assert_array_equal(decoded, matrix)
    else:
        assert decoded.tobytes() == matrix.tobytes()
