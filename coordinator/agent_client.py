"""Calls from the coordinator to agents (AgentService), one channel per agent address."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from milepost.core import auth
from milepost.core.errors import DeadlineExceeded, MilepostError, Unavailable
from milepost.core.settings import get_settings
from milepost.core.tls import Tls, open_channel
from milepost.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger("milepost.coordinator")


class AgentClients:
    """Every call carries ``control_token``, the coordinator's identity its agents accept."""

    def __init__(self, control_token: str, tls: Tls | None = None) -> None:
        self._control_token = control_token
        self._tls = tls
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def _stub(self, address: str) -> agent_pb2_grpc.AgentServiceStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = auth.with_token(open_channel(address, self._tls), self._control_token)
                self._channels[address] = channel
        return agent_pb2_grpc.AgentServiceStub(channel)

    def load(self, address: str, request: agent_pb2.LoadRequest, timeout: float | None = None) -> None:
        self._call(address, "Load", request, timeout or get_settings().load_timeout_s)

    def unload(self, address: str, deployment_id: str, timeout: float | None = None) -> None:
        request = agent_pb2.UnloadRequest(deployment_id=deployment_id)
        self._call(address, "Unload", request, timeout or get_settings().agent_call_timeout_s)

    def set_routes(self, address: str, table: object, timeout: float | None = None) -> None:
        self._call(address, "SetRoutes", table, timeout or get_settings().agent_call_timeout_s)

    def run_stage(self, address: str, request: agent_pb2.RunStageRequest, timeout: float) -> Any:
        """The streaming RunStage call (iterate it for progress; cancel() cancels the stage)."""
        return self._stub(address).RunStage(request, timeout=timeout)

    def served_arms(self, addresses: list[str], endpoint: str, key: str, timeout: float | None = None) -> list[tuple[str, float]]:
        """(arm, served_at) from each agent that remembers serving ``key`` on ``endpoint``.

        The agents are asked at once and waited for together; one that does not answer in
        time, or cannot (an older agent), is left out: the answer is what is known."""
        request = agent_pb2.ServedArmRequest(endpoint=endpoint, key=key)
        limit = timeout or get_settings().agent_call_timeout_s
        calls = [(address, self._stub(address).ServedArm.future(request, timeout=limit)) for address in addresses]
        found = []
        for address, call in calls:
            try:
                reply = call.result()
            except grpc.RpcError as err:
                reason = _as_error(err, address, "ServedArm").message
                log.info("agent %s could not say which arm served a key: %s", address, reason)
                continue
            if reply.arm:
                found.append((reply.arm, reply.served_at))
        return found

    def _call(self, address: str, method: str, request: object, timeout: float) -> None:
        try:
            getattr(self._stub(address), method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise _as_error(err, address, method) from err

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _as_error(err: grpc.RpcError, address: str, method: str) -> MilepostError:
    """Keep the agent's own status (e.g. INVALID_ARGUMENT for a bad bundle), say which agent."""
    error = MilepostError.from_status(err, f"agent {address} {method}")
    if isinstance(error, DeadlineExceeded):
        return Unavailable(error.message)
    return error
