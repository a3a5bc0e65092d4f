"""Remote members where agents require tokens on inference (any agent off loopback does):
the agent that routes calls the other with the cluster's own identity (the coordinator's
control token, which every agent holds), so the call is taken, while a client without a token
is refused. Two real agents on loopback with ``inference_auth`` on, a stand-in coordinator."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from tests.agent.conftest import started_mesh
from tests.agent.mesh import Mesh, arm, code_of, direct, infer, route


@pytest.fixture(scope="module")
def strict_mesh(estimators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    for mesh in started_mesh(estimators, tmp_path_factory.mktemp("strict"), inference_auth=True):
        mesh.load("a2", "dep-remote", "lr_b")
        yield mesh


def test_a_remote_member_is_reached_where_agents_require_tokens(strict_mesh) -> None:
    mesh = strict_mesh
    mesh.set_routes(route("far", "single", [arm("remote", "dep-remote")], {"dep-remote": [mesh.address("a2")]}))
    rows = mesh.rows[:5]
    answer = infer(mesh.inference("a1"), "far", rows)  # a1 calls a2 for it
    np.testing.assert_array_equal(answer.values, direct(mesh, "dep-remote", rows, agent="a2"))
    assert answer.arm == "remote"
    with grpc.insecure_channel(mesh.address("a1")) as bare:  # no token: refused, on a1 as on a2
        code, _ = code_of(lambda: infer(oip_grpc.GRPCInferenceServiceStub(bare), "far", rows))
    assert code == grpc.StatusCode.UNAUTHENTICATED
