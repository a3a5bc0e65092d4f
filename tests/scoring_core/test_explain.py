"""Explanations against the libraries' own: XGBoost ``pred_contribs``, LightGBM
``pred_contrib`` and shap's TreeExplainer, within 1e-5, on real models trained here."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
import shap
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor

import scoring_core
from milepost.core.errors import FailedPrecondition
from scoring_core import bundle
from scoring_core.explain import explain_row, explainable
from scoring_core.trees.tree_kernels import FLAG_CATEGORICAL

TOL = 1e-5


def _data(n: int = 600, f: int = 8, nan: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f)).astype(np.float32)
    y = X[:, 0] + X[:, 1] * X[:, 2] + np.sin(3 * X[:, 3]) + rng.normal(scale=0.3, size=n)
    if nan:
        X[rng.random(X.shape) < nan] = np.nan
    return X, y


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL)


def test_xgboost_binary_with_missing_values_matches_pred_contribs() -> None:
    X, y = _data(nan=0.1)
    booster = xgb.train({"max_depth": 5, "objective": "binary:logistic", "nthread": 1},
                        xgb.DMatrix(X, label=y > 0), 30)
    model = scoring_core.compile(booster)
    ours = model.explain(X[:200])
    theirs = booster.predict(xgb.DMatrix(X[:200]), pred_contribs=True)
    _close(ours, theirs)
    margin = booster.predict(xgb.DMatrix(X[:200]), output_margin=True)
    np.testing.assert_allclose(ours.sum(axis=1), margin, rtol=TOL, atol=TOL)


def test_xgboost_multiclass_layout_and_values_match() -> None:
    X, y = _data()
    label = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    booster = xgb.train({"max_depth": 4, "objective": "multi:softprob", "num_class": 3, "nthread": 1},
                        xgb.DMatrix(X, label=label), 15)
    ours = scoring_core.compile(booster).explain(X[:100])
    theirs = booster.predict(xgb.DMatrix(X[:100]), pred_contribs=True)
    assert ours.shape == (100, 3, X.shape[1] + 1)
    _close(ours, theirs)


def test_xgboost_categorical_splits_match() -> None:
    X, y = _data()
    rng = np.random.default_rng(3)
    X[:, 4] = rng.integers(0, 7, size=len(X))
    y = y + (X[:, 4] % 3)
    types = ["q"] * X.shape[1]
    types[4] = "c"
    train = xgb.DMatrix(X, label=y, feature_types=types, enable_categorical=True)
    booster = xgb.train({"max_depth": 4, "nthread": 1, "max_cat_to_onehot": 1}, train, 20)
    ours = scoring_core.compile(booster).explain(X[:150])
    theirs = booster.predict(xgb.DMatrix(X[:150], feature_types=types, enable_categorical=True), pred_contribs=True)
    _close(ours, theirs)


def test_lightgbm_categorical_and_missing_values_match_pred_contrib_and_shap() -> None:
    X, y = _data(nan=0.1)
    rng = np.random.default_rng(5)
    X[:, 5] = rng.integers(0, 9, size=len(X)).astype(np.float32)
    X[rng.random(len(X)) < 0.05, 5] = np.nan
    y = y + np.where(np.isin(X[:, 5], [1, 4, 7]), 2.0, 0.0)
    booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1, "num_threads": 1,
                         "min_data_per_group": 5, "cat_smooth": 1},
                        lgb.Dataset(X, y, categorical_feature=[5]), 40)
    model = scoring_core.compile(booster)
    _, arrays = model.model.ensemble.to_arrays()
    assert np.any(arrays["node_flags"] & FLAG_CATEGORICAL)  # the model does split on categories
    ours = model.explain(X[:200])
    _close(ours, booster.predict(X[:200], pred_contrib=True))
    _close(ours, np.column_stack([shap.TreeExplainer(booster).shap_values(X[:200]),
                                  np.full(200, shap.TreeExplainer(booster).expected_value)]))


def test_lightgbm_multiclass_layout() -> None:
    X, y = _data()
    label = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(X, label), 10)
    ours = scoring_core.compile(booster).explain(X[:50])
    theirs = booster.predict(X[:50], pred_contrib=True).reshape(50, 3, X.shape[1] + 1)
    _close(ours, theirs)


@pytest.mark.parametrize("make, nan", [
    (lambda: RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0), 0.0),
    (lambda: GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), 0.0),
    (lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0), 0.0),
    (lambda: ExtraTreesRegressor(n_estimators=15, max_depth=6, random_state=0), 0.0),
    (lambda: DecisionTreeRegressor(max_depth=6, random_state=0), 0.0),
    (lambda: HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=15, random_state=0), 0.1),
    (lambda: HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=15, random_state=0), 0.1),
], ids=["random_forest", "gradient_boosting_classifier", "gradient_boosting_regressor", "extra_trees",
        "decision_tree", "hist_gradient_boosting_nan", "hist_gradient_boosting_classifier_nan"])
def test_sklearn_trees_match_shap(make, nan: float) -> None:  # noqa: ANN001
    X, y = _data(nan=nan)
    est = make()
    classifier = hasattr(est, "predict_proba")
    est.fit(X, y > 0 if classifier else y)
    ours = scoring_core.compile(est).explain(X[:100])
    explainer = shap.TreeExplainer(est)
    values = np.asarray(explainer.shap_values(X[:100], check_additivity=False))
    expected = float(np.ravel(explainer.expected_value)[0])
    _close(ours, np.column_stack([values, np.full(100, expected)]))


def test_catboost_matches_its_own_shap_values() -> None:
    import catboost  # a dev dependency (pyproject), imported here: it is slow to import
    X, y = _data()
    model = catboost.CatBoostRegressor(iterations=40, depth=4, verbose=0, random_seed=0, thread_count=1,
                                       allow_writing_files=False).fit(X, y)
    ours = scoring_core.compile(model).explain(X[:100])
    _close(ours, model.get_feature_importance(catboost.Pool(X[:100]), type="ShapValues"))
    np.testing.assert_allclose(ours.sum(axis=1), model.predict(X[:100]), rtol=TOL, atol=TOL)


def test_random_forest_classifier_gives_one_margin_a_class() -> None:
    X, y = _data()
    label = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    est = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(X, label)
    ours = scoring_core.compile(est).explain(X[:60])
    values = np.asarray(shap.TreeExplainer(est).shap_values(X[:60]))  # (n, F, classes)
    assert ours.shape == (60, 3, X.shape[1] + 1)
    _close(ours[:, :, :-1], values.transpose(0, 2, 1))
    np.testing.assert_allclose(ours.sum(axis=2), est.predict_proba(X[:60]), rtol=TOL, atol=TOL)


def test_scaled_logistic_pipeline_contributions_are_in_input_space() -> None:
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y > 0)
    ours = scoring_core.compile(pipe).explain(X[:100])
    scaler, lr = pipe[0], pipe[1]
    expected = lr.coef_[0] * (X[:100].astype(np.float64) - scaler.mean_) / scaler.scale_
    np.testing.assert_allclose(ours[:, :-1], expected, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours[:, -1], lr.intercept_[0])
    np.testing.assert_allclose(ours.sum(axis=1), pipe.decision_function(X[:100]), rtol=TOL, atol=TOL)
    # shap's LinearExplainer on the scaled features, background at their mean (zero)
    background = np.zeros((1, X.shape[1]))
    shap_values = shap.LinearExplainer(lr, background).shap_values(scaler.transform(X[:100]))
    np.testing.assert_allclose(ours[:, :-1], shap_values, rtol=TOL, atol=TOL)


def test_one_hot_pipeline_folds_encoded_columns_onto_their_input() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.integers(0, 4, 300), rng.normal(size=300)]).astype(np.float64)
    y = X[:, 0] * 2 + X[:, 1]
    pipe = make_pipeline(
        ColumnTransformer([("cat", OneHotEncoder(), [0]), ("num", StandardScaler(), [1])]), LinearRegression()
    ).fit(X, y)
    ours = scoring_core.compile(pipe).explain(X[:50])
    assert ours.shape == (50, 3)
    encoded = pipe[0].transform(X[:50])
    coef = pipe[1].coef_
    np.testing.assert_allclose(ours[:, 0], encoded[:, :4] @ coef[:4], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours.sum(axis=1), pipe.predict(X[:50]), rtol=TOL, atol=TOL)


def test_covers_survive_a_bundle_and_a_bundle_without_them_says_it_cannot_explain(tmp_path) -> None:  # noqa: ANN001
    X, y = _data()
    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(X, label=y), 5)
    model = scoring_core.compile(booster)
    model.save(tmp_path / "b")
    loaded = scoring_core.load(tmp_path / "b")
    np.testing.assert_array_equal(loaded.explain(X[:20]), model.explain(X[:20]))
    # The same bundle as written before covers were kept: its arrays without them.
    manifest, files = model.manifest_and_files()
    for name in ("node_cover", "leaf_cover"):
        files.pop(manifest["model"]["arrays"].pop(name))
    files[bundle.MANIFEST] = bundle.manifest_bytes(manifest)
    old = scoring_core.model.model_from_manifest(manifest, files, version=None)
    np.testing.assert_array_equal(old.predict(X[:20]), model.predict(X[:20]))
    with pytest.raises(FailedPrecondition, match="no node covers"):
        old.explain(X[:20])
    assert "no node covers" in (explainable(old) or "")


def test_models_that_cannot_be_explained_say_why() -> None:
    X, y = _data(n=200)
    mlp = MLPRegressor(hidden_layer_sizes=(4,), max_iter=50, random_state=0).fit(X, y)
    with pytest.raises(FailedPrecondition, match="'mlp' cannot be explained"):
        scoring_core.compile(mlp).explain(X[:5])


def test_explain_row_names_the_features_that_moved_the_decision() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3))
    y = 5 * X[:, 0] - 2 * X[:, 1]
    model = scoring_core.compile(LinearRegression().fit(X, y), feature_names=["income", "debt", "age"])
    result = explain_row(model, {"income": 1.0, "debt": 0.5, "age": 0.0}, top=2)
    assert [name for name, _, _ in result.top] == ["income", "debt"]
    assert result.top[0][2] == pytest.approx(5.0, abs=1e-6)
    assert result.top[1][2] == pytest.approx(-1.0, abs=1e-6)
    assert result.margin == pytest.approx(4.0, abs=1e-6)
    assert result.text.startswith("margin 4 (bias ")
    assert "income=1 +5" in result.text and "debt=0.5 -1" in result.text
    assert json.loads(json.dumps(result.to_json()))["top"][0]["feature"] == "income"


@pytest.mark.parametrize("rows", [1, 3, 7, 8, 70])  # one by one below 8 rows; blocks (a partial one) beyond
@pytest.mark.parametrize("model", ["xgboost_deep_multiclass", "lightgbm_categorical_nan"])
def test_every_batch_size_takes_the_libraries_values(model: str, rows: int) -> None:
    """Both kernel layouts (treeshap_row for a few rows, treeshap's blocks) on the cases that
    take each branch: several groups, trees deeper than 8 (paths with their own point
    counts), categorical splits, missing values."""
    X, y = _data(nan=0.1, seed=4)
    if model == "xgboost_deep_multiclass":
        label = np.digitize(y, np.quantile(y, [0.33, 0.66]))
        booster = xgb.train({"max_depth": 10, "objective": "multi:softprob", "num_class": 3, "nthread": 1},
                            xgb.DMatrix(X, label=label), 6)
        theirs = booster.predict(xgb.DMatrix(X[:rows]), pred_contribs=True)
    else:
        X[:, 5] = np.where(np.isnan(X[:, 5]), np.nan, np.abs(np.round(X[:, 5] * 3)))
        booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1, "num_threads": 1,
                             "min_data_per_group": 5, "cat_smooth": 1}, lgb.Dataset(X, y, categorical_feature=[5]), 12)
        theirs = booster.predict(X[:rows], pred_contrib=True)
    assert booster is not None
    _close(scoring_core.compile(booster).explain(X[:rows]), theirs)
