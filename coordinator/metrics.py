"""The coordinator's own metrics for Prometheus: a prometheus_client Collector read at each scrape.

- ``milepost_coordinator_agents`` (label ``state``: ALIVE, DRAINING, LOST)
- ``milepost_coordinator_deployments`` (label ``state``: PENDING, READY, FAILED)
- ``milepost_coordinator_endpoints`` (label ``policy``)
- ``milepost_coordinator_model_versions`` (label ``stage``: registered, validated, approved, retired)
- ``milepost_coordinator_canary_step_percent`` (label ``endpoint``): the candidate's share now
- ``milepost_coordinator_events`` (labels ``endpoint``, ``kind``: alert, promote, rollback): counters
- ``milepost_coordinator_reconciler_tasks``: calls to agents queued or under way
- ``milepost_coordinator_routes_generation``

Everything is read from the store and the reconciler when Prometheus asks: nothing is
counted on the paths that change state, so no number can drift from what the store says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.endpoints import policy_of

if TYPE_CHECKING:
    from coordinator.reconciler import Reconciler
    from coordinator.routes import RouteBook
    from coordinator.store import Store

STATES = ("ALIVE", "DRAINING", "LOST")
COUNTED_EVENTS = ("alert", "promote", "rollback")


class CoordinatorCollector(Collector):
    def __init__(self, store: Store, reconciler: Reconciler, routes: RouteBook) -> None:
        self.store = store
        self.reconciler = reconciler
        self.routes = routes

    def collect(self) -> Iterator[Metric]:
        live = self.reconciler.live_agents()
        states: Counter[str] = Counter({state: 0 for state in STATES})
        for agent in self.store.list_agents():
            lost = agent.agent_id not in live
            states["LOST" if lost else "DRAINING" if self.reconciler.reports.draining(agent.agent_id) else "ALIVE"] += 1
        yield _by("milepost_coordinator_agents", "Agents the coordinator knows, by state.", "state", states)

        endpoints = self.store.list_endpoints()
        deployments = Counter({"PENDING": 0, "READY": 0, "FAILED": 0})
        deployments.update(d.state for e in endpoints for d in e.deployments)
        yield _by("milepost_coordinator_deployments", "Deployments, by state.", "state", deployments)
        yield _by("milepost_coordinator_endpoints", "Endpoints, by routing policy.", "policy",
                  Counter(e.policy for e in endpoints))
        yield _by("milepost_coordinator_model_versions", "Registered model versions, by review stage.", "stage",
                  Counter(m.stage for m in self.store.list_models()))

        step = GaugeMetricFamily("milepost_coordinator_canary_step_percent",
                                 "Share of traffic a canary's candidate gets now, percent.", labels=["endpoint"])
        for e in endpoints:
            if e.policy == "canary" and e.policy_blob:
                policy = policy_of(e)
                if 0 <= policy.step < len(policy.steps):
                    step.add_metric([e.name], policy.steps[policy.step])
        yield step

        events = CounterMetricFamily("milepost_coordinator_events", "Endpoint events of a kind, since the store began.",
                                     labels=["endpoint", "kind"])
        for kind in COUNTED_EVENTS:
            for endpoint, count in sorted(self.store.event_counts(kind).items()):
                events.add_metric([endpoint, kind], count)
        yield events
        yield GaugeMetricFamily("milepost_coordinator_reconciler_tasks", "Calls to agents queued or under way.",
                                value=self.reconciler.tasks_busy())
        yield GaugeMetricFamily("milepost_coordinator_routes_generation", "Generation of the route table pushed to agents.",
                                value=self.routes.generation)


def _by(name: str, documentation: str, label: str, counts: Counter[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
