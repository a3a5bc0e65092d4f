"""Categorical columns read as the source library reads them: LightGBM and XGBoost models
trained here on pandas ``category`` columns score the same frames, Arrow dictionaries and
matrices of codes as the library's own default predict does (values, shape, dtype)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost as xgb

import scoring_core
from milepost.core.errors import InvalidArgument


def same(got: np.ndarray, expected: np.ndarray, atol: float) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.shape, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def round_tripped(model, tmp_path):
    version = scoring_core.compile(model).save(tmp_path / "bundle")
    return scoring_core.load(tmp_path / "bundle", version=version)


def integer_category_frame(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(21)
    frame = pd.DataFrame({"amount": rng.normal(size=n), "tier": pd.Categorical(rng.choice([10, 20, 30], n))})
    return frame, ((frame.tier == 20) | (frame.amount > 1)).to_numpy().astype(int)


def test_lightgbm_on_integer_categories_scores_frames_by_value(tmp_path) -> None:
    frame, y = integer_category_frame(2000)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(frame, y), 10)
    compiled = scoring_core.compile(booster)
    same(compiled.predict(frame), booster.predict(frame), atol=1e-12)
    same(round_tripped(booster, tmp_path).predict(frame), booster.predict(frame), atol=1e-12)
    edge = frame.head(6).copy()  # unseen 40 and a missing value; categories listed in another order
    edge["tier"] = pd.Categorical([30, 20, 10, 40, None, 20], categories=[40, 30, 20, 10])
    same(compiled.predict(edge), booster.predict(edge), atol=1e-12)
    arrow = pa.table({"amount": edge.amount.to_numpy(), "tier": pa.array([30, 20, 10, 40, None, 20]).dictionary_encode()})
    same(compiled.predict(arrow), booster.predict(edge), atol=1e-12)
    # strings spell the values (the input schema declares the column a string, so the wire sends BYTES)
    spelled = pa.table({"amount": edge.amount.to_numpy(), "tier": pa.array(["30", "20", "10", "40", None, "20"])})
    same(compiled.predict(spelled), booster.predict(edge), atol=1e-12)
    with pytest.raises(InvalidArgument, match="'tier' could not be read as int64"):
        compiled.predict(spelled.set_column(1, "tier", pa.array(["30", "ten", "10", "40", None, "20"])))


def string_category_model() -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(5)
    n = 2000
    frame = pd.DataFrame({"a": rng.normal(size=n), "c": pd.Categorical(rng.choice(["x", "y", "z", "w"], n)),
                          "b": rng.normal(size=n)})
    y = ((frame.c == "y") | (frame.c == "w") & (frame.a > 0) | (frame.b > 1.5)).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5, "cat_smooth": 1,
                         "min_data_per_group": 5}, lgb.Dataset(frame, y), 15)
    return booster, frame


def test_lightgbm_reads_a_matrix_of_codes_as_booster_predict_does() -> None:
    booster, frame = string_category_model()
    compiled = scoring_core.compile(booster)
    codes = frame.c.cat.codes.to_numpy().astype(np.float64)
    matrix = np.column_stack([frame.a, codes, frame.b])
    same(compiled.predict(matrix), booster.predict(matrix), atol=1e-12)
    # LightGBM's rule for a code: truncated to an integer; NaN and negatives match no category
    odd = np.array([np.nan, -1, -0.5, -2.7, 0.5, 1.9, 2.99, 3, 7, 1e9, np.inf, -np.inf, 1e-40, -1e-40])
    rows = np.column_stack([np.zeros(len(odd)), odd, np.zeros(len(odd))])
    same(compiled.predict(rows), booster.predict(rows), atol=1e-12)
    # a float32 matrix too, and Arrow columns of plain numbers
    same(compiled.predict(matrix.astype(np.float32)), booster.predict(matrix.astype(np.float32)), atol=1e-12)
    table = pa.table({"a": frame.a.to_numpy(), "c": frame.c.cat.codes.to_numpy(), "b": frame.b.to_numpy()})
    same(compiled.predict(table), booster.predict(matrix), atol=1e-12)


@pytest.mark.parametrize("categories", [["red", "green", "blue", "grey"], [3, 11, 7, 5]])
def test_xgboost_on_pandas_categoricals_scores_the_same_frame(categories: list, tmp_path) -> None:
    rng = np.random.default_rng(8)
    n = 2000
    values = rng.choice(np.array(categories, dtype=object), n)
    values[rng.random(n) < 0.1] = None
    frame = pd.DataFrame({"amount": rng.normal(size=n), "colour": pd.Categorical(values.tolist()),
                          "age": rng.normal(size=n)})
    first, second = categories[0], categories[1]
    y = ((frame.colour == first) | (frame.colour == second) & (frame.amount > 0) | frame.colour.isna()).astype(int)
    clf = xgb.XGBClassifier(n_estimators=15, max_depth=4, enable_categorical=True, tree_method="hist").fit(frame, y)
    compiled = scoring_core.compile(clf)
    same(compiled.predict(frame), clf.predict_proba(frame), atol=1e-6)
    same(round_tripped(clf, tmp_path).predict(frame), clf.predict_proba(frame), atol=1e-6)
    booster = clf.get_booster()  # a Booster answers (n,) of P(1) for the same frame
    same(scoring_core.compile(booster).predict(frame), booster.predict(xgb.DMatrix(frame, enable_categorical=True)),
         atol=1e-6)
    edge = frame.head(8).copy()  # the same categories listed in reverse: XGBoost re-codes by value
    edge["colour"] = pd.Categorical(edge.colour.tolist(), categories=categories[::-1])
    same(compiled.predict(edge), clf.predict_proba(edge), atol=1e-6)
    arrow = pa.Table.from_pandas(edge, preserve_index=False)
    assert pa.types.is_dictionary(arrow.schema.field("colour").type)
    same(compiled.predict(arrow), clf.predict_proba(edge), atol=1e-6)
    codes = np.column_stack([frame.amount, frame.colour.cat.codes.replace(-1, np.nan), frame.age])
    same(compiled.predict(codes), clf.predict_proba(codes), atol=1e-6)
    # XGBoost refuses a category it was not trained on (3.2 checks only those sorting after every
    # trained one, and silently takes the next trained category for the others); the core refuses all.
    unseen = frame.head(3).assign(colour=pd.Categorical([first, "zz" if isinstance(first, str) else 99, second]))
    with pytest.raises(xgb.core.XGBoostError, match="not in the training set"):
        clf.predict_proba(unseen)
    with pytest.raises(InvalidArgument, match="'colour' has unknown category"):
        compiled.predict(unseen)
