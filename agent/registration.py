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
(scoring_core.drift.LiveWindow.pending) and the requests scored with a key
(``ScoredKeys``), each sent until a reply acknowledges the heartbeat that carried it
(the coordinator keeps a window once: a repeat after a lost reply is harmless).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np
import pyarrow as pa

from milepost.core.errors import MilepostError, PermissionDenied, Unauthenticated
from milepost.core.settings import get_settings
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, routing_pb2, types_pb2
from scoring_core.drift import LiveWindow

if TYPE_CHECKING:
    from agent.dataplane import InferenceRequest, InferenceResponse
    from agent.routing.route_table import Route

# (endpoint, deployment id, its live window) of each hosted deployment whose bundle has a baseline.
DriftSources = Callable[[], list[tuple[str, str, LiveWindow]]]
MAX_WINDOWS_PER_BEAT = 32  # a heartbeat stays small; the rest go with the next ones
MAX_COUNTS_PER_BEAT = 100_000  # bin counts in one heartbeat, whatever the number of features
MAX_KEYS_PER_BEAT = 5_000
MAX_ATTRIBUTES = 16  # request parameters kept per scored key (fairness groups), each value cut to 256 characters

log = logging.getLogger("milepost.agent")


class ScoredKeys:
    """Requests scored with a key, waiting for a heartbeat to take them to the coordinator, which
    judges the outcomes fed back by key against them (coordinator.health). Per request: its
    key, the arm that answered, its first row's prediction (a value, P(class 1) of two
    probabilities, or the index of the largest of more) and its attributes, the groups fairness
    can be judged by: its other parameters, and its first row's text, integer and boolean input
    columns (a parameter wins over a column of its name). Bounded: past ``keep`` waiting, the
    oldest are forgotten. ``offer`` is called on the data path: no I/O."""

    def __init__(self, keep: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, tuple[str, str, str, float, float, dict[str, str]]]] = deque(maxlen=keep)
        self._seq = 0

    def offer(self, route: Route | None, request: InferenceRequest, inputs: Any, response: InferenceResponse) -> None:
        """A request the data plane answered through a route (``inputs``: its decoded batch); kept
        when it carried the route's key."""
        policy = route.policy if route is not None else None
        key = request.parameters.get(policy.key_parameter, "") if policy is not None else ""
        endpoint, arms, parameters, outputs = request.name, response.arms, request.parameters, response.batch
        if not key or not arms or outputs.num_rows == 0:
            return
        attributes = {**group_columns(inputs), **{k: v for k, v in parameters.items() if not k.startswith("milepost-")}}
        attributes = {k: v[:256] for k, v in itertools.islice(attributes.items(), MAX_ATTRIBUTES)}
        prediction = first_prediction(outputs)
        if prediction is None:
            return
        scored = (endpoint, key, arms[0], prediction, self._clock(), attributes)
        with self._lock:
            self._seq += 1
            self._pending.append((self._seq, scored))  # the message is built off the data path, in pending()

    def pending(self, limit: int = MAX_KEYS_PER_BEAT) -> tuple[list[pb.ScoredKey], int]:
        """Up to ``limit`` of the oldest waiting, and the number to acknowledge them with."""
        with self._lock:
            taken = list(itertools.islice(self._pending, limit))
        messages = [pb.ScoredKey(endpoint=e, key=k, arm=a, prediction=p, at=t, attributes=attrs)
                    for _, (e, k, a, p, t, attrs) in taken]
        return messages, taken[-1][0] if taken else 0

    def acknowledge(self, seq: int) -> None:
        with self._lock:
            while self._pending and self._pending[0][0] <= seq:
                self._pending.popleft()


def group_columns(inputs: Any) -> dict[str, str]:
    """The first row's text, integer and boolean columns of a batch, as text (a tensor input has none)."""
    found = {}
    for field, column in zip(inputs.schema, inputs.columns):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_integer(field.type) \
                or pa.types.is_boolean(field.type) or pa.types.is_dictionary(field.type):
            value = column[0].as_py()
            if value is not None:
                found[field.name] = str(value)
    return found


def first_prediction(outputs: Any) -> float | None:
    """The first row's primary output as a number (see ScoredKeys); None when it is not numeric
    (a label as text) or not finite: nothing that feedback could be judged against."""
    column = outputs.column(0)
    width = getattr(column.type, "list_size", None)
    values = column.type.value_type if width is not None else column.type
    if not (pa.types.is_floating(values) or pa.types.is_integer(values) or pa.types.is_boolean(values)):
        return None
    if width is None:
        value = column[0].as_py()
    else:
        row = column.values.slice(column.offset * width, width).to_numpy(zero_copy_only=False).astype(np.float64)
        value = row[-1] if width == 2 else row.argmax() if width > 2 else row[0] if width else None
    return float(value) if value is not None and math.isfinite(value) else None


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
        self._carried: dict[int, tuple[list[tuple[LiveWindow, int]], int]] = {}
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

    def _pending_windows(self) -> tuple[list[pb.DriftWindow], list[tuple[LiveWindow, int]]]:
        messages: list[pb.DriftWindow] = []
        carried: list[tuple[LiveWindow, int]] = []
        total = 0
        for endpoint, deployment_id, window in self._drift_windows():
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
                carried.append((window, closed.seq))
        return messages, carried

    def acknowledged(self, number: int) -> None:
        """The coordinator answered heartbeat ``number``: what it carried need not be sent again."""
        windows, keys_seq = self._carried.pop(number, ([], 0))
        for window, seq in windows:
            window.acknowledge(seq)
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
