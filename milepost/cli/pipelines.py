"""The pipeline commands: `submit` a spec, list `runs`, show or follow a `run`, `cancel` one."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from milepost.cli import output
from milepost.cli.arguments import client
from milepost.cli.views import print_run, when

if TYPE_CHECKING:
    from milepost.client import Client
    from milepost.v1 import pipelines_pb2


def cmd_submit(args: argparse.Namespace) -> int:
    with client(args) as c:
        run = c.submit_pipeline(Path(args.file))
        if args.follow:
            print(f"submitted run {run.run_id}", file=sys.stderr if args.output == "json" else sys.stdout)
            return follow(c, run.run_id, args)
    output.show(args, run, lambda: print(f"submitted run {run.run_id}"))
    return 0


def follow(c: Client, run_id: str, args: argparse.Namespace) -> int:
    """Stage progress on stderr until the run finishes, then the run (``--output``); 0 when it succeeded."""
    last = None
    for run in c.watch_run(run_id):
        line = " ".join(f"{s.name}:{s.state.lower()}{_rows(s)}" for s in run.stages)
        if line != last:
            print(f"[{run.state.lower()}] {line}", file=sys.stderr, flush=True)
            last = line
    final = c.run(run_id)
    output.show(args, final, lambda: print_run(final))
    return 0 if final.state == "SUCCEEDED" else 1


def _rows(stage: pipelines_pb2.StageRun) -> str:
    """``(N rows, R rows/s)`` of a stage that has counted rows: its rate since it started."""
    if not stage.rows:
        return ""
    spent = (stage.finished_at or time.time()) - stage.started_at if stage.started_at else 0.0
    rate = f", {stage.rows / spent:,.0f} rows/s" if spent > 0 else ""
    return f"({stage.rows:,} rows{rate})"


def cmd_runs(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with client(args) as c:
        runs = c.runs(args.limit)
    output.show(args, runs, lambda: print(render(
        ["RUN", "PIPELINE", "STATE", "CREATED", "STAGES"],
        [[r.run_id, r.pipeline, r.state, when(r.created_at),
          " ".join(f"{s.name}:{s.state.lower()}" for s in r.stages)] for r in runs],
    )))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.follow:
            return follow(c, args.run_id, args)
        run = c.run(args.run_id)
    output.show(args, run, lambda: print_run(run))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with client(args) as c:
        run = c.cancel_run(args.run_id)
    output.show(args, run, lambda: print_run(run))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("submit", parents=[common], help="start a pipeline run from a YAML or JSON spec")
    p.add_argument("file")
    p.add_argument("--follow", action="store_true", help="show progress until the run finishes")
    output.add_flag(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("runs", parents=[common], help="list pipeline runs")
    p.add_argument("--limit", type=int, default=20)
    output.add_flag(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("run", parents=[common], help="show a pipeline run (--follow: until it finishes)")
    p.add_argument("run_id")
    p.add_argument("--follow", action="store_true")
    output.add_flag(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cancel", parents=[common], help="cancel a pipeline run")
    p.add_argument("run_id")
    output.add_flag(p)
    p.set_defaults(func=cmd_cancel)
