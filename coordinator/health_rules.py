"""Alert rules on realised performance and fairness, judged by the coordinator's control loop.

Drift is judged as each window arrives (coordinator.health). Outcomes and scored keys arrive
one by one, so these are judged on a pass of the control loop (``tick``), only for endpoints
that set a rule and only when something new arrived, at most every ``EVERY_S`` seconds
(fairness, which reads every scored key of the endpoint, ``FAIRNESS_SLOWER`` times less often):

- realised performance: each window of ``performance_window`` outcomes of an arm, once it is
  full, against the endpoint's ``min_accuracy``, ``min_auc``, ``max_log_loss``,
  ``max_calibration_error``, ``max_mae`` and ``max_rmse`` (those it sets);
- fairness: each group's impact ratio against ``min_impact_ratio``.

As for drift, an alert is raised when a rule starts to break (an arm's rule, a group) and
resolved when it stops (coordinator.health_alerts keeps what is in a breach), not once per
window. The windows of outcomes judged so far are kept in the store (``SCHEMA``), so a restart
judges none twice.

An endpoint with a ``fallback_arm`` sends all traffic to that arm when another arm alerts
(drift, as coordinator.health queues it, realised performance, or fairness, which such an
endpoint also judges over each other arm's traffic alone): a promote, here on the control
loop, with the alert as its reason in the audit trail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from coordinator.endpoints import Endpoints, policy_of
from coordinator.health import LOWER_IS_WORSE, PERFORMANCE_THRESHOLDS, HealthBook, breached
from coordinator.store import EndpointRecord
from milepost.core.errors import MilepostError
from milepost.v1 import coordinator_pb2 as pb

log = logging.getLogger("milepost.coordinator")
EVERY_S = 5.0
FAIRNESS_SLOWER = 12  # fairness reads every scored key of the endpoint: judged every EVERY_S * 12 at most
FORGET_EVERY_S = 60.0  # how often what belongs to undeployed endpoints is dropped (coordinator.health.forget_gone)
SCHEMA = ("CREATE TABLE IF NOT EXISTS health_judged (endpoint TEXT NOT NULL, subject TEXT NOT NULL, "
          "value INTEGER NOT NULL, PRIMARY KEY (endpoint, subject))",)


class HealthRules:
    def __init__(self, book: HealthBook, clock: Callable[[], float], every_s: float = EVERY_S,
                 endpoints: Endpoints | None = None) -> None:
        self.book = book
        self.endpoints = endpoints
        self.store = book.store
        self.clock = clock
        self.every_s = every_s
        self._last: dict[tuple[str, str], tuple[float, tuple]] = {}  # (rule, endpoint) -> (when judged, what had arrived)
        self._lock = threading.Lock()  # the control loop and a caller (tests) may tick at once
        self._forgot_at = 0.0
        with self.store.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def tick(self) -> list[str]:
        """One pass over the endpoints; the alerts raised (for logs and tests)."""
        with self._lock:
            return self._tick()

    def _tick(self) -> list[str]:
        raised: list[str] = []
        now = self.clock()
        if now - self._forgot_at >= FORGET_EVERY_S:
            self._forgot_at = now
            self.book.forget_gone()
            with self.store.transaction() as db:
                db.execute("DELETE FROM health_judged WHERE endpoint NOT IN (SELECT name FROM endpoints)")
        for endpoint in self.store.list_endpoints():
            config = self.book.config(endpoint.name)
            rules = {k: v for k, v in config.thresholds.items() if k in PERFORMANCE_THRESHOLDS}
            fair = bool(config.group_attributes and config.favourable)
            if not rules and not fair:
                continue
            # A changed config (other groups, thresholds) is judged anew even if no data arrived since.
            arrived = (*self._arrived(endpoint.name), config.SerializeToString(deterministic=True))
            if rules and self._due(("performance", endpoint.name), arrived, now, self.every_s):
                raised += self._performance(endpoint, rules, config)
            if fair and self._due(("fairness", endpoint.name), arrived, now, self.every_s * FAIRNESS_SLOWER):
                try:
                    raised += self._fairness(endpoint, config)
                except MilepostError as err:  # a favourable class the model lacks: GetFairness says so too
                    log.debug("fairness of %s not judged: %s", endpoint.name, err.message)
        self._fall_back()
        return raised

    def _due(self, what: tuple[str, str], arrived: tuple, now: float, every_s: float) -> bool:
        """Whether a rule is judged now: something new arrived (or its config changed) since it last was,
        ``every_s`` ago or more."""
        last = self._last.get(what)
        if last is not None and (last[1] == arrived or now - last[0] < every_s):
            return False
        self._last[what] = (now, arrived)
        return True

    def _fall_back(self) -> None:
        for endpoint, arm, why in self.book.take_fallbacks():
            record = self.store.get_endpoint(endpoint)
            arms = [a.name for a in policy_of(record).arms] if record is not None else []
            if self.endpoints is None or arm not in arms or arms == [arm]:
                continue  # gone, or all its traffic is that arm's already
            try:
                self.endpoints.promote(endpoint, arm, reason=f"fallback: {why}")
            except MilepostError as err:
                log.warning("fallback of %s to arm %s failed: %s", endpoint, arm, err.message)

    def _arrived(self, endpoint: str) -> tuple:
        with self.store.transaction() as db:
            outcomes = db.execute("SELECT MAX(id) FROM health_outcomes WHERE endpoint=?", (endpoint,)).fetchone()
            scored = db.execute("SELECT COUNT(*), MAX(at) FROM health_scored WHERE endpoint=?", (endpoint,)).fetchone()
        return (*outcomes, *scored)

    def _performance(self, endpoint: EndpointRecord, rules: dict[str, float], config: pb.HealthConfig) -> list[str]:
        size, webhook = config.performance_window, config.webhook_url
        bundle = self.book.primary_bundle(endpoint)
        if bundle is None:
            return []
        judged = self._judged(endpoint.name, "performance:")
        deployments = {a.name: a.deployment_id for a in policy_of(endpoint).arms}
        raised = []
        for w in self.book.performance(endpoint.name, bundle, size):
            if w.outcomes < size or w.index < judged.get(w.arm, 0):
                continue
            self._set(endpoint.name, f"performance:{w.arm}", w.index + 1)
            breaks = {rule: breached(rule, w.metrics[rule[4:]], limit) for rule, limit in rules.items() if rule[4:] in w.metrics}
            entered, left = self.book.alerts.transitions(
                endpoint.name, "performance", {f"{w.arm}:{rule}": broken for rule, broken in breaks.items()},
                deployments.get(w.arm, ""))
            for changed, resolved in ((entered, False), (left, True)):
                if not changed:
                    continue
                named = [_against(rule, f"{w.metrics[rule[4:]]:.4g} {rule[4:]}", rules[rule], resolved)
                         for rule in (subject.rsplit(":", 1)[1] for subject in changed)]
                message = (f"realised performance of arm {w.arm}{' is back' if resolved else ''}, window {w.index} "
                           f"({w.outcomes} outcomes): {', '.join(named)}")
                self.book.alerts.raise_alert(endpoint.name, message, {
                    "kind": "performance", "endpoint": endpoint.name, "arm": w.arm, "window": w.index,
                    "outcomes": w.outcomes, "metrics": dict(w.metrics),
                }, webhook, resolved=resolved)
                if not resolved:
                    self.book.fall_back(config, w.arm, message)
                    raised.append(message)
        return raised

    def _fairness(self, endpoint: EndpointRecord, config: pb.HealthConfig) -> list[str]:
        """The endpoint's groups over all its traffic; where it falls back on an alert, also over each
        other arm's alone, so that the arm that breaks the rule can be named (and left)."""
        raised = self._fairness_of(endpoint, config, "")
        arms = [a.name for a in policy_of(endpoint).arms]
        if config.fallback_arm in arms and len(arms) > 1:
            for arm in arms:
                if arm != config.fallback_arm:
                    raised += self._fairness_of(endpoint, config, arm)
        return raised

    def _fairness_of(self, endpoint: EndpointRecord, config: pb.HealthConfig, arm: str) -> list[str]:
        least, webhook = config.thresholds["min_impact_ratio"], config.webhook_url
        # Subjects "ARM:GROUP" ("" for all traffic); groups the endpoint no longer has (other
        # attributes) are no longer in a breach.
        groups = {f"{arm}:{g.group}": g for g in self.book.fairness(endpoint, arm=arm).groups}
        deployment = next((a.deployment_id for a in policy_of(endpoint).arms if arm and a.name == arm), "")
        entered, left = self.book.alerts.transitions(endpoint.name, "fairness", {s: g.alert for s, g in groups.items()},
                                                     deployment, every=f"{arm}:")  # an arm's go with its deployment
        raised = []
        for subject in (*entered, *left):
            g, resolved = groups[subject], subject in left
            message = (f"impact ratio of {g.group}{f' on arm {arm}' if arm else ''} is "
                       f"{_against('min_impact_ratio', f'{g.impact_ratio:.3f}', least, resolved)}"
                       f"{' again' if resolved else ''}: selection rate {g.selection_rate:.3f} over {g.predictions} predictions")
            self.book.alerts.raise_alert(endpoint.name, message, {
                "kind": "fairness", "endpoint": endpoint.name, "arm": arm, "group": g.group, "impact_ratio": g.impact_ratio,
                "selection_rate": g.selection_rate, "predictions": g.predictions,
            }, webhook, resolved=resolved)
            if not resolved:
                if arm:
                    self.book.fall_back(config, arm, message)
                raised.append(message)
        return raised

    def _judged(self, endpoint: str, prefix: str) -> dict[str, int]:
        with self.store.transaction() as db:
            rows = db.execute("SELECT subject, value FROM health_judged WHERE endpoint=? AND subject LIKE ?",
                              (endpoint, prefix + "%")).fetchall()
        return {subject[len(prefix):]: value for subject, value in rows}

    def _set(self, endpoint: str, subject: str, value: int) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO health_judged VALUES (?, ?, ?)", (endpoint, subject, value))


def _against(rule: str, shown: str, limit: float, resolved: bool) -> str:
    """A value as ``shown`` beside the rule's limit, "0.52 accuracy (< 0.6)"; "(>= 0.6)" once ``resolved``."""
    worse = "<" if rule in LOWER_IS_WORSE else ">"
    return f"{shown} ({({'<': '>=', '>': '<='}[worse]) if resolved else worse} {limit:g})"
