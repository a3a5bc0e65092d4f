"""The decision log: sampled requests of an endpoint, with what answered them, in rotating Parquet files.

An operator turns it on per endpoint with a sample rate (``milepost endpoints NAME
--log-decisions 0.1``); the rate travels in the endpoint's pushed route
(``Route.decision_sample_rate``). Serving never waits for it: ``offer`` is the
only part on the request path: a coin toss and an append of references to the
request's already-decoded input batch and its answer to a bounded queue (a list
under a lock, at most ``queue_items`` decisions and ``queue_bytes`` request bytes).
When the queue is full (or the disk refuses the write) the decision is dropped and counted per endpoint: the
Prometheus counter ``milepost_decisions_dropped_total``, a warning log line with
the count (the first drop, then at most every ``WARN_EVERY_S``), and the agent's
heartbeat, from which the coordinator records an alert in its audit trail.

One writer thread takes what is queued every ``POLL_S`` (0.1 s), builds the Arrow columns
in batches and appends them as row groups to the endpoint's open Parquet file.
Every scored row is one Parquet row:

    decision_id   string   ``AGENT_ID/TIME_NS_HEX-SEQ``: unique across agents and
                           restarts, and says which agent holds it (``parse_id``)
    request_id    string   the caller's id of the request (may be empty)
    time          timestamp[ns, UTC]   when the request was answered
    endpoint, arm, deployment, model, model_version, model_digest   string
                           (the digest as ``sha256:HEX``; an ensemble's arms and
                           deployments comma-separated)
    row           int32    the row's place in its request
    inputs        struct   the request's decoded input columns, as served
    outputs       struct   the answer's columns, as served

Files live under ``DATA_DIR/decisions/ENDPOINT/``: the open one as ``*.part``,
renamed ``FIRST_NS-LAST_NS-ROWS.parquet`` when it closes, which happens when it
passes ``rotate_bytes``, is ``rotate_s`` old, its schema changes, or a reader asks
(``read`` closes the open files first, so it sees every decision offered before
it). Closed files whose last decision is older than ``retention_s`` are deleted.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from milepost.core.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.deployments import DeploymentTable
    from agent.routing.route_table import Route

log = logging.getLogger("milepost.agent")
POLL_S = 0.1  # larger batches: each write has a fixed cost (a row group) besides its rows'
WARN_EVERY_S = 10.0
RETENTION_CHECK_S = 60.0
DEFAULT_LIMIT = 1000
META_COLUMNS = ("decision_id", "request_id", "time", "endpoint", "arm", "deployment", "model", "model_version",
                "model_digest", "row")
TIME_TYPE = pa.timestamp("ns", tz="UTC")
ModelOf = Callable[["Route", str], tuple[str, str, str]]  # (route, deployment id) -> (model, version, digest)


@dataclass(frozen=True)
class DecisionLogSettings:
    queue_items: int = 10_000
    queue_bytes: int = 64 << 20
    rotate_bytes: int = 64 << 20
    rotate_s: float = 3600.0
    retention_s: float = 190 * 86400.0  # the AI Act's six months, and a little more


@dataclass(frozen=True)
class _Pending:
    at_ns: int
    route: Route
    request_id: str
    size: int
    inputs: pa.RecordBatch
    response: InferenceResponse


@dataclass
class _OpenFile:
    part: Path
    writer: pq.ParquetWriter
    opened: float
    first_ns: int
    last_ns: int = 0
    rows: int = 0


def parse_id(decision_id: str) -> tuple[str, int]:
    """(agent id, time in ns) of a decision id; InvalidArgument when it is not one."""
    agent, _, local = decision_id.rpartition("/")
    stamp, _, seq = local.partition("-")
    try:
        at_ns = int(stamp, 16)
    except ValueError:
        at_ns = -1
    if not agent or not seq or at_ns < 0:
        raise InvalidArgument(f"decision id {decision_id[:80]!r} is not AGENT_ID/TIME-SEQ (see `milepost decisions`)")
    return agent, at_ns


def model_of(deployments: DeploymentTable) -> ModelOf:
    """How the writer names the model behind a deployment: the one hosted here, or as the
    agent that runs it described it (the route's remote proxy, described while serving)."""

    def find(route: Route, deployment_id: str) -> tuple[str, str, str]:
        hosted = deployments.get(deployment_id)
        if hosted is not None:
            return hosted.spec.model, hosted.version, hosted.spec.version
        remote = route.remotes.get(deployment_id)
        if remote is None:
            return "", "", ""
        d = remote.describe()
        return d.model, d.version, d.digest

    return find


class DecisionLog:
    def __init__(self, directory: Path, agent_id: Callable[[], str], model: ModelOf,
                 settings: DecisionLogSettings | None = None) -> None:
        self.directory = directory
        self.settings = settings or DecisionLogSettings()
        self._agent_id = agent_id
        self._model = model
        self._boot = secrets.token_hex(2)
        self._seq = 0
        self._random = random.random
        self._lock = threading.Lock()  # the queue and the counters
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._dropped: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()
        self._warned_at = 0.0
        self._warned_count = 0
        self._files_lock = threading.Lock()  # the open files: the writer, flushes and readers
        self._open: dict[tuple[str, pa.Schema], _OpenFile] = {}
        self._models: dict[str, tuple[str, str, str]] = {}
        self._retention_checked = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # ---- the request path ----
    def offer(self, route: Route | None, request: InferenceRequest, inputs: pa.RecordBatch,
              response: InferenceResponse) -> None:
        """Queue the decision if the endpoint samples it and there is room; else count the drop. Never raises."""
        rate = route.decision_sample_rate if route is not None else 0.0
        if rate <= 0.0 or (rate < 1.0 and self._random() >= rate):
            return
        assert route is not None
        pending = _Pending(time.time_ns(), route, request.request_id, request.size_bytes, inputs, response)
        with self._lock:
            if len(self._pending) < self.settings.queue_items and (
                    not self._pending or self._pending_bytes + pending.size <= self.settings.queue_bytes):
                self._pending.append(pending)
                self._pending_bytes += pending.size
                return
            self._dropped[route.endpoint] += 1
            total = sum(self._dropped.values())
            now = time.monotonic()
            warn = total == 1 or now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at, since, self._warned_count = now, total - self._warned_count, total
        if warn:
            log.warning("decision log: queue full (%d decisions or %d bytes); dropped %d decision(s) since the last "
                        "warning, %d in all (see milepost_decisions_dropped_total)", self.settings.queue_items,
                        self.settings.queue_bytes, since, total)

    # ---- counters ----
    def dropped(self) -> dict[str, int]:
        """Decisions dropped per endpoint since the agent started."""
        with self._lock:
            return dict(self._dropped)

    def logged(self) -> dict[str, int]:
        """Decisions written per endpoint since the agent started."""
        with self._lock:
            return dict(self._logged)

    # ---- the writer ----
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._files_lock:
                    self._write_pending()
                    self._rotate_old()
                self._expire()
            except Exception:  # noqa: BLE001 - a bug here must not end the log; serving goes on regardless
                log.exception("decision log writer failed; the decisions it held are lost")
            self._stop.wait(POLL_S)

    def _take(self) -> list[_Pending]:
        with self._lock:
            taken, self._pending, self._pending_bytes = self._pending, [], 0
        return taken

    def _write_pending(self) -> None:
        """Write what is queued (the caller holds the files lock)."""
        taken = self._take()
        if not taken:
            return
        # One endpoint's decisions answered by the same deployments share their schemas (almost
        # always: checked once per group); hashing a schema per decision would cost more than the rest.
        by_source: dict[tuple[str, tuple[str, ...]], list[_Pending]] = {}
        for p in taken:
            by_source.setdefault((p.route.endpoint, p.response.deployments), []).append(p)
        groups: dict[tuple[str, pa.Schema], list[_Pending]] = {}
        for (endpoint, _), items in by_source.items():
            head = items[0]
            bucket = groups.setdefault((endpoint, _schema_of(head)), [])
            for p in items:
                if p is head or (p.inputs.schema.equals(head.inputs.schema)
                                 and p.response.batch.schema.equals(head.response.batch.schema)):
                    bucket.append(p)
                else:
                    groups.setdefault((endpoint, _schema_of(p)), []).append(p)
        for (endpoint, schema), items in groups.items():
            try:
                self._append(endpoint, schema, items)
            except OSError as err:  # the disk is full or gone: these are lost, and counted as dropped
                log.error("decision log: cannot write %d decision(s) of %s under %s: %s; counted as dropped",
                          len(items), endpoint, self.directory, err)
                if (endpoint, schema) in self._open:
                    try:  # keep what the file already holds, if it can still be closed
                        self._close((endpoint, schema))
                    except OSError:
                        self._open.pop((endpoint, schema), None)
                with self._lock:
                    self._dropped[endpoint] += len(items)

    def _append(self, endpoint: str, schema: pa.Schema, items: list[_Pending]) -> None:
        table = self._table(items, schema)
        handle = self._open.get((endpoint, schema))
        if handle is None:
            handle = self._open_file(endpoint, schema, items[0].at_ns)
        handle.writer.write_table(table)
        handle.rows += table.num_rows
        handle.last_ns = max(handle.last_ns, items[-1].at_ns)
        with self._lock:
            self._logged[endpoint] += len(items)
        if handle.part.stat().st_size >= self.settings.rotate_bytes:
            self._close((endpoint, schema))

    def _table(self, items: list[_Pending], schema: pa.Schema) -> pa.Table:
        """The Parquet rows of decisions that share a schema: one pass in Python over the
        decisions for their ids and names, the rest in Arrow (1-row requests are the common case)."""
        agent = self._agent_id()
        first = self._seq + 1
        self._seq += len(items)
        per_decision: dict[str, list[Any]] = {name: [] for name in META_COLUMNS[:-1]}
        for seq, p in enumerate(items, first):
            response = p.response
            models = [self._model_cached(p.route, d) for d in response.deployments]
            for name, value in zip(META_COLUMNS, (
                f"{agent}/{p.at_ns:x}-{self._boot}{seq:x}", p.request_id, p.at_ns, p.route.endpoint,
                ",".join(response.arms), ",".join(response.deployments), ",".join(m[0] for m in models),
                response.version or ",".join(m[1] for m in models),
                ",".join(f"sha256:{m[2]}" if m[2] else "" for m in models),
            )):
                per_decision[name].append(value)
        counts = np.fromiter((p.inputs.num_rows for p in items), np.int64, len(items))
        arrays = [pa.array(per_decision[name], type=schema.field(name).type) for name in META_COLUMNS[:-1]]
        if not (counts == 1).all():  # requests of several rows: each decision's values on each of its rows
            rows_of = pa.array(np.repeat(np.arange(len(items)), counts))
            arrays = [a.take(rows_of) for a in arrays]
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        arrays.append(pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32)))
        for batches in ([p.inputs for p in items], [p.response.batch for p in items]):
            columns = [pa.concat_arrays([b.column(i) for b in batches]) for i in range(batches[0].num_columns)]
            arrays.append(pa.StructArray.from_arrays(columns, fields=list(batches[0].schema)))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _model_cached(self, route: Route, deployment_id: str) -> tuple[str, str, str]:
        found = self._models.get(deployment_id)
        if found is None or not found[2]:
            try:
                found = self._model(route, deployment_id)
            except Exception:  # noqa: BLE001 - a remote that cannot be described now: logged without its model
                log.warning("decision log: cannot describe deployment %s; its decisions lack the model", deployment_id)
                found = ("", "", "")
            self._models[deployment_id] = found
        return found

    def _open_file(self, endpoint: str, schema: pa.Schema, first_ns: int) -> _OpenFile:
        folder = self.directory / endpoint
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{first_ns:020d}-{secrets.token_hex(3)}.part"
        handle = _OpenFile(part, pq.ParquetWriter(part, schema), time.monotonic(), first_ns)
        self._open[(endpoint, schema)] = handle
        return handle

    def _close(self, key: tuple[str, pa.Schema]) -> None:
        handle = self._open.pop(key)
        handle.writer.close()
        final = handle.part.with_name(f"{handle.first_ns:020d}-{handle.last_ns:020d}-{handle.rows}.parquet")
        os.replace(handle.part, final)

    def _rotate_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, h in self._open.items() if now - h.opened >= self.settings.rotate_s]:
            self._close(key)

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._retention_checked < min(RETENTION_CHECK_S, self.settings.retention_s / 4):
            return
        self._retention_checked = now
        oldest = time.time_ns() - int(self.settings.retention_s * 1e9)
        for path, _, last in self._files():
            if last < oldest:
                path.unlink(missing_ok=True)
                log.info("decision log: %s is past retention (%gs), deleted", path, self.settings.retention_s)

    def flush(self) -> None:
        """Write what is queued and close the open files: every decision offered before is readable."""
        with self._files_lock:
            self._write_pending()
            for key in list(self._open):
                self._close(key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    # ---- reading ----
    def _files(self, endpoint: str = "") -> list[tuple[Path, int, int]]:
        """Closed files (path, first ns, last ns), oldest first."""
        folders = [self.directory / endpoint] if endpoint else (
            sorted(p for p in self.directory.iterdir() if p.is_dir()) if self.directory.is_dir() else [])
        found = []
        for folder in folders:
            for path in folder.glob("*.parquet"):
                first, last, _ = path.stem.split("-")
                found.append((path, int(first), int(last)))
        return sorted(found, key=lambda f: (f[1], f[0].name))

    def read(self, endpoint: str = "", since: float = 0.0, until: float = 0.0, limit: int = 0,
             decision_id: str = "") -> Iterator[pa.Table]:
        """The decisions of ``endpoint`` answered in [since, until) (seconds since the epoch; 0: open),
        oldest first, at most ``limit`` (0: DEFAULT_LIMIT); or the one ``decision_id``: NotFound if absent."""
        if bool(endpoint) == bool(decision_id):
            raise InvalidArgument("ListDecisions needs an endpoint or a decision_id (one of them)")
        limit = limit or DEFAULT_LIMIT
        if limit < 0:
            raise InvalidArgument(f"ListDecisions.limit must be >= 0, got {limit}")
        if until and until < since:
            raise InvalidArgument(f"ListDecisions.until ({until}) is before since ({since})")
        self.flush()
        low, high = int(since * 1e9), int(until * 1e9) if until else 2 ** 63 - 1
        if decision_id:
            _, at_ns = parse_id(decision_id)
            low, high = at_ns, at_ns + 1
        if endpoint and not (self.directory / endpoint).is_dir():
            return
        left = limit
        for path, first, last in self._files(endpoint):
            if last < low or first >= high:
                continue
            expression = (pc.field("time") >= pa.scalar(low, TIME_TYPE)) & (pc.field("time") < pa.scalar(high, TIME_TYPE))
            if decision_id:
                expression = expression & (pc.field("decision_id") == decision_id)
            table = pq.read_table(path, filters=expression)
            if not table.num_rows:
                continue
            ids = pc.unique(table["decision_id"])
            if len(ids) > left:
                table = table.filter(pc.is_in(table["decision_id"], ids[:left]))
                ids = ids[:left]
            left -= len(ids)
            yield table
            if left <= 0:
                return
        if decision_id and left == limit:
            raise NotFound(f"decision {decision_id!r} is not in this agent's decision log (past retention?)")


def _schema_of(p: _Pending) -> pa.Schema:
    fields = [pa.field(name, pa.string()) for name in META_COLUMNS]
    fields[2] = pa.field("time", TIME_TYPE)
    fields[9] = pa.field("row", pa.int32())
    return pa.schema([*fields, pa.field("inputs", pa.struct(list(p.inputs.schema))),
                      pa.field("outputs", pa.struct(list(p.response.batch.schema)))])


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
