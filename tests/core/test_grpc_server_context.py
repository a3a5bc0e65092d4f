"""The sync context that handlers get from milepost.core.grpc_server: ``add_callback`` keeps the
sync server's promise (the callback runs once the call ends) for a handler on a worker and for
one run on the event loop (inline_methods), on a real server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from milepost.core.auth import OPEN, AuthInterceptor
from milepost.core.grpc_server import Server, new_server
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import wait_until

SERVICE = "/inference.GRPCInferenceService/"


class _Recording(pb_grpc.GRPCInferenceServiceServicer):
    """ServerLive runs on a worker, ModelInfer on the event loop; each adds a callback named after it."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, bool]] = []  # (which call, whether it was still active then)
        self.added: list[bool] = []
        self.ran_on: list[str] = []

    def _add(self, name: str, context: grpc.ServicerContext) -> None:
        self.ran_on.append(threading.current_thread().name)
        self.added.append(context.add_callback(lambda: self.ended.append((name, context.is_active()))))

    def ServerLive(self, request, context):  # noqa: N802 - the gRPC method's name
        self._add("live", context)
        return pb.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):  # noqa: N802
        self._add("infer", context)
        return pb.ModelInferResponse(model_name=request.model_name)

    def ServerReady(self, request, context):  # noqa: N802 - adds nothing
        return pb.ServerReadyResponse(ready=True)


@pytest.fixture
def served() -> Iterator[tuple[_Recording, pb_grpc.GRPCInferenceServiceStub]]:
    servicer = _Recording()
    rules = {SERVICE + m: OPEN for m in ("ServerLive", "ModelInfer", "ServerReady")}
    server: Server = new_server(AuthInterceptor(lambda _token: None, rules),
                                inline_methods=frozenset({SERVICE + "ModelInfer"}))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, pb_grpc.GRPCInferenceServiceStub(channel)
    server.stop(0).wait(10)


def test_callbacks_run_once_the_call_has_ended_on_a_worker_and_on_the_loop(served) -> None:
    servicer, stub = served
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ModelInfer(pb.ModelInferRequest(model_name="m"), timeout=10).model_name == "m"
    for _ in range(20):  # calls that add no callback leave nothing behind
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    wait_until(lambda: len(servicer.ended) == 2, timeout=10)
    assert servicer.added == [True, True]
    assert sorted(servicer.ended) == [("infer", False), ("live", False)]
    assert servicer.ran_on[0].startswith("grpc") and servicer.ran_on[1] == "grpc-loop"
