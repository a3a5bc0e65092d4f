"""Which HTTP stack serves the agent's REST front end: the same ASGI app (agent.rest) on each, side by side.

    python benchmarks/rest_stacks.py [--seconds 3] [--rounds 3] [--concurrency 1,8,32]

One agent process (coordinator in the same process) serves an XGBoost model (100 trees, depth 6,
30 features; the model of benchmarks/serving.py) through one RestApp on two servers at once:
- uvicorn with uvloop and httptools (milepost.core.http_server, what the agent runs);
- granian's embedded server (Rust HTTP, the ASGI app on an asyncio loop), in the same process.
The same client (aiohttp, keep-alive, in a process of its own) drives each, interleaved A B, B A,
for each payload: GET /v2 (the stack, the translator and its worker hand-off, no model), 1 row as
JSON, 64 rows as binary tensors (Inference-Header-Content-Length).
gRPC ModelInfer on the same agent (benchmarks/serving.py's client) is measured beside them as the
reference. Beside requests/s and latency, the agent process's CPU time per request (on a machine
the client shares, the steadier measure of what a stack costs). Medians over the rounds.
Writes benchmarks/results/rest_stacks.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._timing import machine, table, write  # noqa: E402
from benchmarks.serving import FEATURES, _train, drive  # noqa: E402

MODEL = "xgb"


def _bodies() -> dict[str, tuple[bytes | None, dict[str, str], int]]:
    """payload name -> (body, headers, rows); no body: GET /v2, the stack and the front end without a model."""
    rng = np.random.default_rng(1)
    one = rng.normal(size=(1, FEATURES)).astype(np.float32)
    as_json = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                      "data": one.ravel().tolist()}]}).encode()
    many = rng.normal(size=(64, FEATURES)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [64, FEATURES], "datatype": "FP32",
                                     "parameters": {"binary_data_size": many.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return {
        "GET /v2, no model": (None, {}, 0),
        "1 row, JSON": (as_json, {"Content-Type": "application/json"}, 1),
        "64 rows, binary": (header + many.tobytes(), {"Inference-Header-Content-Length": str(len(header))}, 64),
    }


# ---------------------------------------------------------------------------
# The server process


def serve(directory: Path) -> None:
    """Coordinator and agent in this process, the model deployed, the REST app on both stacks; ports to ports.json."""
    import uvloop
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    coordinator = Coordinator(CoordinatorConfig(data_dir=directory / "coordinator", port=0))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=directory / "agent", port=0, agent_id="bench",
                              token=coordinator.local_agent_token(), http_port=0))
    agent.start()
    assert agent.registration.registered.wait(30)
    with Client(coordinator.address, token=coordinator.admin_token_file.read_text().strip()) as client:
        client.push_model(directory / "xgb.json", MODEL)
        client.deploy(MODEL, MODEL)

    with socket.socket() as probe:  # granian binds by itself: pick a free port for it
        probe.bind(("127.0.0.1", 0))
        granian_port = probe.getsockname()[1]
    granian = Server(agent.rest, address="127.0.0.1", port=granian_port, interface=Interfaces.ASGI, log_enabled=False)

    def run_granian() -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(granian.serve())

    threading.Thread(target=run_granian, name="granian", daemon=True).start()
    ports = {"uvicorn": agent.http_port, "granian": granian_port, "grpc": agent.address}
    (directory / "ports.json").write_text(json.dumps(ports))
    sys.stdin.read()  # until the benchmark closes our stdin
    agent.stop(grace=0)
    coordinator.stop()


# ---------------------------------------------------------------------------
# The client process


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _drive_http(url: str, body: bytes | None, headers: dict[str, str], concurrency: int, seconds: float, out) -> None:
    import aiohttp

    method = "GET" if body is None else "POST"

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.request(method, url, data=body, headers=headers) as first:
                assert first.status == 200, await first.text()
                await first.read()
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    async with session.request(method, url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            latencies.append(time.perf_counter() - t0)
                        else:
                            errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors

    out.put(asyncio.run(main()))


def drive_http(url: str, body: bytes | None, headers: dict[str, str], rows: int, concurrency: int, seconds: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_drive_http, args=(url, body, headers, concurrency, seconds, queue))
    proc.start()
    latencies, errors = queue.get(timeout=seconds + 120)
    proc.join()
    lat = np.array(latencies) * 1e3
    rps = len(lat) / seconds
    return {"requests_per_s": rps, "rows_per_s": rps * rows, "errors": errors,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else 0.0,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return

    results: dict = {"machine": machine(), "seconds": args.seconds, "rounds": args.rounds, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _train(directory / "xgb.json")
        server = subprocess.Popen([sys.executable, __file__, "--serve", tmp], stdin=subprocess.PIPE, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 120
            while not (directory / "ports.json").exists():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the agent did not start")
                time.sleep(0.2)
            time.sleep(0.5)
            ports = json.loads((directory / "ports.json").read_text())
            agent_process = psutil.Process(server.pid)
            stacks = ["uvicorn", "granian", "grpc"]
            for payload, (body, headers, rows) in _bodies().items():
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    measured: dict[str, list[dict]] = {s: [] for s in stacks}
                    for round_ in range(args.rounds):
                        for stack in (stacks if round_ % 2 == 0 else stacks[1::-1] + stacks[2:]):
                            cpu_before = _cpu_s(agent_process)
                            if stack == "grpc" and body is None:
                                continue  # ServerMetadata over gRPC: not measured
                            if stack == "grpc":
                                run = drive(ports["grpc"], MODEL, rows, concurrency, args.seconds)
                            else:
                                path = "/v2" if body is None else f"/v2/models/{MODEL}/infer"
                                url = f"http://127.0.0.1:{ports[stack]}{path}"
                                run = drive_http(url, body, headers, rows, concurrency, args.seconds)
                            # The agent's CPU per request: what the server costs, less swayed by the client
                            # sharing the machine (the warm-up request is counted in, a rounding error).
                            run["server_cpu_us_per_request"] = (
                                (_cpu_s(agent_process) - cpu_before) * 1e6 / max(run["requests_per_s"] * args.seconds, 1))
                            measured[stack].append(run)
                            print(f"{stack:>8} {payload:>16} x{concurrency:<3} round {round_ + 1}: "
                                  f"{run['requests_per_s']:8.0f} req/s p50 {run['p50_ms']:.2f} ms "
                                  f"p99 {run['p99_ms']:.2f} ms agent CPU {run['server_cpu_us_per_request']:.0f} us/request "
                                  f"errors {run['errors']}", flush=True)
                    for stack, runs in measured.items():
                        if not runs:
                            continue
                        median = {k: statistics.median(r[k] for r in runs)
                                  for k in ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")}
                        results["runs"].append({"stack": "gRPC (reference)" if stack == "grpc" else stack,
                                                "payload": payload if stack != "grpc" else f"{rows} rows, raw",
                                                "concurrency": concurrency, **median,
                                                "errors": sum(r["errors"] for r in runs),
                                                "rounds": [round(r["requests_per_s"]) for r in runs]})
        finally:
            if server.stdin is not None:
                server.stdin.close()
            server.wait(60)
    print()
    print(table(
        ["stack", "payload", "concurrency", "requests/s", "rows/s", "p50 ms", "p99 ms", "agent CPU us/request", "errors"],
        [[r["stack"], r["payload"], r["concurrency"], r["requests_per_s"], r["rows_per_s"], r["p50_ms"], r["p99_ms"],
          r["server_cpu_us_per_request"], r["errors"]] for r in results["runs"]],
    ))
    print(f"\nwrote {write('rest_stacks', results)}")


if __name__ == "__main__":
    main()
