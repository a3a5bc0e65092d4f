"""ML health of endpoints: drift per window, realised performance and fairness, kept in SQLite.

What agents ship in heartbeats (agent.registration) lands here:

- closed drift windows (scoring_core.drift.LiveWindow): per deployment, per agent, the live
  counts of each feature and of the prediction in the training baseline's bins. Judged
  against the baseline in the deployment's bundle with scoring_core.drift (PSI, overlap,
  Jensen-Shannon distance, KS, missing-value and out-of-range rates) and the endpoint's
  thresholds (``DEFAULT_THRESHOLDS`` unless set). Each agent's windows are a series: a
  statistic of a feature that passes its threshold in a window after one where it did not is
  an alert (coordinator.health_alerts), and one back under it is an alert resolved; a window
  arriving twice is judged once, one of fewer than ``MIN_JUDGED_ROWS`` rows not at all.
- scored keys: every row's prediction of each request that carried a key (its first
  agent.registration.MAX_ROWS_PER_KEY), and its attributes (request parameters, and each row's
  own input columns). The outcome that `milepost feedback` sends for that key is joined with
  it, row by row: a request of n rows takes n values (FeedbackRequest.values, in row order; one
  row, ``value``); outcomes that do not give one value per row are not judged. From the pairs:
  realised performance per arm, in windows of ``performance_window`` rows with outcomes
  (coordinator.health_stats), and fairness per group of the attributes the endpoint declares,
  over each group's newest ``fairness_window`` rows.

The module owns its tables (``SCHEMA``), created in the store's database. Bounded: the
newest ``KEEP_WINDOWS`` windows per deployment and agent, ``KEEP_KEYS`` scored keys and
outcomes per endpoint, and what belongs to deployments and endpoints that are gone is
dropped (``forget_gone``, from the control loop). A window arriving twice (a heartbeat reply
was lost) is kept once. Each agent's windows are its own: a deployment with replicas on two
agents has two series of windows.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coordinator import health_stats
from coordinator.endpoints import policy_of
from coordinator.health_alerts import Alerts
from coordinator.store import DeploymentRecord, EndpointRecord, Store
from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2
from scoring_core.drift import FeatureBaseline, drift

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS health_windows (
        agent_id TEXT NOT NULL, deployment_id TEXT NOT NULL, seq INTEGER NOT NULL, opened_at REAL NOT NULL,
        endpoint TEXT NOT NULL, closed_at REAL NOT NULL, rows INTEGER NOT NULL, counts_json TEXT NOT NULL,
        PRIMARY KEY (agent_id, deployment_id, seq, opened_at))""",
    "CREATE INDEX IF NOT EXISTS health_windows_by_deployment ON health_windows(deployment_id, closed_at)",
    "CREATE TABLE IF NOT EXISTS health_config (endpoint TEXT PRIMARY KEY, config BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS health_scored (
        endpoint TEXT NOT NULL, key TEXT NOT NULL, arm TEXT NOT NULL, prediction REAL NOT NULL, at REAL NOT NULL,
        attributes_json TEXT NOT NULL, rows_json TEXT NOT NULL DEFAULT '', PRIMARY KEY (endpoint, key))""",
    "CREATE INDEX IF NOT EXISTS health_scored_by_time ON health_scored(endpoint, at)",
    """CREATE TABLE IF NOT EXISTS health_outcomes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, key TEXT NOT NULL, arm TEXT NOT NULL,
        value REAL NOT NULL, at REAL NOT NULL, values_json TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS health_outcomes_by_key ON health_outcomes(endpoint, key)",
)
# Columns added since the tables were first made: (table, column, declaration).
ADDED_COLUMNS = (("health_scored", "rows_json", "TEXT NOT NULL DEFAULT ''"),
                 ("health_outcomes", "values_json", "TEXT NOT NULL DEFAULT ''"))

# Statistic -> threshold. Every statistic alerts above its threshold except overlap (below);
# missing_rate alerts when it exceeds the training share of missing values by more than its threshold.
DEFAULT_THRESHOLDS = {"psi": 0.2, "overlap": 0.8, "js_distance": 0.2, "ks": 0.1, "missing_rate": 0.1,
                      "out_of_range_rate": 0.05, "min_impact_ratio": 0.8}
DRIFT_STATISTICS = ("psi", "overlap", "js_distance", "ks", "missing_rate", "out_of_range_rate")
# Realised performance alerts (coordinator.health_rules), off unless set: min_METRIC alerts below,
# max_METRIC above, on each window of outcomes that fills up.
PERFORMANCE_THRESHOLDS = ("min_accuracy", "min_auc", "max_log_loss", "max_calibration_error", "max_mae", "max_rmse")
LOWER_IS_WORSE = {"overlap", "min_impact_ratio", "min_accuracy", "min_auc"}
DEFAULT_PERFORMANCE_WINDOW = 500
DEFAULT_FAIRNESS_WINDOW = 1_000
KEEP_WINDOWS = 200
# A window of fewer rows (quiet traffic, closed by time) is shown but raises and resolves nothing:
# its statistics are mostly noise.
MIN_JUDGED_ROWS = 100
KEEP_KEYS = 100_000
MAX_WINDOWS_SHOWN = 100


def check_canary_gates(gates: routing_pb2.CanaryGates) -> None:
    """A canary's ``--max-drift`` (known statistics, thresholds finite and >= 0) and
    ``--max-impact-ratio-drop`` (finite, >= 0)."""
    for name, value in gates.max_drift.items():
        if name not in DRIFT_STATISTICS:
            raise InvalidArgument(f"canary gate max_drift: statistic {name!r} is unknown; known: {list(DRIFT_STATISTICS)}")
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"canary gate max_drift {name} must be a finite number >= 0, got {value}")
    if not math.isfinite(gates.max_impact_ratio_drop) or gates.max_impact_ratio_drop < 0:
        raise InvalidArgument("canary gate max_impact_ratio_drop must be a finite number >= 0, "
                              f"got {gates.max_impact_ratio_drop}")


def breached(statistic: str, value: float, threshold: float) -> bool:
    return value < threshold if statistic in LOWER_IS_WORSE else value > threshold


@dataclass(frozen=True)
class Bundle:
    """What health needs of a deployed version's manifest."""

    task: str
    classes: tuple[Any, ...]
    features: tuple[FeatureBaseline, ...] | None  # None: compiled without a baseline
    prediction: FeatureBaseline | None

    @property
    def binary(self) -> bool:
        return self.task == "classification" and len(self.classes) == 2


def bin_labels(baseline: FeatureBaseline) -> list[str]:
    if not baseline.numeric:
        return [*baseline.categories, "other", "missing"]
    edges = baseline.edges
    if not edges:
        return ["all", "missing"]
    labels = [f"<= {edges[0]:.4g}"] + [f"({a:.4g}, {b:.4g}]" for a, b in zip(edges, edges[1:])] + [f"> {edges[-1]:.4g}"]
    return [*labels, "missing"]


def feature_health(baseline: FeatureBaseline, counts: np.ndarray, thresholds: dict[str, float]) -> pb.FeatureHealth:
    """One feature's (or the prediction's) statistics in a window, each against its threshold."""
    d = drift(baseline, counts)
    # A feature often missing in training is not drifting for being as often missing live.
    judged = {**{n: getattr(d, n) for n in DRIFT_STATISTICS}, "missing_rate": d.missing_rate - baseline.shares[-1]}
    statistics = [pb.HealthStatistic(name=n, value=getattr(d, n), threshold=thresholds[n],
                                      alert=d.rows > 0 and breached(n, judged[n], thresholds[n]))
                  for n in DRIFT_STATISTICS]
    live = np.asarray(counts[:-1], dtype=np.float64)
    return pb.FeatureHealth(
        name=baseline.name, statistics=statistics, bins=bin_labels(baseline), baseline=list(baseline.shares),
        live=(live / live.sum()).tolist() if live.sum() else live.tolist(), alert=any(s.alert for s in statistics),
    )


class HealthBook:
    def __init__(self, store: Store, clock: Callable[[], float], alerts: Alerts | None = None) -> None:
        self.store = store
        self.clock = clock
        self.alerts = alerts or Alerts(store, clock)
        self._bundles: dict[tuple[str, str], Bundle] = {}
        self.fallbacks: list[tuple[str, str, str]] = []  # see fall_back
        self._lock = threading.Lock()
        with store.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)
            for table, column, declaration in ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    # ---- configuration ----
    def config(self, endpoint: str) -> pb.HealthConfig:
        with self.store.transaction() as db:
            row = db.execute("SELECT config FROM health_config WHERE endpoint=?", (endpoint,)).fetchone()
        config = pb.HealthConfig.FromString(row[0]) if row else pb.HealthConfig(endpoint=endpoint)
        for name, value in DEFAULT_THRESHOLDS.items():
            config.thresholds.setdefault(name, value)
        config.performance_window = config.performance_window or DEFAULT_PERFORMANCE_WINDOW
        config.fairness_window = config.fairness_window or DEFAULT_FAIRNESS_WINDOW
        return config

    def set_config(self, config: pb.HealthConfig) -> pb.HealthConfig:
        """Validate and keep an endpoint's health settings (fields left empty keep their defaults)."""
        for name, value in config.thresholds.items():
            if name not in DEFAULT_THRESHOLDS and name not in PERFORMANCE_THRESHOLDS:
                raise InvalidArgument(f"health threshold {name!r} is unknown; known: "
                                      f"{sorted(DEFAULT_THRESHOLDS) + list(PERFORMANCE_THRESHOLDS)}")
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"health threshold {name} must be a finite number >= 0, got {value}")
        if len(config.group_attributes) > 2 or len(set(config.group_attributes)) != len(config.group_attributes):
            raise InvalidArgument("group_attributes: one or two distinct request parameters or input columns, "
                                  f"got {list(config.group_attributes)}")
        if config.webhook_url and not config.webhook_url.startswith(("http://", "https://")):
            raise InvalidArgument(f"webhook_url must be an http:// or https:// URL, got {config.webhook_url!r}")
        if config.fallback_arm:
            endpoint = self.store.get_endpoint(config.endpoint)
            arms = [a.name for a in policy_of(endpoint).arms] if endpoint is not None else []
            if config.fallback_arm not in arms:
                raise InvalidArgument(f"fallback_arm {config.fallback_arm!r} is not an arm of endpoint {config.endpoint!r}; "
                                      f"arms: {arms}")
        if config.performance_window < 0:
            raise InvalidArgument(f"performance_window must be >= 0 (0: {DEFAULT_PERFORMANCE_WINDOW}), "
                                  f"got {config.performance_window}")
        if config.fairness_window < 0:
            raise InvalidArgument(f"fairness_window must be >= 0 (0: {DEFAULT_FAIRNESS_WINDOW}), got {config.fairness_window}")
        now = self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO health_config VALUES (?, ?)", (config.endpoint, config.SerializeToString()))
        self.store.add_event(config.endpoint, "health_config", _describe(config), now)
        return self.config(config.endpoint)

    def check_canary_gates(self, endpoint: str, gates: routing_pb2.CanaryGates) -> None:
        """Refuse a canary whose health gates cannot be judged, before it starts."""
        check_canary_gates(gates)
        config = self.config(endpoint)
        if gates.max_impact_ratio_drop and not (config.group_attributes and config.favourable):
            raise FailedPrecondition(f"the impact-ratio gate needs the groups of endpoint {endpoint!r} and its favourable "
                                     f"class: milepost fairness {endpoint} --group ATTRIBUTE --favourable CLASS")

    # ---- what agents ship ----
    def record(self, agent_id: str, windows: Iterable[pb.DriftWindow], scored: Iterable[pb.ScoredKey]) -> None:
        """A heartbeat's windows and scored keys; each window new here is judged (alerts) once."""
        new: list[pb.DriftWindow] = []
        windows, scored = list(windows), [k for k in scored if math.isfinite(k.at) and (
            math.isfinite(k.prediction) or any(math.isfinite(p) for p in k.predictions))]
        if not windows and not scored:
            return  # most heartbeats: no write
        with self.store.transaction() as db:
            for w in windows:
                counts = json.dumps({c.name: list(c.counts) for c in w.counts})
                inserted = db.execute(
                    "INSERT OR IGNORE INTO health_windows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (agent_id, w.deployment_id, w.seq, w.opened_at, w.endpoint, w.closed_at, w.rows, counts),
                ).rowcount
                if inserted:
                    new.append(w)
                    db.execute(
                        "DELETE FROM health_windows WHERE agent_id=? AND deployment_id=? AND closed_at < (SELECT closed_at "
                        "FROM health_windows WHERE agent_id=? AND deployment_id=? ORDER BY closed_at DESC LIMIT 1 OFFSET ?)",
                        (agent_id, w.deployment_id, agent_id, w.deployment_id, KEEP_WINDOWS - 1),
                    )
            for k in scored:
                db.execute("INSERT OR REPLACE INTO health_scored VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (k.endpoint, k.key, k.arm, k.prediction if math.isfinite(k.prediction) else 0.0, k.at,
                            json.dumps(dict(k.attributes), sort_keys=True), _rows_json(k)))  # a NaN first row: in rows_json
            for endpoint in {k.endpoint for k in scored}:
                _prune(db, "health_scored", "at", endpoint)
        for w in new:
            self._judge(agent_id, w)

    def forget_gone(self) -> None:
        """Drop what belongs to deployments and endpoints that no longer exist."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM health_windows WHERE deployment_id NOT IN (SELECT deployment_id FROM deployments)")
            for table in ("health_scored", "health_outcomes", "health_config"):
                db.execute(f"DELETE FROM {table} WHERE endpoint NOT IN (SELECT name FROM endpoints)")
        self.alerts.forget_gone()

    def outcome(self, endpoint: str, key: str, arm: str, value: float, values: Sequence[float] = ()) -> None:
        """The outcome `milepost feedback` sent for a key (joined with its scored key when read):
        ``value``, or ``values``, one per row of a request of more than one row."""
        if not key:
            return
        with self.store.transaction() as db:
            db.execute("INSERT INTO health_outcomes (endpoint, key, arm, value, at, values_json) VALUES (?, ?, ?, ?, ?, ?)",
                       (endpoint, key, arm, values[0] if values else value, self.clock(),
                        json.dumps([float(v) for v in values]) if len(values) > 1 else ""))
            _prune(db, "health_outcomes", "id", endpoint)

    # ---- reading ----
    def bundle(self, d: DeploymentRecord) -> Bundle:
        with self._lock:
            found = self._bundles.get((d.model, d.version))
        if found is not None:
            return found
        record = self.store.get_model(d.model, d.version)
        manifest = json.loads(record.manifest_json) if record is not None else {}
        baseline = manifest.get("metadata", {}).get("drift_baseline")
        found = Bundle(
            manifest.get("task", ""), tuple(manifest.get("classes") or ()),
            tuple(FeatureBaseline.from_json(f) for f in baseline["features"]) if baseline else None,
            FeatureBaseline.from_json(baseline["prediction"]) if baseline else None,
        )
        with self._lock:
            self._bundles[(d.model, d.version)] = found
        return found

    def health(self, endpoint: EndpointRecord, windows: int = 1) -> pb.GetHealthResponse:
        config = self.config(endpoint.name)
        thresholds = dict(config.thresholds)
        arms = {a.deployment_id: a.name for a in policy_of(endpoint).arms}
        response = pb.GetHealthResponse(endpoint=endpoint.name, config=config)
        for d in endpoint.deployments:
            bundle = self.bundle(d)
            out = response.deployments.add(deployment_id=d.deployment_id, arm=arms.get(d.deployment_id, ""), model=d.model,
                                           version=d.version, number=d.number, has_baseline=bundle.features is not None)
            if bundle.features is None or bundle.prediction is None:
                out.message = (f"{d.model}:{d.number or d.version[:12]} carries no training baseline: no drift to show "
                               "(compile it with scoring_core.compile(model, baseline=X_train))")
                continue
            with self.store.transaction() as db:
                rows = db.execute(  # the newest ``windows`` of each agent that serves it, newest first
                    "SELECT agent_id, seq, opened_at, closed_at, rows, counts_json FROM (SELECT *, ROW_NUMBER() OVER "
                    "(PARTITION BY agent_id ORDER BY closed_at DESC) AS age FROM health_windows WHERE deployment_id=?) "
                    "WHERE age <= ? ORDER BY closed_at DESC", (d.deployment_id, min(max(windows, 1), MAX_WINDOWS_SHOWN)),
                ).fetchall()
            if not rows:
                out.message = "no drift window has closed yet (see the drift_window_rows and drift_window_s settings)"
            newest: dict[str, tuple[float, float, int, dict[str, list[int]]]] = {}
            for agent_id, seq, opened_at, closed_at, n, counts_json in rows:
                counts = json.loads(counts_json)
                newest.setdefault(agent_id, (opened_at, closed_at, n, counts))
                out.windows.append(_window(bundle, counts, thresholds, agent_id=agent_id, seq=seq,
                                           opened_at=opened_at, closed_at=closed_at, rows=n))
            if len(newest) > 1:
                out.all_agents.CopyFrom(_all_agents(bundle, list(newest.values()), thresholds))
        primary = self.primary_bundle(endpoint)
        response.task = primary.task if primary else ""
        if primary is not None:
            response.performance.extend(self.performance(endpoint.name, primary, config.performance_window))
        return response

    def performance(self, endpoint: str, bundle: Bundle, size: int) -> list[pb.PerformanceWindow]:
        """Per arm, windows of ``size`` outcomes (rows) in the order they came (the last may be
        shorter). A request's outcomes count when there are as many as it had rows."""
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT o.arm, s.prediction, s.rows_json, o.value, o.values_json, o.at FROM health_outcomes o "
                "JOIN health_scored s ON s.endpoint = o.endpoint AND s.key = o.key WHERE o.endpoint=? ORDER BY o.id",
                (endpoint,),
            ).fetchall()
        by_arm: dict[str, list[tuple[float, float, float]]] = {}
        for arm, prediction, rows_json, value, values_json, at in rows:
            predictions = json.loads(rows_json)["predictions"] if rows_json else [prediction]
            outcomes = _outcomes(value, values_json, len(predictions))
            if outcomes is None:
                continue
            pairs = by_arm.setdefault(arm, [])
            pairs.extend((p, _label(bundle, y), at) for p, y in zip(predictions, outcomes) if math.isfinite(p))
        out = []
        for arm, pairs in sorted(by_arm.items()):
            for index, start in enumerate(range(0, len(pairs), size)):
                chunk = np.asarray(pairs[start:start + size], dtype=np.float64)
                if bundle.task == "classification":
                    metrics = health_stats.classification(chunk[:, 0], chunk[:, 1], binary=bundle.binary)
                else:
                    metrics = health_stats.regression(chunk[:, 0], chunk[:, 1])
                out.append(pb.PerformanceWindow(arm=arm, index=index, outcomes=len(chunk), first_at=chunk[0, 2],
                                                last_at=chunk[-1, 2], metrics=metrics))
        return out

    def fairness(self, endpoint: EndpointRecord, *, arm: str = "", since: float = 0.0) -> pb.GetFairnessResponse:
        """Per group of the endpoint's attributes, over the group's newest ``fairness_window`` rows
        of the scored keys (those of ``arm`` alone, and scored since ``since``, when given: the
        canary's impact-ratio gate); each row's outcome is the newest its key was given."""
        config = self.config(endpoint.name)
        response = pb.GetFairnessResponse(endpoint=endpoint.name, attributes=config.group_attributes,
                                          favourable=config.favourable)
        if not config.group_attributes:
            response.message = (f"endpoint {endpoint.name!r} declares no group attribute: milepost fairness "
                                f"{endpoint.name} --group PARAMETER --favourable CLASS")
            return response
        bundle = self.primary_bundle(endpoint)
        if bundle is None or bundle.task != "classification":
            raise FailedPrecondition(f"fairness needs a classifier; endpoint {endpoint.name!r} serves "
                                     f"{bundle.task if bundle else 'nothing'}")
        favourable = _favourable_index(bundle, config.favourable)
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT s.prediction, s.attributes_json, s.rows_json, s.at, o.value, o.values_json FROM health_scored s "
                "LEFT JOIN health_outcomes o ON o.id = (SELECT MAX(id) FROM health_outcomes WHERE endpoint = s.endpoint "
                "AND key = s.key) WHERE s.endpoint=? AND s.at >= ? AND (? = '' OR s.arm = ?) ORDER BY s.at DESC",
                (endpoint.name, since, arm, arm),
            ).fetchall()
        window = config.fairness_window
        kept: dict[str, list[tuple[bool, float, float]]] = {}  # group -> (selected, positive, at), newest first
        for prediction, attributes_json, rows_json, at, value, values_json in rows:
            predictions, attributes = _rows(prediction, attributes_json, rows_json)
            outcomes = _outcomes(value, values_json, len(predictions)) if value is not None else None
            for i, (p, row) in enumerate(zip(predictions, attributes)):
                if not math.isfinite(p) or any(a not in row for a in config.group_attributes):
                    continue
                inside = kept.setdefault("&".join(f"{a}={row[a]}" for a in config.group_attributes), [])
                if len(inside) < window:
                    positive = math.nan if outcomes is None else float(_label(bundle, outcomes[i]) == favourable)
                    inside.append((_predicted_class(bundle, p) == favourable, positive, at))
        if not kept:
            response.message = (f"no request scored on {endpoint.name!r} carried a key and the attribute(s) "
                                f"{list(config.group_attributes)} (request parameters or input columns)")
            return response
        response.window = window
        groups = [g for g, inside in kept.items() for _ in inside]
        every = [row for inside in kept.values() for row in inside]
        least = config.thresholds["min_impact_ratio"]
        for g in health_stats.fairness(groups, np.asarray([r[0] for r in every]), np.asarray([r[1] for r in every])):
            times = [r[2] for r in kept[g.name]]
            response.groups.add(group=g.name, predictions=g.predictions, selection_rate=g.selection_rate,
                                impact_ratio=g.impact_ratio, outcomes=g.outcomes, true_positive_rate=g.true_positive_rate,
                                false_positive_rate=g.false_positive_rate,
                                alert=breached("min_impact_ratio", g.impact_ratio, least),
                                first_at=min(times), last_at=max(times))
        return response

    def prediction_drift(self, d: DeploymentRecord, since: float, max_drift: Mapping[str, float]) -> pb.FeatureHealth | None:
        """The deployment's prediction over every window it closed since ``since`` (its agents'
        counts summed), judged by ``max_drift`` alone (the canary drift gate); None while no window
        has closed. FailedPrecondition when its bundle has no baseline to judge against."""
        bundle = self.bundle(d)
        if bundle.prediction is None:
            raise FailedPrecondition(f"{d.model}:{d.number or d.version[:12]} carries no training baseline: "
                                     "a drift gate cannot judge it")
        with self.store.transaction() as db:
            rows = db.execute("SELECT counts_json FROM health_windows WHERE deployment_id=? AND closed_at >= ?",
                              (d.deployment_id, since)).fetchall()
        counts = [np.asarray(json.loads(text)["prediction"]) for (text,) in rows if "prediction" in json.loads(text)]
        if not counts:
            return None
        judged = feature_health(bundle.prediction, np.sum(counts, axis=0), {**DEFAULT_THRESHOLDS, **max_drift})
        for statistic in judged.statistics:
            statistic.alert = statistic.alert and statistic.name in max_drift
        judged.alert = any(s.alert for s in judged.statistics)
        return judged

    def primary_bundle(self, endpoint: EndpointRecord) -> Bundle | None:
        """The bundle of the first arm's deployment: what says the task and classes of the endpoint."""
        policy = policy_of(endpoint)
        by_id = {d.deployment_id: d for d in endpoint.deployments}
        first = next((by_id[a.deployment_id] for a in policy.arms if a.deployment_id in by_id), None)
        return self.bundle(first) if first is not None else None

    def _judge(self, agent_id: str, w: pb.DriftWindow) -> None:
        endpoint = self.store.get_endpoint(w.endpoint)
        if endpoint is None:
            return
        deployment = next((d for d in endpoint.deployments if d.deployment_id == w.deployment_id), None)
        if deployment is None:
            return
        bundle = self.bundle(deployment)
        if bundle.features is None or w.rows < MIN_JUDGED_ROWS:
            return
        config = self.config(w.endpoint)
        window = _window(bundle, {c.name: list(c.counts) for c in w.counts}, dict(config.thresholds))
        judged = [f for f in (*window.features, window.prediction) if f.name]
        # One series of windows per agent: a breach is entered and left within it, statistic by statistic.
        def subject(feature: str, statistic: str) -> str:
            return f"{deployment.deployment_id}@{agent_id}:{feature}:{statistic}"

        entered, left = self.alerts.transitions(
            w.endpoint, "drift", {subject(f.name, s.name): s.alert for f in judged for s in f.statistics},
            deployment.deployment_id)
        arm = next((a.name for a in policy_of(endpoint).arms if a.deployment_id == deployment.deployment_id), "")
        for changed, resolved in ((entered, False), (left, True)):
            if changed:
                features = _only(judged, set(changed), subject)
                message = self.alerts.drift(w.endpoint, deployment, agent_id, w.seq, w.rows, features, config.webhook_url,
                                            resolved=resolved)
                if not resolved:
                    self.fall_back(config, arm, message)

    def fall_back(self, config: pb.HealthConfig, arm: str, message: str) -> None:
        """An alert of ``arm``: queue the endpoint's fallback, if it has one and that is another arm
        (coordinator.health_rules carries it out on the control loop, never on a heartbeat)."""
        if config.fallback_arm and arm and arm != config.fallback_arm:
            with self._lock:
                self.fallbacks.append((config.endpoint, config.fallback_arm, f"alert on arm {arm}: {message}"))

    def take_fallbacks(self) -> list[tuple[str, str, str]]:
        """(endpoint, arm to take all traffic, why) queued since the last call."""
        with self._lock:
            taken, self.fallbacks = self.fallbacks, []
        return taken


def _only(features: list[pb.FeatureHealth], subjects: set[str], subject: Callable[[str, str], str]) -> list[pb.FeatureHealth]:
    """The features with only those of their statistics whose subject is in ``subjects``."""
    out = []
    for f in features:
        kept = [s for s in f.statistics if subject(f.name, s.name) in subjects]
        if kept:
            out.append(pb.FeatureHealth(name=f.name, statistics=kept, alert=f.alert))
    return out


def _window(bundle: Bundle, counts: dict[str, list[int]], thresholds: dict[str, float], **fields: Any) -> pb.HealthWindow:
    assert bundle.features is not None and bundle.prediction is not None
    window = pb.HealthWindow(**fields)
    for baseline in bundle.features:
        if _fits(baseline, counts):
            window.features.append(feature_health(baseline, np.asarray(counts[baseline.name]), thresholds))
    if _fits(bundle.prediction, counts):
        window.prediction.CopyFrom(feature_health(bundle.prediction, np.asarray(counts["prediction"]), thresholds))
    return window


def _all_agents(bundle: Bundle, newest: list[tuple[float, float, int, dict[str, list[int]]]],
                thresholds: dict[str, float]) -> pb.HealthWindow:
    """The newest window of each agent as one: counts summed where every agent counted a name alike."""
    names = set.intersection(*(set(counts) for _, _, _, counts in newest))
    summed = {}
    for name in names:
        shapes = {len(counts[name]) for _, _, _, counts in newest}
        if len(shapes) == 1:
            summed[name] = np.sum([counts[name] for _, _, _, counts in newest], axis=0).tolist()
    return _window(bundle, summed, thresholds, agent_id="all", opened_at=min(w[0] for w in newest),
                   closed_at=max(w[1] for w in newest), rows=sum(w[2] for w in newest))


def _fits(baseline: FeatureBaseline, counts: dict[str, list[int]]) -> bool:
    """Whether the window counted this feature in its baseline's bins (each bin, missing, out of
    range); an agent's counts never differ from the bundle it loaded, but a window is not trusted."""
    return len(counts.get(baseline.name, ())) == len(baseline.shares) + 1


def _rows_json(k: pb.ScoredKey) -> str:
    """A scored key's rows, every one, as kept beside it (empty for a request of one row)."""
    if len(k.predictions) < 2:
        return ""
    columns = {name: list(c.values) for name, c in k.columns.items() if len(c.values) == len(k.predictions)}
    return json.dumps({"predictions": list(k.predictions), "columns": columns}, sort_keys=True)


def _rows(prediction: float, attributes_json: str, rows_json: str) -> tuple[list[float], list[dict[str, str]]]:
    """A scored key's rows: each one's prediction and attributes (its own column values over the
    first row's; "" is a null)."""
    attributes = json.loads(attributes_json)
    if not rows_json:
        return [prediction], [attributes]
    rows = json.loads(rows_json)
    per_row = [dict(attributes) for _ in rows["predictions"]]
    for name, values in rows["columns"].items():
        for row, value in zip(per_row, values):
            if value:
                row[name] = value
            else:
                row.pop(name, None)
    return rows["predictions"], per_row


def _outcomes(value: float, values_json: str, rows: int) -> list[float] | None:
    """An outcome's value per row of its request; None when it does not give one for each row."""
    values = json.loads(values_json) if values_json else [value]
    return values if len(values) == rows else None


def _label(bundle: Bundle, value: float) -> float:
    """A classifier's outcome as its class index (outcomes may be sent as the class labels)."""
    if bundle.task == "classification" and bundle.classes:
        for i, c in enumerate(bundle.classes):
            if isinstance(c, int | float) and float(c) == value:
                return float(i)
    return value


def _predicted_class(bundle: Bundle, prediction: float) -> int:
    return int(prediction >= 0.5) if bundle.binary else int(round(prediction))


def _favourable_index(bundle: Bundle, favourable: str) -> int:
    names = [str(c) for c in bundle.classes]
    if favourable in names:
        return names.index(favourable)
    raise FailedPrecondition(f"favourable outcome {favourable!r} is not a class of the model; classes: {names} "
                             "(set it with milepost fairness ENDPOINT --favourable CLASS)")


def _prune(db: sqlite3.Connection, table: str, order: str, endpoint: str) -> None:
    db.execute(f"DELETE FROM {table} WHERE endpoint=? AND {order} < (SELECT {order} FROM {table} WHERE endpoint=? "
               f"ORDER BY {order} DESC LIMIT 1 OFFSET ?)", (endpoint, endpoint, KEEP_KEYS - 1))


def _describe(config: pb.HealthConfig) -> str:
    parts = [f"{k}={v:g}" for k, v in sorted(config.thresholds.items())]
    if config.group_attributes:
        parts.append(f"groups={'&'.join(config.group_attributes)} favourable={config.favourable}")
    if config.webhook_url:
        parts.append("webhook set")
    if config.fallback_arm:
        parts.append(f"fallback to arm {config.fallback_arm} on an alert")
    return "health settings: " + (", ".join(parts) or "defaults")
