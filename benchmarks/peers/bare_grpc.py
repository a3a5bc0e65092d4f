"""The ceiling: a Python gRPC server whose ModelInfer does nothing, to show what grpcio allows here.

    python -m benchmarks.peers.bare_grpc {sync,aio,aio-uvloop,aio-uvloop-echo} PORT_FILE

Same grpcio, OIP stubs and server options as the agent (milepost.core.grpc_server.new_server:
64 MiB messages, no SO_REUSEPORT, at most 16 x 8 calls under way), and an empty
ModelInferResponse for every request:
- ``sync``: grpc.server with a pool of 16 threads (the agent's worker count), the handler on a
  pool thread;
- ``aio``: grpc.aio.server, the handler a coroutine on the event loop, no thread at all;
- ``aio-uvloop``: the same on uvloop's event loop, as the agent runs its servers
  (milepost.core.grpc_server);
- ``aio-uvloop-echo`` (not part of the ceiling): the same, except that ModelInfer reads the
  request's FP32 tensor into numpy and answers an (n, 2) FP64 tensor, as any OIP server that
  scores must at least do; how much of the ceiling the protocol's own decoding and encoding
  leave in Python.
Listens on 127.0.0.1 only; writes its port to PORT_FILE and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from milepost.core.grpc_server import DEFAULT_MAX_MESSAGE_BYTES  # noqa: E402
from milepost.inference import grpc_predict_v2_pb2 as pb  # noqa: E402
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

WORKERS = 16  # the agent's (new_server's max_workers)
OPTIONS = [
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]
MODES = ("sync", "aio", "aio-uvloop")  # the ceiling's
ECHO = "aio-uvloop-echo"


class _Empty(pb_grpc.GRPCInferenceServiceServicer):
    def ModelInfer(self, request, context):  # noqa: N802 - the gRPC method's name
        return pb.ModelInferResponse()


class _EmptyAio(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):  # noqa: N802 - the gRPC method's name
        return pb.ModelInferResponse()


class _EchoAio(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):  # noqa: N802 - the gRPC method's name
        n, k = request.inputs[0].shape
        X = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(n, k)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name="probabilities", datatype="FP64", shape=[n, 2])
        response.raw_output_contents.append(np.zeros((X.shape[0], 2)).tobytes())
        return response


def serve_sync(port_file: Path) -> None:
    server = grpc.server(ThreadPoolExecutor(WORKERS), options=OPTIONS, maximum_concurrent_rpcs=WORKERS * 8)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Empty(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port_file.write_text(str(port))
    stop.wait()
    server.stop(0).wait()


async def serve_aio(port_file: Path, servicer: pb_grpc.GRPCInferenceServiceServicer) -> None:
    server = grpc.aio.server(options=OPTIONS, maximum_concurrent_rpcs=WORKERS * 8)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port_file.write_text(str(port))
    await stop.wait()
    await server.stop(0)


def main() -> None:
    mode, port_file = sys.argv[1], Path(sys.argv[2])
    if mode not in (*MODES, ECHO):
        raise SystemExit(f"mode must be one of {(*MODES, ECHO)}, not {mode!r}")
    if mode == "sync":
        serve_sync(port_file)
    elif mode in ("aio-uvloop", ECHO):
        import uvloop

        uvloop.run(serve_aio(port_file, _EchoAio() if mode == ECHO else _EmptyAio()))
    else:
        asyncio.run(serve_aio(port_file, _EmptyAio()))


if __name__ == "__main__":
    main()
