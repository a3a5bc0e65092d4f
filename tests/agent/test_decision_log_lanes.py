"""The decision log on both lanes: the matrix lane (DataPlane.serve_matrix) logs the decisions it
answers itself, and what it logs is what the general path (DataPlane.serve) logs for the same request.

Real agent and coordinator on loopback (tests/conftest.py ``cluster``), the real scikit-learn and
XGBoost models of tests/agent/test_matrix_lane.py (a binary classifier, a multiclass one, a
regressor: fixed-size-list and one-value-a-row outputs). Each request is sent twice: as the lane
takes it, and with its output named, which the lane leaves to the general path; the agent's own
count (DataPlane.answered_by_matrix) says which path answered each.
"""

from __future__ import annotations

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.agent.test_matrix_lane import MODELS, deploy_compiled
from tests.conftest import wait_until

PER_DECISION = ("decision_id", "request_id", "time")  # what differs between two decisions of the same request


@pytest.fixture(params=list(MODELS))
def served(request, cluster, tmp_path):
    model, _, rows = MODELS[request.param]()
    deploy_compiled(cluster, tmp_path, model)
    with cluster.client as client:
        client.set_decision_log("ep", 1.0)
    wait_until(lambda: (r := cluster.agent.router.table.get("ep")) is not None and r.decision_sample_rate == 1.0)
    with grpc.insecure_channel(cluster.agent.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), cluster.agent, rows


def infer(stub: pb_grpc.GRPCInferenceServiceStub, rows: np.ndarray, request_id: str,
          output: str = "") -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name="ep", id=request_id)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    if output:
        request.outputs.add(name=output)  # the lane leaves a request naming its outputs to serve
    return stub.ModelInfer(request)


def bits(decision: pa.Table) -> bytes:
    """A decision's rows but for what differs between two decisions of one request, bit for bit
    (Table.equals holds a NaN unequal to itself)."""
    from agent.decision_files import to_ipc

    return to_ipc(decision.drop_columns(list(PER_DECISION)).combine_chunks())


def test_the_matrix_lane_logs_the_decisions_serve_would_log(served) -> None:
    stub, agent, rows = served
    rows = rows.copy()
    rows[1, 2] = np.nan  # a missing value, logged as served
    output = infer(stub, rows[:1], "probe").outputs[0].name
    requests = [rows[i:i + 1] for i in range(4)] + [rows[4:7]]  # one-row requests and one of three rows
    lane_before = agent.dataplane.answered_by_matrix
    for i, X in enumerate(requests):
        infer(stub, X, f"lane-{i}")
    assert agent.dataplane.answered_by_matrix - lane_before == len(requests)
    for i, X in enumerate(requests):
        infer(stub, X, f"general-{i}", output)
    assert agent.dataplane.answered_by_matrix - lane_before == len(requests)

    tables = list(agent.decisions.read("ep", limit=10_000))
    assert len(tables) == 1  # one schema: both lanes' decisions went to the same file
    table = tables[0]
    assert agent.decisions.dropped() == {}
    for i, X in enumerate(requests):
        lane = table.filter(pc.equal(table["request_id"], f"lane-{i}"))
        general = table.filter(pc.equal(table["request_id"], f"general-{i}"))
        assert lane.num_rows == general.num_rows == len(X)
        assert bits(lane) == bits(general)
        logged = lane["inputs"].combine_chunks().field("input").flatten().to_numpy(zero_copy_only=False)
        assert logged.astype(np.float32).tobytes() == X.tobytes()  # NaN included, bit for bit
        assert lane["arm"].to_pylist() == ["primary"] * len(X) and lane["row"].to_pylist() == list(range(len(X)))
    schema = table.schema
    assert schema.field("inputs").type == pa.struct([pa.field("input", pa.list_(pa.float32(), rows.shape[1]))])
    assert schema.field("outputs").type.field(0).name == output
