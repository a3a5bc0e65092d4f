"""Pipelines and ColumnTransformers of scalers, imputers and encoders reproduce scikit-learn,
string columns included, through numpy, pandas and Arrow, and survive a bundle round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

import scoring_core
from milepost.core.errors import InvalidArgument, Unimplemented

TOL = 1e-5

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def frame(data) -> pd.DataFrame:
    """Four float32 columns and two string columns, one with missing values."""
    rng = np.random.default_rng(9)
    X = data["X"]
    df = pd.DataFrame(X[:, :4], columns=["a", "b", "c", "d"])
    df["color"] = rng.choice(["red", "green", "blue"], size=len(df))
    df["size"] = pd.Series(rng.choice(["S", "M", "L", "XL"], size=len(df)), dtype=object)
    df.loc[rng.random(len(df)) < 0.1, "size"] = None
    return df


@pytest.fixture(scope="module")
def fresh(frame) -> pd.DataFrame:
    """Rows to score: unseen values in the string columns, missing values, numbers beyond
    the training range."""
    df = frame.iloc[:60].copy()
    df.loc[df.index[:5], "color"] = "purple"
    df.loc[df.index[5:10], "size"] = None
    df.loc[df.index[10:15], "a"] = 50.0
    return df


def _arrow(df: pd.DataFrame) -> pa.RecordBatch:
    return pa.RecordBatch.from_pandas(df, preserve_index=False)


def _every_frame_path(model, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """predict() on pandas, on an Arrow table and on an object array; predict_arrow()."""
    found = {
        "pandas": model.predict(df),
        "table": model.predict(pa.Table.from_pandas(df, preserve_index=False)),
        "object array": model.predict(df[model.feature_names].to_numpy(dtype=object)),
    }
    column = model.predict_arrow(_arrow(df)).column(0)
    found["arrow"] = (
        column.values.to_numpy().reshape(len(df), -1) if pa.types.is_fixed_size_list(column.type) else column.to_numpy()
    )
    return found


def _assert_frame_agrees(model, df, expected):
    for path, got in _every_frame_path(model, df).items():
        assert got.shape == expected.shape, path
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)


def test_standard_scaler_then_logistic_regression(data, assert_agrees, round_trip, tmp_path):
    X, y = data["X"], data["y_binary"]
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = scoring_core.compile(pipe)
    assert [stage.kind for stage in model.transforms] == ["column_map"]
    assert model.input_schema == pa.schema([pa.field(f"f{i}", pa.float32()) for i in range(X.shape[1])])
    assert_agrees(model, X, pipe.predict_proba(X))  # numpy, named columns and the row-major tensor
    baseline = model.metadata["baseline"]["features"]
    scaler = pipe[0]
    assert baseline["f3"] == [{
        "source": "StandardScaler", "after": [],
        "mean": pytest.approx(scaler.mean_[3]), "var": pytest.approx(scaler.var_[3]), "n_samples_seen": 400,
    }]  # fmt: skip
    assert model.metadata["lineage"]["steps"][0]["class"].endswith("StandardScaler")
    round_trip(model, tmp_path, X)


def test_imputer_robust_scaler_mlp_with_missing_values(data, assert_agrees, round_trip, tmp_path):
    rng = np.random.default_rng(4)
    X = data["X"].copy()
    X[rng.random(X.shape) < 0.1] = np.nan
    pipe = Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("scale", RobustScaler()),
        ("mlp", MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0)),
    ]).fit(X, data["y_reg"])  # fmt: skip
    model = scoring_core.compile(pipe)
    expected = pipe.predict(X)
    assert_agrees(model, X, expected)
    # Arrow nulls are missing values too.
    columns = [pa.array(X[:, j], mask=np.isnan(X[:, j])) for j in range(X.shape[1])]
    batch = pa.RecordBatch.from_arrays(columns, names=model.feature_names)
    np.testing.assert_allclose(model.predict_arrow(batch).column(0).to_numpy(), expected, rtol=0, atol=TOL)
    entry = model.metadata["baseline"]["features"]["f0"]
    assert [e["source"] for e in entry] == ["SimpleImputer", "RobustScaler"]
    assert entry[0]["statistic"] == pytest.approx(pipe[0].statistics_[0])
    assert entry[1]["after"] == ["SimpleImputer"]
    round_trip(model, tmp_path, X)


def test_min_max_scaler_with_clipping(data, assert_agrees):
    X = data["X"]
    pipe = make_pipeline(MinMaxScaler(feature_range=(-1, 1), clip=True), Ridge()).fit(X[:200], data["y_reg"][:200])
    model = scoring_core.compile(pipe)
    assert_agrees(model, X, pipe.predict(X))  # rows 200.. go beyond the fitted range: clipped
    stats = model.metadata["baseline"]["features"]["f1"][0]
    assert stats["data_min"] == pytest.approx(float(pipe[0].data_min_[1]))
    assert stats["data_max"] == pytest.approx(float(pipe[0].data_max_[1]))


@pytest.mark.parametrize(
    "scaler",
    [
        StandardScaler(with_mean=False),
        StandardScaler(with_std=False),
        RobustScaler(with_centering=False, quantile_range=(10, 90)),
        RobustScaler(with_scaling=False),
        MinMaxScaler(),
    ],
    ids=lambda s: repr(s),
)
def test_scaler_options(scaler, data, assert_agrees):
    X = data["X"]
    pipe = make_pipeline(scaler, Ridge()).fit(X, data["y_reg"])
    assert_agrees(scoring_core.compile(pipe), X, pipe.predict(X))


def _column_pipeline(final):
    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color", "size"]),
            ("scale", StandardScaler(), ["a", "b"]),
        ],
        remainder="passthrough",
    )
    return Pipeline([("columns", columns), ("model", final)])


def test_column_transformer_with_string_columns(frame, fresh, data, round_trip, tmp_path):
    pipe = _column_pipeline(LogisticRegression(max_iter=500)).fit(frame, data["y_multi"])
    model = scoring_core.compile(pipe)
    assert model.feature_names == ["a", "b", "c", "d", "color", "size"]
    assert model.input_schema.field("color").type == pa.string()
    assert model.input_schema.field("a").type == pa.float32()
    assert model.classes == ["high", "low", "mid"]
    _assert_frame_agrees(model, frame, pipe.predict_proba(frame))
    _assert_frame_agrees(model, fresh, pipe.predict_proba(fresh))  # unknown 'purple' is ignored
    categories = model.metadata["baseline"]["features"]["size"][0]["categories"]
    assert categories == ["L", "M", "S", "XL", None]
    json.dumps(model.metadata, allow_nan=False)
    loaded = round_trip(model, tmp_path, frame)
    _assert_frame_agrees(loaded, fresh, pipe.predict_proba(fresh))
    manifest = scoring_core.bundle.read_manifest(tmp_path / "bundle")
    color = next(i for i in manifest["inputs"] if i["name"] == "color")
    assert color == {"name": "color", "type": "string", "encoding": {"categories": ["blue", "green", "red"], "unknown": "code"}}


def test_string_columns_arrive_in_any_arrow_string_form(frame, data):
    pipe = _column_pipeline(LogisticRegression(max_iter=500)).fit(frame, data["y_binary"])
    model = scoring_core.compile(pipe)
    expected = pipe.predict_proba(frame)
    batch = _arrow(frame)
    index = batch.schema.get_field_index("color")
    for form in (pa.large_string(), pa.binary(), pa.dictionary(pa.int32(), pa.string())):
        changed = batch.set_column(index, pa.field("color", form), batch.column(index).cast(form))
        got = model.predict_arrow(changed).column(0).values.to_numpy().reshape(-1, 2)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=str(form))
    categorical = frame.astype({"color": "category"})
    np.testing.assert_allclose(model.predict(categorical), expected, rtol=0, atol=TOL)


def test_string_model_refuses_a_tensor_and_numbers_in_a_string_column(frame, data):
    model = scoring_core.compile(_column_pipeline(LogisticRegression()).fit(frame, data["y_binary"]))
    values = pa.array(np.zeros(12, dtype=np.float32))
    tensor = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(values, 6)], names=["x"])
    with pytest.raises(InvalidArgument, match="string columns"):
        model.predict_arrow(tensor)
    numbers = frame.assign(color=np.arange(len(frame)))
    with pytest.raises(InvalidArgument, match="'color' has type int64"):
        model.predict(numbers)


def test_unknown_category_with_handle_unknown_error(frame, fresh, data):
    columns = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="error"), ["color", "d"])], remainder="drop"
    )
    numeric_frame = frame.assign(d=np.round(frame["d"]).clip(-1, 1))
    pipe = Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(numeric_frame, data["y_binary"])
    model = scoring_core.compile(pipe)
    assert model.string_columns["color"].unknown == "error"
    known = numeric_frame.iloc[:50]
    np.testing.assert_allclose(model.predict(known), pipe.predict_proba(known), rtol=0, atol=TOL)
    with pytest.raises(ValueError):
        pipe.predict_proba(fresh.assign(d=0.0))  # scikit-learn refuses 'purple' too
    with pytest.raises(InvalidArgument, match=r"column 'color' has unknown category 'purple'"):
        model.predict(fresh.assign(d=0.0))
    with pytest.raises(InvalidArgument, match=r"column 'color' has unknown category 'purple'"):
        model.predict_arrow(_arrow(fresh.assign(d=0.0)))
    with pytest.raises(InvalidArgument, match=r"column 'd' has unknown category 7 \(row 2\)"):
        model.predict(known.assign(d=[0.0, 1.0, 7.0] + [0.0] * 47))


@pytest.mark.parametrize("drop", [None, "first", "if_binary"])
def test_one_hot_drop_options(drop, frame, data):
    df = frame.assign(flag=np.where(frame["a"] > 0, "yes", "no"), level=np.round(frame["b"]).clip(-2, 2))
    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(drop=drop, handle_unknown="ignore"), ["flag", "level", "color"]),
            ("strings", "drop", ["size"]),
        ],
        remainder="passthrough",
    )
    pipe = Pipeline([("columns", columns), ("model", Ridge())]).fit(df, data["y_reg"])
    model = scoring_core.compile(pipe)
    _assert_frame_agrees(model, df, pipe.predict(df))


def test_ordinal_encoder_with_unknown_and_missing_values(frame, data, round_trip, tmp_path):
    df = frame.assign(size=frame["size"].where(frame["size"].notna(), np.nan), level=np.round(frame["b"]).clip(-2, 2))
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
    columns = ColumnTransformer([("ordinal", encoder, ["color", "size", "level"])], remainder="passthrough")
    pipe = Pipeline([
        ("columns", columns),
        ("model", MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0)),
    ]).fit(df, data["y_multi"])  # fmt: skip
    model = scoring_core.compile(pipe)
    rows = df.iloc[:40].copy()
    rows.loc[rows.index[:3], "color"] = "purple"
    rows.loc[rows.index[3:6], "size"] = np.nan
    rows.loc[rows.index[6:9], "level"] = 9.0
    rows.loc[rows.index[9:12], "level"] = np.nan
    expected = pipe.predict_proba(rows)
    _assert_frame_agrees(model, rows, expected)
    assert pipe[0].transform(rows)[:12, :3].min() == -2  # the cases above really occur
    round_trip(model, tmp_path, rows)


def test_imputers_inside_a_column_transformer(frame, data, round_trip, tmp_path):
    df = frame.copy()
    df.loc[df.index[::7], "a"] = np.nan
    df.loc[df.index[::11], "color"] = np.nan  # filled with "missing"; the None of 'size' is a category
    columns = ColumnTransformer([
        ("categorical", Pipeline([
            ("fill", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]), ["color", "size"]),
        ("numeric", Pipeline([
            ("fill", SimpleImputer(strategy="mean", add_indicator=True)),
            ("scale", StandardScaler()),
        ]), ["a", "b"]),
    ], remainder="drop")  # fmt: skip
    pipe = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))]).fit(df, data["y_binary"])
    model = scoring_core.compile(pipe)
    assert model.string_columns["color"].fill == "missing"
    assert model.string_columns["size"].fill is None
    _assert_frame_agrees(model, df, pipe.predict_proba(df))
    round_trip(model, tmp_path, df)


def test_large_batches_with_strings_on_one_and_two_threads(frame, data):
    pipe = _column_pipeline(LogisticRegression(max_iter=500)).fit(frame, data["y_multi"])
    model = scoring_core.compile(pipe)
    big = pd.concat([frame] * 8, ignore_index=True)  # 3200 rows: above the parallel threshold
    expected = pipe.predict_proba(big)
    try:
        for threads in (1, 2):
            scoring_core.set_num_threads(threads)
            np.testing.assert_allclose(model.predict(big), expected, rtol=0, atol=TOL, err_msg=str(threads))
    finally:
        scoring_core.set_num_threads(2)


def test_unsupported_transformer_is_unimplemented(data):
    pipe = make_pipeline(PolynomialFeatures(), LogisticRegression()).fit(data["X"], data["y_binary"])
    with pytest.raises(Unimplemented, match=r"transformer PolynomialFeatures .*supported transformers: .*StandardScaler"):
        scoring_core.compile(pipe)


def test_pipelines_without_an_estimator_are_unimplemented(data, frame):
    with pytest.raises(Unimplemented, match="not an estimator"):
        scoring_core.compile(make_pipeline(StandardScaler()).fit(data["X"]))
    columns = ColumnTransformer([("scale", StandardScaler(), ["a"])]).fit(frame)
    with pytest.raises(Unimplemented, match="ColumnTransformer alone"):
        scoring_core.compile(columns)


def test_unsupported_options_are_unimplemented(frame, data):
    cases = [
        (OneHotEncoder(min_frequency=5), ["color"], "infrequent"),
        (SimpleImputer(missing_values=-1.0), ["a"], "missing_values=-1.0"),
    ]
    for transformer, cols, needle in cases:
        columns = ColumnTransformer([("t", transformer, cols)])
        pipe = Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(frame, data["y_binary"])
        with pytest.raises(Unimplemented, match=needle):
            scoring_core.compile(pipe)


def test_nested_pipeline_as_the_final_step(data, assert_agrees):
    X, y = data["X"], data["y_binary"]
    pipe = Pipeline([("scale", MinMaxScaler()), ("inner", make_pipeline(StandardScaler(), LogisticRegression()))])
    pipe.fit(X, y)
    model = scoring_core.compile(pipe)
    assert [stage.kind for stage in model.transforms] == ["column_map", "column_map"]
    assert_agrees(model, X, pipe.predict_proba(X))


def test_pipeline_ending_in_a_tree_ensemble(frame, data):
    """The final estimator goes through the converter registry: tree converters count too."""
    xgboost = pytest.importorskip("xgboost")
    df = frame.copy()
    df.loc[df.index[::9], "a"] = np.nan
    columns = ColumnTransformer([
        ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), ["a", "b", "c", "d"]),
    ])  # fmt: skip
    pipe = Pipeline([("columns", columns), ("model", xgboost.XGBClassifier(n_estimators=20, max_depth=3))])
    pipe.fit(df, data["y_binary"])
    model = scoring_core.compile(pipe)
    assert model.model.kind == "trees"
    _assert_frame_agrees(model, df, pipe.predict_proba(df))
