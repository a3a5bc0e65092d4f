"""Joining the coordinator and staying known: register, then heartbeat.

The loop never gives up: while the coordinator is down the agent keeps serving
what it has and retries with capped backoff; when the coordinator answers that
it does not know the agent (a fresh store), the agent registers again.

Each heartbeat reports the deployments served, the generation of the route
table held, the per-arm metrics (cumulative), the agent's uptime (so a
restart, which resets the counters, can be told from a quiet arm), whether it
drains, its measured load, the GPU memory its replicas and stages reserve on each GPU
(``gpu_rooms``: what placement starts from) and the decisions its decision log dropped. A reply that
carries a route table is applied (``apply_reply``). ``beat_now`` sends one at once and
waits for the answer: a drain tells the coordinator without waiting for the next interval.

ML health rides along: the drift windows its deployments closed
(scoring_core.drift.LiveWindow.pending; one open for ``drift_window_s`` is closed as the
heartbeat is built, so quiet traffic ships its windows too) and the requests scored with a key
(``ScoredKeys``), each sent until a reply acknowledges the heartbeat that carried it
(the coordinator keeps a window once: a repeat after a lost reply is harmless).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np
import pyarrow as pa

from milepost.core.errors import MilepostError, PermissionDenied, Unauthenticated
from milepost.core.settings import get_settings
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, routing_pb2, types_pb2
from scoring_core.drift import ClosedWindow, LiveWindow, numeric_output, primary_output

if TYPE_CHECKING:
    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.routing.route_table import Route

# (endpoint, deployment id, its live window) of each hosted deployment whose bundle has a baseline.
DriftSources = Callable[[], list[tuple[str, str, LiveWindow]]]
MAX_WINDOWS_PER_BEAT = 32  # a heartbeat stays small; the rest go with the next ones
MAX_COUNTS_PER_BEAT = 100_000  # bin counts in one heartbeat, whatever the number of features
MAX_KEYS_PER_BEAT = 5_000
MAX_SCORED_ROWS_PER_BEAT = 50_000  # rows of scored keys in one heartbeat (one request at least)
MAX_ROWS_PER_KEY = 10_000  # rows of a keyed request that are judged (its first)
MAX_ATTRIBUTES = 16  # parameters and group columns kept per scored key; a parameter's value cut to 256 characters
MAX_VALUE = 64  # characters kept of a group column's value

log = logging.getLogger("milepost.agent")


class ScoredKeys:
    """Requests scored with a key, waiting for a heartbeat to take them to the coordinator, which
    judges the outcomes fed back by key against them (coordinator.health). Per request: its
    key, the arm that answered, every row's prediction (a value, P(class 1) of two
    probabilities, or the index of the largest of more; its first ``MAX_ROWS_PER_KEY`` rows) and
    the attributes fairness can group its rows by: its other parameters, and each row's text,
    integer and boolean input columns (a parameter wins over a column of its name). Bounded: past
    ``keep`` requests or ``keep_rows`` rows waiting, the oldest are forgotten. ``offer`` is called
    on the data path: it keeps references to the Arrow columns, and the messages are built off it,
    in ``pending``."""

    def __init__(self, keep: int = 50_000, clock: Callable[[], float] = time.time, keep_rows: int = 500_000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, _Scored]] = deque()
        self._keep, self._keep_rows, self._rows = keep, keep_rows, 0
        self._seq = 0

    def offer(self, route: Route | None, request: InferenceRequest, inputs: Any, response: InferenceResponse) -> None:
        """A request the data plane answered through a route (``inputs``: its decoded batch); kept
        when it carried the route's key and its primary output is numeric."""
        policy = route.policy if route is not None else None
        key = request.parameters.get(policy.key_parameter, "") if policy is not None else ""
        outputs = response.batch
        if not key or not response.arms or outputs.num_rows == 0 or not numeric_output(outputs.column(0).type):
            return
        parameters = {k: v[:256] for k, v in itertools.islice(
            ((k, v) for k, v in request.parameters.items() if not k.startswith("milepost-")), MAX_ATTRIBUTES)}
        rows = min(outputs.num_rows, MAX_ROWS_PER_KEY)
        columns = {name: column.slice(0, rows) for name, column in group_columns(inputs).items() if name not in parameters}
        scored = _Scored(request.name, key, response.arms[0], outputs.column(0).slice(0, rows), self._clock(),
                         parameters, dict(itertools.islice(columns.items(), MAX_ATTRIBUTES - len(parameters))))
        with self._lock:
            self._seq += 1
            self._pending.append((self._seq, scored))
            self._rows += rows
            while len(self._pending) > self._keep or self._rows > self._keep_rows:
                self._rows -= len(self._pending.popleft()[1].outputs)

    def pending(self, limit: int = MAX_KEYS_PER_BEAT, rows: int = MAX_SCORED_ROWS_PER_BEAT) -> tuple[list[pb.ScoredKey], int]:
        """The oldest waiting (up to ``limit`` requests and ``rows`` rows, at least one), as messages,
        and the number to acknowledge them with; a request with no finite prediction is left out."""
        taken: list[tuple[int, _Scored]] = []
        total = 0
        with self._lock:
            for seq, scored in self._pending:
                if len(taken) >= limit or (taken and total + len(scored.outputs) > rows):
                    break
                taken.append((seq, scored))
                total += len(scored.outputs)
        return _messages([scored for _, scored in taken]), taken[-1][0] if taken else 0

    def acknowledge(self, seq: int) -> None:
        with self._lock:
            while self._pending and self._pending[0][0] <= seq:
                self._rows -= len(self._pending.popleft()[1].outputs)


@dataclass(frozen=True)
class _Scored:
    """A request scored with a key, as the data plane left it: references to its Arrow columns."""

    endpoint: str
    key: str
    arm: str
    outputs: Any  # the primary output column
    at: float
    parameters: dict[str, str]
    columns: dict[str, Any]  # group columns: name -> Arrow array

    def message(self, predictions: list[float]) -> pb.ScoredKey | None:
        """Its message, with its rows' ``predictions`` (scoring_core.drift.primary_output); None when none is finite:
        nothing that feedback could be judged against."""
        if not any(map(math.isfinite, predictions)):
            return None
        values = {name: [None if v is None else str(v)[:MAX_VALUE] for v in column.to_pylist()]
                  for name, column in self.columns.items()}
        first = {name: v[0] for name, v in values.items() if v[0] is not None}
        message = pb.ScoredKey(endpoint=self.endpoint, key=self.key, arm=self.arm,
                               prediction=predictions[0] if math.isfinite(predictions[0]) else math.nan, at=self.at,
                               attributes={**first, **self.parameters})
        if len(predictions) > 1:
            message.predictions.extend(predictions)
            for name, v in values.items():
                message.columns[name].values.extend("" if x is None else x for x in v)
        return message


def _messages(scored: list[_Scored]) -> list[pb.ScoredKey]:
    """Their messages, in order; the predictions of requests whose outputs have one type are
    read in one pass (most heartbeats: all of them)."""
    predictions: dict[int, list[float]] = {}
    by_type: dict[Any, list[int]] = {}
    for i, s in enumerate(scored):
        by_type.setdefault(s.outputs.type, []).append(i)
    for indexes in by_type.values():
        together = primary_output(pa.concat_arrays([scored[i].outputs for i in indexes])).astype(np.float64).tolist()
        start = 0
        for i in indexes:
            end = start + len(scored[i].outputs)
            predictions[i], start = together[start:end], end
    return [m for i, s in enumerate(scored) if (m := s.message(predictions[i])) is not None]


def group_columns(inputs: Any) -> dict[str, Any]:
    """The text, integer and boolean columns of a batch, by name (a tensor input has none)."""
    return {field.name: column for field, column in zip(inputs.schema, inputs.columns)
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_integer(field.type)
            or pa.types.is_boolean(field.type) or pa.types.is_dictionary(field.type)}


class RouteHolder(Protocol):
    @property
    def generation(self) -> int: ...

    def apply(self, message: routing_pb2.RouteTable, *, from_heartbeat: bool = False) -> bool: ...

    def registered(self) -> None: ...


class Registration:
    def __init__(
        self, channel: grpc.Channel, info: Callable[[], types_pb2.AgentInfo],
        deployment_ids: Callable[[], list[str]], *,
        routes: RouteHolder | None = None,
        metrics: Callable[[], list[routing_pb2.ArmMetrics]] | None = None,
        load: Callable[[], types_pb2.AgentLoad] | None = None,
        gpu_rooms: Callable[[], list[types_pb2.GpuRoom]] = list,
        draining: Callable[[], bool] = lambda: False,
        decisions_dropped: Callable[[], dict[str, int]] = dict,
        drift_windows: DriftSources = list,
        scored_keys: ScoredKeys | None = None,
    ) -> None:
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        settings = get_settings()
        self._call_timeout_s = settings.registration_timeout_s
        self._max_backoff_s = settings.registration_max_backoff_s
        self._info = info
        self._deployment_ids = deployment_ids
        self._routes = routes
        self._metrics = metrics or list
        self._load = load or types_pb2.AgentLoad
        self._gpu_rooms = gpu_rooms
        self._draining = draining
        self._decisions_dropped = decisions_dropped
        self._drift_windows = drift_windows
        self.scored_keys = scored_keys or ScoredKeys()
        # heartbeat number -> the windows it carried, and the scored keys up to which number
        self._carried: dict[int, tuple[list[tuple[LiveWindow, ClosedWindow]], int]] = {}
        self._shipped: weakref.WeakKeyDictionary[LiveWindow, ClosedWindow] = weakref.WeakKeyDictionary()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._answered = threading.Condition()
        self._sent = 0  # heartbeats built so far, numbered from 1
        self._acked = 0  # the number of the last one the coordinator answered
        self._tried = 0  # the number of the last one that was answered or failed
        self.registered = threading.Event()
        # The coordinator's identity: its control calls to this agent carry this token.
        self.control_token = ""
        # The user tokens valid now, by token id (for an agent that requires tokens on inference).
        self.access_tokens: dict[str, pb.TokenDigest] = {}
        self._thread = threading.Thread(target=self._run, name="registration", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self._call_timeout_s + 1)

    def heartbeat_request(self, agent_id: str, number: int = 0) -> pb.HeartbeatRequest:
        """The heartbeat numbered ``number``; its drift windows are acknowledged with it (``acknowledged``)."""
        windows, carried = self._pending_windows()
        keys, keys_seq = self.scored_keys.pending()
        self._carried[number] = (carried, keys_seq)
        load = self._load()
        load.gpus.extend(self._gpu_rooms())
        return pb.HeartbeatRequest(
            agent_id=agent_id,
            deployment_ids=self._deployment_ids(),
            routes_generation=self._routes.generation if self._routes is not None else 0,
            metrics=self._metrics(),
            uptime_s=time.monotonic() - self._started,
            draining=self._draining(),
            load=load,
            decisions_dropped=self._decisions_dropped(),
            drift_windows=windows,
            scored_keys=keys,
        )

    def _pending_windows(self) -> tuple[list[pb.DriftWindow], list[tuple[LiveWindow, ClosedWindow]]]:
        messages: list[pb.DriftWindow] = []
        carried: list[tuple[LiveWindow, ClosedWindow]] = []
        total = 0
        for endpoint, deployment_id, window in self._drift_windows():
            window.close_if_due()  # a window closes by time even when no batch comes to close it
            names = window.names
            for closed in window.pending():
                size = sum(c.size for c in closed.counts)
                if len(messages) >= MAX_WINDOWS_PER_BEAT or (messages and total + size > MAX_COUNTS_PER_BEAT):
                    return messages, carried
                total += size
                messages.append(pb.DriftWindow(
                    endpoint=endpoint, deployment_id=deployment_id, seq=closed.seq, opened_at=closed.opened_at,
                    closed_at=closed.closed_at, rows=closed.rows,
                    counts=[pb.BinCounts(name=n, counts=c.tolist()) for n, c in zip(names, closed.counts)],
                ))
                carried.append((window, closed))
        return messages, carried

    def newest_closed(self, window: LiveWindow) -> ClosedWindow | None:
        """The newest window ``window`` closed (waiting to be shipped, or the last the coordinator
        acknowledged); None before one closes. What the agent's drift gauges show: an open window
        of a few batches would make them swing."""
        waiting = window.pending()
        return waiting[-1] if waiting else self._shipped.get(window)

    def acknowledged(self, number: int) -> None:
        """The coordinator answered heartbeat ``number``: what it carried need not be sent again."""
        windows, keys_seq = self._carried.pop(number, ([], 0))
        for window, closed in windows:
            window.acknowledge(closed.seq)
            if closed.seq > getattr(self._shipped.get(window), "seq", 0):
                self._shipped[window] = closed
        self.scored_keys.acknowledge(keys_seq)
        for older in [n for n in self._carried if n < number]:
            del self._carried[older]

    def beat_now(self, timeout: float) -> bool:
        """Send a heartbeat now and wait for its outcome: True when the coordinator answered it,
        False when it failed (the coordinator is down), or nothing came within ``timeout``."""
        with self._answered:
            wanted = self._sent + 1  # one under way was built before this call and may say otherwise
            self._wake.set()
            self._answered.wait_for(lambda: self._tried >= wanted or self._stop.is_set(), timeout)
            return self._acked >= wanted

    def apply_reply(self, reply: pb.HeartbeatResponse) -> bool:
        """Apply the route table a heartbeat reply carries, if any; True when one was applied."""
        if self._routes is None or not reply.HasField("routes"):
            return False
        return self._routes.apply(reply.routes, from_heartbeat=True)

    def _run(self) -> None:
        interval = 1.0
        backoff = 0.2
        unreachable_since: float | None = None  # said once when the coordinator stops answering, once when it is back
        while not self._stop.is_set():
            try:
                if not self.registered.is_set():
                    reply = self._stub.RegisterAgent(pb.RegisterAgentRequest(agent=self._info()), timeout=self._call_timeout_s)
                    interval = reply.heartbeat_interval_s or interval
                    self.control_token = reply.control_token
                    self.access_tokens = {d.token_id: d for d in reply.access_tokens}
                    if self._routes is not None:
                        self._routes.registered()
                    self.registered.set()
                    log.info("registered with the coordinator as %s", reply.agent_id)
                info = self._info()
                with self._answered:
                    self._sent += 1
                    number = self._sent
                reply = self._stub.Heartbeat(self.heartbeat_request(info.agent_id, number), timeout=self._call_timeout_s)
                if not reply.known:
                    self.registered.clear()
                    continue
                self.acknowledged(number)
                if unreachable_since is not None:
                    log.info("the coordinator answers again (after %.1fs)", time.monotonic() - unreachable_since)
                    unreachable_since = None
                self.access_tokens = {d.token_id: d for d in reply.access_tokens}
                self.apply_reply(reply)
                with self._answered:
                    self._acked = self._tried = number
                    self._answered.notify_all()
                backoff = 0.2
                self._wake.wait(interval)
                self._wake.clear()
            except grpc.RpcError as err:
                refused = MilepostError.from_status(err)
                if isinstance(refused, Unauthenticated | PermissionDenied):
                    log.warning("the coordinator refused this agent: %s (give it a token of role agent: "
                                "milepost agent --token, $MILEPOST_TOKEN)", refused.message)
                elif unreachable_since is None:
                    unreachable_since = time.monotonic()
                    log.warning("cannot reach the coordinator: %s; serving on with the routes it has, and retrying "
                                "with backoff up to %.0fs", refused.message, self._max_backoff_s)
                else:
                    log.debug("coordinator still unreachable (%s); retrying in %.1fs", refused.message, backoff)
                self.registered.clear()
                with self._answered:  # a drain waiting on beat_now goes on without the coordinator
                    self._tried = self._sent + 1
                    self._answered.notify_all()
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self._max_backoff_s)
