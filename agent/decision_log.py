"""The decision log: sampled requests of an endpoint, with what answered them, in rotating Parquet files.

An operator turns it on per endpoint with a sample rate (``milepost endpoints NAME
--log-decisions 0.1``); the rate travels in the endpoint's pushed route
(``Route.decision_sample_rate``). Serving never waits for it: ``offer`` (and
``offer_matrix``, the matrix lane's) is the only part on the request path: a coin toss
and an append of references to the request's already-decoded inputs and its answer (an
Arrow batch, or the lane's numpy matrices) to a bounded queue (a list under a lock, at
most ``queue_items`` decisions and ``queue_bytes`` request bytes). When the queue is
full (or the disk refuses the write) the decision is dropped and counted per endpoint:
the Prometheus counter ``milepost_decisions_dropped_total``, a warning log line with the
count (the first drop, then at most every ``WARN_EVERY_S``), and the agent's heartbeat,
from which the coordinator records an alert in its audit trail.

One writer thread takes what is queued every ``POLL_S`` (0.1 s), builds the Arrow columns
in batches (the lane's matrices become the very columns ``serve`` would have logged for
the same request) and appends them to the endpoint's open file. Every scored row is one
Parquet row:

    decision_id   string   ``AGENT_ID/TIME_NS_HEX-SEQ``: unique across agents and
                           restarts, and says which agent holds it (``parse_id``)
    request_id    string   the caller's id of the request (may be empty)
    time          timestamp[ns, UTC]   when the request was answered
    endpoint, arm, deployment, model, model_version, model_digest   string
                           (the digest as ``sha256:HEX``; an ensemble's arms and
                           deployments comma-separated)
    row           int32    the row's place in its request
    inputs        struct   the request's decoded input columns, as served
    outputs       struct   the answer's columns, as served (without explanations)

Files live under ``DATA_DIR/decisions/ENDPOINT/``. The open one is an Arrow IPC stream,
``FIRST_NS-TOKEN-DECISIONS.part``: each write is readable as soon as it is made, so a
crash (kill -9 included) loses only what was still queued (``POLL_S`` of decisions); its
name counts the decisions handed to it, renamed before each write, and it is fsynced
every ``SYNC_S``. It becomes ``FIRST_NS-LAST_NS-ROWS.parquet`` when it closes, which
happens when it passes ``rotate_bytes``, is ``rotate_s`` old, its schema changes, or a
reader asks (``read`` closes the open files first, so it sees every decision offered
before it). At start, ``*.part`` files left by a crash are recovered: what they hold
readably becomes a Parquet file; decisions their name counts beyond that (a write cut
off by the crash) are counted as dropped, so alerted, and the file is moved to
``ENDPOINT/unreadable/``, never deleted. Closed files whose last decision is older than
``retention_s`` are deleted.
"""

from __future__ import annotations

import itertools
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
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agent import decision_files
from milepost.core.errors import InvalidArgument, NotFound
from milepost.core.tensor_codec import MATRIX_INPUT_NAME

if TYPE_CHECKING:
    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.deployments import DeploymentTable
    from agent.routing.route_table import Route
    from agent.routing.router import MatrixServed

log = logging.getLogger("milepost.agent")
POLL_S = 0.1  # larger batches: each write has a fixed cost besides its rows'
SYNC_S = 1.0  # how often written decisions are forced to disk (an OS crash loses at most this)
WARN_EVERY_S = 10.0
RETENTION_CHECK_S = 60.0
DEFAULT_LIMIT = 1000
UNREADABLE = "unreadable"  # ENDPOINT/unreadable/: .part files a crash cut off, kept for forensics
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


@dataclass(slots=True)
class _Pending:
    """One decision as queued: references only. ``inputs``/``outputs`` are the request's decoded
    batch and the answer's, or (the matrix lane) its (n, k) float32 matrix and (n, m) scores,
    whose one output column is ``output``."""

    at_ns: int
    route: Route
    request_id: str
    size: int
    arms: tuple[str, ...]
    deployments: tuple[str, ...]
    version: str
    inputs: pa.RecordBatch | np.ndarray
    outputs: pa.RecordBatch | np.ndarray
    output: pa.Field | None = None


@dataclass
class _OpenFile:
    part: Path
    sink: pa.NativeFile
    writer: Any  # pyarrow.ipc.RecordBatchStreamWriter
    opened: float
    first_ns: int
    token: str
    last_ns: int = 0
    rows: int = 0
    decisions: int = 0
    unsynced: bool = False


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
        self._synced_at = time.monotonic()
        self._stop = threading.Event()
        self._recovered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # ---- the request path ----
    def offer(self, route: Route | None, request: InferenceRequest, inputs: pa.RecordBatch,
              response: InferenceResponse) -> None:
        """Queue the decision if the endpoint samples it and there is room; else count the drop. Never raises."""
        if self._sampled(route):
            assert route is not None
            self._queue(_Pending(time.time_ns(), route, request.request_id, request.size_bytes, response.arms,
                                 response.deployments, response.version, inputs, response.batch))

    def offer_matrix(self, route: Route | None, request_id: str, size_bytes: int, X: np.ndarray,
                     served: MatrixServed) -> None:
        """``offer`` for the matrix lane's request ``X`` and its answer: the same decision, built in the writer."""
        if self._sampled(route):
            assert route is not None
            self._queue(_Pending(time.time_ns(), route, request_id, size_bytes, served.arms, served.deployments,
                                 served.version, X, served.values, served.output_field))

    def _sampled(self, route: Route | None) -> bool:
        rate = route.decision_sample_rate if route is not None else 0.0
        return rate > 0.0 and (rate >= 1.0 or self._random() < rate)

    def _queue(self, pending: _Pending) -> None:
        with self._lock:
            if len(self._pending) < self.settings.queue_items and (
                    not self._pending or self._pending_bytes + pending.size <= self.settings.queue_bytes):
                self._pending.append(pending)
                self._pending_bytes += pending.size
                return
            self._dropped[pending.route.endpoint] += 1
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
        """Decisions dropped per endpoint since the agent started (those a crash before it cut off, too)."""
        with self._lock:
            return dict(self._dropped)

    def logged(self) -> dict[str, int]:
        """Decisions written per endpoint since the agent started."""
        with self._lock:
            return dict(self._logged)

    def wait_recovered(self, timeout: float | None = None) -> bool:
        """Wait until the files a crash left behind are recovered (the writer does it first)."""
        return self._recovered.wait(timeout)

    # ---- the writer ----
    def _run(self) -> None:
        try:
            with self._files_lock:
                self._recover()
        except Exception:  # noqa: BLE001 - a bug here must not end the log; what is left stays on disk
            log.exception("decision log: recovering the files of a previous run failed")
        self._recovered.set()
        while not self._stop.is_set():
            try:
                with self._files_lock:
                    self._write_pending()
                    self._rotate_old()
                    self._sync()
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
        # always: Arrow ones are checked against the group's first; the matrix lane's of one
        # deployment share its output field object, so their schema); hashing a schema per
        # decision would cost more than the rest.
        by_source: dict[tuple[str, tuple[str, ...], int], list[_Pending]] = {}
        for p in taken:
            by_source.setdefault((p.route.endpoint, p.deployments, id(p.output)), []).append(p)
        groups: dict[tuple[str, pa.Schema], list[_Pending]] = {}
        mixed: set[tuple[str, pa.Schema]] = set()  # groups gathered from several sources
        for (endpoint, _, _), items in by_source.items():
            head = items[0]
            key = (endpoint, _schema_of(head))
            if key in groups:
                mixed.add(key)
            bucket = groups.setdefault(key, [])
            if head.output is not None:
                bucket.extend(items)
                continue
            for p in items:
                if p is head or _same_schemas(p, head):
                    bucket.append(p)
                else:
                    other = (endpoint, _schema_of(p))
                    groups.setdefault(other, []).append(p)
                    mixed.add(other)
        for (endpoint, schema), items in groups.items():
            if (endpoint, schema) in mixed:
                items.sort(key=lambda p: p.at_ns)  # in the order answered
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
        # The name says how many decisions the file was given before they are written: a crash
        # that cuts this write off leaves a count of what it lost (``_recover``).
        self._rename(handle, handle.decisions + len(items))
        try:
            handle.writer.write_table(table)
        except OSError:
            self._rename(handle, handle.decisions - len(items))
            raise
        handle.rows += table.num_rows
        handle.last_ns = max(handle.last_ns, items[-1].at_ns)
        handle.unsynced = True
        with self._lock:
            self._logged[endpoint] += len(items)
        if handle.sink.tell() >= self.settings.rotate_bytes:
            self._close((endpoint, schema))

    def _table(self, items: list[_Pending], schema: pa.Schema) -> pa.Table:
        """The Parquet rows of decisions that share a schema: in Python, one pass over the
        decisions for their ids and one per source (endpoint, arms, deployments, version) for
        its names; the rest in Arrow (1-row requests are the common case)."""
        agent, boot = self._agent_id(), self._boot
        first = self._seq + 1
        self._seq += len(items)
        ids = [f"{agent}/{p.at_ns:x}-{boot}{seq:x}" for seq, p in enumerate(items, first)]
        sources: dict[tuple[str, tuple[str, ...], tuple[str, ...], str], int] = {}
        heads: list[_Pending] = []
        source_of = []
        for p in items:
            key = (p.route.endpoint, p.arms, p.deployments, p.version)
            index = sources.get(key)
            if index is None:
                index = sources[key] = len(heads)
                heads.append(p)
            source_of.append(index)
        named = [self._names(p) for p in heads]
        which = pa.array(source_of, pa.int32())
        arrays = [pa.array(ids), pa.array([p.request_id for p in items]),
                  pa.array([p.at_ns for p in items], TIME_TYPE),
                  *(pa.array([n[i] for n in named]).take(which) for i in range(6))]
        counts = np.fromiter((len(p.inputs) for p in items), np.int64, len(items))
        if not (counts == 1).all():  # requests of several rows: each decision's values on each of its rows
            rows_of = pa.array(np.repeat(np.arange(len(items)), counts))
            arrays = [a.take(rows_of) for a in arrays]
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        arrays.append(pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32)))
        arrays.extend(_values(items, schema))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _names(self, p: _Pending) -> tuple[str, str, str, str, str, str]:
        """endpoint, arm, deployment, model, model_version, model_digest of a decision's source."""
        models = [self._model_cached(p.route, d) for d in p.deployments]
        return (p.route.endpoint, ",".join(p.arms), ",".join(p.deployments), ",".join(m[0] for m in models),
                p.version or ",".join(m[1] for m in models), ",".join(f"sha256:{m[2]}" if m[2] else "" for m in models))

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

    # ---- the files ----
    def _open_file(self, endpoint: str, schema: pa.Schema, first_ns: int) -> _OpenFile:
        folder = self.directory / endpoint
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(3)
        part = folder / f"{first_ns:020d}-{token}-0.part"
        sink = pa.OSFile(str(part), "wb")
        try:
            # On the writer thread itself: Arrow's thread pool costs far more than a write of 0.1 s of decisions.
            writer = pa.ipc.new_stream(sink, schema, options=pa.ipc.IpcWriteOptions(use_threads=False))
        except BaseException:
            sink.close()
            raise
        handle = _OpenFile(part, sink, writer, time.monotonic(), first_ns, token)
        self._open[(endpoint, schema)] = handle
        return handle

    @staticmethod
    def _rename(handle: _OpenFile, decisions: int) -> None:
        part = handle.part.with_name(f"{handle.first_ns:020d}-{handle.token}-{decisions}.part")
        os.replace(handle.part, part)
        handle.part, handle.decisions = part, decisions

    def _close(self, key: tuple[str, pa.Schema]) -> None:
        handle = self._open.pop(key)
        try:
            handle.writer.close()
        finally:
            handle.sink.close()
        table = decision_files.read_stream(handle.part)[0]
        if table is not None and table.num_rows:
            decision_files.seal(handle.part, table)
        handle.part.unlink()

    def _rotate_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, h in self._open.items() if now - h.opened >= self.settings.rotate_s]:
            self._close(key)

    def _sync(self) -> None:
        """Force what the open files were given to disk, every SYNC_S (a kill -9 needs no sync:
        written is in the OS's hands; a power cut does)."""
        now = time.monotonic()
        if now - self._synced_at < SYNC_S:
            return
        self._synced_at = now
        for handle in self._open.values():
            if handle.unsynced:
                os.fsync(handle.sink.fileno())
                handle.unsynced = False

    def _recover(self) -> None:
        """Turn the ``*.part`` files a crash left into Parquet files: what they hold readably is
        kept; the decisions their names count beyond that are counted as dropped (so the
        coordinator alerts) and the file is moved to ``ENDPOINT/unreadable/``, never deleted."""
        if not self.directory.is_dir():
            return
        for leftover in self.directory.glob(f"*/*{decision_files.SEALING}"):
            leftover.unlink()  # a Parquet file cut off while written; its .part is still here
        for part in sorted(self.directory.glob("*/*.part")):
            try:
                self._recover_part(part)
            except OSError as err:  # the disk refuses: the file stays, for the next start to try again
                log.error("decision log: cannot recover %s: %s; it is left in place", part, err)

    def _recover_part(self, part: Path) -> None:
        endpoint = part.parent.name
        counted = decision_files.decisions_named(part)
        table, whole = decision_files.read_stream(part)
        kept = len(pc.unique(table["decision_id"])) if table is not None and table.num_rows else 0
        lost = max(0, counted - kept) if counted is not None else (0 if whole else 1)
        if table is not None and table.num_rows:
            decision_files.seal(part, table)
        if whole and not lost:
            part.unlink()
            log.info("decision log: recovered %d decision(s) of %s from %s", kept, endpoint, part.name)
            return
        aside = part.parent / UNREADABLE / part.name
        aside.parent.mkdir(exist_ok=True)
        os.replace(part, aside)
        with self._lock:
            self._dropped[endpoint] += lost
        log.error("decision log: %s was cut off by a crash: %d decision(s) of %s recovered, %s lost and counted "
                  "as dropped; the file is kept as %s", part.name, kept, endpoint,
                  lost if counted is not None else "an unknown number (counted as 1)", aside)

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
    if isinstance(p.inputs, np.ndarray):  # the matrix lane: the columns serve decodes such a request into
        assert p.output is not None
        inputs, outputs = [pa.field(MATRIX_INPUT_NAME, pa.list_(pa.float32(), p.inputs.shape[1]))], [p.output]
    else:
        assert isinstance(p.outputs, pa.RecordBatch)
        inputs, outputs = list(p.inputs.schema), list(p.outputs.schema)
    return pa.schema([*fields, pa.field("inputs", pa.struct(inputs)), pa.field("outputs", pa.struct(outputs))])


def _same_schemas(p: _Pending, head: _Pending) -> bool:
    """Whether ``p`` has ``head``'s schema (both Arrow decisions of one endpoint and deployments)."""
    assert isinstance(p.inputs, pa.RecordBatch) and isinstance(head.inputs, pa.RecordBatch)
    return p.inputs.schema.equals(head.inputs.schema) and p.outputs.schema.equals(head.outputs.schema)  # type: ignore[union-attr]


def _values(items: list[_Pending], schema: pa.Schema) -> list[pa.Array]:
    """The ``inputs`` and ``outputs`` struct columns of ``items``, in their order: Arrow batches
    concatenated, the matrix lane's matrices stacked and wrapped as the same columns."""
    fields = [[t.field(i) for i in range(t.num_fields)] for t in (schema.field("inputs").type, schema.field("outputs").type)]
    parts: list[list[pa.Array]] = [[], []]
    for matrix, group in itertools.groupby(items, key=lambda p: isinstance(p.inputs, np.ndarray)):
        run = list(group)
        for side, (values, into) in enumerate(zip(([p.inputs for p in run], [p.outputs for p in run]), parts)):
            if matrix:
                stacked = np.concatenate(values) if len(run) > 1 else values[0]  # (n, k) each (predict_matrix)
                columns = [_matrix_column(np.asarray(stacked), fields[side][0].type)]
            else:
                batches = cast(list[pa.RecordBatch], values)
                columns = [pa.concat_arrays([b.column(i) for b in batches]) for i in range(len(fields[side]))]
            into.append(pa.StructArray.from_arrays(columns, fields=fields[side]))
    return [p[0] if len(p) == 1 else pa.concat_arrays(p) for p in parts]


def _matrix_column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """(n, k) values as the column a model answers or a matrix request decodes to: a fixed-size
    list of k, or (one value a row) the values themselves."""
    if pa.types.is_fixed_size_list(type_):
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=type_.value_type), type=type_)
    return pa.array(values.reshape(-1), type=type_)
