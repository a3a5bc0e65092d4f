"""The decision log commands: `decisions ENDPOINT` (read what agents logged, as JSON or Parquet),
`replay DECISION_ID` (re-score one on CPU and show the answer is the same, bit for bit), and
`explain DECISION_ID` (``cmd_explain_decision``, reached through milepost.cli.explain).
Turning logging on is `milepost endpoints ENDPOINT --log-decisions RATE` (milepost.cli.models)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from milepost.cli import output
from milepost.cli.arguments import client, seconds
from milepost.core.errors import InvalidArgument

if TYPE_CHECKING:
    from milepost.decisions import Replay


def moment(text: str) -> float:
    """Seconds since the epoch of --since/--until: ISO 8601 (UTC unless it says), or a duration ago (15m, 2h, 7d)."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return time.time() - seconds(text)
        except InvalidArgument:
            raise InvalidArgument(f"{text!r} is neither a time (2026-12-01T09:00:00Z) nor a duration ago (15m, 2h, 7d)") from None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def cmd_decisions(args: argparse.Namespace) -> int:
    from milepost import decisions

    if args.output == "parquet" and not args.out:
        raise InvalidArgument("--output parquet needs --out FILE")
    since = moment(args.since) if args.since else 0.0
    until = moment(args.until) if args.until else 0.0
    with client(args) as c:
        table = decisions.list_decisions(c, args.endpoint, since, until, args.limit)
    if args.output == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, args.out)
        print(f"{args.out}: {table.num_rows} rows", file=sys.stderr)
        return 0
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        for row in decisions.rows_as_json(table):
            out.write(json.dumps(row) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from milepost import decisions

    with client(args) as c:
        result = decisions.replay(c, args.decision_id)
    output.show(args, dataclasses.asdict(result), lambda: _print_replay(result))
    return 0 if result.identical else 1


def _print_replay(result: Replay) -> None:
    what = f"{result.decision_id}: {result.model} {result.digest[:19]}, {result.rows} row(s) re-scored on CPU"
    if result.identical:
        print(f"{what}: identical, bit for bit")
        return
    print(f"{what}: DIFFERENT")
    for line in result.differences:
        print(f"  {line}")


def cmd_explain_decision(args: argparse.Namespace) -> int:
    """`milepost explain DECISION_ID`: a logged decision explained by the version that made it."""
    from milepost import decisions
    from milepost.tables import render

    with client(args) as c:
        explanations = decisions.explain(c, args.endpoint, top=args.top)
    for row, e in enumerate(explanations):
        if args.output == "json":
            print(json.dumps({"decision_id": args.endpoint, "row": row, **e.to_json()}))
            continue
        print(f"{args.endpoint} row {row}: {e.text}")
        lines: list[list[object]] = [[name, value, f"{contribution:+.6g}"] for name, value, contribution in e.top]
        print(render(["FEATURE", "VALUE", "CONTRIBUTION"], [*lines, ["(bias)", "", f"{e.bias:+.6g}"]]))
    return 0


def set_decision_log(args: argparse.Namespace) -> None:
    """`milepost endpoints ENDPOINT --log-decisions RATE`."""
    with client(args) as c:
        answer = c.set_decision_log(args.endpoint, args.log_decisions)
    rate = args.log_decisions
    output.show(args, answer, lambda: print(
        f"{args.endpoint}: decision log {'off' if rate == 0 else f'samples {rate:g} of requests'}"))


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("decisions", parents=[common], help="decisions agents logged for an endpoint (role viewer)")
    p.add_argument("endpoint")
    p.add_argument("--since", default="", help="from this time (ISO 8601, UTC by default) or duration ago (15m, 2h)")
    p.add_argument("--until", default="", help="before this time (same forms); default: now")
    p.add_argument("--limit", type=int, default=1000, help="most decisions, oldest first (default: %(default)s)")
    p.add_argument("--output", choices=["json", "parquet"], default="json", help="json: one object a line")
    p.add_argument("--out", default="", metavar="FILE", help="write here (needed for parquet; default: stdout)")
    p.set_defaults(func=cmd_decisions)

    p = sub.add_parser("replay", parents=[common],
                       help="re-score a logged decision with its model version on CPU; exit 1 if it differs")
    p.add_argument("decision_id")
    output.add_flag(p, help="table (default), or json: {decision_id, model, digest, rows, identical, differences}")
    p.set_defaults(func=cmd_replay)
