"""The `milepost` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from milepost.core.errors import InvalidArgument, MilepostError

DEFAULT_COORDINATOR = os.environ.get("MILEPOST_COORDINATOR", "127.0.0.1:7070")


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from milepost.client import Client

    return Client(args.coordinator, timeout=args.timeout)


def _model_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition(":")
    if not name:
        raise InvalidArgument(f"--model {ref!r}: expected NAME or NAME:VERSION")
    return name, version


def _metrics_port(port: int) -> int | None:
    return None if port < 0 else port


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def _bytes(text: str) -> int:
    """'512MiB', '2G', '1073741824' -> bytes (binary units)."""
    number = text.strip().rstrip("BbIiGgMmKkTt")
    unit = text.strip()[len(number):].lower()
    try:
        return int(float(number or 0) * _UNITS[unit])
    except (KeyError, ValueError):
        raise InvalidArgument(f"--memory {text!r}: expected a size such as 512MiB or 2GiB") from None


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


# ---- processes ----
def cmd_up(args: argparse.Namespace) -> int:
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.processes import serve_forever

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    coordinator = Coordinator(CoordinatorConfig(data_dir=data_dir / "coordinator", host=args.host, port=args.port))
    coordinator.start()
    agent = Agent(AgentConfig(
        coordinator=coordinator.address, data_dir=data_dir / "agent", host=args.host,
        port=args.agent_port, agent_id="local", metrics_port=_metrics_port(args.metrics_port),
    ))
    try:
        agent.start()
    except BaseException:
        coordinator.stop()
        raise
    addresses = {"coordinator": coordinator.address, "agent": agent.address}
    if agent.metrics_port is not None:
        addresses["metrics"] = f"http://{args.host}:{agent.metrics_port}/metrics"
    serve_forever([coordinator, agent], data_dir, "up", addresses)
    return 0


def cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.processes import serve_forever

    data_dir = Path(args.data_dir)
    coordinator = Coordinator(CoordinatorConfig(
        data_dir=data_dir, host=args.host, port=args.port, agent_ttl_s=args.agent_ttl,
        heartbeat_interval_s=args.heartbeat_interval, placement=args.placement,
    ))
    coordinator.start()
    serve_forever([coordinator], data_dir, "coordinator", {"coordinator": coordinator.address})
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.server import Agent, AgentConfig
    from milepost.processes import serve_forever

    labels = _pairs(args.label, "--label")
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(AgentConfig(
        coordinator=args.coordinator, data_dir=data_dir, host=args.host, port=args.port,
        agent_id=args.agent_id, advertise=args.advertise, labels=labels,
        metrics_port=_metrics_port(args.metrics_port),
    ))
    agent.start()
    addresses = {"agent": agent.address}
    if agent.metrics_port is not None:
        addresses["metrics"] = f"http://{args.host}:{agent.metrics_port}/metrics"
    serve_forever([agent], data_dir, "agent", addresses)
    return 0


# ---- registry and endpoints ----
def cmd_models(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        models = client.list_models(args.name or "")
    print(render(
        ["NAME", "VERSION", "FLAVOR", "SIZE", "CREATED"],
        [[m.name, m.version[:12], m.flavor, m.size_bytes, _when(m.created_at)] for m in models],
    ))
    return 0


def cmd_models_push(args: argparse.Namespace) -> int:
    with _client(args) as client:
        model = client.push_model(Path(args.path), args.name)
    print(f"{model.name}:{model.version}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    name, version = _model_ref(args.model)
    with _client(args) as client:
        endpoint = client.deploy(
            args.endpoint, name, version, replicas=args.replicas, max_batch_size=args.max_batch_size,
            max_delay_ms=args.max_delay_ms, max_queue_rows=args.max_queue_rows,
            cpu=args.cpu, memory_bytes=_bytes(args.memory), gpus=args.gpus,
            selector=_pairs(args.selector, "--selector"), engine=args.engine,
        )
    _print_endpoint(endpoint)
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.undeploy(args.endpoint)
    print(f"{args.endpoint}: undeployed")
    return 0


def _endpoint_rows(endpoints) -> list[list[object]]:  # type: ignore[no-untyped-def]
    return [
        [e.name, e.policy, f"{d.model}:{d.version[:12]}", d.replicas, ",".join(d.agent_ids) or "-", d.state, d.message]
        for e in endpoints for d in e.deployments
    ]


ENDPOINT_HEADERS = ["ENDPOINT", "POLICY", "MODEL", "REPLICAS", "AGENTS", "STATE", "MESSAGE"]


def cmd_endpoints(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        print(render(ENDPOINT_HEADERS, _endpoint_rows(client.endpoints())))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        status = client.status()
    print("AGENTS")
    print(render(
        ["AGENT", "ADDRESS", "STATE", "CORES", "MEMORY GiB", "GPUS", "ENGINES", "DEPLOYMENTS"],
        [[a.info.agent_id, a.info.address, a.state, a.info.resources.cpu_cores,
          f"{a.info.resources.memory_bytes / 2**30:.1f}", len(a.info.resources.gpus),
          ",".join(f"{e.name} {e.version}".strip() for e in a.info.engines if e.available),
          len(a.deployment_ids)] for a in status.agents],
    ))
    print("\nMODELS")
    print(render(
        ["NAME", "VERSION", "FLAVOR", "SIZE", "CREATED"],
        [[m.name, m.version[:12], m.flavor, m.size_bytes, _when(m.created_at)] for m in status.models],
    ))
    print("\nENDPOINTS")
    print(render(ENDPOINT_HEADERS, _endpoint_rows(status.endpoints)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from milepost.tables import flatten, read_table, render, write_table

    table = read_table(Path(args.input))
    with _client(args) as client:
        result = client.infer(args.endpoint, table)
    if args.output:
        write_table(result, Path(args.output))
        print(f"scored {result.num_rows} rows -> {args.output}")
    else:
        flat = flatten(result)
        print(render(flat.column_names, [list(r.values()) for r in flat.to_pylist()]))
    return 0


# ---- routing ----
def _arm(spec: str, flag: str) -> tuple[str, tuple[str, str, float]]:
    """NAME=MODEL[:VERSION[:WEIGHT]] -> (name, (model, version, weight))."""
    name, sep, ref = spec.partition("=")
    parts = ref.split(":")
    if not sep or not name or not parts[0] or len(parts) > 3:
        raise InvalidArgument(f"{flag} {spec!r}: expected NAME=MODEL[:VERSION[:WEIGHT]]")
    try:
        weight = float(parts[2]) if len(parts) == 3 and parts[2] else 1.0
    except ValueError:
        raise InvalidArgument(f"{flag} {spec!r}: weight {parts[2]!r} is not a number") from None
    return name, (parts[0], parts[1] if len(parts) > 1 else "", weight)


def _seconds(text: str) -> float:
    """'60s', '2m', '500ms', '1h' or a plain number of seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], units[suffix]
            break
    else:
        number, scale = text, 1.0
    try:
        return float(number) * scale
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a duration such as 60s, 2m or 500ms") from None


def _print_endpoint(endpoint) -> None:  # type: ignore[no-untyped-def]
    arms = ", ".join(
        f"{a.name}{'' if a.weight in (0, 1) else f'({a.weight:g})'}" for a in endpoint.routing.arms
    )
    print(f"{endpoint.name}: {endpoint.policy} over {arms}")
    for d in endpoint.deployments:
        where = ", ".join(d.agent_ids) or "-"
        print(f"  {d.model}:{d.version[:12]} x{d.replicas} on {where}: {d.state} {d.message}".rstrip())


def cmd_split(args: argparse.Namespace) -> int:
    arms = dict(_arm(a, "--arm") for a in args.arm)
    with _client(args) as client:
        _print_endpoint(client.split(args.endpoint, arms, key_parameter=args.key_parameter))
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    name, version = _model_ref(args.candidate)
    steps = tuple(float(s) for s in args.steps.split(","))
    with _client(args) as client:
        _print_endpoint(client.canary(
            args.endpoint, name, version, steps=steps, window_s=_seconds(args.window),
            max_error_rate=args.max_error_rate, max_p99_latency_ms=args.max_p99_ms,
            max_divergence=args.max_divergence, min_requests=args.min_requests,
        ))
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    name, version = _model_ref(args.candidate)
    with _client(args) as client:
        _print_endpoint(client.shadow(args.endpoint, name, version, fraction=args.fraction))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    members = dict(_arm(m, "--member") for m in args.member)
    stacker = _model_ref(args.stacker) if args.stacker else None
    with _client(args) as client:
        _print_endpoint(client.ensemble(
            args.endpoint, members, combiner=args.combiner, stacker=stacker,
            on_member_failure=args.on_member_failure, member_timeout_s=args.member_timeout,
        ))
    return 0


def cmd_bandit(args: argparse.Namespace) -> int:
    arms = {name: (model, version) for name, (model, version, _) in (_arm(a, "--arm") for a in args.arm)}
    with _client(args) as client:
        _print_endpoint(client.bandit(args.endpoint, arms, algorithm=args.algorithm, epsilon=args.epsilon))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_endpoint(client.promote(args.endpoint, args.arm))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_endpoint(client.rollback(args.endpoint))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        report = client.report(args.endpoint)
    print(f"{report.endpoint.name}: {report.endpoint.policy}")
    print(render(
        ["ARM", "MODEL", "REQUESTS", "ERRORS", "ERR RATE", "P50 MS", "P99 MS", "PRED MEAN", "FEEDBACK", "FB MEAN", "SHADOW |DIFF|"],
        [[a.arm, f"{a.model}:{a.version[:8]}".rstrip(":"), a.requests, a.errors, f"{a.error_rate:.4f}",
          f"{a.p50_latency_ms:g}", f"{a.p99_latency_ms:g}", f"{a.prediction_mean:.4f}", f"{a.feedback_count:g}",
          f"{a.feedback_mean:.4f}", f"{a.shadow_mean_abs_diff:.2e}" if a.shadow_compared else "-"]
         for a in report.arms],
    ))
    if report.comparisons:
        print()
        print(render(
            ["ARM", "VS", "METRIC", "DIFFERENCE", "TEST", "STATISTIC", "P-VALUE"],
            [[c.arm, c.baseline, c.metric, f"{c.difference:+.4g}", c.test, f"{c.statistic:.3f}", f"{c.p_value:.4f}"]
             for c in report.comparisons],
        ))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        arm = client.feedback(args.endpoint, args.key, args.value, arm=args.arm)
    print(f"{args.endpoint}: {args.value:g} credited to arm {arm}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        events = client.events(args.endpoint, args.limit)
    print(render(["WHEN", "ENDPOINT", "KIND", "MESSAGE"], [[_when(e.at), e.endpoint, e.kind, e.message] for e in events]))
    return 0


# ---- pipelines ----
def _print_run(run) -> None:  # type: ignore[no-untyped-def]
    from milepost.tables import render

    took = f" in {run.finished_at - run.created_at:.1f}s" if run.finished_at else ""
    print(f"run {run.run_id} ({run.pipeline}): {run.state}{took}")
    print(render(
        ["STAGE", "STATE", "AGENT", "ROWS", "OUTPUTS", "MESSAGE"],
        [[s.name, s.state, s.agent_id or "-", s.rows or "-",
          " ".join(f"{k}={v}" for k, v in sorted(s.outputs.items())) or "-", s.message] for s in run.stages],
    ))


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.submit_pipeline(Path(args.file))
        print(f"submitted run {run.run_id}")
        if args.follow:
            return _follow(client, run.run_id)
    return 0


def _follow(client, run_id: str) -> int:  # type: ignore[no-untyped-def]
    last = None
    for run in client.watch_run(run_id):
        line = " ".join(f"{s.name}:{s.state.lower()}{f'({s.rows} rows)' if s.rows else ''}" for s in run.stages)
        if line != last:
            print(f"[{run.state.lower()}] {line}", file=sys.stderr, flush=True)
            last = line
    final = client.run(run_id)
    _print_run(final)
    return 0 if final.state == "SUCCEEDED" else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with _client(args) as client:
        runs = client.runs(args.limit)
    print(render(
        ["RUN", "PIPELINE", "STATE", "CREATED", "STAGES"],
        [[r.run_id, r.pipeline, r.state, _when(r.created_at),
          " ".join(f"{s.name}:{s.state.lower()}" for s in r.stages)] for r in runs],
    ))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.follow:
            return _follow(client, args.run_id)
        _print_run(client.run(args.run_id))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_run(client.cancel_run(args.run_id))
    return 0


# ---- parser ----
def build_parser() -> argparse.ArgumentParser:
    from milepost import __version__
    from milepost.processes import default_data_dir

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--coordinator", default=DEFAULT_COORDINATOR, metavar="HOST:PORT",
                        help="coordinator address (default: %(default)s, or $MILEPOST_COORDINATOR)")
    common.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds")
    common.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")

    parser = argparse.ArgumentParser(prog="milepost", description="Deploy, route, score and watch ML models.")
    parser.add_argument("--version", action="version", version=f"milepost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", parents=[common], help="coordinator and one local agent in the foreground")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7070, help="coordinator port (0 picks a free one)")
    p.add_argument("--agent-port", type=int, default=8001, help="agent data-plane port (0 picks a free one)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1: off, 0: any)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("coordinator", parents=[common], help="run the coordinator")
    p.add_argument("--data-dir", default=str(default_data_dir() / "coordinator"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7070)
    p.add_argument("--agent-ttl", type=float, default=5.0, help="seconds without heartbeat before an agent is lost")
    p.add_argument("--heartbeat-interval", type=float, default=1.0)
    p.add_argument("--placement", choices=["spread", "pack"], default="spread")
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("agent", parents=[common], help="run an agent that joins a coordinator")
    p.add_argument("--data-dir", default=str(default_data_dir() / "agent"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--agent-id", default="", help="stable name of this agent (default: HOSTNAME-PORT)")
    p.add_argument("--advertise", default="", help="HOST:PORT others use to reach this agent")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1: off, 0: any)")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("models", parents=[common], help="list model versions; `models push` registers one")
    p.add_argument("--name", default="", help="only versions of this model")
    p.set_defaults(func=cmd_models)
    models_sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    pp = models_sub.add_parser("push", parents=[common], help="register a bundle dir, XGBoost .json or LightGBM .txt")
    pp.add_argument("path")
    pp.add_argument("--name", required=True)
    pp.set_defaults(func=cmd_models_push)

    p = sub.add_parser("deploy", parents=[common], help="serve a model version under an endpoint name")
    p.add_argument("endpoint")
    p.add_argument("--model", required=True, metavar="NAME[:VERSION]")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=0, help="rows per merged engine call (default 256)")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long a request may wait for others to fill a batch (default 0: no added wait)")
    p.add_argument("--max-queue-rows", type=int, default=0,
                   help="rows that may wait before RESOURCE_EXHAUSTED (default 65536)")
    p.add_argument("--cpu", type=float, default=0.0, help="CPU cores each replica reserves")
    p.add_argument("--memory", default="0", help="memory each replica reserves, e.g. 2GiB")
    p.add_argument("--gpus", type=int, default=0, help="GPUs each replica reserves")
    p.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE",
                   help="only agents with this label (repeatable)")
    p.add_argument("--engine", default="", help="engine to serve with (default: the model flavor's)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("undeploy", parents=[common], help="remove an endpoint")
    p.add_argument("endpoint")
    p.set_defaults(func=cmd_undeploy)

    p = sub.add_parser("endpoints", parents=[common], help="list endpoints")
    p.set_defaults(func=cmd_endpoints)

    p = sub.add_parser("score", parents=[common], help="score a .parquet, .csv or .json file on an endpoint")
    p.add_argument("endpoint")
    p.add_argument("--input", required=True)
    p.add_argument("--output", default="")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("status", parents=[common], help="agents, models and endpoints")
    p.set_defaults(func=cmd_status)

    from milepost import dataset_command

    dataset_command.add_parser(sub, common)

    p = sub.add_parser("split", parents=[common], help="A/B split by weight, sticky per request key")
    p.add_argument("endpoint")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=MODEL[:VERSION[:WEIGHT]]")
    p.add_argument("--key-parameter", default="", help="request parameter that pins a caller (default milepost-key)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("canary", parents=[common], help="ramp a candidate; promote or roll back by gates")
    p.add_argument("endpoint")
    p.add_argument("--candidate", required=True, metavar="MODEL[:VERSION]")
    p.add_argument("--steps", default="5,25,50,100", help="candidate traffic percent per step")
    p.add_argument("--window", default="60s", help="how long each step is watched, e.g. 60s, 5m")
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--max-p99-ms", type=float, default=0.0, help="p99 latency gate (0: off)")
    p.add_argument("--max-divergence", type=float, default=0.0,
                   help="mean prediction shift in baseline standard deviations (0: off)")
    p.add_argument("--min-requests", type=int, default=20, help="candidate requests needed to judge a window")
    p.set_defaults(func=cmd_canary)

    p = sub.add_parser("shadow", parents=[common], help="mirror traffic to a candidate, compare, discard")
    p.add_argument("endpoint")
    p.add_argument("--candidate", required=True, metavar="MODEL[:VERSION]")
    p.add_argument("--fraction", type=float, default=0.1)
    p.set_defaults(func=cmd_shadow)

    p = sub.add_parser("ensemble", parents=[common], help="combine several models' answers")
    p.add_argument("endpoint")
    p.add_argument("--member", action="append", required=True, metavar="NAME=MODEL[:VERSION[:WEIGHT]]")
    p.add_argument("--combiner", choices=["mean", "weighted", "vote", "stacking"], default="mean")
    p.add_argument("--stacker", default="", metavar="MODEL[:VERSION]", help="meta-model for --combiner stacking")
    p.add_argument("--on-member-failure", choices=["fail", "skip"], default="fail")
    p.add_argument("--member-timeout", type=float, default=0.0, help="seconds per member (default 10)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("bandit", parents=[common], help="multi-armed bandit driven by feedback")
    p.add_argument("endpoint")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=MODEL[:VERSION]")
    p.add_argument("--algorithm", choices=["thompson", "epsilon_greedy"], default="thompson")
    p.add_argument("--epsilon", type=float, default=0.1)
    p.set_defaults(func=cmd_bandit)

    p = sub.add_parser("promote", parents=[common], help="send all traffic to the candidate (or --arm)")
    p.add_argument("endpoint")
    p.add_argument("--arm", default="")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[common], help="send all traffic back to the baseline")
    p.add_argument("endpoint")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("report", parents=[common], help="per-arm traffic, latency, outcomes, significance")
    p.add_argument("endpoint")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("feedback", parents=[common], help="record an outcome for a request key")
    p.add_argument("endpoint")
    p.add_argument("--key", required=True)
    p.add_argument("--value", type=float, required=True)
    p.add_argument("--arm", default="", help="the arm that served it (the milepost-arm response parameter)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("submit", parents=[common], help="start a pipeline run from a YAML or JSON spec")
    p.add_argument("file")
    p.add_argument("--follow", action="store_true", help="show progress until the run finishes")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("runs", parents=[common], help="list pipeline runs")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("run", parents=[common], help="show a pipeline run (--follow: until it finishes)")
    p.add_argument("run_id")
    p.add_argument("--follow", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cancel", parents=[common], help="cancel a pipeline run")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("events", parents=[common], help="the audit trail of endpoint changes")
    p.add_argument("endpoint", nargs="?", default="")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_events)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command in ("up", "coordinator", "agent") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except MilepostError as err:
        print(f"error: {err.code.name}: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
