"""`milepost fairness ENDPOINT`: selection rate, impact ratio (the 4/5 rule) and, with outcomes,
true- and false-positive rates per group.

Groups are the values of one or two attributes (two: their intersections) of the requests
scored with a key (``milepost-key``): a request parameter, or a text, integer or boolean input
column; every row of a request counts. Each group is judged over its newest predictions, as
many as the endpoint's fairness window (``--window N``), and the table says when they were
made. ``--group PARAMETER`` (repeat for two), ``--favourable CLASS`` and ``--window N`` set
them first (role deployer)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from milepost.cli import output
from milepost.cli.arguments import client
from milepost.cli.views import when

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
          f"impact ratio alert below {least:g}; window: each group's newest {fairness.window} predictions")
    print(render(
        ["GROUP", "PREDICTIONS", "FROM", "TO", "SELECTION RATE", "IMPACT RATIO", "OUTCOMES", "TPR", "FPR", "STATE"],
        [[g.group, g.predictions, when(g.first_at), when(g.last_at), _rate(g.selection_rate), _rate(g.impact_ratio),
          g.outcomes, _rate(g.true_positive_rate), _rate(g.false_positive_rate), "ALERT" if g.alert else "ok"]
         for g in fairness.groups],
    ))


def cmd_fairness(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.group or args.favourable is not None or args.window is not None:
            config = c.set_health_config(args.endpoint, group_attributes=args.group or None, favourable=args.favourable,
                                         fairness_window=args.window)
        else:
            config = c.health(args.endpoint).config
        fairness = c.fairness(args.endpoint)
    output.show(args, fairness, lambda: print_fairness(fairness, config.thresholds["min_impact_ratio"]))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("fairness", parents=[common], help="selection and impact ratios, TPR/FPR per group")
    p.add_argument("endpoint")
    p.add_argument("--group", action="append", default=[], metavar="PARAMETER",
                   help="request parameter or input column whose values are the groups (twice: intersections); "
                        "role deployer")
    p.add_argument("--favourable", metavar="CLASS", help="the class that is the favourable outcome; role deployer")
    p.add_argument("--window", type=int, metavar="N", help="judge each group's newest N predictions (0: 1000); "
                                                          "role deployer")
    output.add_flag(p)
    p.set_defaults(func=cmd_fairness)
