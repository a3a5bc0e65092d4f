"""The server commands: `milepost up` (coordinator and one local agent), `milepost coordinator`,
`milepost agent`. Each runs in the foreground until SIGINT or SIGTERM (milepost.processes)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from milepost.cli.arguments import optional_port, pairs, tls
from milepost.core import memory
from milepost.core.ports import PortUnavailable
from milepost.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from agent.server import Agent
    from coordinator.server import Coordinator


def cmd_up(args: argparse.Namespace) -> int:
    memory.configure()  # before the servers start their threads (milepost.core.memory)
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.processes import serve_forever

    settings = get_settings()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    coordinator = Coordinator(CoordinatorConfig(
        data_dir=data_dir / "coordinator", host=args.host, port=args.port, agent_ttl_s=args.agent_ttl,
        heartbeat_interval_s=settings.heartbeat_interval_s, placement=settings.placement,
        admin_token_file=data_dir / "admin.token", tls=tls(args), insecure=args.insecure,
        approval_requires_validation=settings.approval_requires_validation, http_port=args.console_port,
    ))
    with _port_flag("--port"):
        coordinator.start()
    agent = Agent(AgentConfig(
        coordinator=coordinator.address, data_dir=data_dir / "agent", host=args.host,
        port=args.agent_port, agent_id="local", advertise=args.advertise, metrics_port=optional_port(args.metrics_port),
        http_port=optional_port(args.http_port),
        token=coordinator.local_agent_token(), tls=tls(args), insecure=args.insecure,
        inference_auth=inference_auth(args),
    ))
    try:
        with _port_flag("--agent-port"):
            agent.start()
    except BaseException:
        coordinator.stop()
        raise
    serve_forever([coordinator, agent], data_dir, "up",
                  {"coordinator": coordinator.address, **_console(coordinator), **_agent_addresses(agent, args)})
    return 0


def cmd_coordinator(args: argparse.Namespace) -> int:
    memory.configure()  # before the servers start their threads (milepost.core.memory)
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.processes import serve_forever

    data_dir = Path(args.data_dir)
    coordinator = Coordinator(CoordinatorConfig(
        data_dir=data_dir, host=args.host, port=args.port, agent_ttl_s=args.agent_ttl,
        heartbeat_interval_s=args.heartbeat_interval, placement=args.placement, tls=tls(args), insecure=args.insecure,
        approval_requires_validation=get_settings().approval_requires_validation, http_port=args.console_port,
    ))
    with _port_flag("--port"):
        coordinator.start()
    serve_forever([coordinator], data_dir, "coordinator", {"coordinator": coordinator.address, **_console(coordinator)})
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    memory.configure()  # before the servers start their threads (milepost.core.memory)
    from agent.server import Agent, AgentConfig
    from milepost.processes import serve_forever

    labels = pairs(args.label, "--label")
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(AgentConfig(
        coordinator=args.coordinator, data_dir=data_dir, host=args.host, port=args.port,
        agent_id=args.agent_id, advertise=args.advertise, labels=labels,
        metrics_port=optional_port(args.metrics_port), http_port=optional_port(args.http_port),
        token=args.token, tls=tls(args), insecure=args.insecure,
        inference_auth=inference_auth(args),
    ))
    with _port_flag("--port"):
        agent.start()
    serve_forever([agent], data_dir, "agent", _agent_addresses(agent, args),
                  drain=lambda abandon: agent.drain(abandon=abandon))
    return 0


@contextlib.contextmanager
def _port_flag(flag: str) -> Iterator[None]:
    """Name ``flag`` in a PortUnavailable raised without one: the gRPC server's listen
    (milepost.core.tls) cannot tell `up`'s --agent-port from `agent`'s --port."""
    try:
        yield
    except PortUnavailable as err:
        if err.flag:
            raise
        raise err.naming(flag) from err


def inference_auth(args: argparse.Namespace) -> bool | None:
    """--inference-auth: True (token), False (none), None (by the host: token off loopback)."""
    return None if args.inference_auth is None else args.inference_auth == "token"


def _console(coordinator: Coordinator) -> dict[str, str]:
    """The web console's URL, when it serves one."""
    return {"console": coordinator.console_url} if coordinator.console_url else {}


def _agent_addresses(agent: Agent, args: argparse.Namespace) -> dict[str, str]:
    """The agent's data-plane address and, when it serves them, its REST and metrics' URLs."""
    addresses = {"agent": agent.address}
    if agent.http_url is not None:
        addresses["http"] = agent.http_url
    if agent.metrics_port is not None:
        addresses["metrics"] = f"http://{args.host}:{agent.metrics_port}/metrics"
    return addresses


def _agent_ttl(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument("--agent-ttl", type=float, default=settings.agent_ttl_s,
                   help="seconds without heartbeat before an agent is lost")


def _advertise(p: argparse.ArgumentParser) -> None:
    p.add_argument("--advertise", default="", help="HOST:PORT others use to reach this agent (default: where it listens)")


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, settings: Settings) -> None:
    metrics_help = "Prometheus /metrics port (-1: off, 0: any)"
    http_help = "REST data-plane port, Open Inference Protocol over HTTP (-1: off, 0: any)"
    console_help = "coordinator's web console port (-1: off, 0: any)"
    p = sub.add_parser("up", parents=[common], help="coordinator and one local agent in the foreground")
    p.add_argument("--data-dir", default=str(settings.home))
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.coordinator_port, help="coordinator port (0 picks a free one)")
    p.add_argument("--agent-port", type=int, default=settings.agent_port,
                   help="agent data-plane port (0 picks a free one)")
    p.add_argument("--http-port", type=int, default=settings.http_port, help=http_help)
    p.add_argument("--metrics-port", type=int, default=settings.metrics_port, help=metrics_help)
    p.add_argument("--console-port", type=int, default=settings.console_port, help=console_help)
    _agent_ttl(p, settings)
    _advertise(p)
    _listening(p, settings)
    _inference_auth(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("coordinator", parents=[common], help="run the coordinator")
    p.add_argument("--data-dir", default=str(settings.home / "coordinator"))
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.coordinator_port)
    _agent_ttl(p, settings)
    p.add_argument("--heartbeat-interval", type=float, default=settings.heartbeat_interval_s)
    p.add_argument("--placement", choices=["spread", "pack"], default=settings.placement)
    p.add_argument("--http-port", "--console-port", dest="console_port", type=int, default=settings.console_port,
                   help=console_help)
    _listening(p, settings)
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("agent", parents=[common], help="run an agent that joins a coordinator")
    p.add_argument("--data-dir", default=str(settings.home / "agent"))
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.agent_port)
    p.add_argument("--agent-id", default="", help="stable name of this agent (default: HOSTNAME-PORT)")
    _advertise(p)
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--http-port", type=int, default=settings.http_port, help=http_help)
    p.add_argument("--metrics-port", type=int, default=settings.metrics_port, help=metrics_help)
    _listening(p, settings)
    _inference_auth(p)
    p.set_defaults(func=cmd_agent)


def _listening(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument("--insecure", action="store_true", default=settings.insecure,
                   help="listen on a non-loopback --host without TLS (tokens and features travel in the clear)")


def _inference_auth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inference-auth", choices=["token", "none"], default=None,
                   help="require a bearer token (role viewer+) on inference calls "
                        "(default: token when --host is not loopback, else none)")
