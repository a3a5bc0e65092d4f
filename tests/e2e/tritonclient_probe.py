"""Runs tritonclient against an agent and prints what it saw as JSON.

A separate process because tritonclient registers the same `inference.*`
protobuf names as Milepost's stubs; the two cannot share protobuf's default pool.
Usage: python tritonclient_probe.py ADDRESS MODEL ROWS.npy
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


def error_of(fn) -> dict:
    try:
        fn()
    except InferenceServerException as err:
        return {"status": err.status(), "message": err.message()}
    return {"status": "OK", "message": ""}


def main() -> None:
    address, model, rows_path = sys.argv[1:4]
    rows = np.load(rows_path)
    client = tc.InferenceServerClient(url=address)
    out: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(model, as_json=True),
        "config": client.get_model_config(model, as_json=True),
    }
    # The usual tritonclient way: one FP32 [n, k] input, raw contents.
    inp = tc.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    result = client.infer(model, [inp], outputs=[tc.InferRequestedOutput("probabilities")])
    out["probabilities"] = result.as_numpy("probabilities").tolist()
    # Several named 1-D inputs, one per feature.
    names = json.loads(out["config"]["config"]["parameters"]["feature_names"]["string_value"])
    inputs = []
    for j, name in enumerate(names):
        col = tc.InferInput(name, [rows.shape[0]], "FP64")
        col.set_data_from_numpy(rows[:, j].astype(np.float64))
        inputs.append(col)
    out["probabilities_named"] = client.infer(model, inputs).as_numpy("probabilities").tolist()

    # Bad requests: each must fail with its status, and the agent must keep serving.
    wrong_width = tc.InferInput("input", [2, rows.shape[1] + 1], "FP32")
    wrong_width.set_data_from_numpy(np.zeros((2, rows.shape[1] + 1), np.float32))
    out["err_wrong_width"] = error_of(lambda: client.infer(model, [wrong_width]))
    extra = tc.InferInput("bogus", [2], "FP32")
    extra.set_data_from_numpy(np.zeros(2, np.float32))
    out["err_unknown_input"] = error_of(lambda: client.infer(model, [extra]))
    out["err_missing_input"] = error_of(lambda: client.infer(model, inputs[1:]))
    out["err_unknown_model"] = error_of(lambda: client.infer("no-such-model", [inp]))
    out["err_unknown_model_metadata"] = error_of(lambda: client.get_model_metadata("no-such-model"))
    big = tc.InferInput("input", [400_000, rows.shape[1] * 8], "FP32")
    big.set_data_from_numpy(np.zeros((400_000, rows.shape[1] * 8), np.float32))
    out["err_oversized"] = error_of(lambda: client.infer(model, [big]))
    stats = client.get_inference_statistics(model, as_json=True)
    out["statistics"] = stats
    out["after_errors"] = client.infer(model, [inp]).as_numpy("probabilities").tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
