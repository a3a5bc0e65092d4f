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
  and a float32 named input becomes a column over its bytes the same way; a model
  that scores matrices takes that request as a numpy view (``raw_matrix``) and its
  answer goes back by ``matrix_response``, with no Arrow in between.
- Raw payloads are little-endian and row-major on the wire, whatever the host.
"""

from __future__ import annotations

from milepost.core.tensor_codec.calling_side import decode_outputs, encode_inputs
from milepost.core.tensor_codec.datatypes import MATRIX_INPUT_NAME, datatype_of, tensor_metadata
from milepost.core.tensor_codec.requests import decode_inputs, raw_matrix
from milepost.core.tensor_codec.responses import encode_outputs, matrix_response

__all__ = [
    "MATRIX_INPUT_NAME", "decode_inputs", "decode_outputs", "encode_inputs", "encode_outputs", "matrix_response",
    "raw_matrix", "tensor_metadata", "datatype_of",
]
