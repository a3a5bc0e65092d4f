"""What the decision log costs serving: throughput at 1 row per request with logging off and
with a 100% sample, same agent, same client, interleaved rounds (off, on, off, on, ...).

    python benchmarks/decision_log.py [--seconds 5] [--rounds 4] [--concurrency 1,8]

Starts `milepost up` on free ports, deploys the XGBoost model of benchmarks/serving.py
(100 trees, depth 6, 30 features), and drives the agent from a separate process with
the asyncio gRPC client of benchmarks/serving.py. Between rounds the endpoint's
sample rate is switched (SetDecisionLog; the route reaches the agent at once). The
agent's Prometheus counters say how many decisions were written and dropped.
The requests take the agent's matrix lane, logged or not (DataPlane.serve_matrix offers
its decisions itself). Beside it, unaffected by other load on the machine: the CPU time
the log spends per decision of that shape, on the request path (``offer_matrix``, and
the general path's ``offer``) and in the writer thread, Parquet files closed included.
Writes benchmarks/results/decision_log.json. The issue's bar: cost <= 10%.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._timing import machine, table, write  # noqa: E402
from benchmarks.serving import _train, drive, milepost_up  # noqa: E402

ENDPOINT = "xgb"


def counters(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found = {}
    for name in ("logged", "dropped"):
        match = re.search(rf'^milepost_decisions_{name}_total\{{endpoint="{ENDPOINT}"\}} (\S+)$', text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def cpu_per_decision(batch: int = 100, repeats: int = 30) -> dict[str, float]:
    """Microseconds of CPU per 1-row decision (30 float32 inputs, 2 float64 outputs) on each lane:
    the request path's part (``offer_matrix`` on the matrix lane, which this benchmark's requests
    take; ``offer`` on the general path) and the writer's, for batches of ``batch`` (what 0.1 s
    holds at 1,000 req/s); and, apart, what closing a file of those ``batch * repeats`` decisions
    into Parquet costs (once a file: an hour's or 64 MiB of decisions by default)."""
    import numpy as np
    import pyarrow as pa

    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.decision_log import DecisionLog
    from agent.routing.route_table import Route
    from agent.routing.router import MatrixServed

    route = Route(ENDPOINT, None, "", {}, pushed=True, decision_sample_rate=1.0)
    X = np.random.default_rng(0).normal(size=(batch, 30)).astype(np.float32)
    output = pa.field("probabilities", pa.list_(pa.float64(), 2))
    scores = [np.ones((1, 2)) for _ in range(batch)]
    served = [MatrixServed(v, output.name, False, ("primary",), ("dep",), "1", output) for v in scores]
    inputs = [pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(x), 30)], names=["input"]) for x in X]
    answer = pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2)), 2)], names=[output.name])
    response = InferenceResponse(answer, "1", ("primary",), ("dep",))
    request = InferenceRequest(ENDPOINT, lambda s: inputs[0], request_id="r", size_bytes=200)
    lanes = {
        "matrix": lambda log: [log.offer_matrix(route, "r", 200, X[i:i + 1], served[i]) for i in range(batch)],
        "general": lambda log: [log.offer(route, request, b, response) for b in inputs],
    }

    def measure(offer: Callable[[DecisionLog], object]) -> tuple[float, float, float]:
        """(offer, writer) microseconds of CPU a decision, and milliseconds to close the file."""
        with tempfile.TemporaryDirectory() as tmp:
            log = DecisionLog(Path(tmp), lambda: "bench", lambda r, d: (ENDPOINT, "1", "ab" * 32))
            log.wait_recovered()
            offer_s = write_s = 0.0
            # The writer thread waits: this thread does its work, timed in process CPU (Arrow's threads count too).
            with log._files_lock:
                for _ in range(repeats):
                    t0 = time.process_time()
                    offer(log)
                    t1 = time.process_time()
                    log._write_pending()
                    offer_s += t1 - t0
                    write_s += time.process_time() - t1
            t0 = time.process_time()
            log.flush()  # the open file becomes Parquet
            close_s = time.process_time() - t0
            log.close()
        n = batch * repeats
        return offer_s / n * 1e6, write_s / n * 1e6, close_s * 1e3

    measure(lanes["matrix"])  # the first run imports what Arrow needs for timestamps (pandas): not timed
    found = {"decisions_per_file": float(batch * repeats)}
    for lane, offer in lanes.items():
        prefix = "" if lane == "matrix" else f"{lane}_"
        found[f"{prefix}offer_us"], found[f"{prefix}writer_us"], found[f"{prefix}close_file_ms"] = measure(offer)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args()

    from milepost.client import Client, embedded_admin_token

    results: dict = {"machine": machine(), "seconds": args.seconds, "rounds": args.rounds, "rows": 1, "runs": []}
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "xgb.json"
        _train(model_path)
        data_dir = Path(tmp) / "data"
        with milepost_up(data_dir, metrics_port=0) as ports:
            with Client(ports["coordinator"], token=embedded_admin_token(data_dir)) as client:
                client.push_model(model_path, ENDPOINT)
                client.deploy(ENDPOINT, ENDPOINT)
                time.sleep(2)  # the agent receives its route table with the next heartbeat
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    rates: dict[str, list[float]] = {"off": [], "100%": []}
                    for round_ in range(args.rounds):
                        for label, sample in (("off", 0.0), ("100%", 1.0)):
                            client.set_decision_log(ENDPOINT, sample)
                            time.sleep(0.5)
                            before = counters(ports["metrics"])
                            run = drive(ports["agent"], ENDPOINT, 1, concurrency, args.seconds)
                            after = counters(ports["metrics"])
                            run.update(logged=after["logged"] - before["logged"], dropped=after["dropped"] - before["dropped"])
                            rates[label].append(run["requests_per_s"])
                            results["runs"].append({"logging": label, "concurrency": concurrency, "round": round_, **run})
                            print(f"x{concurrency:<3} round {round_} {label:>4}: {run['requests_per_s']:8.0f} req/s "
                                  f"p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms logged {run['logged']:.0f} "
                                  f"dropped {run['dropped']:.0f}", flush=True)
                    off, on = statistics.median(rates["off"]), statistics.median(rates["100%"])
                    summary.append({"concurrency": concurrency, "requests_per_s_off": off, "requests_per_s_logged": on,
                                    "cost": 1 - on / off})
    cpu = cpu_per_decision()
    for s in summary:
        s["log_cpu_share_of_serving"] = (cpu["offer_us"] + cpu["writer_us"]) * s["requests_per_s_off"] / 1e6
    results["summary"] = summary
    results["cpu_per_decision"] = cpu
    print()
    print(table(["concurrency", "req/s, logging off", "req/s, 100% logged", "cost", "log CPU, share of a core"],
                [[s["concurrency"], f"{s['requests_per_s_off']:,.0f}", f"{s['requests_per_s_logged']:,.0f}",
                  f"{s['cost']:.1%}", f"{s['log_cpu_share_of_serving']:.1%}"] for s in summary]))
    print(f"CPU per decision, matrix lane: offer {cpu['offer_us']:.1f} us (request path), writer {cpu['writer_us']:.1f} us; "
          f"general path: offer {cpu['general_offer_us']:.1f} us, writer {cpu['general_writer_us']:.1f} us; "
          f"closing a file of {cpu['decisions_per_file']:,.0f} decisions into Parquet {cpu['close_file_ms']:.1f} ms")
    print(f"\nwrote {write('decision_log', results)}")


if __name__ == "__main__":
    main()
