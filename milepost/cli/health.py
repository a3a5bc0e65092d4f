"""`milepost health ENDPOINT`: drift per feature and realised performance per arm.

A table per deployment for its newest window (each statistic against the endpoint's threshold;
``*`` marks one past it), then realised performance per arm and window of outcomes. ``--output
json`` prints the coordinator's whole answer; ``--plot FILE.png`` draws the baseline against the
live histogram of each drifting feature (the prediction when none drifts; needs matplotlib).
``--threshold psi=0.3``, ``--webhook URL``, ``--performance-window N`` and ``--fallback-arm ARM``
change the endpoint's settings first (role deployer)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from milepost.cli import output
from milepost.cli.arguments import client, pairs
from milepost.cli.views import when
from milepost.core.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from milepost.v1 import coordinator_pb2 as pb

COLUMNS = (("psi", "PSI"), ("overlap", "OVERLAP"), ("js_distance", "JS"), ("ks", "KS"), ("missing_rate", "MISSING"),
           ("out_of_range_rate", "OUT OF RANGE"))


def thresholds(items: list[str], flag: str = "--threshold") -> dict[str, float]:
    """Repeated STATISTIC=VALUE flags (--threshold, canary --max-drift) -> a dict of numbers."""
    found = {}
    for name, text in pairs(items, flag).items():
        try:
            found[name] = float(text)
        except ValueError as err:
            raise InvalidArgument(f"{flag} {name}={text}: the threshold must be a number") from err
    return found


def drift_table(window: pb.HealthWindow) -> str:
    from milepost.tables import render

    rows = []
    for f in [*window.features, window.prediction]:
        by_name = {s.name: s for s in f.statistics}
        rows.append([f.name, *(f"{by_name[n].value:.4f}{'*' if by_name[n].alert else ''}" for n, _ in COLUMNS),
                     "DRIFT" if f.alert else "ok"])
    return render(["FEATURE", *(title for _, title in COLUMNS), "STATE"], rows)


def performance_table(performance: list[pb.PerformanceWindow]) -> str:
    from milepost.tables import render

    names = sorted({m for w in performance for m in w.metrics})
    return render(["ARM", "WINDOW", "OUTCOMES", "LAST", *(n.upper() for n in names)],
                  [[w.arm, w.index, w.outcomes, when(w.last_at),
                    *(f"{w.metrics[n]:.4f}" if n in w.metrics and math.isfinite(w.metrics[n]) else "-" for n in names)]
                   for w in performance])


def newest_per_agent(d: pb.DeploymentHealth) -> list[pb.HealthWindow]:
    """The newest window of each agent that serves the deployment (its windows come newest first)."""
    seen: dict[str, pb.HealthWindow] = {}
    for w in d.windows:
        seen.setdefault(w.agent_id, w)
    return list(seen.values())


def print_health(health: pb.GetHealthResponse) -> None:
    t = health.config.thresholds
    print(f"{health.endpoint}: thresholds " + ", ".join(f"{n} {'<' if n == 'overlap' else '>'} {t[n]:g}" for n, _ in COLUMNS))
    for d in health.deployments:
        label = f"{d.model}:{d.number or d.version[:12]}"
        if not d.windows:
            print(f"\n{d.arm or '-'} ({label}, deployment {d.deployment_id}): {d.message}")
            continue
        if d.HasField("all_agents"):
            w = d.all_agents
            print(f"\n{d.arm or '-'} ({label}, deployment {d.deployment_id}): all agents' newest windows together, "
                  f"{w.rows} rows, {when(w.opened_at)} to {when(w.closed_at)}")
            print(drift_table(w))
        for w in newest_per_agent(d):
            print(f"\n{d.arm or '-'} ({label}, deployment {d.deployment_id}): window {w.seq} on {w.agent_id}, "
                  f"{w.rows} rows, {when(w.opened_at)} to {when(w.closed_at)}")
            print(drift_table(w))
    if health.performance:
        print(f"\nrealised performance ({health.task}, windows of {health.config.performance_window} outcomes):")
        print(performance_table(list(health.performance)))
    else:
        print("\nrealised performance: no outcomes yet (send them with `milepost feedback ENDPOINT --key K --value Y` "
              "for requests scored with that key)")


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files; FailedPrecondition, in one line, where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise FailedPrecondition("--plot needs matplotlib: pip install 'milepost[plot]'") from err
    return plt


def plot(health: pb.GetHealthResponse, path: str) -> list[str]:
    """Baseline against live shares of the drifting features of each deployment's newest window."""
    plt = pyplot()
    panels: list[tuple[str, pb.FeatureHealth]] = []
    for d in health.deployments:
        for w in newest_per_agent(d):
            drifting = [f for f in w.features if f.alert] or [w.prediction]
            panels.extend((f"{d.arm or d.deployment_id} on {w.agent_id}", f) for f in drifting)
    if not panels:
        raise FailedPrecondition(f"nothing to plot: no window of {health.endpoint!r} has closed with a baseline to compare")
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 3 * len(panels)), squeeze=False)
    for ax, (arm, f) in zip(axes[:, 0], panels):
        x = range(len(f.bins))
        ax.bar([i - 0.2 for i in x], f.baseline, width=0.4, label="training baseline")
        ax.bar([i + 0.2 for i in x], f.live, width=0.4, label="live window")
        psi = next(s.value for s in f.statistics if s.name == "psi")
        ax.set_title(f"{arm}: {f.name} (PSI {psi:.3f})")
        ax.set_xticks(list(x), list(f.bins), rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
        ax.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return [f"{arm}:{f.name}" for arm, f in panels]


def cmd_health(args: argparse.Namespace) -> int:
    if args.plot:
        pyplot()  # before asking the coordinator anything
    with client(args) as c:
        if args.threshold or args.webhook is not None or args.performance_window is not None or args.fallback_arm is not None:
            c.set_health_config(args.endpoint, thresholds=thresholds(args.threshold), webhook_url=args.webhook,
                                performance_window=args.performance_window, fallback_arm=args.fallback_arm)
        health = c.health(args.endpoint, args.windows)
    output.show(args, health, lambda: print_health(health))
    if args.plot:
        drawn = plot(health, args.plot)
        if args.output != "json":
            print(f"\nplotted {', '.join(drawn)} to {args.plot}")
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("health", parents=[common], help="drift against the training baseline, realised performance")
    p.add_argument("endpoint")
    p.add_argument("--windows", type=int, default=1, help="windows per deployment, newest first (json shows them all)")
    output.add_flag(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw baseline against live histograms of drifting features")
    p.add_argument("--threshold", action="append", default=[], metavar="STATISTIC=VALUE",
                   help="set a threshold first: psi, overlap, js_distance, ks, missing_rate, out_of_range_rate, "
                        "min_impact_ratio (role deployer)")
    p.add_argument("--webhook", metavar="URL", help="POST alerts to this URL as JSON ('' : none)")
    p.add_argument("--performance-window", type=int, metavar="N", help="outcomes per realised-performance window")
    p.add_argument("--fallback-arm", metavar="ARM", help="on an alert of another arm, send all traffic to this one ('': none)")
    p.set_defaults(func=cmd_health)
