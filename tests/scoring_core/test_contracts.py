"""The contract: ``compile(model).predict`` answers what the source library's own default call
answers, same values, same shape, same dtype; and the agent refuses an input the model does
not have. Real models trained here with XGBoost and LightGBM."""

from __future__ import annotations

import grpc
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import scoring_core
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from tests.conftest import wait_until

RNG = np.random.default_rng(11)
X = RNG.normal(size=(600, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)


def same(got: np.ndarray, expected: np.ndarray, atol: float = 1e-6) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.shape, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def round_tripped(model, tmp_path):
    version = scoring_core.compile(model).save(tmp_path / "bundle")
    return scoring_core.load(tmp_path / "bundle", version=version)


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_an_xgboost_booster_answers_as_booster_predict(objective: str, tmp_path) -> None:
    params = {"objective": objective, "max_depth": 4, **({"num_class": 3} if objective.startswith("multi") else {})}
    label = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1) if objective.startswith("multi") else Y
    booster = xgb.train(params, xgb.DMatrix(X, label=label), 20)
    expected = booster.predict(xgb.DMatrix(X))  # binary: (n,) of P(1), float32
    same(scoring_core.compile(booster).predict(X), expected)
    same(round_tripped(booster, tmp_path).predict(X), expected)
    same(scoring_core.compile(booster).predict(X[:1]), booster.predict(xgb.DMatrix(X[:1])))


def test_an_xgboost_classifier_answers_as_predict_proba() -> None:
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=4).fit(X, Y)
    same(scoring_core.compile(clf).predict(X), clf.predict_proba(X))


def test_a_lightgbm_booster_answers_as_booster_predict(tmp_path) -> None:
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, Y), 20)
    same(scoring_core.compile(booster).predict(X), booster.predict(X), atol=1e-12)
    same(round_tripped(booster, tmp_path).predict(X), booster.predict(X), atol=1e-12)
    clf = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, Y)
    same(scoring_core.compile(clf).predict(X), clf.predict_proba(X), atol=1e-12)


def categorical_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "amount": rng.normal(size=n),
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
        "age": rng.normal(size=n),
        "plan": pd.Categorical(rng.choice(["basic", "pro"], n)),
    })


def test_lightgbm_on_pandas_categoricals_scores_the_same_frame(tmp_path) -> None:
    frame = categorical_frame(3000)
    y = ((frame.amount > 0) & (frame.colour != "green") | (frame.plan == "pro") & (frame.age > 1)).astype(int)
    clf = lgb.LGBMClassifier(n_estimators=40, min_child_samples=5, verbose=-1).fit(frame, y)
    compiled = scoring_core.compile(clf)
    assert {n: str(t) for n, t in zip(compiled.input_schema.names, compiled.input_schema.types)}["colour"] == "string"
    same(compiled.predict(frame), clf.predict_proba(frame), atol=1e-12)
    same(round_tripped(clf, tmp_path).predict(frame), clf.predict_proba(frame), atol=1e-12)
    edge = frame.head(6).copy()  # an unseen category and a missing one, as LightGBM maps them
    edge["colour"] = pd.Categorical(["blue", "purple", None, "red", "green", "blue"])
    same(compiled.predict(edge), clf.predict_proba(edge), atol=1e-12)
    plain = frame.head(6).astype({"colour": str, "plan": str})  # plain strings read the same
    same(compiled.predict(plain), clf.predict_proba(frame.head(6)), atol=1e-12)
    same(compiled.predict(frame.head(1)), clf.predict_proba(frame.head(1)), atol=1e-12)
    assert compiled.predict(frame.head(0)).shape == (0, 2)


def test_a_single_input_with_a_wrong_name_is_invalid_argument(cluster, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "lr")
        client.deploy("named", "lr")
    wait_until(lambda: cluster.agent.router.table.get("named") is not None)
    with grpc.insecure_channel(cluster.agent.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)

        def infer(name: str):
            request = oip.ModelInferRequest(model_name="named")
            request.inputs.add(name=name, datatype="FP32", shape=list(rows.shape))
            request.raw_input_contents.append(rows.astype("<f4").tobytes())
            return stub.ModelInfer(request, timeout=10)

        assert list(infer("input").outputs[0].shape) == [len(rows), 2]
        with pytest.raises(grpc.RpcError) as caught:
            infer("features")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown input 'features'" in caught.value.details() and "'input'" in caught.value.details()
