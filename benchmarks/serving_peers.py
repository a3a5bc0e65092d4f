"""Milepost beside its peers: one XGBoost model, the same clients, the same machine, interleaved.

    python benchmarks/serving_peers.py [--seconds 3] [--rounds 6] [--cases 1x1,1x8,1x32,64x8]

Trains the model of benchmarks/serving.py (100 trees, depth 6, 30 features, binary:logistic)
and serves it, all at once and on 127.0.0.1 only, from:
- Milepost: `milepost up` on free ports (REST on --http-port), the model pushed and deployed;
- MLServer 1.7 (mlserver-xgboost) in its default setting and in its best one (parallel_workers=0,
  OMP_NUM_THREADS=1; benchmarks/peers/mlserver.py), from its own virtual environment, made once
  under .bench-venvs/ (benchmarks/peers/venvs.py);
- the ceiling: bare Python gRPC servers whose ModelInfer does nothing, grpc.server with 16
  threads, grpc.aio on asyncio's loop and on uvloop's (benchmarks/peers/bare_grpc.py); the
  fastest of them is the ceiling. For reference, not as a goal: the uvloop one whose
  ModelInfer decodes the request's tensor and encodes one back ("bare gRPC echo"), the least
  a scoring OIP server does in Python.
Every server is first asked once over each protocol, and the scores must be XGBoost's own.
Then the same clients, each in a process of its own, drive each server for each case
(rows per request x concurrent requests): gRPC, benchmarks/serving.py's asyncio OIP client
(raw tensors); REST, benchmarks/rest_stacks.py's aiohttp client (keep-alive, a pool of one
connection per concurrent request) with OIP JSON bodies. Servers take turns within each round
(A B C, then C B A), round after round, and the medians of the rounds are reported, so that
other work on this shared machine falls on all of them alike. Then perf_analyzer, Triton's load
generator, unmodified against the agent over gRPC and REST (and against MLServer's best setting
for comparison; benchmarks/peers/perf_analyzer.py).
Writes benchmarks/results/serving_peers.json and prints the table and the goals of issue 11
(Milepost against MLServer's best setting and against the ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._timing import machine, table, write  # noqa: E402
from benchmarks.peers import mlserver, perf_analyzer, venvs  # noqa: E402
from benchmarks.peers.bare_grpc import ECHO as BARE_ECHO  # noqa: E402
from benchmarks.peers.bare_grpc import MODES as BARE_MODES  # noqa: E402
from benchmarks.rest_stacks import drive_http  # noqa: E402
from benchmarks.serving import FEATURES, _train, drive  # noqa: E402

MODEL = "xgb"
MILEPOST = "Milepost"
MLSERVER_BEST = "MLServer best"
CEILING = "bare gRPC (ceiling)"
ECHO = f"bare gRPC {BARE_ECHO}"
METRICS = ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms")


@dataclass
class Target:
    """One server under test: its gRPC address and REST base URL (None: not served)."""

    name: str
    grpc: str | None
    http: str | None


# ---------------------------------------------------------------------------
# The servers' processes


class Processes:
    """Every process the benchmark starts, each in a session of its own (MLServer's workers and
    the agent go with it); all ended by ``close``, TERM first, KILL after a grace."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[tuple[str, subprocess.Popen, IO[bytes]]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = (self._logs / f"{name.replace(' ', '_')}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        self._started.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self._logs / f"{name.replace(' ', '_')}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def wait_until(self, name: str, ready: Callable[[], Any], timeout_s: float = 120) -> Any:
        """``ready()``'s first true answer, while process ``name`` is alive; else SystemExit with its log."""
        proc = next(p for n, p, _ in self._started if n == name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            answer = ready()
            if answer:
                return answer
            time.sleep(0.2)
        raise SystemExit(f"{name} was not ready within {timeout_s:g} s:\n{self.log_tail(name)}")

    def close(self) -> None:
        for _, proc, _ in self._started:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc, log in self._started:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # what the leader left behind in its session (workers)
            log.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _read_when_written(path: Path) -> Callable[[], str | None]:
    def read() -> str | None:
        text = path.read_text().strip() if path.exists() else ""
        return text or None

    return read


def start_milepost(processes: Processes, folder: Path, model_file: Path) -> Target:
    """`milepost up` on free ports with REST, the model pushed and deployed, and served."""
    from milepost.client import Client, embedded_admin_token

    data_dir = folder / "milepost"
    processes.start(MILEPOST, [sys.executable, "-m", "milepost.cli", "up", "--data-dir", str(data_dir), "--port", "0",
                               "--agent-port", "0", "--metrics-port", "-1", "--http-port", "0"], cwd=ROOT)
    state = data_dir / "up.json"
    processes.wait_until(MILEPOST, lambda: state.exists() and state.read_text().strip())
    ports = json.loads(state.read_text())
    with Client(ports["coordinator"], token=embedded_admin_token(data_dir)) as client:
        client.push_model(model_file, MODEL)
        client.deploy(MODEL, MODEL)
    # The agent receives its route table with its next heartbeat.
    processes.wait_until(MILEPOST, lambda: _http_ok(f"{ports['http']}/v2/models/{MODEL}/ready"), 60)
    return Target(MILEPOST, ports["agent"], ports["http"])


def start_mlserver(processes: Processes, env: Path, folder: Path, model_file: Path, setting: str) -> tuple[str, dict[str, int]]:
    """MLServer in ``setting`` started on free ports (not yet ready); its name and ports."""
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    repository = folder / f"mlserver-{setting}"
    mlserver.repository(repository, model_file, MODEL, setting, ports)
    argv, environment = mlserver.command(env, repository, setting)
    name = f"MLServer {setting}"
    processes.start(name, argv, env=environment, cwd=repository)
    return name, ports


def start_bare(processes: Processes, folder: Path, mode: str) -> str:
    port_file = folder / f"bare-{mode}.port"
    name = f"bare gRPC {mode}"
    processes.start(name, [sys.executable, "-m", "benchmarks.peers.bare_grpc", mode, str(port_file)], cwd=ROOT)
    return name


# ---------------------------------------------------------------------------
# One request, checked


def _grpc_scores(address: str, X: np.ndarray) -> np.ndarray:
    import grpc

    from milepost.inference import grpc_predict_v2_pb2 as pb
    from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    if not response.outputs:
        return np.empty(0)
    output = response.outputs[0]
    if response.raw_output_contents:
        dtype = {"FP32": np.float32, "FP64": np.float64}[output.datatype]
        return np.frombuffer(response.raw_output_contents[0], dtype).astype(np.float64)
    return np.array(output.contents.fp32_contents or output.contents.fp64_contents, dtype=np.float64)


def json_body(X: np.ndarray) -> bytes:
    """An OIP JSON request for rows X, the body every REST client here sends."""
    return json.dumps({"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32",
                                   "data": X.ravel().tolist()}]}).encode()


def _http_scores(base: str, X: np.ndarray) -> np.ndarray:
    request = urllib.request.Request(f"{base}/v2/models/{MODEL}/infer", data=json_body(X),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return np.array(json.loads(response.read())["outputs"][0]["data"], dtype=np.float64)


def check(target: Target, X: np.ndarray, expected: np.ndarray) -> None:
    """One request over each protocol the target serves; its scores must be XGBoost's (the ceiling answers nothing)."""
    for protocol, address, score in (("gRPC", target.grpc, _grpc_scores), ("REST", target.http, _http_scores)):
        if address is None:
            continue
        scores = score(address, X)
        if target.name.startswith("bare"):
            continue
        if scores.size == 2 * len(X):  # both classes' probabilities
            scores = scores.reshape(len(X), 2)[:, 1]
        if not np.allclose(scores, expected, atol=1e-5):
            raise SystemExit(f"{target.name} over {protocol} scores {scores[:4]}..., XGBoost {expected[:4]}...")


# ---------------------------------------------------------------------------
# The rounds


def _cases(text: str) -> list[tuple[int, int]]:
    cases = []
    for case in text.split(","):
        rows, concurrency = case.lower().split("x")
        cases.append((int(rows), int(concurrency)))
    return cases


def measure(targets: list[Target], cases: list[tuple[int, int]], rounds: int, seconds: float) -> list[dict]:
    """Each target, each protocol and case, in turns within each round; the medians of the rounds."""
    X = np.random.default_rng(1).normal(size=(max(r for r, _ in cases), FEATURES)).astype(np.float32)
    bodies = {rows: json_body(X[:rows]) for rows, _ in cases}
    headers = {"Content-Type": "application/json"}
    runs: dict[tuple[str, str, int, int], list[dict]] = {}
    for round_ in range(rounds):
        order = targets if round_ % 2 == 0 else targets[::-1]
        for protocol in ("gRPC", "REST"):
            for rows, concurrency in cases:
                for target in order:
                    if protocol == "gRPC" and target.grpc is not None:
                        run = drive(target.grpc, MODEL, rows, concurrency, seconds)
                    elif protocol == "REST" and target.http is not None:
                        url = f"{target.http}/v2/models/{MODEL}/infer"
                        run = drive_http(url, bodies[rows], headers, rows, concurrency, seconds)
                    else:
                        continue
                    runs.setdefault((target.name, protocol, rows, concurrency), []).append(run)
                    print(f"round {round_ + 1}/{rounds} {protocol:>4} {rows:>3}x{concurrency:<3} {target.name:>20}: "
                          f"{run['requests_per_s']:8.0f} req/s p50 {run['p50_ms']:6.2f} ms p99 {run['p99_ms']:6.2f} ms"
                          f"{' errors ' + str(run['errors']) if run['errors'] else ''}", flush=True)
    results = []
    for (name, protocol, rows, concurrency), measured in runs.items():
        median = {k: statistics.median(r[k] for r in measured) for k in METRICS}
        results.append({"server": name, "protocol": protocol, "rows": rows, "concurrency": concurrency, **median,
                        "errors": sum(r["errors"] for r in measured),
                        "rounds_requests_per_s": [round(r["requests_per_s"]) for r in measured]})
    results.sort(key=lambda r: (r["protocol"], r["rows"], r["concurrency"],
                                [t.name for t in targets].index(r["server"])))
    return results


def _run_of(runs: list[dict], server: str, protocol: str, rows: int, concurrency: int) -> dict | None:
    """The run of ``server`` (CEILING: the fastest of the bare servers) in that case, if measured."""
    if server == CEILING:
        found = [_run_of(runs, f"bare gRPC {mode}", protocol, rows, concurrency) for mode in BARE_MODES]
        return max((r for r in found if r), key=lambda r: r["requests_per_s"], default=None)
    return next((r for r in runs if (r["server"], r["protocol"], r["rows"], r["concurrency"])
                 == (server, protocol, rows, concurrency)), None)


def references(runs: list[dict]) -> list[dict]:
    """For reference, not goals: the echo server against the ceiling, and Milepost against the echo."""
    out = []
    for concurrency in (8, 32):
        ceiling, echo = _run_of(runs, CEILING, "gRPC", 1, concurrency), _run_of(runs, ECHO, "gRPC", 1, concurrency)
        ours = _run_of(runs, MILEPOST, "gRPC", 1, concurrency)
        for what, a, b in ((f"gRPC 1x{concurrency} requests/s, bare echo / bare ceiling", echo, ceiling),
                           (f"gRPC 1x{concurrency} requests/s, Milepost / bare echo", ours, echo)):
            if a and b and b["requests_per_s"]:
                out.append({"what": what, "ratio": a["requests_per_s"] / b["requests_per_s"],
                            "of": a["requests_per_s"], "to": b["requests_per_s"]})
    return out


def goals(runs: list[dict]) -> list[dict]:
    """Issue 11's goals, as ratios (each met when the ratio reaches its target)."""
    wanted = [
        ("gRPC 1x8 requests/s, Milepost / MLServer best", "gRPC", 1, 8, MLSERVER_BEST, "requests_per_s", 3.0),
        ("gRPC 1x32 requests/s, Milepost / MLServer best", "gRPC", 1, 32, MLSERVER_BEST, "requests_per_s", 3.0),
        ("gRPC 1x8 p99, MLServer best / Milepost", "gRPC", 1, 8, MLSERVER_BEST, "p99_ms", 1.0),
        ("gRPC 1x32 p99, MLServer best / Milepost", "gRPC", 1, 32, MLSERVER_BEST, "p99_ms", 1.0),
        ("gRPC 64x8 rows/s, Milepost / MLServer best", "gRPC", 64, 8, MLSERVER_BEST, "rows_per_s", 2.0),
        ("REST 1x8 requests/s, Milepost / MLServer best", "REST", 1, 8, MLSERVER_BEST, "requests_per_s", 3.0),
        ("REST 1x8 requests/s, Milepost / MLServer default", "REST", 1, 8, "MLServer default", "requests_per_s", 3.0),
        ("gRPC 1x8 requests/s, Milepost / bare ceiling", "gRPC", 1, 8, CEILING, "requests_per_s", 0.7),
        ("gRPC 1x32 requests/s, Milepost / bare ceiling", "gRPC", 1, 32, CEILING, "requests_per_s", 0.7),
    ]
    out = []
    for goal, protocol, rows, concurrency, peer, metric, target in wanted:
        ours, theirs = _run_of(runs, MILEPOST, protocol, rows, concurrency), _run_of(runs, peer, protocol, rows, concurrency)
        if not ours or not theirs or not ours[metric] or not theirs[metric]:
            continue
        # Lower is better for latency: the peer's over ours.
        ratio = theirs[metric] / ours[metric] if metric == "p99_ms" else ours[metric] / theirs[metric]
        out.append({"goal": goal, "ratio": ratio, "target": target, "met": ratio >= target,
                    "milepost": ours[metric], "peer": theirs[metric], "peer_server": theirs["server"], "metric": metric})
    return out


def run_perf_analyzer(binary: Path, environment: dict[str, str], targets: list[Target], interval_ms: int) -> list[dict]:
    """perf_analyzer as users run it, 1 row at 8 concurrent, against the agent (gRPC, REST) and MLServer best (gRPC)."""
    out = []
    for target in targets:
        for protocol, address in (("grpc", target.grpc), ("http", target.http)):
            if address is None or (target.name != MILEPOST and protocol == "http"):
                continue
            result = perf_analyzer.run(binary, environment, MODEL, protocol, address.removeprefix("http://"),
                                       shape=f"input:1,{FEATURES}", concurrency=8, interval_ms=interval_ms)
            result["server"] = target.name
            shown = (f"{result['requests_per_s']:.0f} req/s p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms"
                     if result["ok"] else "failed:\n" + result["output"])
            print(f"perf_analyzer {protocol:>4} {target.name:>20}: {shown}", flush=True)
            out.append(result)
    return out


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each client run")
    parser.add_argument("--rounds", type=int, default=6,
                        help="interleaved rounds, as issue 11 measured (with 3 the 1x8 ratio moved 2.89x-3.17x between runs)")
    parser.add_argument("--cases", default="1x1,1x8,1x32,64x8", help="ROWSxCONCURRENCY, comma-separated")
    parser.add_argument("--perf-analyzer-ms", type=int, default=2000,
                        help="perf_analyzer's measurement interval (0: do not run it)")
    args = parser.parse_args()
    cases = _cases(args.cases)
    # SIGTERM ends the benchmark as Ctrl-C does: through the finally that ends every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import grpc
    import xgboost

    mlserver_env = venvs.ensure("mlserver", mlserver.requirements(xgboost.__version__))
    analyzer = perf_analyzer.install() if args.perf_analyzer_ms > 0 else None
    results: dict = {
        "machine": machine(), "seconds": args.seconds, "rounds": args.rounds, "cases": args.cases,
        "versions": {"mlserver": mlserver.version(mlserver_env), "grpcio": grpc.__version__,
                     "xgboost": xgboost.__version__},
        "model": "XGBoost binary:logistic, 100 trees, depth 6, 30 features (benchmarks/serving.py _train)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_file = folder / "xgb.json"
        booster, _ = _train(model_file)
        processes = Processes(folder)
        try:
            mlservers = [start_mlserver(processes, mlserver_env, folder, model_file, s) for s in mlserver.SETTINGS]
            bare = [(start_bare(processes, folder, mode), folder / f"bare-{mode}.port") for mode in (*BARE_MODES, BARE_ECHO)]
            targets = [start_milepost(processes, folder, model_file)]
            for name, ports in mlservers:
                processes.wait_until(name, lambda p=ports: _http_ok(f"http://127.0.0.1:{p['http']}/v2/models/{MODEL}/ready"))
                targets.append(Target(name, f"127.0.0.1:{ports['grpc']}", f"http://127.0.0.1:{ports['http']}"))
            for name, port_file in bare:
                port = processes.wait_until(name, _read_when_written(port_file))
                targets.append(Target(name, f"127.0.0.1:{port}", None))

            X = np.random.default_rng(2).normal(size=(8, FEATURES)).astype(np.float32)
            expected = booster.predict(xgboost.DMatrix(X))
            for target in targets:
                check(target, X, expected)
            print("serving: " + ", ".join(f"{t.name} (gRPC {t.grpc}, REST {t.http})" for t in targets), flush=True)

            results["runs"] = measure(targets, cases, args.rounds, args.seconds)
            results["goals"] = goals(results["runs"])
            results["references"] = references(results["runs"])
            if analyzer is not None:
                compared = [t for t in targets if t.name in (MILEPOST, MLSERVER_BEST)]
                results["perf_analyzer"] = run_perf_analyzer(*analyzer, compared, args.perf_analyzer_ms)
        finally:
            processes.close()

    print()
    print(table(
        ["protocol", "rows x concurrency", "server", "requests/s", "rows/s", "p50 ms", "p99 ms", "errors", "rounds (req/s)"],
        [[r["protocol"], f"{r['rows']}x{r['concurrency']}", r["server"], r["requests_per_s"], r["rows_per_s"], r["p50_ms"],
          r["p99_ms"], r["errors"], " ".join(map(str, r["rounds_requests_per_s"]))] for r in results["runs"]],
    ))
    if results.get("perf_analyzer"):
        print()
        print(table(
            ["perf_analyzer", "server", "requests/s", "p50 ms", "p99 ms", "result"],
            [[r["protocol"], r["server"], r.get("requests_per_s", 0.0), r.get("p50_ms", 0.0), r.get("p99_ms", 0.0),
              "ok" if r["ok"] else "failed (its output is in the JSON)"] for r in results["perf_analyzer"]],
        ))
    print()
    print(table(["goal", "Milepost", "peer", "ratio", "target", "met"],
                [[g["goal"], g["milepost"], g["peer"], f"{g['ratio']:.2f}", f"{g['target']:g}", "yes" if g["met"] else "no"]
                 for g in results["goals"]]))
    if results["references"]:
        print()
        print(table(["for reference", "req/s", "to req/s", "ratio"],
                    [[r["what"], r["of"], r["to"], f"{r['ratio']:.2f}"] for r in results["references"]]))
    print(f"\nwrote {write('serving_peers', results)}")


if __name__ == "__main__":
    main()
