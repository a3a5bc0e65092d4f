"""Runs Triton's own clients against an agent, unchanged, and prints what they saw as JSON.

A separate process: tritonclient.http runs on gevent, which is kept out of the test process
(that the clients and milepost.Client work in one process is tests/e2e/test_one_process.py).

    python triton_clients.py http HOST:PORT MODEL ROWS.npy      tritonclient.http: every call it has
    python triton_clients.py stream HOST:PORT MODEL ROWS.npy    tritonclient.grpc start_stream / async_stream_infer
"""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.tritonclient_probe import error_of  # noqa: E402


def http(address: str, model: str, rows: np.ndarray) -> dict:
    import tritonclient.http as tc

    client = tc.InferenceServerClient(address)
    out: dict = {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model), "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(), "metadata": client.get_model_metadata(model),
        "config": client.get_model_config(model), "stats_before": client.get_inference_statistics(model),
    }
    version = out["metadata"]["versions"][0]
    out["metadata_of_version"] = client.get_model_metadata(model, model_version=version)
    out["model_ready_of_version"] = client.is_model_ready(model, model_version=version)
    binary = tc.InferInput("input", list(rows.shape), "FP32")
    binary.set_data_from_numpy(rows)  # the binary tensor extension: tritonclient's default
    result = client.infer(model, [binary], request_id="r-1")
    out["binary"] = {"id": result.get_response()["id"], "probabilities": result.as_numpy("probabilities").tolist()}
    as_json = tc.InferInput("input", list(rows.shape), "FP32")
    as_json.set_data_from_numpy(rows, binary_data=False)
    json_outputs = [tc.InferRequestedOutput("probabilities", binary_data=False)]
    out["json"] = client.infer(model, [as_json], outputs=json_outputs).as_numpy("probabilities").tolist()
    out["gzip"] = client.infer(model, [binary], request_compression_algorithm="gzip").as_numpy("probabilities").tolist()
    features = json.loads(out["config"]["parameters"]["feature_names"]["string_value"])
    named = []
    for j, name in enumerate(features):  # one FP64 input per feature, as JSON
        column = tc.InferInput(name, [len(rows)], "FP64")
        column.set_data_from_numpy(rows[:, j].astype(np.float64), binary_data=False)
        named.append(column)
    out["named"] = client.infer(model, named, model_version=version).as_numpy("probabilities").tolist()
    out["err_unknown_model"] = error_of(lambda: client.infer("no-such-model", [binary]))
    misnamed = tc.InferInput("bogus", list(rows.shape), "FP32")
    misnamed.set_data_from_numpy(rows)
    out["err_unknown_input"] = error_of(lambda: client.infer(model, [misnamed]))
    out["err_unknown_metadata"] = error_of(lambda: client.get_model_metadata("no-such-model"))
    out["stats_after"] = client.get_inference_statistics(model)
    out["stats_all"] = client.get_inference_statistics()
    client.close()
    return out


def stream(address: str, model: str, rows: np.ndarray) -> dict:
    import tritonclient.grpc as tc

    def matrix(data: np.ndarray, name: str = "input") -> list:
        tensor = tc.InferInput(name, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        return [tensor]

    answers: queue.Queue = queue.Queue()
    client = tc.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = [  # (request id, model, inputs)
        ("good-0", model, matrix(rows)),
        ("misnamed-1", model, matrix(rows, "bogus")),
        ("unknown-2", "no-such-model", matrix(rows)),
        ("one-row-3", model, matrix(rows[:1])),
        ("empty-4", model, matrix(rows[:0])),
        ("good-5", model, matrix(rows)),
    ]
    for request_id, name, inputs in sent:
        client.async_stream_infer(name, inputs, request_id=request_id)
    seen = []
    for _ in sent:
        result, error = answers.get(timeout=30)
        if error is not None:
            seen.append({"error": error.message()})
        else:
            response, values = result.get_response(), result.as_numpy("probabilities")
            seen.append({"id": response.id, "model_version": response.model_version,
                         "probabilities": values.tolist(), "shape": list(values.shape)})
    client.stop_stream()
    client.close()
    return {"answers": seen}


if __name__ == "__main__":
    mode, address, model, rows_path = sys.argv[1:5]
    print(json.dumps({"http": http, "stream": stream}[mode](address, model, np.load(rows_path))))
