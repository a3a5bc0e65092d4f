"""The `milepost` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from milepost.errors import InvalidArgument, MilepostError

DEFAULT_COORDINATOR = os.environ.get("MILEPOST_COORDINATOR", "127.0.0.1:7070")


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from milepost.client import Client

    return Client(args.coordinator, timeout=args.timeout)


def _model_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition(":")
    if not name:
        raise InvalidArgument(f"--model {ref!r}: expected NAME or NAME:VERSION")
    return name, version


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
        port=args.agent_port, agent_id="local",
    ))
    try:
        agent.start()
    except BaseException:
        coordinator.stop()
        raise
    serve_forever([coordinator, agent], data_dir, "up", {"coordinator": coordinator.address, "agent": agent.address})
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
    ))
    agent.start()
    serve_forever([agent], data_dir, "agent", {"agent": agent.address})
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
    for d in endpoint.deployments:
        where = ", ".join(d.agent_ids) or "-"
        print(f"{endpoint.name}: {d.model}:{d.version[:12]} x{d.replicas} on {where}: {d.state} {d.message}".rstrip())
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
