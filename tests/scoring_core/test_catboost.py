"""CatBoost models compiled from their JSON export agree with CatBoost's predict.

Real models trained here: binary, multiclass (string labels too), regression losses
(RMSE, MultiRMSE, Poisson), symmetric and non-symmetric trees, features with NaN. The
contract: a classifier gives predict_proba's (n, n_classes) and ``classes[argmax]`` is
predict's label; a regressor gives predict's (n,) (or (n, targets)); float64 throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from milepost.core.errors import InvalidArgument, Unimplemented

catboost = pytest.importorskip("catboost")

TOL = 1e-5


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    X[rng.random(600) < 0.15, 2] = np.nan  # trained with NaN: nan_mode Min, "AsFalse" in the export
    score = X[:, 0] + 0.7 * X[:, 1] - 0.5 * np.nan_to_num(X[:, 2], nan=-1.0) + 0.3 * X[:, 3] * X[:, 4]
    return X, score


def _exported(model: Any, tmp_path: Path) -> scoring_core.CompiledModel:
    path = tmp_path / "model.json"
    model.save_model(str(path), format="json")
    return scoring_core.compile(str(path))


def _fit(cls: Any, X: np.ndarray, y: Any, **params: Any) -> Any:
    return cls(iterations=40, depth=4, verbose=0, random_seed=0, allow_writing_files=False, **params).fit(X, y)


def _check_classifier(compiled: scoring_core.CompiledModel, model: Any, X: np.ndarray) -> float:
    proba = model.predict_proba(X)
    ours = compiled.predict(X)
    assert ours.shape == proba.shape and ours.dtype == proba.dtype == np.float64
    assert np.asarray(compiled.classes)[ours.argmax(axis=1)].tolist() == np.asarray(model.predict(X)).reshape(-1).tolist()
    error = float(np.abs(ours - proba).max())
    assert error <= TOL, error
    return error


def test_binary_classifier(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, score = data
    model = _fit(catboost.CatBoostClassifier, X, (score > 0).astype(int))
    compiled = _exported(model, tmp_path)
    assert compiled.classes == [0, 1] and compiled.metadata["source"] == "catboost"
    _check_classifier(compiled, model, X)
    # Arrow batches (float32 columns, nulls as NaN) score the same rows the same way.
    batch = pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(X.shape[1])], names=compiled.feature_names)
    got = np.asarray(compiled.predict_arrow(batch).column(0).to_pylist())
    np.testing.assert_allclose(got, model.predict_proba(X), rtol=0, atol=TOL)


def test_multiclass_with_string_labels_and_a_live_model(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, score = data
    labels = np.where(score > 0.7, "high", np.where(score > -0.7, "mid", "low"))
    model = _fit(catboost.CatBoostClassifier, X, labels)
    compiled = _exported(model, tmp_path)
    assert compiled.classes == list(model.classes_)
    _check_classifier(compiled, model, X)
    np.testing.assert_array_equal(scoring_core.compile(model).predict(X), compiled.predict(X))


@pytest.mark.parametrize("grow_policy", ["SymmetricTree", "Depthwise", "Lossguide"])
def test_regressor_tree_shapes(grow_policy: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, score = data
    model = _fit(catboost.CatBoostRegressor, X, score, grow_policy=grow_policy)
    compiled = _exported(model, tmp_path)
    ours, expected = compiled.predict(X), model.predict(X)
    assert ours.shape == expected.shape == (len(X),) and ours.dtype == expected.dtype
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("loss", ["Poisson", "MultiRMSE"])
def test_regression_losses(loss: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, score = data
    y = np.random.default_rng(1).poisson(np.exp(score / 3)) if loss == "Poisson" else np.c_[score, X[:, 0] - score]
    model = _fit(catboost.CatBoostRegressor, X, y, loss_function=loss)
    compiled = _exported(model, tmp_path)
    ours, expected = compiled.predict(X), model.predict(X)
    assert ours.shape == expected.shape and ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=TOL)


def test_one_row_empty_batch_and_a_bundle(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, score = data
    model = _fit(catboost.CatBoostRegressor, X, score)
    compiled = _exported(model, tmp_path)
    np.testing.assert_allclose(compiled.predict(X[5:6]), model.predict(X[5:6]), rtol=0, atol=TOL)
    assert compiled.predict(X[:0]).shape == (0,)
    loaded = scoring_core.load(tmp_path / "b", version=compiled.save(tmp_path / "b"))
    np.testing.assert_array_equal(loaded.predict(X), compiled.predict(X))


def test_feature_names_and_wrong_names(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    import pandas as pd

    X, score = data
    frame = pd.DataFrame(X, columns=[f"col{j}" for j in range(X.shape[1])])
    model = _fit(catboost.CatBoostRegressor, frame, score)
    compiled = _exported(model, tmp_path)
    assert compiled.feature_names == list(frame.columns)
    np.testing.assert_allclose(compiled.predict(frame), model.predict(frame), rtol=0, atol=TOL)
    with pytest.raises(InvalidArgument, match="col5"):
        compiled.predict(frame.rename(columns={"col5": "other"}))


def test_categorical_splits_are_refused_and_xgboost_json_still_routes(
        data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    import pandas as pd

    X, score = data
    frame = pd.DataFrame({"a": X[:, 0], "c": np.where(score > 0, "x", "y")})
    model = _fit(catboost.CatBoostClassifier, frame, (score > 0).astype(int), cat_features=["c"])
    with pytest.raises(Unimplemented, match="categorical"):
        _exported(model, tmp_path)
    # A categorical column no tree splits on is an unused input: present, any type.
    constant = frame.assign(c="k")
    model = _fit(catboost.CatBoostClassifier, constant, (score > 0).astype(int), cat_features=["c"])
    compiled = _exported(model, tmp_path)
    assert compiled.unused_columns == {"c"}
    np.testing.assert_allclose(compiled.predict(constant), model.predict_proba(constant), rtol=0, atol=TOL)

    xgboost = pytest.importorskip("xgboost")
    booster = xgboost.train({"max_depth": 2}, xgboost.DMatrix(X, label=score), num_boost_round=3)
    booster.save_model(str(tmp_path / "xgb.json"))
    assert scoring_core.compile(str(tmp_path / "xgb.json")).metadata["source"] == "xgboost"
