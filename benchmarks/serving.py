"""Serving throughput and latency over the Open Inference Protocol, with the direct call beside it.

    python benchmarks/serving.py [--seconds 5] [--concurrency 1,8,32] [--rows 1,64]

Starts `milepost up` on free ports, deploys an XGBoost model (100 trees, depth 6,
30 features; MLServer's published setup) and drives the agent from a separate
process with an asyncio gRPC client, for each batch size and concurrency:
requests/s, rows/s, p50 and p99 latency. Beside it, in one run:
- the same model called in process (CompiledModel.predict), the floor;
- the agent's routing layer: the endpoint through its policy vs. the same
  deployment addressed directly (request parameter milepost-deployment).
Writes benchmarks/results/serving.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._timing import machine, rate, table, write  # noqa: E402

FEATURES = 30


def _train(path: Path):
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    y = (X[:, :5].sum(axis=1) + np.sin(X[:, 5]) > 0).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 2}, xgb.DMatrix(X, y), 100)
    booster.save_model(str(path))
    return booster, X


def _drive(address: str, model: str, rows: int, concurrency: int, seconds: float, parameters: dict, out) -> None:
    """Client process: `concurrency` asyncio workers send requests for `seconds`."""
    import grpc

    from milepost.inference import grpc_predict_v2_pb2 as pb
    from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    X = np.random.default_rng(1).normal(size=(rows, FEATURES)).astype(np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[rows, FEATURES])
    request.raw_input_contents.append(X.tobytes())
    for k, v in parameters.items():
        request.parameters[k].string_param = v

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(request, timeout=10)
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    try:
                        await stub.ModelInfer(request, timeout=10)
                        latencies.append(time.perf_counter() - t0)
                    except grpc.aio.AioRpcError:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors

    latencies, errors = asyncio.run(main())
    out.put((latencies, errors))


@contextmanager
def milepost_up(data_dir: Path, metrics_port: int = -1) -> Iterator[dict]:
    """`milepost up` on free ports in a child process; yields its addresses (up.json), stops it after."""
    up = subprocess.Popen(
        [sys.executable, "-m", "milepost.cli", "up", "--data-dir", str(data_dir), "--port", "0", "--agent-port", "0",
         "--metrics-port", str(metrics_port), "--http-port", "-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        state = data_dir / "up.json"
        deadline = time.monotonic() + 60
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield json.loads(state.read_text())
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)


def drive(address: str, model: str, rows: int, concurrency: int, seconds: float, parameters: dict | None = None) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_drive, args=(address, model, rows, concurrency, seconds, parameters or {}, queue)
    )
    proc.start()
    latencies, errors = queue.get(timeout=seconds + 120)
    proc.join()
    lat = np.array(latencies) * 1e3
    rps = len(lat) / seconds
    return {
        "requests_per_s": rps, "rows_per_s": rps * rows, "errors": errors,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else 0.0,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rows", default="1,64")
    args = parser.parse_args()

    import scoring_core
    from milepost.client import Client, embedded_admin_token

    results: dict = {"machine": machine(), "runs": []}
    rows_list = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "xgb.json"
        _train(model_path)
        compiled = scoring_core.compile(model_path)
        scoring_core.set_num_threads(1)
        X = np.random.default_rng(1).normal(size=(max(rows_list), FEATURES)).astype(np.float32)
        for rows in rows_list:
            direct = rate(lambda rows=rows: compiled.predict(X[:rows]), rows)
            results["runs"].append({"path": "in process", "rows": rows, "concurrency": 1,
                                    "requests_per_s": direct["rows_per_s"] / rows, "rows_per_s": direct["rows_per_s"],
                                    "p50_ms": direct["us_per_call"] / 1e3, "p99_ms": float("nan"), "errors": 0})

        data_dir = Path(tmp) / "data"
        with milepost_up(data_dir) as ports:
            with Client(ports["coordinator"], token=embedded_admin_token(data_dir)) as client:
                client.push_model(model_path, "xgb")
                endpoint = client.deploy("xgb", "xgb")
                time.sleep(2)  # the agent receives its route table with the next heartbeat
            deployment_id = endpoint.deployments[0].deployment_id
            for rows in rows_list:
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    for path, params in (("agent, routed", {}), ("agent, direct", {"milepost-deployment": deployment_id})):
                        run = drive(ports["agent"], "xgb", rows, concurrency, args.seconds, params)
                        results["runs"].append({"path": path, "rows": rows, "concurrency": concurrency, **run})
                        print(f"{path:>14} rows {rows:>3} x{concurrency:<3} {run['requests_per_s']:8.0f} req/s "
                              f"p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms errors {run['errors']}")
    print()
    print(table(
        ["path", "rows/request", "concurrency", "requests/s", "rows/s", "p50 ms", "p99 ms", "errors"],
        [[r["path"], r["rows"], r["concurrency"], r["requests_per_s"], r["rows_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]]
         for r in results["runs"]],
    ))
    print(f"\nwrote {write('serving', results)}")


if __name__ == "__main__":
    main()
