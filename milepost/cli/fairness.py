"""`milepost fairness ENDPOINT`: selection rate, impact ratio (the 4/5 rule) and, with outcomes,
true- and false-positive rates per group.

Groups are the values of one or two attributes (two: their intersections) of the requests
scored with a key (``milepost-key``): a request parameter, or a text, integer or boolean input
column. ``--group PARAMETER`` (repeat for two) and
``--favourable CLASS`` declare them first (role deployer)."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from milepost.cli.arguments import client

if TYPE_CHECKING:
    from milepost.v1 import coordinator_pb2 as pb


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def print_fairness(fairness: pb.GetFairnessResponse, least: float) -> None:
    from milepost.tables import render

    if fairness.message:
        print(f"{fairness.endpoint}: {fairness.message}")
        return
    print(f"{fairness.endpoint}: groups by {' & '.join(fairness.attributes)}, favourable outcome {fairness.favourable!r}, "
          f"impact ratio alert below {least:g}")
    print(render(
        ["GROUP", "PREDICTIONS", "SELECTION RATE", "IMPACT RATIO", "OUTCOMES", "TPR", "FPR", "STATE"],
        [[g.group, g.predictions, _rate(g.selection_rate), _rate(g.impact_ratio), g.outcomes, _rate(g.true_positive_rate),
          _rate(g.false_positive_rate), "ALERT" if g.alert else "ok"] for g in fairness.groups],
    ))


def cmd_fairness(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    with client(args) as c:
        if args.group or args.favourable is not None:
            config = c.set_health_config(args.endpoint, group_attributes=args.group or None, favourable=args.favourable)
        else:
            config = c.health(args.endpoint).config
        fairness = c.fairness(args.endpoint)
    if args.output == "json":
        print(json.dumps(MessageToDict(fairness, preserving_proto_field_name=True), indent=2, sort_keys=True))
    else:
        print_fairness(fairness, config.thresholds["min_impact_ratio"])
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("fairness", parents=[common], help="selection and impact ratios, TPR/FPR per group")
    p.add_argument("endpoint")
    p.add_argument("--group", action="append", default=[], metavar="PARAMETER",
                   help="request parameter or input column whose values are the groups (twice: intersections); "
                        "role deployer")
    p.add_argument("--favourable", metavar="CLASS", help="the class that is the favourable outcome; role deployer")
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_fairness)
