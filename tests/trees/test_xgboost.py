"""XGBoost models converted from their JSON dump score as ``Booster.predict`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threshold_rows import at_thresholds

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.xgboost_json import from_xgboost_json
from scoring_core.trees import TreeEnsemble

xgb = pytest.importorskip("xgboost")

TOL = 1e-5


def _train(X, y, rounds=25, **params):
    params = {"max_depth": 5, "eta": 0.3, "nthread": 1, **params}
    return xgb.train(params, xgb.DMatrix(X, y), rounds)


def _reference(booster, X):
    return booster.predict(xgb.DMatrix(X))


def _check(ens, booster, X):
    got = ens.predict(X)
    want = _reference(booster, X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    return got


def _split_points(booster):
    doc = json.loads(booster.save_raw("json"))
    feats, thrs = [], []
    for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
        internal = np.asarray(tree["left_children"]) != -1
        feats.extend(np.asarray(tree["split_indices"])[internal])
        thrs.extend(np.asarray(tree["split_conditions"], np.float64)[internal])
    return np.asarray(feats), np.asarray(thrs)


def test_binary_from_booster(data, probe):
    X, y = data
    booster = _train(X, (y > 0).astype(int), objective="binary:logistic")
    ens = from_xgboost_json(booster)
    assert ens.task == "classification" and ens.classes == [0, 1]
    assert ens.n_outputs == 1 and ens.n_features == X.shape[1]
    assert ens.feature_names == [f"f{i}" for i in range(X.shape[1])]
    _check(ens, booster, probe)
    _check(ens, booster, np.asfortranarray(probe))
    _check(ens, booster, at_thresholds(X, *_split_points(booster)))


def test_multiclass_from_sklearn_wrapper(data, probe):
    X, y = data
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=4, n_jobs=1).fit(X, labels)
    ens = from_xgboost_json(clf)
    assert ens.n_outputs == 3 and ens.classes == [0, 1, 2]
    got = _check(ens, clf.get_booster(), probe)
    np.testing.assert_allclose(got, clf.predict_proba(probe), atol=TOL)


def test_regression_from_json_file(data, probe, tmp_path):
    X, y = data
    reg = xgb.XGBRegressor(n_estimators=30, max_depth=6, n_jobs=1).fit(X, y)
    path = tmp_path / "model.json"
    reg.save_model(path)
    ens = from_xgboost_json(str(path))
    assert ens.task == "regression" and ens.classes is None and ens.n_outputs == 1
    _check(ens, reg.get_booster(), probe)
    # the same from a Path, from the bytes, and from the text
    for source in (path, path.read_bytes(), path.read_text()):
        np.testing.assert_array_equal(from_xgboost_json(source).predict(probe), ens.predict(probe))


def test_feature_names_from_model(data):
    X, y = data
    names = [f"col_{i}" for i in range(X.shape[1])]
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(X, y, feature_names=names), 3)
    assert from_xgboost_json(booster).feature_names == names


@pytest.mark.parametrize("objective,target", [
    ("reg:logistic", "unit"),
    ("binary:logitraw", "binary"),
    ("binary:hinge", "binary"),
    ("multi:softmax", "three"),
    ("count:poisson", "positive"),
    ("reg:gamma", "positive"),
    ("reg:tweedie", "positive"),
    ("reg:absoluteerror", "raw"),
    ("reg:pseudohubererror", "raw"),
    ("survival:cox", "positive"),
])
def test_other_objectives(data, probe, objective, target):
    X, y = data
    targets = {
        "unit": 1 / (1 + np.exp(-y)),
        "binary": (y > 0).astype(int),
        "three": np.digitize(y, [-0.5, 0.5]),
        "positive": np.exp(y / 3),
        "raw": y,
    }
    extra = {"num_class": 3} if objective.startswith("multi:") else {}
    booster = _train(X, targets[target], rounds=10, objective=objective, **extra)
    _check(from_xgboost_json(booster), booster, probe)


def test_dart_weights(data, probe):
    X, y = data
    booster = _train(X, y, rounds=15, booster="dart", rate_drop=0.3, skip_drop=0.0, seed=1)
    weights = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["weight_drop"]
    assert any(w != 1.0 for w in weights)
    _check(from_xgboost_json(booster), booster, probe)


def test_multi_target_regression(data, probe):
    X, y = data
    Y = np.stack([y, np.nan_to_num(X[:, 4])], axis=1)
    booster = _train(X, Y, rounds=10, objective="reg:squarederror")
    ens = from_xgboost_json(booster)
    assert ens.n_outputs == 2
    _check(ens, booster, probe)


def test_categorical_feature(data, probe):
    X, y = data
    Xc = X.copy()
    rng = np.random.default_rng(5)
    Xc[:, 5] = rng.integers(0, 12, len(Xc)).astype(np.float32)
    Xc[rng.random(len(Xc)) < 0.1, 5] = np.nan
    yc = y + (np.nan_to_num(Xc[:, 5], nan=0) % 3 == 0)
    types = ["q"] * X.shape[1]
    types[5] = "c"
    dtrain = xgb.DMatrix(Xc, yc, feature_types=types, enable_categorical=True)
    booster = xgb.train({"max_depth": 4, "nthread": 1, "max_cat_to_onehot": 1}, dtrain, 15)
    ens = from_xgboost_json(booster)
    assert ens.layout == "compact"
    rows = np.concatenate((Xc, probe))
    rows[-40:, 5] = [-3, -1, -0.5, 0, 0.5, 1.5, 11, 12, 40, 1e9] * 4  # invalid and unseen
    want = booster.predict(xgb.DMatrix(rows, feature_types=types, enable_categorical=True))
    np.testing.assert_allclose(ens.predict(rows), want, atol=TOL)


def test_round_trip_through_arrays(data, probe):
    X, y = data
    booster = _train(X, (y > 0).astype(int), objective="binary:logistic")
    ens = from_xgboost_json(booster)
    params, arrays = ens.to_arrays()
    params = json.loads(json.dumps(params))
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    again = TreeEnsemble.from_arrays(params, arrays)
    np.testing.assert_array_equal(again.predict(probe), ens.predict(probe))


def test_large_batch_parallel_equals_serial(data):
    X, y = data
    booster = _train(X, (y > 0).astype(int), objective="binary:logistic")
    ens = from_xgboost_json(booster)
    rng = np.random.default_rng(1)
    big = X[rng.integers(len(X), size=50_000)]
    par = ens.predict(big, parallel=True)
    np.testing.assert_array_equal(par, ens.predict(big, parallel=False))
    np.testing.assert_allclose(par, _reference(booster, big), atol=TOL)


def test_unsupported_objective_and_booster(data):
    X, y = data
    dtrain = xgb.DMatrix(X[:200], (y[:200] > 0).astype(int))
    dtrain.set_group([100, 100])
    rank = xgb.train({"objective": "rank:pairwise", "max_depth": 2, "nthread": 1}, dtrain, 2)
    with pytest.raises(Unimplemented, match="rank:pairwise"):
        from_xgboost_json(rank)
    linear = xgb.train({"booster": "gblinear", "nthread": 1}, xgb.DMatrix(X, y), 2)
    with pytest.raises(Unimplemented, match="gblinear"):
        from_xgboost_json(linear)


def test_malformed_input():
    with pytest.raises(InvalidArgument):
        from_xgboost_json(b"{\"learner\": {\"objective\": 3}}")
    with pytest.raises(InvalidArgument):
        from_xgboost_json("{not json")
    with pytest.raises(InvalidArgument):
        from_xgboost_json(b"\x00\x01binary")
    with pytest.raises(InvalidArgument):
        from_xgboost_json("/nonexistent/model.json")


def test_wrong_input_shape(data):
    X, y = data
    ens = from_xgboost_json(_train(X, y, rounds=2))
    with pytest.raises(InvalidArgument, match="X"):
        ens.predict(X[:, :5])
    assert ens.predict(X[:0]).shape == (0,)


def test_compact_layout_and_input_forms(data, probe):
    X, y = data
    booster = _train(X, y, rounds=15, objective="reg:squarederror", max_depth=7)
    ens = from_xgboost_json(booster)
    assert ens.layout == "complete"
    params, arrays = ens.to_arrays()
    params["layout"] = "compact"
    compact = TreeEnsemble.from_arrays(params, arrays)
    _check(compact, booster, probe)
    _check(ens, booster, probe[::3])  # not contiguous: copied
    np.testing.assert_array_equal(ens.predict(probe.astype(np.float64)), ens.predict(probe))
