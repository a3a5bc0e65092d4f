"""The matrix lane (DataPlane.serve_matrix): the common request, one raw FP32 matrix, served without Arrow.

Real agent and coordinator on loopback (tests/conftest.py ``cluster``), real scikit-learn and
XGBoost models trained here. Each answer of the lane is compared byte for byte with the general
path's answer to the same request (asked with its output named, which the lane leaves to the
general path), and with the library's own prediction; the agent's own count
(DataPlane.answered_by_matrix) says which path answered.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import scoring_core
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import wait_until

FEATURES = 12


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(700, FEATURES)).astype(np.float32)
    return X, X[:, 0] + 0.5 * X[:, 1] - X[:, 2] * X[:, 3]


def _xgboost_binary():
    import xgboost

    X, y = _data()
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=4).fit(X[:500], (y[:500] > 0).astype(int))
    return model, model.predict_proba, X[500:]


def _sklearn_multiclass():
    from sklearn.linear_model import LogisticRegression

    X, y = _data(1)
    model = LogisticRegression(max_iter=500).fit(X[:500], np.digitize(y[:500], [-0.5, 0.5]))
    return model, model.predict_proba, X[500:]


def _sklearn_regressor():
    from sklearn.ensemble import RandomForestRegressor

    X, y = _data(2)
    model = RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(X[:500], y[:500])
    return model, model.predict, X[500:]


MODELS = {"xgboost binary": _xgboost_binary, "sklearn multiclass": _sklearn_multiclass,
          "sklearn regressor": _sklearn_regressor}


def deploy_compiled(cluster, tmp_path, model) -> None:
    """``model`` compiled, pushed as "m" and deployed READY as endpoint "ep"."""
    scoring_core.compile(model).save(tmp_path / "bundle")
    with cluster.client as client:
        client.push_model(tmp_path / "bundle", "m")
        assert client.deploy("ep", "m").deployments[0].state == "READY"


@pytest.fixture(params=list(MODELS))
def served(request, cluster, tmp_path):
    model, predict, rows = MODELS[request.param]()
    deploy_compiled(cluster, tmp_path, model)
    wait_until(lambda: cluster.agent.router.has_route("ep"))
    with grpc.insecure_channel(cluster.agent.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), cluster.agent.dataplane, predict, rows


def request_of(rows: np.ndarray, *, name: str = "input", datatype: str = "FP32", outputs: tuple[str, ...] = (),
               parameters: dict[str, str] | None = None, version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="ep", model_version=version, id="r-1")
    request.inputs.add(name=name, datatype=datatype, shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32 if datatype == "FP32" else np.float64).tobytes())
    for output in outputs:
        request.outputs.add(name=output)
    for key, value in (parameters or {}).items():
        request.parameters[key].string_param = value
    return request


def values_of(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], "<f8").reshape(list(response.outputs[0].shape))


def test_the_lane_answers_as_the_general_path_byte_for_byte(served) -> None:
    stub, core, predict, rows = served
    stub.ModelInfer(request_of(rows[:1]))  # a model's first call may compile kernels
    output = stub.ModelInfer(request_of(rows[:1])).outputs[0].name
    for n in (1, 7, 200):
        before = core.answered_by_matrix
        lane = stub.ModelInfer(request_of(rows[:n]))
        assert core.answered_by_matrix == before + 1
        general = stub.ModelInfer(request_of(rows[:n], outputs=(output,)))
        assert core.answered_by_matrix == before + 1, "a request naming its outputs takes the general path"
        assert lane == general
        expected = predict(rows[:n])
        np.testing.assert_allclose(values_of(lane).reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)
        assert lane.parameters["milepost-arm"].string_param == "primary"
        assert lane.id == "r-1" and lane.model_version == general.model_version != ""


def test_statistics_and_arm_metrics_count_the_lane_as_the_general_path(served) -> None:
    stub, core, predict, rows = served
    stub.ModelInfer(request_of(rows[:1]))
    output = stub.ModelInfer(request_of(rows[:1])).outputs[0].name

    def counted() -> tuple[int, int, int, int, float]:
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="ep")).model_stats[0]
        (arm,) = [a for a in core.router.metrics.snapshot() if a.endpoint == "ep"]
        return (stats.inference_count, stats.inference_stats.success.count, arm.requests, arm.predictions,
                arm.prediction_sum)

    deltas = []
    for outputs in ((), (output,)):  # the lane, then the general path, with the same requests
        before = counted()
        for n in (1, 3, 5):
            stub.ModelInfer(request_of(rows[:n], outputs=outputs))
        deltas.append([after - was for after, was in zip(counted(), before)])
    lane, general = deltas
    assert lane[:4] == general[:4] == [9, 3, 3, 9]
    assert lane[4] == pytest.approx(general[4], rel=1e-12)


def test_requests_the_lane_leaves_to_the_general_path(served) -> None:
    stub, core, predict, rows = served
    stub.ModelInfer(request_of(rows[:1]))
    before = core.answered_by_matrix

    with pytest.raises(grpc.RpcError) as wrong_width:
        stub.ModelInfer(request_of(rows[:2, :-1]))
    assert wrong_width.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"but the model has {FEATURES} features" in wrong_width.value.details()

    with pytest.raises(grpc.RpcError) as wrong_name:
        stub.ModelInfer(request_of(rows[:2], name="x"))
    assert wrong_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown input 'x'" in wrong_name.value.details()

    expected = values_of(stub.ModelInfer(request_of(rows[:4], outputs=(stub.ModelInfer(
        request_of(rows[:1], datatype="FP64")).outputs[0].name,))))
    np.testing.assert_array_equal(values_of(stub.ModelInfer(request_of(rows[:4], datatype="FP64"))), expected)
    empty = stub.ModelInfer(request_of(rows[:0]))
    assert list(empty.outputs[0].shape)[:1] == [0]
    keyed = stub.ModelInfer(request_of(rows[:4], parameters={"milepost-key": "customer-7"}))
    np.testing.assert_array_equal(values_of(keyed), expected)
    remembered = core.router.served_keys.arm_for("ep", "customer-7")  # so feedback by key finds its arm
    assert remembered is not None and remembered[0] == "primary"
    version = stub.ModelInfer(request_of(rows[:1])).model_version
    np.testing.assert_array_equal(values_of(stub.ModelInfer(request_of(rows[:4], version=version))), expected)
    assert core.answered_by_matrix == before + 1  # only the request that asked for the version's number


def test_rest_requests_take_the_lane_with_the_same_answer(tmp_path) -> None:
    import json
    import urllib.request

    from tests.agent.served import ENDPOINT, running

    model, predict, rows = _xgboost_binary()
    scoring_core.compile(model).save(tmp_path / "bundle")
    with running(tmp_path / "data", tmp_path / "bundle") as served:
        core = served.agent.dataplane

        def infer(body: dict) -> dict:
            call = urllib.request.Request(f"{served.agent.http_url}/v2/models/{ENDPOINT}/infer",
                                          data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(call, timeout=10) as reply:
                return json.loads(reply.read())

        body = {"id": "q", "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, FEATURES],
                                       "data": rows[:3].ravel().tolist()}]}
        infer(body)  # a model's first call may compile kernels
        before = core.answered_by_matrix
        lane = infer(body)
        assert core.answered_by_matrix == before + 1
        general = infer({**body, "outputs": [{"name": lane["outputs"][0]["name"]}]})
        assert core.answered_by_matrix == before + 1
        assert lane == general
        np.testing.assert_allclose(np.reshape(lane["outputs"][0]["data"], lane["outputs"][0]["shape"]),
                                   predict(rows[:3]), rtol=1e-5, atol=1e-6)


def test_drift_windows_count_the_lane_as_the_general_path(monkeypatch, cluster, tmp_path) -> None:
    from milepost.core.settings import reset_settings

    rows_sent = 1 + 5 + 30
    monkeypatch.setenv("MILEPOST_DRIFT_WINDOW_ROWS", str(rows_sent))  # one window for each path's requests
    monkeypatch.setenv("MILEPOST_DRIFT_BUDGET", "1")  # every batch counted
    reset_settings()
    try:
        model, predict, rows = _xgboost_binary()
        X, _ = _data()
        compiled = scoring_core.compile(model, baseline=X[:500])
        compiled.save(tmp_path / "bundle")
        output = compiled.output_schema.field(0).name
        with cluster.client as client:
            client.push_model(tmp_path / "bundle", "m")
            endpoint = client.deploy("ep", "m")
        wait_until(lambda: cluster.agent.router.has_route("ep"))
        core = cluster.agent.dataplane
        drift = core.deployments.get(endpoint.deployments[0].deployment_id).model.drift
        # The windows stay queued for this test to read: a heartbeat would otherwise have the
        # coordinator's acknowledgement drop them from pending() at any moment.
        monkeypatch.setattr(drift, "acknowledge", lambda seq: None)
        with grpc.insecure_channel(cluster.agent.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            already = drift.counted
            before = core.answered_by_matrix
            for outputs in ((), (output,)):
                for start, n in ((100, 1), (110, 5), (150, 30)):
                    stub.ModelInfer(request_of(rows[start:start + n], outputs=outputs))
            assert core.answered_by_matrix == before + 3
        assert drift.counted == already + 6
        *_, lane, general = drift.pending()
        assert lane.rows == general.rows == rows_sent
        for by_lane, by_general in zip(lane.counts, general.counts):
            np.testing.assert_array_equal(by_lane, by_general)
    finally:
        reset_settings()
