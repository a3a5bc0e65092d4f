"""Agent memory under a burst of large requests: RSS before, at the peak and after.

    python benchmarks/burst_memory.py [--requests 32] [--mib 16]

Starts `milepost up` on free loopback ports, deploys a scikit-learn logistic regression on
30 features, then sends ``--requests`` concurrent ModelInfer calls of ``--mib`` MiB each (an
FP32 [n, 30] tensor) and samples the `up` process's VmRSS from /proc every 20 ms. Reports how
many calls were answered and how many refused (RESOURCE_EXHAUSTED: the agent's
max_inflight_bytes admission), RSS before, the peak, and after 5 s idle. Writes
benchmarks/results/burst_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES = 30


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--mib", type=int, default=16)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression

    import scoring_core
    from milepost.client import Client
    from milepost.inference import grpc_predict_v2_pb2 as oip
    from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(X, (X[:, 0] > 0).astype(int))
    with tempfile.TemporaryDirectory(prefix="milepost-burst-") as tmp:
        data = Path(tmp) / "data"
        scoring_core.compile(model).save(Path(tmp) / "bundle")
        up = subprocess.Popen([sys.executable, "-m", "milepost.cli", "up", "--data-dir", str(data), "--port", "0",
                               "--agent-port", "0", "--metrics-port", "-1", "--http-port", "-1", "--console-port", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            while not (data / "up.json").exists():
                if up.poll() is not None:
                    raise SystemExit(f"milepost up exited with status {up.returncode} before it was ready")
                time.sleep(0.1)
            state = json.loads((data / "up.json").read_text())
            token = (data / "admin.token").read_text().strip()
            with Client(state["coordinator"], token=token) as client:
                client.push_model(Path(tmp) / "bundle", "burst")
                client.deploy("burst", "burst")
            rows = (args.mib << 20) // (4 * FEATURES)
            payload = rng.normal(size=(rows, FEATURES)).astype(np.float32).tobytes()
            request = oip.ModelInferRequest(model_name="burst")
            request.inputs.add(name="input", datatype="FP32", shape=[rows, FEATURES])
            request.raw_input_contents.append(payload)
            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(state["agent"], options=options))
            stub.ModelInfer(request, timeout=60)  # warm
            time.sleep(1.0)
            before = rss_mib(up.pid)
            peak = [before]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak.append(rss_mib(up.pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()

            def one(_: int) -> str:
                try:
                    stub.ModelInfer(request, timeout=120)
                    return "OK"
                except grpc.RpcError as err:
                    return err.code().name

            started = time.perf_counter()
            with ThreadPoolExecutor(args.requests) as pool:
                statuses = Counter(pool.map(one, range(args.requests)))
            seconds = time.perf_counter() - started
            time.sleep(5.0)
            stop.set()
            sampler.join()
            after = rss_mib(up.pid)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=30)
    result = {
        "requests": args.requests, "mib_per_request": args.mib, "statuses": dict(statuses),
        "seconds": round(seconds, 2), "rss_mib": {"before": round(before, 1), "peak": round(max(peak), 1),
                                                 "after_5s": round(after, 1)},
        "machine": {"cpus": os.cpu_count()},
    }
    out = ROOT / "benchmarks" / "results" / "burst_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
