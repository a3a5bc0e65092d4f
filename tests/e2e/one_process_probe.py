"""A user's script: milepost.Client, tritonclient.grpc and tritonclient.http in one process.

    python one_process_probe.py ORDER COORDINATOR AGENT_GRPC AGENT_HTTP ENDPOINT ROWS.npy

ORDER is "milepost-first" or "triton-first": which is imported first. Prints, as JSON, the
probabilities each client got for the same rows.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    order, coordinator, grpc_address, http_address, endpoint, rows_path = sys.argv[1:7]
    names = ["milepost.client", "tritonclient.grpc", "tritonclient.http"]
    if order == "triton-first":
        names = names[1:] + names[:1]
    modules = {name: importlib.import_module(name) for name in names}  # in this order
    Client = modules["milepost.client"].Client
    tgrpc, thttp = modules["tritonclient.grpc"], modules["tritonclient.http"]
    rows = np.load(rows_path)
    with Client(coordinator) as client:
        ours = np.asarray(client.infer(endpoint, rows).column("probabilities").to_pylist())
    answers = {"milepost": ours.tolist()}
    for name, module, address in (("tritonclient.grpc", tgrpc, grpc_address), ("tritonclient.http", thttp, http_address)):
        triton = module.InferenceServerClient(address)
        tensor = module.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        answers[name] = triton.infer(endpoint, [tensor]).as_numpy("probabilities").tolist()
        triton.close()
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
