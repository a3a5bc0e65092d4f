"""How the commands show what the coordinator answered: aligned tables and one-line summaries.

milepost.tables (and with it pyarrow) is imported when a table is drawn, so that
``milepost --help`` and the server commands start without it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milepost.v1 import pipelines_pb2, routing_pb2, types_pb2

ENDPOINT_HEADERS = ["ENDPOINT", "POLICY", "ARM", "MODEL", "REPLICAS", "AGENTS", "STATE", "MESSAGE"]
MODEL_HEADERS = ["NAME", "NUMBER", "DIGEST", "ALIASES", "STAGE", "CREATED", "FLAVOR", "SIZE"]


def when(ts: float) -> str:
    """A timestamp in local time, '-' for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def models_table(models: Iterable[types_pb2.ModelVersion]) -> str:
    from milepost.tables import render

    return render(MODEL_HEADERS, [
        [m.name, m.number, m.digest[: len("sha256:") + 12], ",".join(m.aliases) or "-", m.stage or "-",
         when(m.created_at), m.flavor, m.size_bytes]
        for m in models
    ])


def deployed_version(d: types_pb2.Deployment) -> str:
    """``model:number`` of what a deployment serves (``model:hash-prefix`` when it has no number)."""
    return f"{d.model}:{d.number or d.version[:12]}"


def arm_label(routing: routing_pb2.RoutingPolicy, arm: routing_pb2.Arm) -> str:
    """An arm's name, with its weight as the user gave it where weights share something
    out (a split's traffic, a weighted ensemble's say): ``a(0)`` is an arm that gets none."""
    weighted = routing.kind == "split" or (routing.kind == "ensemble" and routing.combiner == "weighted")
    return f"{arm.name}({arm.weight:g})" if weighted else arm.name


def _deployment_arms(endpoint: types_pb2.Endpoint, deployment_id: str) -> str:
    routing = endpoint.routing
    labels = [arm_label(routing, a) for a in routing.arms if a.deployment_id == deployment_id]
    if routing.stacker_deployment_id == deployment_id:
        labels.append("(stacker)")
    return ",".join(labels) or "-"


def endpoints_table(endpoints: Iterable[types_pb2.Endpoint]) -> str:
    from milepost.tables import render

    return render(ENDPOINT_HEADERS, [
        [e.name, e.policy, _deployment_arms(e, d.deployment_id), deployed_version(d), d.replicas,
         ",".join(d.agent_ids) or "-", d.state, d.message]
        for e in endpoints for d in e.deployments
    ])


def print_endpoint(endpoint: types_pb2.Endpoint) -> None:
    """The endpoint's policy over its arms, then a line per deployment."""
    arms = ", ".join(arm_label(endpoint.routing, a) for a in endpoint.routing.arms)
    print(f"{endpoint.name}: {endpoint.policy} over {arms}")
    for d in endpoint.deployments:
        where = ", ".join(d.agent_ids) or "-"
        print(f"  {deployed_version(d)} x{d.replicas} on {where}: {d.state} {d.message}".rstrip())


def print_run(run: pipelines_pb2.PipelineRun) -> None:
    """A pipeline run's state, then a row per stage."""
    from milepost.tables import render

    took = f" in {run.finished_at - run.created_at:.1f}s" if run.finished_at else ""
    print(f"run {run.run_id} ({run.pipeline}): {run.state}{took}")
    print(render(
        ["STAGE", "STATE", "AGENT", "ROWS", "OUTPUTS", "MESSAGE"],
        [[s.name, s.state, s.agent_id or "-", s.rows or "-",
          " ".join(f"{k}={v}" for k, v in sorted(s.outputs.items())) or "-", s.message] for s in run.stages],
    ))
