"""A coordinator and an agent in this process that serve a real model over gRPC and REST, for the
front-end tests, and Triton's clients run against them (tests/agent/triton_clients.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

ENDPOINT = "lr-api"
CLIENTS = Path(__file__).with_name("triton_clients.py")


@dataclass
class Running:
    coordinator: Any
    agent: Any
    stub: pb_grpc.GRPCInferenceServiceStub  # the agent's gRPC data plane


@contextmanager
def running(data: Path, bundle_dir: Path | None = None, **agent_options: Any) -> Iterator[Running]:
    """A coordinator and an agent (REST on a free port) in this process, the bundle deployed as ENDPOINT."""
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    coordinator = Coordinator(CoordinatorConfig(data_dir=data / "coordinator", port=0))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=data / "agent", port=0, agent_id="front",
                              token=coordinator.local_agent_token(), http_port=0, **agent_options))
    agent.start()
    try:
        assert agent.registration.registered.wait(10)
        if bundle_dir is not None:
            with Client(coordinator.address, token=coordinator.admin_token_file.read_text().strip()) as client:
                client.push_model(bundle_dir, "lr")
                assert client.deploy(ENDPOINT, "lr").deployments[0].state == "READY"
        with grpc.insecure_channel(agent.address) as channel:
            yield Running(coordinator, agent, pb_grpc.GRPCInferenceServiceStub(channel))
    finally:
        agent.stop(grace=0)
        coordinator.stop()


def matrix_request(rows: np.ndarray, request_id: str = "", model: str = ENDPOINT, name: str = "input") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name=name, datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    return request


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], "<f8").reshape(list(response.outputs[0].shape))


def run_triton_client(mode: str, address: str, rows: np.ndarray, tmp_path: Path) -> dict:
    """What tests/agent/triton_clients.py saw, run in a process of its own (see there why)."""
    np.save(tmp_path / "rows.npy", rows)
    done = subprocess.run([sys.executable, str(CLIENTS), mode, address, ENDPOINT, str(tmp_path / "rows.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
