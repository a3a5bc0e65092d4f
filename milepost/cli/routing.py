"""The routing commands: how an endpoint divides its traffic between model versions
(`split`, `canary`, `shadow`, `ensemble`, `bandit`), how it changes (`promote`, `rollback`),
and what it measured (`report`, `feedback`, `events`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from milepost.cli import output
from milepost.cli.arguments import arm, client, model_ref, seconds
from milepost.cli.health import thresholds
from milepost.cli.views import print_endpoint, when
from milepost.core.routing import spec

if TYPE_CHECKING:
    from milepost.v1 import coordinator_pb2, types_pb2


def _show_endpoint(args: argparse.Namespace, endpoint: types_pb2.Endpoint) -> None:
    output.show(args, endpoint, lambda: print_endpoint(endpoint))


def cmd_split(args: argparse.Namespace) -> int:
    arms = dict(arm(a, "--arm") for a in args.arm)
    with client(args) as c:
        _show_endpoint(args, c.split(args.endpoint, arms, key_parameter=args.key_parameter))
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    name, version = model_ref(args.candidate)
    steps = tuple(float(s) for s in args.steps.split(","))
    with client(args) as c:
        _show_endpoint(args, c.canary(
            args.endpoint, name, version, steps=steps, window_s=seconds(args.window),
            max_error_rate=args.max_error_rate, max_p99_latency_ms=args.max_p99_ms,
            max_divergence=args.max_divergence, min_requests=args.min_requests,
            max_drift=thresholds(args.max_drift, "--max-drift"), max_impact_ratio_drop=args.max_impact_ratio_drop,
        ))
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    name, version = model_ref(args.candidate)
    with client(args) as c:
        _show_endpoint(args, c.shadow(args.endpoint, name, version, fraction=args.fraction))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    members = dict(arm(m, "--member") for m in args.member)
    stacker = model_ref(args.stacker) if args.stacker else None
    with client(args) as c:
        _show_endpoint(args, c.ensemble(
            args.endpoint, members, combiner=args.combiner, stacker=stacker,
            on_member_failure=args.on_member_failure, member_timeout_s=args.member_timeout,
        ))
    return 0


def cmd_bandit(args: argparse.Namespace) -> int:
    arms = {name: (model, version) for name, (model, version, _) in (arm(a, "--arm") for a in args.arm)}
    with client(args) as c:
        _show_endpoint(args, c.bandit(args.endpoint, arms, algorithm=args.algorithm, epsilon=args.epsilon))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    with client(args) as c:
        _show_endpoint(args, c.promote(args.endpoint, args.arm))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with client(args) as c:
        _show_endpoint(args, c.rollback(args.endpoint))
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    with client(args) as c:
        report = c.report(args.endpoint)
    output.show(args, report, lambda: _print_report(report))
    return 0


def _print_report(report: coordinator_pb2.ReportResponse) -> None:
    from milepost.tables import render

    print(f"{report.endpoint.name}: {report.endpoint.policy}")
    print(render(
        ["ARM", "MODEL", "REQUESTS", "ERRORS", "ERR RATE", "P50 MS", "P99 MS", "PRED MEAN", "FEEDBACK", "FB MEAN",
         "SHADOW |DIFF|"],
        [[a.arm, f"{a.model}:{a.version[:8]}".rstrip(":"), a.requests, a.errors, f"{a.error_rate:.4f}",
          f"{a.p50_latency_ms:g}", f"{a.p99_latency_ms:g}", f"{a.prediction_mean:.4f}", f"{a.feedback_count:g}",
          f"{a.feedback_mean:.4f}", f"{a.shadow_mean_abs_diff:.2e}" if a.shadow_compared else "-"]
         for a in report.arms],
    ))
    if report.comparisons:
        print()
        print(render(
            ["ARM", "VS", "METRIC", "DIFFERENCE", "TEST", "STATISTIC", "P-VALUE"],
            [[t.arm, t.baseline, t.metric, f"{t.difference:+.4g}", t.test, f"{t.statistic:.3f}", f"{t.p_value:.4f}"]
             for t in report.comparisons],
        ))


def _outcomes(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"outcomes are numbers, comma-separated: {text!r}") from None


def cmd_feedback(args: argparse.Namespace) -> int:
    with client(args) as c:
        credited = c.feedback(args.endpoint, args.key, args.value, arm=args.arm)
    shown = ",".join(f"{v:g}" for v in args.value)
    output.show(args, {"endpoint": args.endpoint, "key": args.key, "values": args.value, "arm": credited},
                lambda: print(f"{args.endpoint}: {shown} credited to arm {credited}"))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with client(args) as c:
        events = c.events(args.endpoint, args.limit)
    output.show(args, events, lambda: print(render(
        ["WHEN", "ENDPOINT", "KIND", "MESSAGE"], [[when(e.at), e.endpoint, e.kind, e.message] for e in events])))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("split", parents=[common], help="A/B split by weight, sticky per request key")
    p.add_argument("endpoint")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=MODEL[:VERSION[:WEIGHT]]")
    p.add_argument("--key-parameter", default="", help="request parameter that pins a caller (default milepost-key)")
    output.add_flag(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("canary", parents=[common], help="ramp a candidate; promote or roll back by gates")
    p.add_argument("endpoint")
    p.add_argument("--candidate", required=True, metavar="MODEL[:VERSION]")
    p.add_argument("--steps", default=",".join(f"{s:g}" for s in spec.DEFAULT_CANARY_STEPS),
                   help="candidate traffic percent per step")
    p.add_argument("--window", default=f"{spec.DEFAULT_CANARY_WINDOW_S:g}s", help="how long each step is watched, e.g. 60s, 5m")
    p.add_argument("--max-error-rate", type=float, default=spec.DEFAULT_MAX_ERROR_RATE,
                   help="candidate error rate that fails a window (0: any error)")
    p.add_argument("--max-p99-ms", type=float, default=spec.DEFAULT_MAX_P99_LATENCY_MS, help="p99 latency gate (0: off)")
    p.add_argument("--max-divergence", type=float, default=spec.DEFAULT_MAX_DIVERGENCE,
                   help="mean prediction shift in baseline standard deviations (0: off)")
    p.add_argument("--min-requests", type=int, default=spec.DEFAULT_MIN_REQUESTS,
                   help="candidate requests needed to judge a window")
    p.add_argument("--max-drift", action="append", default=[], metavar="STATISTIC=VALUE",
                   help="gate on the candidate's prediction drift against its training baseline, e.g. psi=0.2 "
                        "(psi, overlap, js_distance, ks, missing_rate, out_of_range_rate; repeatable)")
    p.add_argument("--max-impact-ratio-drop", type=float, default=0.0, metavar="DROP",
                   help="gate on the candidate's lowest impact ratio falling more than DROP below the baseline's "
                        "(needs `milepost fairness ENDPOINT --group ... --favourable ...`; 0: off)")
    output.add_flag(p)
    p.set_defaults(func=cmd_canary)

    p = sub.add_parser("shadow", parents=[common], help="mirror traffic to a candidate, compare, discard")
    p.add_argument("endpoint")
    p.add_argument("--candidate", required=True, metavar="MODEL[:VERSION]")
    p.add_argument("--fraction", type=float, default=0.1)
    output.add_flag(p)
    p.set_defaults(func=cmd_shadow)

    p = sub.add_parser("ensemble", parents=[common], help="combine several models' answers")
    p.add_argument("endpoint")
    p.add_argument("--member", action="append", required=True, metavar="NAME=MODEL[:VERSION[:WEIGHT]]")
    p.add_argument("--combiner", choices=spec.COMBINERS, default="mean")
    p.add_argument("--stacker", default="", metavar="MODEL[:VERSION]", help="meta-model for --combiner stacking")
    p.add_argument("--on-member-failure", choices=spec.FAILURE_POLICIES, default="fail")
    p.add_argument("--member-timeout", type=float, default=0.0, help="seconds per member (default 10)")
    output.add_flag(p)
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("bandit", parents=[common], help="multi-armed bandit driven by feedback")
    p.add_argument("endpoint")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=MODEL[:VERSION]")
    p.add_argument("--algorithm", choices=spec.BANDITS, default="thompson")
    p.add_argument("--epsilon", type=float, default=0.1)
    output.add_flag(p)
    p.set_defaults(func=cmd_bandit)

    p = sub.add_parser("promote", parents=[common], help="send all traffic to the candidate (or --arm)")
    p.add_argument("endpoint")
    p.add_argument("--arm", default="")
    output.add_flag(p)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[common], help="send all traffic back to the baseline")
    p.add_argument("endpoint")
    output.add_flag(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("report", parents=[common], help="per-arm traffic, latency, outcomes, significance")
    p.add_argument("endpoint")
    output.add_flag(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("feedback", parents=[common], help="record an outcome for a request key")
    p.add_argument("endpoint")
    p.add_argument("--key", required=True)
    p.add_argument("--value", type=_outcomes, required=True,
                   help="the outcome; of a request of n rows, its n outcomes, comma-separated, in row order")
    p.add_argument("--arm", default="", help="the arm that served it (the milepost-arm response parameter)")
    output.add_flag(p, help="table (default), or json: {endpoint, key, values, arm credited}")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("events", parents=[common], help="the audit trail of endpoint changes")
    p.add_argument("endpoint", nargs="?", default="")
    p.add_argument("--limit", type=int, default=50)
    output.add_flag(p)
    p.set_defaults(func=cmd_events)
