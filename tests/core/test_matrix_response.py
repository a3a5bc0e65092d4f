"""tensor_codec.matrix_response: the matrix lane's answer serialized from bytes it frames itself.

Checked against the message protobuf builds field by field (the way encode_outputs writes the
same column), over the cases where the framing could go wrong: lengths of one and several varint
bytes, an empty and a non-ASCII id, one value a row and k, and the header caches reused across
batch sizes."""

from __future__ import annotations

import numpy as np
import pytest

from milepost.core.tensor_codec import matrix_response
from milepost.inference import grpc_predict_v2_pb2 as pb


def _expected(name: str, version: str, request_id: str, parameters: tuple[tuple[str, str], ...], output: str,
              values: np.ndarray, rows_only: bool) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for key, text in parameters:
        response.parameters[key].string_param = text
    tensor = response.outputs.add(name=output, datatype="FP64")
    tensor.shape.extend(values.shape[:1] if rows_only else values.shape)
    response.raw_output_contents.append(values.astype("<f8").tobytes())
    return response


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 5000])  # 16 x 8 bytes is the first two-byte length
@pytest.mark.parametrize("rows_only", [True, False])
@pytest.mark.parametrize("request_id", ["", "req-7", "änswer-" + "x" * 200])
def test_bytes_parse_as_the_message_protobuf_builds(rows: int, rows_only: bool, request_id: str) -> None:
    values = np.random.default_rng(rows).normal(size=(rows, 1 if rows_only else 3))
    parameters = (("milepost-arm", "challenger"), ("milepost-deployment", "dep-1"))
    sent = matrix_response("churn", "3", request_id, parameters, "probabilities", values, rows_only=rows_only)
    parsed = pb.ModelInferResponse.FromString(sent)
    assert parsed == _expected("churn", "3", request_id, parameters, "probabilities", values, rows_only)
    assert np.array_equal(np.frombuffer(parsed.raw_output_contents[0], "<f8").reshape(values.shape[0], -1),
                          values.reshape(values.shape[0], -1))


def test_a_non_contiguous_or_float32_matrix_is_sent_as_float64_rows() -> None:
    wide = np.arange(12, dtype=np.float64).reshape(3, 4)
    column_view = wide[:, 1:3]  # not C-contiguous
    parsed = pb.ModelInferResponse.FromString(
        matrix_response("m", "1", "", (), "y", column_view, rows_only=False))
    assert list(parsed.outputs[0].shape) == [3, 2]
    assert np.array_equal(np.frombuffer(parsed.raw_output_contents[0], "<f8"), column_view.ravel())
    single = np.array([[0.25], [0.5]], dtype=np.float32)
    parsed = pb.ModelInferResponse.FromString(matrix_response("m", "1", "", (), "y", single, rows_only=True))
    assert np.frombuffer(parsed.raw_output_contents[0], "<f8").tolist() == [0.25, 0.5]


def test_answers_of_different_routes_do_not_share_headers() -> None:
    values = np.ones((2, 1))
    a = pb.ModelInferResponse.FromString(matrix_response("a", "1", "", (("p", "x"),), "y", values, rows_only=True))
    b = pb.ModelInferResponse.FromString(matrix_response("b", "2", "", (("p", "z"),), "q", values, rows_only=True))
    assert (a.model_name, a.model_version, a.parameters["p"].string_param, a.outputs[0].name) == ("a", "1", "x", "y")
    assert (b.model_name, b.model_version, b.parameters["p"].string_param, b.outputs[0].name) == ("b", "2", "z", "q")
