"""Joining the coordinator and staying known: register, then heartbeat.

The loop never gives up: while the coordinator is down the agent keeps serving
what it has and retries with capped backoff; when the coordinator answers that
it does not know the agent (a fresh store), the agent registers again.

Each heartbeat reports the deployments served, the generation of the route
table held, the per-arm metrics (cumulative), the agent's uptime (so a
restart, which resets the counters, can be told from a quiet arm), whether it
drains, its measured load and the decisions its decision log dropped. A reply that carries a route table is applied
(``apply_reply``). ``beat_now`` sends one at once and waits for the answer: a
drain tells the coordinator without waiting for the next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import grpc

from milepost.core.errors import MilepostError, PermissionDenied, Unauthenticated
from milepost.core.settings import get_settings
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, routing_pb2, types_pb2

log = logging.getLogger("milepost.agent")


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
        draining: Callable[[], bool] = lambda: False,
        decisions_dropped: Callable[[], dict[str, int]] = dict,
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
        self._draining = draining
        self._decisions_dropped = decisions_dropped
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

    def heartbeat_request(self, agent_id: str) -> pb.HeartbeatRequest:
        return pb.HeartbeatRequest(
            agent_id=agent_id,
            deployment_ids=self._deployment_ids(),
            routes_generation=self._routes.generation if self._routes is not None else 0,
            metrics=self._metrics(),
            uptime_s=time.monotonic() - self._started,
            draining=self._draining(),
            load=self._load(),
            decisions_dropped=self._decisions_dropped(),
        )

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
                reply = self._stub.Heartbeat(self.heartbeat_request(info.agent_id), timeout=self._call_timeout_s)
                if not reply.known:
                    self.registered.clear()
                    continue
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
                else:
                    log.debug("coordinator unreachable (%s); retrying in %.1fs", err, backoff)
                self.registered.clear()
                with self._answered:  # a drain waiting on beat_now goes on without the coordinator
                    self._tried = self._sent + 1
                    self._answered.notify_all()
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self._max_backoff_s)
