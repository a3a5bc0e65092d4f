"""SQLite state of the coordinator.

One connection in WAL mode, guarded by a lock: the coordinator's writes are few
and small, and a single writer keeps every change a plain transaction. What a
call has acknowledged is committed before it returns, so it survives a restart.
A data directory that cannot be written (read-only, full) is reported as such,
naming the directory (coordinator.storage_errors), at start and on every write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from coordinator import audit, governance
from coordinator.storage_errors import storage_error
from milepost.core.batching import BatchingSettings
from milepost.core.model_refs import VersionRef
from milepost.core.requirements import Requirements

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    flavor TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    manifest_json TEXT NOT NULL,
    number INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'registered',
    pushed_by TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    set_at REAL NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES models(name, version) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    info BLOB NOT NULL,
    registered_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    created_at REAL NOT NULL,
    policy_blob BLOB NOT NULL DEFAULT x'',
    require_approval INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards (
    endpoint TEXT NOT NULL,
    arm TEXT NOT NULL,
    count REAL NOT NULL,
    sum REAL NOT NULL,
    sum_squares REAL NOT NULL,
    PRIMARY KEY (endpoint, arm)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL DEFAULT 0,
    spec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS stage_runs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL DEFAULT 0,
    finished_at REAL NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    outputs_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    deployment_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    max_batch_size INTEGER NOT NULL DEFAULT 0,
    max_delay_us INTEGER NOT NULL DEFAULT 0,
    max_queue_rows INTEGER NOT NULL DEFAULT 0,
    engine TEXT NOT NULL DEFAULT '',
    cpu REAL NOT NULL DEFAULT 0,
    memory_bytes INTEGER NOT NULL DEFAULT 0,
    gpus INTEGER NOT NULL DEFAULT 0,
    selector_json TEXT NOT NULL DEFAULT '{}',
    gpu_memory_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS replicas (
    deployment_id TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (deployment_id, agent_id)
);
CREATE TABLE IF NOT EXISTS decision_logging (
    endpoint TEXT PRIMARY KEY REFERENCES endpoints(name) ON DELETE CASCADE,
    sample_rate REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS canary_windows (
    endpoint TEXT PRIMARY KEY REFERENCES endpoints(name) ON DELETE CASCADE,
    window_json TEXT NOT NULL
);
"""


MODEL_COLUMNS = "name, version, flavor, size_bytes, created_at, manifest_json, number, stage, pushed_by"
NUMBER_COUNTER = "model_number:"  # + a model's name (meta): the highest number it ever had, deleted ones too


@dataclass(frozen=True)
class ModelRecord:
    """A registered version: ``version`` is the hex content hash (its digest); ``number``
    counts from 1 per name, in the order versions were pushed, and is never reused."""

    name: str
    version: str
    flavor: str
    size_bytes: int
    created_at: float
    manifest_json: str
    number: int = 0
    aliases: tuple[str, ...] = ()
    stage: str = "registered"  # coordinator.governance moves it: registered, validated, approved, retired
    pushed_by: str = ""  # the identity name that pushed it ("" for versions pushed before this was kept)

    @property
    def label(self) -> str:
        """``name:number (sha256:prefix)``: how messages name a version."""
        return f"{self.name}:{self.number} (sha256:{self.version[:12]})"


@dataclass(frozen=True)
class ModelDeletion:
    """What deleting a version did: nothing when ``in_use`` names the endpoints that deploy
    it; else the aliases removed with it, and whether its artifact is still another name's."""

    in_use: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    artifact_shared: bool = False


@dataclass(frozen=True)
class AgentRecord:
    agent_id: str
    address: str
    info: bytes  # serialized milepost.v1.AgentInfo, kept opaque here
    registered_at: float
    last_heartbeat: float


@dataclass(frozen=True)
class DeploymentRecord:
    deployment_id: str
    endpoint: str
    model: str
    version: str
    replicas: int
    state: str
    message: str
    created_at: float
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    # The engine is resolved from the flavor at deploy time.
    requirements: Requirements = field(default_factory=Requirements)
    agent_ids: tuple[str, ...] = ()
    number: int = 0  # the registry's number of the version it serves (read from models, never stored here)


@dataclass(frozen=True)
class EndpointRecord:
    name: str
    policy: str  # the policy's kind
    created_at: float
    policy_blob: bytes  # serialized milepost.v1.RoutingPolicy, kept opaque here
    deployments: tuple[DeploymentRecord, ...] = field(default_factory=tuple)
    require_approval: bool = False  # production: approved versions only (coordinator.governance)


@dataclass(frozen=True)
class StageRecord:
    name: str
    state: str
    agent_id: str
    message: str
    started_at: float
    finished_at: float
    rows: int
    outputs_json: str


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    pipeline: str
    state: str
    created_at: float
    finished_at: float
    spec: bytes  # serialized milepost.v1.PipelineSpec
    stages: tuple[StageRecord, ...] = ()


@dataclass(frozen=True)
class EventRecord:
    id: int
    endpoint: str
    at: float
    kind: str
    message: str


def like_prefix(prefix: str) -> str:
    """The LIKE pattern (with ``ESCAPE '\\'``) matching text that starts with ``prefix``
    taken literally: its ``%`` and ``_`` are not wildcards."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Store:
    """Transactions over the coordinator's tables; every method commits before it returns."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the database; FailedPrecondition or ResourceExhausted, naming the
        directory, when it cannot be written: better at start than at the first Deploy."""
        self.directory = path.parent
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA + audit.SCHEMA + governance.SCHEMA)
            self._migrate()
            self.audit_key = audit.load_key(path.parent / "audit.key")
            # A read-only file opens and reads fine; taking the write lock is what shows it.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as err:
            mapped = storage_error(self.directory, err, f"opening the coordinator's store {path.name}")
            if mapped is None:
                raise
            raise mapped from err

    def _migrate(self) -> None:
        """Bring a database an older release made up to this schema, in one transaction:
        versions registered before numbers existed get them, per name in created_at order."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(models)")}
        for column, declaration in (("stage", "TEXT NOT NULL DEFAULT 'registered'"),
                                    ("pushed_by", "TEXT NOT NULL DEFAULT ''")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE models ADD COLUMN {column} {declaration}")
        if "gpu_memory_bytes" not in {row[1] for row in self._db.execute("PRAGMA table_info(deployments)")}:
            self._db.execute("ALTER TABLE deployments ADD COLUMN gpu_memory_bytes INTEGER NOT NULL DEFAULT 0")
        if "require_approval" not in {row[1] for row in self._db.execute("PRAGMA table_info(endpoints)")}:
            self._db.execute("ALTER TABLE endpoints ADD COLUMN require_approval INTEGER NOT NULL DEFAULT 0")
        if "number" not in columns:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("ALTER TABLE models ADD COLUMN number INTEGER NOT NULL DEFAULT 0")
                rows = self._db.execute("SELECT rowid, name FROM models ORDER BY name, created_at, rowid").fetchall()
                counts: dict[str, int] = {}
                for rowid, name in rows:
                    counts[name] = counts.get(name, 0) + 1
                    self._db.execute("UPDATE models SET number=? WHERE rowid=?", (counts[name], rowid))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS models_by_number ON models(name, number)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                raise self._disk_error(err) from err
            try:
                yield self._db
            except sqlite3.OperationalError as err:
                self._db.execute("ROLLBACK")
                raise self._disk_error(err) from err
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise self._disk_error(err) from err

    def _disk_error(self, err: sqlite3.OperationalError) -> Exception:
        """The operator's error for a full or read-only data directory; other errors as they are."""
        return storage_error(self.directory, err, "writing the coordinator's store") or err

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- models ----
    def add_model(self, record: ModelRecord) -> tuple[ModelRecord, bool]:
        """Register a version under the model's next number: (the stored record, True); or, when
        that content is registered under the name already, (that record, False): a re-push
        changes nothing."""
        with self.transaction() as db:
            existing = self._models(db, "name=? AND version=?", (record.name, record.version))
            if existing:
                return existing[0], False
            counter = NUMBER_COUNTER + record.name
            row = db.execute("SELECT value FROM meta WHERE key=?", (counter,)).fetchone()
            (top,) = db.execute("SELECT COALESCE(MAX(number), 0) FROM models WHERE name=?", (record.name,)).fetchone()
            number = max(int(row[0]) if row else 0, int(top)) + 1
            db.execute(
                f"INSERT INTO models ({MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.name, record.version, record.flavor, record.size_bytes, record.created_at,
                 record.manifest_json, number, "registered", record.pushed_by),
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (counter, str(number)))
            audit.append(db, self.audit_key, record.created_at, "push", f"{record.name}:{record.version}",
                         f"pushed {record.name}:{number} (sha256:{record.version[:12]}, {record.flavor}, "
                         f"{record.size_bytes} bytes)")
            return replace(record, number=number, aliases=(), stage="registered"), True

    def get_model(self, name: str, version: str) -> ModelRecord | None:
        """The version with exactly this content hash (references resolve in coordinator.versions)."""
        with self._lock:
            found = self._models(self._db, "name=? AND version=?", (name, version))
        return found[0] if found else None

    def find_models(self, name: str, ref: VersionRef, limit: int = 10) -> list[ModelRecord]:
        """The versions of ``name`` that ``ref`` may mean, newest first: one, none, or (a digest
        prefix) up to ``limit`` candidates."""
        args: tuple[object, ...]
        if ref.number is not None:
            where, args = "name=? AND number=?", (name, ref.number)
        elif ref.alias:
            where = "name=? AND version=(SELECT version FROM aliases WHERE name=? AND alias=?)"
            args = (name, name, ref.alias)
        elif len(ref.digest) == 64:
            where, args = "name=? AND version=?", (name, ref.digest)
        elif ref.digest:
            where, args = "name=? AND version LIKE ? ESCAPE '\\'", (name, like_prefix(ref.digest))
        else:
            where, args, limit = "name=?", (name,), 1
        with self._lock:
            return self._models(self._db, f"{where} ORDER BY number DESC LIMIT ?", (*args, limit))

    def list_models(self, name: str = "") -> list[ModelRecord]:
        with self._lock:
            if name:
                return self._models(self._db, "name=? ORDER BY number", (name,))
            return self._models(self._db, "1 ORDER BY name, number", ())

    @staticmethod
    def _models(db: sqlite3.Connection, where: str, args: tuple) -> list[ModelRecord]:
        """The model records (with their aliases) that ``SELECT ... FROM models WHERE <where>`` finds."""
        rows = db.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE {where}", args).fetchall()
        if not rows:
            return []
        names = sorted({r[0] for r in rows})
        aliases: dict[tuple[str, str], list[str]] = {}
        for name, alias, version in db.execute(
            f"SELECT name, alias, version FROM aliases WHERE name IN ({','.join('?' * len(names))}) ORDER BY alias",
            names,
        ):
            aliases.setdefault((name, version), []).append(alias)
        return [
            ModelRecord(name, version, flavor, size, at, manifest, number, tuple(aliases.get((name, version), ())),
                        stage, pushed_by)
            for name, version, flavor, size, at, manifest, number, stage, pushed_by in rows
        ]

    def set_alias(self, name: str, alias: str, version: str, now: float, message: str) -> None:
        """Point ``name@alias`` at a version (its exact content hash), moving it if it named
        another, with an event saying ``message``."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", (name, alias, version, now))
            self._model_event(db, now, "alias", f"{name}@{alias}", message)

    def remove_alias(self, name: str, alias: str, now: float) -> str | None:
        """Remove ``name@alias``, with an event; the version it named (None: no such alias, nothing changed)."""
        with self.transaction() as db:
            row = db.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM aliases WHERE name=? AND alias=?", (name, alias))
            self._model_event(db, now, "unalias", f"{name}@{alias}",
                              f"{name}@{alias} removed (it named {self._label(db, name, row[0])})")
            return str(row[0])

    def delete_model(self, name: str, version: str, now: float) -> ModelDeletion:
        """Remove a version and the aliases that name it, with an event, in one transaction;
        nothing when a deployment serves it (``in_use``)."""
        with self.transaction() as db:
            in_use = tuple(r[0] for r in db.execute(
                "SELECT DISTINCT endpoint FROM deployments WHERE model=? AND version=? ORDER BY endpoint", (name, version),
            ))
            if in_use:
                return ModelDeletion(in_use=in_use)
            label = self._label(db, name, version)
            aliases = tuple(r[0] for r in db.execute(
                "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias", (name, version),
            ))
            db.execute("DELETE FROM models WHERE name=? AND version=?", (name, version))
            shared = db.execute("SELECT 1 FROM models WHERE version=? LIMIT 1", (version,)).fetchone() is not None
            removed = f"; aliases {', '.join(aliases)} removed" if aliases else ""
            self._model_event(db, now, "delete_model", f"{name}:{version}", f"{label} deleted{removed}")
            return ModelDeletion(aliases=aliases, artifact_shared=shared)

    def _model_event(self, db: sqlite3.Connection, now: float, kind: str, subject: str, message: str) -> None:
        """A change to the registry: an event with no endpoint, and an audit entry about ``subject``."""
        db.execute("INSERT INTO events (endpoint, at, kind, message) VALUES ('', ?, ?, ?)", (now, kind, message))
        audit.append(db, self.audit_key, now, kind, subject, message)

    @staticmethod
    def _label(db: sqlite3.Connection, name: str, version: str) -> str:
        """``name:number (sha256:prefix)`` of a stored version, as events name it."""
        row = db.execute("SELECT number FROM models WHERE name=? AND version=?", (name, version)).fetchone()
        return f"{name}:{row[0] if row else '?'} (sha256:{version[:12]})"

    # ---- agents ----
    def upsert_agent(self, agent_id: str, address: str, info: bytes, now: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO agents VALUES (?, ?, ?, ?, ?) ON CONFLICT(agent_id) DO UPDATE SET "
                "address=excluded.address, info=excluded.info, last_heartbeat=excluded.last_heartbeat",
                (agent_id, address, info, now, now),
            )

    def touch_agent(self, agent_id: str, now: float) -> bool:
        with self.transaction() as db:
            cur = db.execute("UPDATE agents SET last_heartbeat=? WHERE agent_id=?", (now, agent_id))
            return cur.rowcount == 1

    def list_agents(self) -> list[AgentRecord]:
        return [AgentRecord(*r) for r in self._query("SELECT * FROM agents ORDER BY agent_id")]

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        rows = self._query("SELECT * FROM agents WHERE agent_id=?", (agent_id,))
        return AgentRecord(*rows[0]) if rows else None

    # ---- endpoints and deployments ----
    def add_deployments(
        self, endpoint: str, records: list[DeploymentRecord], now: float, events: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Add deployments to an endpoint, creating it (with no policy yet) if needed.

        Returns True when the endpoint was created. Deployments are stored before a
        policy names them so that heartbeats load rather than unload them. ``events``
        (kind, message), e.g. where each was placed and why, are written in the same
        transaction.
        """
        with self.transaction() as db:
            created = db.execute(
                "INSERT OR IGNORE INTO endpoints (name, policy, created_at) VALUES (?, 'pending', ?)", (endpoint, now)
            ).rowcount == 1
            for d in records:
                self._insert_deployment(db, d)
            for kind, message in events:
                self._insert_event(db, endpoint, now, kind, message)
            return created

    def remove_deployments(
        self, deployment_ids: list[str], *, drop_endpoint: str = "", event: tuple[str, str, str, float] | None = None,
    ) -> None:
        """Forget deployments that never served (a failed load); optionally the endpoint made for
        them; ``event`` (endpoint, kind, message, time: why) in the same transaction."""
        with self.transaction() as db:
            db.executemany("DELETE FROM deployments WHERE deployment_id=?", [(i,) for i in deployment_ids])
            if drop_endpoint:
                db.execute("DELETE FROM endpoints WHERE name=?", (drop_endpoint,))
            if event is not None:
                self._insert_event(db, event[0], event[3], event[1], event[2])

    def set_policy(
        self, endpoint: str, kind: str, policy_blob: bytes, keep_ids: set[str], now: float,
        event: tuple[str, str], *, require_approval: bool = False,
    ) -> list[DeploymentRecord]:
        """Switch an endpoint's policy; deployments not in ``keep_ids`` are removed and returned.
        ``require_approval`` marks the endpoint production as well (never unmarks it).

        The audit event (kind, message) is written in the same transaction.
        """
        with self.transaction() as db:
            db.execute("UPDATE endpoints SET policy=?, policy_blob=?, require_approval=MAX(require_approval, ?) "
                       "WHERE name=?", (kind, policy_blob, int(require_approval), endpoint))
            removed = [d for d in self._deployments_of(db, endpoint) if d.deployment_id not in keep_ids]
            for d in removed:
                db.execute("DELETE FROM deployments WHERE deployment_id=?", (d.deployment_id,))
            self._insert_event(db, endpoint, now, *event)
            return removed

    def set_require_approval(self, endpoint: str, required: bool, now: float) -> None:
        """Mark an endpoint production (approved versions only) or lift that, with its event."""
        with self.transaction() as db:
            db.execute("UPDATE endpoints SET require_approval=? WHERE name=?", (int(required), endpoint))
            self._insert_event(db, endpoint, now, "require_approval",
                               "approved versions only" if required else "approval no longer required")

    def delete_endpoint(
        self, endpoint: str, now: float, event: tuple[str, str] = ("undeploy", "endpoint removed"),
    ) -> list[DeploymentRecord] | None:
        """Remove an endpoint; its deployments are returned so they can be unloaded, None if unknown."""
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM endpoints WHERE name=?", (endpoint,)).fetchall():
                return None
            old = self._deployments_of(db, endpoint)
            db.execute("DELETE FROM endpoints WHERE name=?", (endpoint,))
            db.execute("DELETE FROM rewards WHERE endpoint=?", (endpoint,))
            self._insert_event(db, endpoint, now, *event)
            return old

    # ---- events (each also in the audit trail), rewards, counters ----
    def _insert_event(self, db: sqlite3.Connection, endpoint: str, now: float, kind: str, message: str) -> None:
        db.execute("INSERT INTO events (endpoint, at, kind, message) VALUES (?, ?, ?, ?)", (endpoint, now, kind, message))
        audit.append(db, self.audit_key, now, kind, endpoint, message)

    def record_audit(self, action: str, subject: str, detail: str, now: float) -> None:
        """A change with no endpoint event of its own (a token, an approval): the audit trail only."""
        with self.transaction() as db:
            audit.append(db, self.audit_key, now, action, subject, detail)

    def audit_entries(self, after_seq: int = 0, limit: int = 1000) -> list[audit.Entry]:
        with self._lock:
            return audit.entries(self._db, after_seq, limit)

    def audit_about(self, subject: str, limit: int = 1000) -> list[audit.Entry]:
        """The entries about ``subject`` (a model version ``name:hash``, an endpoint), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit WHERE subject=? ORDER BY seq LIMIT ?", (subject, limit))
            return [audit.Entry(*row) for row in rows.fetchall()]

    def verify_audit(self, expect_head: tuple[int, str] | None = None) -> audit.Verification:
        with self._lock:
            return audit.verify(self._db, self.audit_key, expect_head)

    def add_event(self, endpoint: str, kind: str, message: str, now: float) -> None:
        with self.transaction() as db:
            self._insert_event(db, endpoint, now, kind, message)

    def event_counts(self, kind: str) -> dict[str, int]:
        """How many events of ``kind`` (alert, promote, rollback...) each endpoint has had."""
        rows = self._query("SELECT endpoint, COUNT(*) FROM events WHERE kind=? GROUP BY endpoint", (kind,))
        return {str(endpoint): int(count) for endpoint, count in rows}

    def list_events(self, endpoint: str = "", limit: int = 100) -> list[EventRecord]:
        if endpoint:
            rows = self._query("SELECT * FROM events WHERE endpoint=? ORDER BY id DESC LIMIT ?", (endpoint, limit))
        else:
            rows = self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [EventRecord(*r) for r in reversed(rows)]

    def set_decision_sample_rate(self, endpoint: str, rate: float, now: float) -> None:
        """Log this share of the endpoint's decisions (0: none), with its event and audit entry."""
        with self.transaction() as db:
            if rate > 0:
                db.execute("INSERT OR REPLACE INTO decision_logging VALUES (?, ?)", (endpoint, rate))
            else:
                db.execute("DELETE FROM decision_logging WHERE endpoint=?", (endpoint,))
            message = f"decision log: {rate:g} of requests sampled" if rate > 0 else "decision log: off"
            self._insert_event(db, endpoint, now, "decision_log", message)

    def decision_sample_rates(self) -> dict[str, float]:
        return dict(self._query("SELECT endpoint, sample_rate FROM decision_logging", ()))

    def add_reward(self, endpoint: str, arm: str, value: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO rewards VALUES (?, ?, 1, ?, ?) ON CONFLICT(endpoint, arm) DO UPDATE SET "
                "count=count+1, sum=sum+excluded.sum, sum_squares=sum_squares+excluded.sum_squares",
                (endpoint, arm, value, value * value),
            )

    def rewards(self, endpoint: str) -> dict[str, tuple[float, float, float]]:
        rows = self._query("SELECT arm, count, sum, sum_squares FROM rewards WHERE endpoint=?", (endpoint,))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    # ---- pipeline runs ----
    def add_run(self, run_id: str, pipeline: str, spec: bytes, stage_names: list[str], now: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO runs VALUES (?, ?, 'PENDING', ?, 0, ?)", (run_id, pipeline, now, spec))
            audit.append(db, self.audit_key, now, "pipeline", pipeline, f"run {run_id} submitted: {', '.join(stage_names)}")
            db.executemany(
                "INSERT INTO stage_runs (run_id, name, position, state) VALUES (?, ?, ?, 'PENDING')",
                [(run_id, name, i) for i, name in enumerate(stage_names)],
            )

    def update_stage(self, run_id: str, name: str, **fields: object) -> None:
        allowed = {"state", "agent_id", "message", "started_at", "finished_at", "rows", "outputs_json"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"unknown stage fields {set(fields) - allowed}")
        assignments = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE stage_runs SET {assignments} WHERE run_id=? AND name=?", (*fields.values(), run_id, name))

    def set_run_state(self, run_id: str, state: str, finished_at: float = 0.0) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET state=?, finished_at=? WHERE run_id=?", (state, finished_at, run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            stages = self._db.execute(
                "SELECT name, state, agent_id, message, started_at, finished_at, rows, outputs_json "
                "FROM stage_runs WHERE run_id=? ORDER BY position", (run_id,),
            ).fetchall()
            run_id, pipeline, state, created_at, finished_at, spec = row
            return RunRecord(run_id, pipeline, state, created_at, finished_at, spec, tuple(StageRecord(*s) for s in stages))

    def list_runs(self, limit: int = 50, states: tuple[str, ...] = ()) -> list[RunRecord]:
        if states:
            marks = ",".join("?" * len(states))
            ids = self._query(f"SELECT run_id FROM runs WHERE state IN ({marks}) ORDER BY created_at DESC LIMIT ?",
                              (*states, limit))
        else:
            ids = self._query("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [r for (run_id,) in ids if (r := self.get_run(run_id)) is not None]

    def next_counter(self, key: str) -> int:
        """Increment and return a persistent counter (route table generations)."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            value = (int(row[0]) if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
            return value

    def set_deployment_state(self, deployment_id: str, state: str, message: str | None = None) -> None:
        """``message`` None keeps the one it has (where it was placed and why)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deployments SET state=?, message=COALESCE(?, message) WHERE deployment_id=?",
                (state, message, deployment_id),
            )

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        with self._lock:
            row = self._db.execute("SELECT endpoint FROM deployments WHERE deployment_id=?", (deployment_id,)).fetchone()
            if row is None:
                return None
            return next(d for d in self._deployments_of(self._db, row[0]) if d.deployment_id == deployment_id)

    def set_replicas(
        self, deployment_id: str, agent_ids: list[str], *, state: str | None = None, message: str | None = None,
        event: tuple[str, str, float] | None = None,
    ) -> None:
        """Where a deployment's replicas run; with its new state, message and an event
        (kind, message, time) in the same transaction when given."""
        with self.transaction() as db:
            db.execute("DELETE FROM replicas WHERE deployment_id=?", (deployment_id,))
            db.executemany(
                "INSERT INTO replicas VALUES (?, ?)", [(deployment_id, a) for a in agent_ids]
            )
            db.execute(
                "UPDATE deployments SET state=COALESCE(?, state), message=COALESCE(?, message) WHERE deployment_id=?",
                (state, message, deployment_id),
            )
            if event is not None:
                self._insert_event(db, self._endpoint_of(db, [deployment_id]), event[2], event[0], event[1])

    # ---- canary windows (their shape is coordinator.canary's) ----
    def get_canary_window(self, endpoint: str) -> str | None:
        rows = self._query("SELECT window_json FROM canary_windows WHERE endpoint=?", (endpoint,))
        return str(rows[0][0]) if rows else None

    def put_canary_window(self, endpoint: str, window_json: str) -> None:
        """Keep an endpoint's open window; nothing when the endpoint is gone meanwhile."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO canary_windows SELECT ?, ? WHERE EXISTS (SELECT 1 FROM endpoints WHERE name=?)",
                (endpoint, window_json, endpoint),
            )

    def drop_canary_window(self, endpoint: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM canary_windows WHERE endpoint=?", (endpoint,))

    def canary_window_endpoints(self) -> list[str]:
        return [r[0] for r in self._query("SELECT endpoint FROM canary_windows ORDER BY endpoint")]

    @staticmethod
    def _endpoint_of(db: sqlite3.Connection, deployment_ids: list[str]) -> str:
        for deployment_id in deployment_ids:
            row = db.execute("SELECT endpoint FROM deployments WHERE deployment_id=?", (deployment_id,)).fetchone()
            if row is not None:
                return str(row[0])
        return ""

    def list_endpoints(self) -> list[EndpointRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM endpoints ORDER BY name").fetchall()
            return [
                EndpointRecord(r[0], r[1], r[2], r[3], tuple(self._deployments_of(self._db, r[0])), bool(r[4]))
                for r in rows
            ]

    def get_endpoint(self, name: str) -> EndpointRecord | None:
        return next((e for e in self.list_endpoints() if e.name == name), None)

    def list_deployments(self) -> list[DeploymentRecord]:
        return [d for e in self.list_endpoints() for d in e.deployments]

    @staticmethod
    def _insert_deployment(db: sqlite3.Connection, d: DeploymentRecord) -> None:
        db.execute(
            "INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (d.deployment_id, d.endpoint, d.model, d.version, d.replicas, d.state, d.message, d.created_at,
             d.batching.max_batch_size, d.batching.max_delay_us, d.batching.max_queue_rows,
             d.requirements.engine, d.requirements.cpu, d.requirements.memory_bytes, d.requirements.gpus,
             json.dumps(d.requirements.selector, sort_keys=True), d.requirements.gpu_memory_bytes),
        )
        db.executemany("INSERT INTO replicas VALUES (?, ?)", [(d.deployment_id, a) for a in d.agent_ids])

    @staticmethod
    def _deployments_of(db: sqlite3.Connection, endpoint: str) -> list[DeploymentRecord]:
        rows = db.execute(
            "SELECT d.*, COALESCE((SELECT number FROM models m WHERE m.name=d.model AND m.version=d.version), 0) "
            "FROM deployments d WHERE endpoint=? ORDER BY created_at", (endpoint,)
        ).fetchall()
        out = []
        for r in rows:
            agents = db.execute(
                "SELECT agent_id FROM replicas WHERE deployment_id=? ORDER BY agent_id", (r[0],)
            ).fetchall()
            batching = BatchingSettings(*r[8:11])
            engine, cpu, memory_bytes, gpus, selector_json = r[11:16]
            requirements = Requirements(engine, cpu, memory_bytes, gpus, json.loads(selector_json), r[16])
            deployment_id, endpoint_name, model, version, replicas, state, message, created_at = r[:8]
            out.append(DeploymentRecord(
                deployment_id, endpoint_name, model, version, replicas, state, message, created_at,
                batching, requirements, tuple(a[0] for a in agents), r[17],
            ))
        return out

