"""`milepost explain ENDPOINT --input FILE`: why the endpoint decided as it did, row by row.

The rows (a .parquet, .csv or .json file, as `milepost score` reads them) are scored with
request parameter ``explain`` (agent.explanations); the answer's ``contributions`` output
is each feature's share of the margin, bias last, and its ``explanation`` output a one-line
summary. Printed: per row the summary and a table of the largest contributions, or with
``--output json`` one JSON object a row (``explanation_json``, which other commands reuse).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from milepost.cli import output
from milepost.cli.arguments import client
from milepost.core.errors import InvalidArgument

EXPLAIN_PARAMETERS = {"explain": "true"}


def explanation_json(names: list[str], values: list[Any], contributions: np.ndarray, summary: str,
                     *, top: int, groups: list[str] | None = None) -> dict[str, Any]:
    """One row's explanation as JSON: its summary and, per margin, the bias, the margin and
    the ``top`` features by |contribution| (name, value, contribution)."""
    rows = np.asarray(contributions, np.float64).reshape(-1, len(names) + 1)
    margins = []
    for g, row in enumerate(rows):
        order = np.argsort(-np.abs(row[:-1]), kind="stable")[:top]
        margins.append({
            **({"group": groups[g] if groups else g} if rows.shape[0] > 1 else {}),
            "margin": float(row.sum()),
            "bias": float(row[-1]),
            "top": [{"feature": names[i], "value": values[i], "contribution": float(row[i])} for i in order],
            "contributions": dict(zip(names, map(float, row[:-1]))),
        })
    return {"summary": summary, "margins": margins}


def cmd_explain(args: argparse.Namespace) -> int:
    from milepost.tables import read_table, render

    if "/" in args.endpoint and not args.input:  # a decision id (AGENT/TIME-SEQ); no endpoint name has a '/'
        from milepost.cli.decisions import cmd_explain_decision

        return cmd_explain_decision(args)
    if not args.input:
        raise InvalidArgument("explain ENDPOINT needs --input FILE (or give a decision id of `milepost decisions`)")

    table = read_table(Path(args.input))
    names = table.column_names
    with client(args) as c:
        result = c.infer(args.endpoint, table, parameters=EXPLAIN_PARAMETERS)
    if "contributions" not in result.column_names:
        raise InvalidArgument(f"endpoint {args.endpoint!r} answered without contributions: is its agent older than "
                              "explanations?")
    contributions = np.asarray(result.column("contributions").combine_chunks().flatten().to_numpy(), np.float64)
    contributions = contributions.reshape(result.num_rows, -1)
    width = contributions.shape[1]
    if width % (len(names) + 1):
        raise InvalidArgument(f"{width} contributions a row for {len(names)} input columns: give the input one "
                              "column per feature")
    summaries = [s.decode() if isinstance(s, bytes) else s for s in result.column("explanation").to_pylist()]
    rows = table.to_pylist()
    for r in range(result.num_rows):
        values = [rows[r][n] for n in names]
        doc = explanation_json(names, values, contributions[r], summaries[r], top=args.top)
        if args.output == "json":
            print(json.dumps({"row": r, **doc}))
            continue
        print(f"row {r}: {summaries[r]}")
        for margin in doc["margins"]:
            label = f"  margin {margin['group']}" if "group" in margin else ""
            if label:
                print(label)
            lines = [[t["feature"], _show(t["value"]), f"{t['contribution']:+.6g}"] for t in margin["top"]]
            lines.append(["(bias)", "", f"{margin['bias']:+.6g}"])
            print(render(["FEATURE", "VALUE", "CONTRIBUTION"], lines))
        print()
    return 0


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "missing"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("explain", parents=[common],
                       help="explain an endpoint's decisions on a .parquet, .csv or .json file of rows")
    p.add_argument("endpoint", help="an endpoint (with --input), or a decision id of `milepost decisions`")
    p.add_argument("--input", default="", metavar="FILE")
    p.add_argument("--top", type=int, default=5, help="features shown a row (default 5)")
    output.add_flag(p, help="table (default), or json: one object a row")
    p.set_defaults(func=cmd_explain)


__all__ = ["add_commands", "explanation_json"]
