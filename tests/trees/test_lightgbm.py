"""LightGBM models converted from their text dump score as ``Booster.predict`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threshold_rows import at_thresholds

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.lightgbm_text import from_lightgbm_text
from scoring_core.trees import TreeEnsemble

lgb = pytest.importorskip("lightgbm")

TOL = 1e-5


def _train(X, y, rounds=25, categorical="auto", **params):
    params = {"num_leaves": 31, "learning_rate": 0.2, "num_threads": 1, "verbose": -1,
              "min_data_in_leaf": 5, **params}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=categorical), rounds)


def _check(ens, booster, X):
    got = ens.predict(X)
    want = booster.predict(X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    return got


def _split_points(booster):
    feats, thrs = [], []
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node:
                if node["decision_type"] == "<=":
                    feats.append(node["split_feature"])
                    thrs.append(float(node["threshold"]))
                stack += [node["left_child"], node["right_child"]]
    return np.asarray(feats), np.asarray(thrs)


def _categorical_data(data):
    X, y = data
    Xc = X.copy()
    rng = np.random.default_rng(9)
    Xc[:, 6] = rng.integers(0, 20, len(Xc)).astype(np.float32)
    Xc[rng.random(len(Xc)) < 0.1, 6] = np.nan
    yc = y + 1.5 * np.isin(Xc[:, 6], [1, 4, 7, 15])
    return Xc, yc


def test_binary_from_booster(data, probe):
    X, y = data
    booster = _train(X, (y > 0).astype(int), objective="binary")
    ens = from_lightgbm_text(booster)
    assert ens.task == "classification" and ens.classes == [0, 1] and ens.n_outputs == 1
    assert ens.feature_names == booster.feature_name()
    _check(ens, booster, probe)
    _check(ens, booster, np.asfortranarray(probe))
    _check(ens, booster, at_thresholds(X, *_split_points(booster)))


def test_binary_sigmoid_parameter_from_sklearn_wrapper(data, probe):
    X, y = data
    labels = np.where(y > 0, "yes", "no")
    clf = lgb.LGBMClassifier(n_estimators=20, sigmoid=0.7, num_threads=1, verbose=-1).fit(X, labels)
    ens = from_lightgbm_text(clf)
    assert ens.classes == ["no", "yes"]
    got = _check(ens, clf.booster_, probe)
    np.testing.assert_allclose(got, clf.predict_proba(probe)[:, 1], atol=TOL)


def test_multiclass_from_text_file(data, probe, tmp_path):
    X, y = data
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    booster = _train(X, labels, rounds=15, objective="multiclass", num_class=3)
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    ens = from_lightgbm_text(str(path))
    assert ens.n_outputs == 3 and ens.classes == [0, 1, 2]
    _check(ens, booster, probe)
    np.testing.assert_array_equal(from_lightgbm_text(path).predict(probe), ens.predict(probe))
    np.testing.assert_array_equal(from_lightgbm_text(path.read_text()).predict(probe),
                                  ens.predict(probe))


def test_regression_from_sklearn_wrapper(data, probe):
    X, y = data
    reg = lgb.LGBMRegressor(n_estimators=30, num_threads=1, verbose=-1).fit(X, y)
    ens = from_lightgbm_text(reg)
    assert ens.task == "regression" and ens.classes is None
    got = _check(ens, reg.booster_, probe)
    np.testing.assert_allclose(got, reg.predict(probe), atol=TOL)


def test_deep_trees(data, probe):
    X, y = data
    booster = _train(X, y, rounds=20, num_leaves=255, min_data_in_leaf=1, min_sum_hessian_in_leaf=0)
    ens = from_lightgbm_text(booster)
    assert ens.layout == "compact"  # deeper than the complete layout takes
    _check(ens, booster, probe)
    _check(ens, booster, at_thresholds(X, *_split_points(booster)))


@pytest.mark.parametrize("params", [
    {"zero_as_missing": True},
    {"use_missing": False},
    {"objective": "poisson"},
    {"objective": "regression", "reg_sqrt": True},
    {"objective": "huber"},
    {"objective": "cross_entropy"},
    {"objective": "cross_entropy_lambda"},
    {"objective": "multiclassova", "num_class": 3},
    {"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1},
], ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_other_objectives_and_options(data, probe, params):
    X, y = data
    target = y
    objective = params.get("objective", "regression")
    if objective == "poisson":
        target = np.exp(y / 3)
    elif objective.startswith("cross_entropy"):
        target = 1 / (1 + np.exp(-y))
    elif objective == "multiclassova":
        target = np.digitize(y, [-0.5, 0.5])
    booster = _train(X, target, rounds=12, **params)
    _check(from_lightgbm_text(booster), booster, probe)


def test_categorical_feature(data, probe):
    Xc, yc = _categorical_data(data)
    booster = _train(Xc, yc, rounds=20, categorical=[6], min_data_per_group=5, cat_smooth=1)
    assert "cat_threshold" in booster.model_to_string()
    ens = from_lightgbm_text(booster)
    assert ens.layout == "compact"
    rows = np.concatenate((Xc, probe))
    rows[-40:, 6] = [-3, -1, -0.5, 0, 0.5, 1.5, 19, 20, 40, 3e9] * 4  # invalid and unseen
    _check(ens, booster, rows)


def test_round_trip_through_arrays(data, probe):
    Xc, yc = _categorical_data(data)
    booster = _train(Xc, yc, rounds=10, categorical=[6], min_data_per_group=5, cat_smooth=1)
    ens = from_lightgbm_text(booster)
    params, arrays = ens.to_arrays()
    params = json.loads(json.dumps(params))
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    again = TreeEnsemble.from_arrays(params, arrays)
    np.testing.assert_array_equal(again.predict(probe), ens.predict(probe))


def test_large_batch_parallel_equals_serial(data):
    X, y = data
    booster = _train(X, y, rounds=15, num_leaves=255, min_data_in_leaf=2)
    ens = from_lightgbm_text(booster)
    rng = np.random.default_rng(2)
    big = X[rng.integers(len(X), size=50_000)]
    par = ens.predict(big, parallel=True)
    np.testing.assert_array_equal(par, ens.predict(big, parallel=False))
    np.testing.assert_allclose(par, booster.predict(big), atol=TOL)


def test_unsupported(data):
    X, y = data
    labels = np.clip(np.round(y + 2), 0, 4).astype(int)[:200]
    rank = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1,
                      "min_data_in_leaf": 5}, lgb.Dataset(X[:200], labels, group=[100, 100]), 2)
    with pytest.raises(Unimplemented, match="lambdarank"):
        from_lightgbm_text(rank)
    linear = _train(np.nan_to_num(X), y, rounds=2, linear_tree=True)
    with pytest.raises(Unimplemented, match="linear"):
        from_lightgbm_text(linear)


def test_malformed_input(data):
    X, y = data
    text = _train(X, y, rounds=2).model_to_string()
    with pytest.raises(InvalidArgument):
        from_lightgbm_text("tree\nversion=v4\nnum_class=1\n")  # no trees
    broken = text.replace("left_child=", "left_child=99 ", 1)
    with pytest.raises(InvalidArgument):
        from_lightgbm_text(broken)
    with pytest.raises(InvalidArgument):
        from_lightgbm_text("/nonexistent/model.txt")


def test_complete_layout(data, probe):
    X, y = data
    booster = _train(X, (y > 0).astype(int), rounds=15, objective="binary", zero_as_missing=True,
                     max_depth=6, num_leaves=40)
    ens = from_lightgbm_text(booster)
    params, arrays = ens.to_arrays()
    for layout in ("complete", "compact"):
        params["layout"] = layout
        _check(TreeEnsemble.from_arrays(params, arrays), booster, probe)
