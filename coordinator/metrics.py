"""The coordinator's own metrics for Prometheus: a prometheus_client Collector read at each scrape.

- ``milepost_coordinator_agents`` (label ``state``: ALIVE, DRAINING, LOST)
- ``milepost_coordinator_deployments`` (label ``state``: PENDING, READY, FAILED)
- ``milepost_coordinator_endpoints`` (label ``policy``)
- ``milepost_coordinator_model_versions`` (label ``stage``: registered, validated, approved, retired)
- ``milepost_coordinator_canary_step_percent`` (label ``endpoint``): the candidate's share now
- ``milepost_coordinator_events`` (labels ``endpoint``, ``kind``: alert, promote, rollback): counters
- ``milepost_coordinator_reconciler_tasks``: calls to agents queued or under way
- ``milepost_coordinator_routes_generation``

ML health (coordinator.health), when the collector is given the HealthBook:

- ``milepost_realised_performance`` (labels ``endpoint``, ``arm``, ``metric``: accuracy, auc,
  log_loss, calibration_error, mae, rmse): the newest full window of outcomes of each arm
- ``milepost_impact_ratio`` and ``milepost_selection_rate`` (labels ``endpoint``, ``attribute``:
  the endpoint's group attribute(s), joined by "&", ``group``: as `milepost fairness` names it),
  over the endpoint's fairness window, for endpoints that declare groups and a favourable class
- ``milepost_health_alerts_active`` (labels ``endpoint``, ``kind``: drift, performance,
  fairness): what is in a breach now (a drift subject is a feature's statistic on one agent)

Realised performance and fairness read every outcome and scored key kept (up to a second on a
full store): they are read again at most every ``HEALTH_EVERY_S``, scrapes in between show the
last reading.

Everything is read from the store and the reconciler when Prometheus asks: nothing is
counted on the paths that change state, so no number can drift from what the store says.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.endpoints import policy_of
from milepost.core.errors import MilepostError

if TYPE_CHECKING:
    from coordinator.health import HealthBook
    from coordinator.reconciler import Reconciler
    from coordinator.routes import RouteBook
    from coordinator.store import EndpointRecord, Store

log = logging.getLogger("milepost.coordinator")
STATES = ("ALIVE", "DRAINING", "LOST")
COUNTED_EVENTS = ("alert", "promote", "rollback")
ALERT_KINDS = ("drift", "performance", "fairness")
HEALTH_EVERY_S = 30.0


class CoordinatorCollector(Collector):
    def __init__(self, store: Store, reconciler: Reconciler, routes: RouteBook, health: HealthBook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.reconciler = reconciler
        self.routes = routes
        self.health = health
        self._clock = clock
        self._judged: tuple[float, list[Metric]] | None = None  # (when read, the performance and fairness families)

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
        if self.health is not None:
            yield alerts_active(self.health, endpoints)
            now = self._clock()
            if self._judged is None or now - self._judged[0] >= HEALTH_EVERY_S:
                self._judged = (now, judged_families(self.health, endpoints))
            yield from self._judged[1]


def alerts_active(book: HealthBook, endpoints: list[EndpointRecord]) -> Metric:
    """Per endpoint and kind, its subjects in a breach now (0 where none: a quiet endpoint shows)."""
    active = GaugeMetricFamily("milepost_health_alerts_active", "Health subjects of an endpoint in a breach now.",
                               labels=["endpoint", "kind"])
    breaches = book.alerts.active()
    for e in endpoints:
        for kind in ALERT_KINDS:
            active.add_metric([e.name, kind], breaches.get((e.name, kind), 0))
    return active


def judged_families(book: HealthBook, endpoints: list[EndpointRecord]) -> list[Metric]:
    """Realised performance and fairness, as the module docstring says."""
    performance = GaugeMetricFamily("milepost_realised_performance",
                                    "Realised performance of an arm over its newest full window of outcomes.",
                                    labels=["endpoint", "arm", "metric"])
    fairness = ["endpoint", "attribute", "group"]
    impact = GaugeMetricFamily("milepost_impact_ratio", "A group's selection rate over the most-selected group's.",
                               labels=fairness)
    selection = GaugeMetricFamily("milepost_selection_rate", "Share of a group's predictions that are favourable.",
                                  labels=fairness)
    for e in endpoints:
        config = book.config(e.name)
        bundle = book.primary_bundle(e)
        if bundle is not None:
            newest = {}
            for w in book.performance(e.name, bundle, config.performance_window):
                if w.outcomes == config.performance_window:
                    newest[w.arm] = w
            for arm, w in sorted(newest.items()):
                for metric, value in sorted(w.metrics.items()):
                    performance.add_metric([e.name, arm, metric], value)
        if config.group_attributes and config.favourable:
            try:
                groups = book.fairness(e).groups
            except MilepostError as err:  # not a classifier, or no such class: GetFairness says so
                log.debug("no fairness gauges for %s: %s", e.name, err.message)
                continue
            attribute = "&".join(config.group_attributes)
            for g in groups:
                impact.add_metric([e.name, attribute, g.group], g.impact_ratio)
                selection.add_metric([e.name, attribute, g.group], g.selection_rate)
    return [performance, impact, selection]


def _by(name: str, documentation: str, label: str, counts: Counter[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
