"""Joining the coordinator and staying known: register, then heartbeat.

The loop never gives up: while the coordinator is down the agent keeps serving
what it has and retries with capped backoff; when the coordinator answers that
it does not know the agent (a fresh store), the agent registers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, types_pb2

log = logging.getLogger("milepost.agent")
CALL_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 5.0


class Registration:
    def __init__(
        self, channel: grpc.Channel, info: Callable[[], types_pb2.AgentInfo],
        deployment_ids: Callable[[], list[str]],
    ) -> None:
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        self._info = info
        self._deployment_ids = deployment_ids
        self._stop = threading.Event()
        self.registered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registration", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CALL_TIMEOUT_S + 1)

    def _run(self) -> None:
        interval = 1.0
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if not self.registered.is_set():
                    reply = self._stub.RegisterAgent(pb.RegisterAgentRequest(agent=self._info()), timeout=CALL_TIMEOUT_S)
                    interval = reply.heartbeat_interval_s or interval
                    self.registered.set()
                    log.info("registered with the coordinator as %s", reply.agent_id)
                info = self._info()
                reply = self._stub.Heartbeat(
                    pb.HeartbeatRequest(agent_id=info.agent_id, deployment_ids=self._deployment_ids()),
                    timeout=CALL_TIMEOUT_S,
                )
                if not reply.known:
                    self.registered.clear()
                    continue
                backoff = 0.2
                self._stop.wait(interval)
            except grpc.RpcError as err:
                log.debug("coordinator unreachable (%s); retrying in %.1fs", err.code(), backoff)  # type: ignore[attr-defined]
                self.registered.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
