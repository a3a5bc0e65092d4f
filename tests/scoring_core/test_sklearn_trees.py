"""scikit-learn tree models compiled to the tree-ensemble IR agree with scikit-learn.

Real models trained on small data: decision trees, forests, gradient boosting and
histogram gradient boosting (NaNs, a categorical feature), compared with predict_proba /
predict on numpy, named Arrow columns and a tensor column, including rows that sit on a
threshold's float32 neighbours; save/load; string labels; a large batch in parallel and
serial; Pipelines ending in a tree model; what is refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.ensemble import (  # noqa: E402
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

import scoring_core  # noqa: E402
from milepost.core.errors import InvalidArgument, Unimplemented  # noqa: E402
from scoring_core.convert.sklearn_trees import from_sklearn  # noqa: E402
from scoring_core.trees import TreeEnsemble  # noqa: E402

N, F = 1500, 8
CAT = 6  # the categorical column: codes {0, 2, 3, 5, 8, 11}
CODES = np.array([0, 2, 3, 5, 8, 11], np.float32)
TOL = 1e-5


@pytest.fixture(scope="module")
def tdata() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(17)
    X = rng.normal(size=(N, F)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3] * 2)  # repeated values: thresholds between neighbours
    X[:, CAT] = rng.choice(CODES, size=N)
    score = (X[:, 0] + np.sin(2 * X[:, 1]) + 0.5 * X[:, 2] * X[:, 3]
             + np.isin(X[:, CAT], [2, 8, 11]) * 1.2 + 0.2 * rng.normal(size=N))
    Xnan = X.copy()
    Xnan[rng.random(X.shape) < 0.08] = np.nan
    return {
        "X": X,
        "Xnan": Xnan,
        "y_reg": 3 * score + 1,
        "y_bin": np.where(score > 0.6, "yes", "no"),
        "y_multi": np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75])),
    }


def _at_thresholds(X: np.ndarray, features: np.ndarray, thresholds: np.ndarray, seed: int = 3) -> np.ndarray:
    """Rows with one split feature on a threshold's float32 rounding or one ulp either side."""
    rng = np.random.default_rng(seed)
    rows = []
    with np.errstate(over="ignore"):
        t32 = np.asarray(thresholds, np.float64).astype(np.float32)
    for f, t in zip(features, t32):
        if not np.isfinite(t):
            continue
        for v in (np.nextafter(t, np.float32(-np.inf)), t, np.nextafter(t, np.float32(np.inf))):
            row = X[rng.integers(len(X))].copy()
            row[f] = v
            rows.append(row)
    return np.asarray(rows, np.float32)


def _sklearn_splits(model) -> tuple[np.ndarray, np.ndarray]:
    """(feature, threshold) of every split of a tree model, at most 600 of them."""
    if hasattr(model, "_predictors"):
        nodes = [p.nodes for it in model._predictors for p in it]
        feats = np.concatenate([n["feature_idx"][(n["is_leaf"] == 0) & (n["is_categorical"] == 0)] for n in nodes])
        thrs = np.concatenate([n["num_threshold"][(n["is_leaf"] == 0) & (n["is_categorical"] == 0)] for n in nodes])
        if getattr(model, "is_categorical_", None) is not None:
            cat = np.asarray(model.is_categorical_)
            feats = np.concatenate((np.flatnonzero(cat), np.flatnonzero(~cat)))[feats]
    else:
        trees = [model] if hasattr(model, "tree_") else list(np.asarray(model.estimators_, dtype=object).ravel())
        feats = np.concatenate([t.tree_.feature[t.tree_.children_left >= 0] for t in trees])
        thrs = np.concatenate([t.tree_.threshold[t.tree_.children_left >= 0] for t in trees])
    pick = np.random.default_rng(0).permutation(feats.size)[:600]
    return feats[pick], thrs[pick]


def _expected(model, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def _check(model, X: np.ndarray, assert_agrees, round_trip=None, tmp_path=None):
    compiled = scoring_core.compile(model)
    probe = np.concatenate((X[:600], _at_thresholds(X, *_sklearn_splits(model))))
    assert_agrees(compiled, probe, _expected(model, probe))
    if round_trip is not None:
        loaded = round_trip(compiled, tmp_path, probe)
        assert_agrees(loaded, probe, _expected(model, probe))
    return compiled


# ---- decision trees and forests -------------------------------------------------------

TREE_MODELS = {
    "tree": lambda: DecisionTreeClassifier(max_depth=8, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0),
    "extra": lambda: ExtraTreesClassifier(n_estimators=30, max_depth=10, random_state=0),
    "forest_deep": lambda: RandomForestClassifier(n_estimators=20, max_depth=14, random_state=0),
}


@pytest.mark.parametrize("target", ["y_bin", "y_multi"])
@pytest.mark.parametrize("kind", sorted(TREE_MODELS))
def test_tree_classifiers(kind, target, tdata, assert_agrees, round_trip, tmp_path):
    model = TREE_MODELS[kind]().fit(tdata["Xnan"], tdata[target])
    compiled = _check(model, tdata["Xnan"], assert_agrees, round_trip, tmp_path)
    assert compiled.classes == model.classes_.tolist()
    assert compiled.task == "classification" and compiled.predict_ndim == 2


@pytest.mark.parametrize("make", [
    lambda: DecisionTreeRegressor(max_depth=10, random_state=0),
    lambda: RandomForestRegressor(n_estimators=30, max_depth=10, random_state=0),
    lambda: ExtraTreesRegressor(n_estimators=30, max_depth=6, random_state=0),
], ids=["tree", "forest", "extra"])
def test_tree_regressors(make, tdata, assert_agrees, round_trip, tmp_path):
    model = make().fit(tdata["Xnan"], tdata["y_reg"])
    compiled = _check(model, tdata["Xnan"], assert_agrees, round_trip, tmp_path)
    assert compiled.output_schema.field(0).name == "prediction"
    assert compiled.predict(tdata["Xnan"][:5]).shape == (5,)


def test_string_labels_and_feature_names(tdata, assert_agrees):
    pd = pytest.importorskip("pandas")
    names = [f"col_{i}" for i in range(F)]
    frame = pd.DataFrame(tdata["Xnan"], columns=names)
    model = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(frame, tdata["y_bin"])
    compiled = scoring_core.compile(model)
    assert compiled.classes == ["no", "yes"]
    assert compiled.feature_names == names
    assert compiled.metadata["source"] == "sklearn.ensemble.RandomForestClassifier"
    assert_agrees(compiled, tdata["Xnan"][:500], model.predict_proba(frame.iloc[:500]))
    np.testing.assert_allclose(compiled.predict(frame.iloc[:500]), model.predict_proba(frame.iloc[:500]), atol=TOL)


# ---- gradient boosting ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["y_bin", "y_multi"])
@pytest.mark.parametrize("init", [None, "zero"])
def test_gradient_boosting_classifier(init, target, tdata, assert_agrees, round_trip, tmp_path):
    model = GradientBoostingClassifier(n_estimators=30, max_depth=4, init=init, random_state=0)
    model.fit(tdata["X"], tdata[target])
    _check(model, tdata["X"], assert_agrees, round_trip if init is None else None, tmp_path)


def test_gradient_boosting_exponential_loss(tdata, assert_agrees):
    model = GradientBoostingClassifier(n_estimators=20, max_depth=3, loss="exponential", random_state=0)
    _check(model.fit(tdata["X"], tdata["y_bin"]), tdata["X"], assert_agrees)


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber", "quantile"])
def test_gradient_boosting_regressor(loss, tdata, assert_agrees, round_trip, tmp_path):
    model = GradientBoostingRegressor(n_estimators=30, max_depth=4, loss=loss, subsample=0.8, random_state=0)
    model.fit(tdata["X"], tdata["y_reg"])
    _check(model, tdata["X"], assert_agrees, round_trip if loss == "squared_error" else None, tmp_path)


# ---- histogram gradient boosting: NaNs and a categorical feature ----------------------


def _category_probe(tdata) -> np.ndarray:
    """NaN rows with the categorical column set to known codes, unknown codes, negatives,
    fractions, huge values and NaN."""
    rng = np.random.default_rng(5)
    rows = tdata["Xnan"][:400].copy()
    odd = np.array([1, 4, 7, 12, 100, -1, -0.5, 2.5, 0.5, 1e9, np.nan, 0, 2, 3, 5, 8, 11], np.float32)
    rows[:, CAT] = rng.choice(odd, size=len(rows))
    return rows


@pytest.mark.parametrize("target", ["y_bin", "y_multi"])
@pytest.mark.parametrize("categorical", [False, True])
def test_hist_gradient_boosting_classifier(categorical, target, tdata, assert_agrees, round_trip, tmp_path):
    model = HistGradientBoostingClassifier(
        max_iter=30, max_depth=6, categorical_features=[CAT] if categorical else None, random_state=0)
    model.fit(tdata["Xnan"], tdata[target])
    if categorical:
        assert sum(int(p.nodes["is_categorical"].sum()) for it in model._predictors for p in it) > 0
    compiled = _check(model, tdata["Xnan"], assert_agrees, round_trip, tmp_path)
    rows = _category_probe(tdata)
    assert_agrees(compiled, rows, _expected(model, rows))


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "poisson", "gamma"])
def test_hist_gradient_boosting_regressor(loss, tdata, assert_agrees, round_trip, tmp_path):
    y = tdata["y_reg"] if loss in ("squared_error", "absolute_error") else np.exp(tdata["y_reg"] / 6)
    model = HistGradientBoostingRegressor(max_iter=30, loss=loss, categorical_features=[CAT], random_state=0)
    model.fit(tdata["Xnan"], y)
    compiled = _check(model, tdata["Xnan"], assert_agrees, round_trip if loss == "squared_error" else None, tmp_path)
    rows = _category_probe(tdata)
    assert_agrees(compiled, rows, _expected(model, rows))


def test_hist_gradient_boosting_string_categories(tdata):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(tdata["Xnan"], columns=[f"c{i}" for i in range(F)])
    codes = frame[f"c{CAT}"]
    frame[f"c{CAT}"] = pd.Series(
        np.where(codes.isna(), None, "k" + codes.fillna(0).astype(int).astype(str)), dtype="category")
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, tdata["y_bin"])
    assert model.is_categorical_[CAT]
    compiled = scoring_core.compile(model)
    assert compiled.input_schema.field(f"c{CAT}").type == pa.string()
    plain = frame.astype({f"c{CAT}": object})
    plain.loc[::5, f"c{CAT}"] = "never-seen"
    want = model.predict_proba(plain.astype({f"c{CAT}": "category"}))
    np.testing.assert_allclose(compiled.predict(plain), want, rtol=0, atol=TOL)
    table = pa.Table.from_pandas(plain, preserve_index=False)
    got = compiled.predict_arrow(table.to_batches()[0]).column(0).values.to_numpy().reshape(len(plain), -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ---- large batches, Pipelines ---------------------------------------------------------


def test_large_batch_parallel_equals_serial(tdata):
    rng = np.random.default_rng(9)
    model = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0).fit(tdata["Xnan"], tdata["y_multi"])
    hgb = HistGradientBoostingClassifier(max_iter=20, categorical_features=[CAT], random_state=0)
    hgb.fit(tdata["Xnan"], tdata["y_bin"])
    big = tdata["Xnan"][rng.integers(0, N, size=20_000)]
    for m in (model, hgb):
        compiled = scoring_core.compile(m)
        ens = compiled.model.ensemble
        np.testing.assert_array_equal(ens.predict(big, parallel=True), ens.predict(big, parallel=False))
        np.testing.assert_allclose(compiled.predict(big), _expected(m, big), rtol=0, atol=TOL)
        batch = pa.RecordBatch.from_arrays([pa.array(big[:, j]) for j in range(F)], names=compiled.feature_names)
        got = compiled.predict_arrow(batch).column(0).values.to_numpy().reshape(len(big), -1)
        np.testing.assert_allclose(got, _expected(m, big), rtol=0, atol=TOL)


def _check_pipelines(cases, assert_agrees):
    for pipe, data, y in cases:
        pipe.fit(data, y)
        compiled = scoring_core.compile(pipe)
        assert compiled.metadata["source"] == "sklearn.pipeline.Pipeline"
        assert_agrees(compiled, data[:800], _expected(pipe, data[:800]))


def test_pipelines_ending_in_trees(tdata, assert_agrees):
    pytest.importorskip("scoring_core.convert.sklearn_pipeline")
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    Xnan = tdata["Xnan"]
    _check_pipelines([
        (make_pipeline(SimpleImputer(), GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)),
         Xnan, tdata["y_reg"]),
        (make_pipeline(SimpleImputer(), MinMaxScaler(),
                       RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)),
         Xnan, tdata["y_multi"]),
    ], assert_agrees)


def test_pipelines_standard_scaler_then_trees(tdata, assert_agrees):
    pytest.importorskip("scoring_core.convert.sklearn_pipeline")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xnan = tdata["Xnan"]
    _check_pipelines([
        (make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)),
         Xnan, tdata["y_multi"]),
        (make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20, random_state=0)),
         Xnan, tdata["y_bin"]),
    ], assert_agrees)


# ---- the IR, and what is refused ------------------------------------------------------


def test_vector_leaf_ir_round_trips(tdata):
    model = ExtraTreesClassifier(n_estimators=10, max_depth=5, random_state=0).fit(tdata["Xnan"], tdata["y_multi"])
    ens = from_sklearn(model)
    params, arrays = ens.to_arrays()
    assert params["leaf_width"] == 4 and params["probabilities"] is True and params["divisor"] == 10.0
    again = TreeEnsemble.from_arrays(params, arrays)
    np.testing.assert_array_equal(again.predict(tdata["Xnan"]), ens.predict(tdata["Xnan"]))
    with pytest.raises(InvalidArgument, match="leaf_width"):
        TreeEnsemble.from_arrays({**params, "leaf_width": 3}, arrays)
    with pytest.raises(InvalidArgument, match="tree_group"):
        TreeEnsemble.from_arrays(params, {**arrays, "tree_group": np.ones_like(arrays["tree_group"])})


def test_unsupported_options_are_named(tdata):
    from sklearn.linear_model import LinearRegression

    X, y = tdata["X"], tdata["y_reg"]
    with pytest.raises(Unimplemented, match="multi-output"):
        scoring_core.compile(RandomForestRegressor(n_estimators=3, max_depth=3).fit(X, np.c_[y, -y]))
    with pytest.raises(Unimplemented, match="multi-output"):
        scoring_core.compile(DecisionTreeClassifier(max_depth=3).fit(X, np.c_[y > 0, y > 1]))
    gb = GradientBoostingRegressor(n_estimators=3, init=LinearRegression()).fit(X, y)
    with pytest.raises(Unimplemented, match="LinearRegression"):
        scoring_core.compile(gb)
    from sklearn.dummy import DummyClassifier

    gbc = GradientBoostingClassifier(n_estimators=3, init=DummyClassifier(strategy="stratified"))
    with pytest.raises(Unimplemented, match="stratified"):
        scoring_core.compile(gbc.fit(X, tdata["y_bin"]))
    with pytest.raises(Unimplemented, match="single class"):
        scoring_core.compile(DecisionTreeClassifier().fit(X, np.zeros(len(X))))
    signed = X.copy()
    signed[:, CAT] -= 3  # negative category codes
    hgb = HistGradientBoostingRegressor(max_iter=3, categorical_features=[CAT]).fit(signed, y)
    with pytest.raises(Unimplemented, match="categorical feature 6"):
        scoring_core.compile(hgb)
    with pytest.raises(InvalidArgument, match="not fitted"):
        scoring_core.compile(RandomForestClassifier())
