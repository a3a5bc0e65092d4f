"""After a burst of large requests the agent's memory goes back to its idle level.

A real `milepost up` process (coordinator and agent); its resident set is read from /proc.
Before milepost.core.memory, 32 x 16 MiB took it from 302 to 696 MiB and it stayed at 667
(benchmarks/burst_memory.py); the test sends 24 x 16 MiB from 8 threads and waits for the
resident set to come back within 48 MiB of what it was before the burst.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from milepost.client import Client
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from tests.conftest import wait_until

MIB = 16


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_memory_returns_to_idle_after_a_burst(up, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    with Client(up.coordinator) as client:
        client.push_model(bundle_dir, "burst")
        client.deploy("burst", "burst")
    features = rows.shape[1]
    n = (MIB << 20) // (4 * features)
    payload = np.resize(rows, (n, features)).astype(np.float32)
    request = oip.ModelInferRequest(model_name="burst")
    request.inputs.add(name="input", datatype="FP32", shape=[n, features])
    request.raw_input_contents.append(payload.tobytes())
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(up.agent, options=options) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        wait_until(lambda: _answers(stub, request), timeout=30)  # deployed, and warm
        before = rss_mib(up.process.pid)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _status(stub, request), range(24)))
        assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED"} and "OK" in statuses, statuses
        settled = wait_until(lambda: (rss := rss_mib(up.process.pid)) < before + 48 and rss, timeout=20, interval=0.25)
        assert settled < before + 48
        reply = stub.ModelInfer(request, timeout=60)  # and it still serves, the same numbers
        assert reply.outputs[0].shape[0] == n


def _answers(stub, request) -> bool:
    try:
        stub.ModelInfer(request, timeout=30)
        return True
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def _status(stub, request) -> str:
    try:
        stub.ModelInfer(request, timeout=120)
        return "OK"
    except grpc.RpcError as err:
        return err.code().name
