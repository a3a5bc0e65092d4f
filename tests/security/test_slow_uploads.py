"""Slow and stalled clients hold no worker that others need (milepost/core/grpc_server.py).

Each slow client here has a TCP connection of its own through a throttled proxy on loopback
that forwards what it sends 1 KiB per 100 ms: a 1 MiB request takes 100 s to arrive. 24 of
them outnumber the server's 16 workers, which a sync gRPC server would give each of them
while it waited for their bytes: then the normal client below timed out, and the
coordinator missed heartbeats and declared the agent lost.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from milepost.core import model_upload
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.v1 import coordinator_pb2_grpc
from tests.conftest import wait_until

SLOW_CLIENTS = 24
MIB = 1 << 20


class ThrottledProxy:
    """Forwards loopback connections to ``port``: the client's bytes 1 KiB per 100 ms, the server's at once."""

    def __init__(self, port: int, chunk: int = 1024, period_s: float = 0.1) -> None:
        self._upstream, self._chunk, self._period_s = port, chunk, period_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(self._chunk if slow else 1 << 16):
                sink.sendall(data)
                if slow:
                    time.sleep(self._period_s)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def slow_channels() -> Iterator[Callable[[int], list[grpc.Channel]]]:
    """``SLOW_CLIENTS`` channels to a loopback port through one throttled proxy, each with a TCP
    connection of its own. After the test the proxy closes first: a stalled call's pending send
    would keep its channel from closing."""
    made: list[tuple[ThrottledProxy, list[grpc.Channel]]] = []

    def open_to(port: int) -> list[grpc.Channel]:
        proxy = ThrottledProxy(port)
        channels = [grpc.insecure_channel(proxy.address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(SLOW_CLIENTS)]
        made.append((proxy, channels))
        return channels

    yield open_to
    for proxy, channels in made:
        proxy.close()
        for channel in channels:
            channel.close()


def matrix_request(rows: np.ndarray, name: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=name)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    return request


def test_slow_inference_uploads_leave_the_data_plane_to_others(cluster, logistic_model, slow_channels) -> None:
    estimator, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        assert client.deploy("lr-api", "lr").deployments[0].state == "READY"
    big = np.random.default_rng(0).normal(size=(MIB // 4 // rows.shape[1], rows.shape[1]))
    slow = [oip_grpc.GRPCInferenceServiceStub(c).ModelInfer.future(matrix_request(big, "lr-api"), timeout=60)
            for c in slow_channels(cluster.agent.port)]
    time.sleep(1.5)  # every slow call has reached the agent and is sending its 1 MiB
    assert not any(call.done() for call in slow)

    with grpc.insecure_channel(cluster.agent.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(10):
            started = time.monotonic()
            response = stub.ModelInfer(matrix_request(rows, "lr-api"), timeout=2)
            assert time.monotonic() - started < 2
            out = response.outputs[0]
            got = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(list(out.shape))
            np.testing.assert_allclose(got, estimator.predict_proba(rows), atol=1e-5)
    assert not any(call.done() for call in slow)  # still arriving, all the while


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> float:
    """Request streams stalled for 2 s are ended (stream_idle_timeout_s), so this test sees them end."""
    monkeypatch.setenv("MILEPOST_STREAM_IDLE_TIMEOUT_S", "2")
    return 2.0


def test_stalled_model_uploads_leave_heartbeats_and_reads_to_others(tmp_path, logistic_model, slow_channels,
                                                                     short_idle) -> None:
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    _, bundle_dir, _, _ = logistic_model
    ttl_s = 1.5
    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0, heartbeat_interval_s=0.2,
                                                agent_ttl_s=ttl_s))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "a", port=0, agent_id="a1",
                              token=coordinator.local_agent_token()))
    agent.start()
    token = coordinator.admin_token_file.read_text().strip()
    try:
        assert agent.registration.registered.wait(10)
        archive = np.random.default_rng(0).bytes(4 * MIB)  # never arrives whole: its first 1 MiB takes 100 s
        uploads = [coordinator_pb2_grpc.CoordinatorServiceStub(c).PushModel.future(
            model_upload.push_requests(f"stalled-{i}", archive), metadata=[("authorization", f"Bearer {token}")],
            timeout=60) for i, c in enumerate(slow_channels(coordinator.port))]

        with Client(coordinator.address, token=token, timeout=2) as client:
            watched_until = time.monotonic() + 3 * ttl_s
            while time.monotonic() < watched_until:
                started = time.monotonic()
                (status,) = client.status().agents
                assert status.state == "ALIVE", "the agent's heartbeats were starved"
                assert client.list_models() == []
                assert time.monotonic() - started < 2
                time.sleep(0.25)

            # The stalled uploads end, each within its idle bound once a stream worker reads it.
            wait_until(lambda: all(u.done() for u in uploads), timeout=30)
            for upload in uploads:
                assert upload.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "stream_idle_timeout_s" in upload.details()
            assert client.push_model(bundle_dir, "lr").name == "lr"  # uploads that keep coming go through
            (status,) = client.status().agents
            assert status.state == "ALIVE"
    finally:
        agent.stop()
        coordinator.stop()
