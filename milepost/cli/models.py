"""The model and endpoint commands: `models` (`list`, `push`, `alias`, `unalias`, `delete`),
`deploy`, `undeploy`, `endpoints`, `status`, `score` (a file of rows on an endpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from milepost.cli import output, review
from milepost.cli.arguments import byte_size, client, model_ref, pairs
from milepost.cli.views import deployed_version, endpoints_table, models_table, print_endpoint
from milepost.core.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_ROWS
from milepost.core.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

    from milepost.client import Client
    from milepost.v1 import coordinator_pb2, types_pb2

PROGRESS_FROM_BYTES = 8 << 20  # pushes of larger archives show their progress
SCORE_REQUEST_BYTES = 4 << 20  # `score` sends a larger file in requests of about this size
SCORE_FILES = (".parquet", ".csv", ".json", ".jsonl", ".ndjson")  # what `score --output FILE` writes (milepost.tables)


def cmd_models(args: argparse.Namespace) -> int:
    with client(args) as c:
        models = c.list_models(getattr(args, "model", "") or args.name or "")
    output.show(args, models, lambda: print(models_table(models)))
    return 0


def cmd_models_push(args: argparse.Namespace) -> int:
    from milepost.cli.progress import ProgressBar

    bars: list[ProgressBar] = []

    def progress(sent: int, total: int) -> None:
        if total >= PROGRESS_FROM_BYTES:  # a small bundle goes in a blink: no bar
            if not bars:
                bars.append(ProgressBar(total, sys.stderr, unit="bytes"))
            bars[0].update(sent)

    with client(args) as c:
        model = c.push_model(Path(args.path), args.name, progress=progress)
    if bars:
        bars[0].finish(bars[0].total or 0)
    output.show(args, model, lambda: print(f"{model.name}:{model.number} {model.digest}"))
    return 0


def cmd_models_alias(args: argparse.Namespace) -> int:
    with client(args) as c:
        model = c.set_alias(args.model, args.alias, args.version)
    output.show(args, model, lambda: print(f"{model.name}@{args.alias} -> {model.name}:{model.number} {model.digest}"))
    return 0


def cmd_models_unalias(args: argparse.Namespace) -> int:
    with client(args) as c:
        model = c.remove_alias(args.model, args.alias)
    output.show(args, model, lambda: print(f"{model.name}@{args.alias} removed (it named {model.name}:{model.number})"))
    return 0


def cmd_models_delete(args: argparse.Namespace) -> int:
    name, version = model_ref(args.model)
    with client(args) as c:
        model = c.delete_model(name, version)  # as it was: the aliases it had are removed with it
    removed = sorted(model.aliases)
    said = f" (aliases removed with it: {', '.join(removed)})" if removed else ""
    shown_json = {**output.to_json(model), "deleted": True, "aliases_removed": removed}
    output.show(args, shown_json, lambda: print(f"{model.name}:{model.number} {model.digest} deleted{said}"))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    name, version = model_ref(args.model)
    with client(args) as c:
        endpoint = c.deploy(
            args.endpoint, name, version, replicas=args.replicas, max_batch_size=args.max_batch_size,
            max_delay_ms=args.max_delay_ms, max_queue_rows=args.max_queue_rows,
            cpu=args.cpu, memory_bytes=byte_size(args.memory), gpus=args.gpus,
            selector=pairs(args.selector, "--selector"), engine=args.engine, require_approval=args.require_approval,
            gpu_memory_bytes=_gpu_memory(args.gpu_memory), device=args.device or "", wait=not args.no_wait,
        )
    output.show(args, endpoint, lambda: print_endpoint(endpoint))
    unplaced = [d for d in endpoint.deployments if d.state != "READY"]
    if unplaced and not args.no_wait:
        # The coordinator loads what it can place before it answers; what is left waits for capacity.
        reasons = "; ".join(f"{deployed_version(d)}: {d.message or d.state}" for d in unplaced)
        raise FailedPrecondition(f"endpoint {endpoint.name!r} is not serving: {reasons}. It stays deployed and is "
                                 "placed when an agent can take it (--no-wait: do not treat this as an error)")
    return 0


def _gpu_memory(text: str) -> int:
    try:
        return byte_size(text)
    except InvalidArgument:
        raise InvalidArgument(f"--gpu-memory {text!r}: expected a size such as 512MiB or 4GiB") from None


def cmd_undeploy(args: argparse.Namespace) -> int:
    with client(args) as c:
        c.undeploy(args.endpoint)
    output.show(args, {"endpoint": args.endpoint, "undeployed": True}, lambda: print(f"{args.endpoint}: undeployed"))
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    if args.require_approval is not None:
        if not args.endpoint:
            raise InvalidArgument("--require-approval needs the ENDPOINT it applies to")
        with client(args) as c:
            endpoint = c.set_endpoint_approval(args.endpoint, args.require_approval == "on")
        output.show(args, endpoint, lambda: print(
            f"{endpoint.name}: " + ("approved versions only" if endpoint.require_approval else "approval not required")))
        return 0
    if args.log_decisions is not None:
        if not args.endpoint:
            raise InvalidArgument("--log-decisions needs the ENDPOINT it applies to")
        from milepost.cli.decisions import set_decision_log

        set_decision_log(args)
        return 0
    with client(args) as c:
        endpoints = c.endpoints()
    output.show(args, endpoints, lambda: print(endpoints_table(endpoints)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with client(args) as c:
        status = c.status()
    output.show(args, status, lambda: _print_status(status))
    return 0


def _print_status(status: coordinator_pb2.GetStatusResponse) -> None:
    from milepost.tables import render

    print("AGENTS")
    print(render(
        ["AGENT", "ADDRESS", "STATE", "CORES", "MEMORY GiB", "GPUS", "GPU GiB RESERVED", "ENGINES", "SERVING/PLACED",
         "CPU", "REQ/S"],
        [[a.info.agent_id, a.info.address, a.state, a.info.resources.cpu_cores,
          f"{a.info.resources.memory_bytes / 2**30:.1f}", len(a.info.resources.gpus), _gpu_reserved(a.load.gpus),
          ",".join(f"{e.name} {e.version}".strip() for e in a.info.engines if e.available),
          f"{len(a.serving_deployment_ids)}/{len(a.deployment_ids)}",
          f"{a.load.cpu_utilization:.0%}", f"{a.load.requests_per_s:.0f}"] for a in status.agents],
    ))
    print("\nMODELS")
    print(models_table(status.models))
    print("\nENDPOINTS")
    print(endpoints_table(status.endpoints))


def _gpu_reserved(rooms: Sequence[types_pb2.GpuRoom]) -> str:
    """Each GPU's reserved of total memory as the agent last reported it, e.g. "0: 30.0/80.0"."""
    return ", ".join(f"{r.index}: {r.reserved_bytes / 2**30:.1f}/{r.total_bytes / 2**30:.1f}" for r in rooms) or "-"


def cmd_score(args: argparse.Namespace) -> int:
    from milepost.tables import flatten, read_table, render, write_table

    table = read_table(Path(args.input))
    with client(args) as c:
        result = _score_in_requests(c, args.endpoint, table)
    path = output.to_file(args)
    if path is not None:
        write_table(result, path)
        print(f"scored {result.num_rows} rows -> {path}")
        return 0
    flat = flatten(result)
    rows = flat.to_pylist()
    output.show(args, rows, lambda: print(render(flat.column_names, [list(r.values()) for r in rows])))
    return 0


def _score_in_requests(c: Client, endpoint: str, table: pa.Table) -> pa.Table:
    """``table`` scored in requests of at most SCORE_REQUEST_BYTES, with progress (rows, rate,
    time left) on stderr when it takes more than one."""
    import pyarrow as pa

    from milepost.cli.progress import ProgressBar

    rows = max(1, int(SCORE_REQUEST_BYTES // max(1.0, table.nbytes / max(1, table.num_rows))))
    if table.num_rows <= rows:
        return c.infer(endpoint, table)
    bar = ProgressBar(table.num_rows, sys.stderr, unit="rows")
    parts = []
    for start in range(0, table.num_rows, rows):
        parts.append(c.infer(endpoint, table.slice(start, rows)))
        bar.update(start + parts[-1].num_rows)
    bar.finish(table.num_rows)
    return pa.concat_tables(parts)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="list model versions; `models push` registers one")
    p.add_argument("--name", default="", help="only versions of this model")
    output.add_flag(p)
    p.set_defaults(func=cmd_models)
    models_sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    pp = models_sub.add_parser("list", parents=[common], help="versions with their numbers, digests and aliases")
    pp.add_argument("model", nargs="?", default="", metavar="NAME", help="only versions of this model")
    pp.add_argument("--name", default="", help=argparse.SUPPRESS)
    output.add_flag(pp)
    pp.set_defaults(func=cmd_models)
    pp = models_sub.add_parser("push", parents=[common], help="register a bundle dir, XGBoost .json, LightGBM .txt or .onnx")
    pp.add_argument("path")
    pp.add_argument("--name", required=True)
    output.add_flag(pp)
    pp.set_defaults(func=cmd_models_push)
    pp = models_sub.add_parser("alias", parents=[common], help="point NAME@ALIAS at a version (moves it if set)")
    pp.add_argument("model", metavar="NAME")
    pp.add_argument("alias")
    pp.add_argument("version", help="a number, another @ALIAS, sha256:HEX or a digest prefix")
    output.add_flag(pp)
    pp.set_defaults(func=cmd_models_alias)
    pp = models_sub.add_parser("unalias", parents=[common], help="remove NAME@ALIAS")
    pp.add_argument("model", metavar="NAME")
    pp.add_argument("alias")
    output.add_flag(pp)
    pp.set_defaults(func=cmd_models_unalias)
    pp = models_sub.add_parser("delete", parents=[common], help="delete one version (refused while deployed)")
    pp.add_argument("model", metavar="NAME:VERSION", help="NAME:NUMBER, NAME@ALIAS or NAME@sha256:HEX")
    output.add_flag(pp)
    pp.set_defaults(func=cmd_models_delete)
    review.add_model_commands(models_sub, common)
    review.add_commands(sub, common)

    p = sub.add_parser("deploy", parents=[common], help="serve a model version under an endpoint name")
    p.add_argument("endpoint")
    p.add_argument("--model", required=True, metavar="NAME[:VERSION]",
                   help="NAME (the newest), NAME:NUMBER, NAME@ALIAS, NAME@sha256:HEX or NAME:PREFIX")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=0,
                   help=f"rows per merged engine call (default {DEFAULT_MAX_BATCH_SIZE})")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long a request may wait for others to fill a batch (default 0: no added wait)")
    p.add_argument("--max-queue-rows", type=int, default=0,
                   help=f"rows that may wait before RESOURCE_EXHAUSTED (default {DEFAULT_MAX_QUEUE_ROWS})")
    p.add_argument("--cpu", type=float, default=0.0, help="CPU cores each replica reserves")
    p.add_argument("--memory", default="0", help="memory each replica reserves, e.g. 2GiB")
    p.add_argument("--gpus", type=int, default=0, help="GPUs each replica reserves")
    p.add_argument("--gpu-memory", default="0", help="memory each replica reserves on its GPU, e.g. 4GiB: placed only "
                   "where a GPU has that much unreserved (default: the whole GPU)")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default=None,
                   help="cpu; gpu (at least one GPU); auto: a GPU only when --max-batch-size reaches the "
                   "MILEPOST_GPU_CROSSOVER_ROWS setting (default 4096 rows), else CPU (default: cpu unless --gpus)")
    p.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE",
                   help="only agents with this label (repeatable)")
    p.add_argument("--engine", default="", help="engine to serve with (default: the model flavor's)")
    p.add_argument("--require-approval", action="store_true",
                   help="production: from now on this endpoint takes approved versions only")
    p.add_argument("--no-wait", action="store_true",
                   help="answer once the endpoint is stored and placed (PENDING), not once it serves; "
                   "exit 0 even when no agent can take it yet")
    output.add_flag(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("undeploy", parents=[common], help="remove an endpoint")
    p.add_argument("endpoint")
    output.add_flag(p, help="table (default), or json: {endpoint, undeployed}")
    p.set_defaults(func=cmd_undeploy)

    p = sub.add_parser("endpoints", parents=[common], help="list endpoints, or change one's settings")
    p.add_argument("endpoint", nargs="?", default="", help="the endpoint whose settings to change")
    p.add_argument("--log-decisions", type=float, default=None, metavar="RATE",
                   help="log this share of its requests on the agents, 0 to 1 (0: off); `milepost decisions` reads them")
    p.add_argument("--require-approval", choices=("on", "off"), default=None,
                   help="on: production, approved versions only; off (role approver): lift that")
    output.add_flag(p)
    p.set_defaults(func=cmd_endpoints)

    p = sub.add_parser("score", parents=[common], help="score a .parquet, .csv or .json file on an endpoint")
    p.add_argument("endpoint")
    p.add_argument("--input", required=True)
    output.add_flag(p, help="table (default), or json: the scored rows, an array of objects",
                    files=SCORE_FILES)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("status", parents=[common], help="agents, models and endpoints")
    output.add_flag(p)
    p.set_defaults(func=cmd_status)
