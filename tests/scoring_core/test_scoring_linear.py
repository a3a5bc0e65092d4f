"""Compiled linear models reproduce scikit-learn, through every input path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeCV,
    SGDClassifier,
    SGDRegressor,
)

import scoring_core
from scoring_core.linear import LinearModel

TOL = 1e-5

REGRESSORS = {
    "LinearRegression": lambda: LinearRegression(),
    "Ridge": lambda: Ridge(alpha=0.5),
    "RidgeCV": lambda: RidgeCV(),
    "Lasso": lambda: Lasso(alpha=0.01),
    "ElasticNet": lambda: ElasticNet(alpha=0.01, l1_ratio=0.3),
    "SGDRegressor": lambda: SGDRegressor(random_state=0),
}


@pytest.fixture(scope="module", params=sorted(REGRESSORS))
def fitted_regressor(request, X, y_reg):
    return REGRESSORS[request.param]().fit(X, y_reg)


def _every_path(model, X, named_batch, tensor_batch):
    """predict() on numpy, and predict_arrow() on named columns and on a tensor column."""
    outputs = {"numpy": model.predict(X)}
    for layout, batch in (("named", named_batch(X, model.feature_names)), ("tensor", tensor_batch(X))):
        result = model.predict_arrow(batch)
        assert result.schema.equals(model.output_schema)
        column = result.column(0)
        if model.task == "classification":
            width = len(model.classes)
            outputs[layout] = column.values.to_numpy().reshape(-1, width)
        else:
            outputs[layout] = column.to_numpy()
    return outputs


def test_regressors_match_sklearn(fitted_regressor, X, named_batch, tensor_batch):
    model = scoring_core.compile(fitted_regressor)
    expected = fitted_regressor.predict(X)
    assert model.task == "regression" and model.classes is None
    assert model.output_schema == pa.schema([pa.field("prediction", pa.float64())])
    assert model.input_schema == pa.schema([pa.field(f"f{i}", pa.float32()) for i in range(X.shape[1])])
    assert model.metadata["source"] == f"sklearn.linear_model.{type(fitted_regressor).__name__}"
    for path, got in _every_path(model, X, named_batch, tensor_batch).items():
        assert got.shape == expected.shape, path
        assert got.dtype == np.float64, path
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)


def test_binary_logistic_matches_predict_proba(X, y_binary, named_batch, tensor_batch):
    est = LogisticRegression(C=0.5).fit(X, y_binary)
    model = scoring_core.compile(est)
    expected = est.predict_proba(X)
    assert model.classes == [0, 1]
    assert model.output_schema.field(0).type == pa.list_(pa.float64(), 2)
    for path, got in _every_path(model, X, named_batch, tensor_batch).items():
        assert got.shape == (len(X), 2), path
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)


def test_multinomial_logistic_matches_predict_proba(X, y_multi, named_batch, tensor_batch):
    labels = np.array(["low", "mid", "high"])[y_multi]
    est = LogisticRegression().fit(X, labels)
    model = scoring_core.compile(est)
    expected = est.predict_proba(X)
    assert model.classes == ["high", "low", "mid"]  # sklearn sorts labels
    assert all(type(c) is str for c in model.classes)
    assert model.metadata["lineage"]["params"]["C"] == 1.0
    for path, got in _every_path(model, X, named_batch, tensor_batch).items():
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("target", ["y_binary", "y_multi"])
def test_sgd_classifier_log_loss(target, X, request, named_batch, tensor_batch):
    y = request.getfixturevalue(target)
    est = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    model = scoring_core.compile(est)
    expected = est.predict_proba(X)
    for path, got in _every_path(model, X, named_batch, tensor_batch).items():
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=path)


def test_dataframe_input_uses_estimator_feature_names(X, y_reg):
    names = [f"col_{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=names)
    est = Ridge().fit(df, y_reg)
    model = scoring_core.compile(est)
    assert model.feature_names == names
    shuffled = df[names[::-1]]  # columns are matched by name, not position
    np.testing.assert_allclose(model.predict(shuffled), est.predict(df), rtol=0, atol=TOL)
    np.testing.assert_allclose(model.predict(pa.Table.from_pandas(df)), est.predict(df), rtol=0, atol=TOL)


def test_explicit_feature_names_override(X, y_reg, named_batch):
    est = LinearRegression().fit(X, y_reg)
    names = [f"x{i}" for i in range(X.shape[1])]
    model = scoring_core.compile(est, feature_names=names)
    assert model.feature_names == names and model.n_features == X.shape[1]
    got = model.predict_arrow(named_batch(X, names)).column(0).to_numpy()
    np.testing.assert_allclose(got, est.predict(X), rtol=0, atol=TOL)


def test_large_batches_take_the_parallel_kernel_and_agree(X, y_multi, named_batch, tensor_batch):
    """Above the parallel threshold, on 1 and 2 threads, all layouts and dtypes agree."""
    rng = np.random.default_rng(3)
    big = rng.normal(size=(5003, X.shape[1])).astype(np.float32)  # not a multiple of the block
    est = LogisticRegression().fit(X, y_multi)
    model = scoring_core.compile(est)
    expected = est.predict_proba(big)
    try:
        for threads in (1, 2):
            scoring_core.set_num_threads(threads)
            outs = _every_path(model, big, named_batch, tensor_batch)
            outs["fortran"] = model.predict(np.asfortranarray(big))
            outs["float64"] = model.predict(big.astype(np.float64))
            for path, got in outs.items():
                np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=f"{path}/{threads}")
            # Row-major and column-major kernels sum in the same order: bit-identical.
            np.testing.assert_array_equal(outs["named"], outs["tensor"])
    finally:
        scoring_core.set_num_threads(2)


def test_zero_rows(X, y_binary, y_reg, named_batch, tensor_batch):
    for est in (LogisticRegression().fit(X, y_binary), LinearRegression().fit(X, y_reg)):
        model = scoring_core.compile(est)
        empty = X[:0]
        for batch in (named_batch(empty, model.feature_names), tensor_batch(empty)):
            result = model.predict_arrow(batch)
            assert result.num_rows == 0
            assert result.schema.equals(model.output_schema)
        expected_shape = (0, 2) if model.task == "classification" else (0,)
        assert model.predict(empty).shape == expected_shape


def test_nulls_become_nan_and_other_numeric_types_are_cast(X, y_reg):
    est = LinearRegression().fit(X, y_reg)
    model = scoring_core.compile(est)
    rows = X[:6].copy()
    rows[:, 1] = np.arange(6)  # exact in int32
    columns = [pa.array(rows[:, j]) for j in range(X.shape[1])]
    columns[0] = pa.array([None, *rows[1:, 0].tolist()], type=pa.float32())
    columns[1] = pa.array(np.arange(6, dtype=np.int32))
    columns[2] = pa.array(rows[:, 2].astype(np.float64))
    batch = pa.RecordBatch.from_arrays(columns, names=model.feature_names)
    got = model.predict_arrow(batch).column(0).to_numpy(zero_copy_only=False)
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], est.predict(rows[1:]), rtol=0, atol=TOL)


def test_sliced_batches_respect_offsets(X, y_reg, named_batch, tensor_batch):
    est = Ridge().fit(X, y_reg)
    model = scoring_core.compile(est)
    expected = est.predict(X[7:40])
    for batch in (named_batch(X, model.feature_names), tensor_batch(X)):
        got = model.predict_arrow(batch.slice(7, 33)).column(0).to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_tensor_column_is_read_without_a_copy(X, tensor_batch):
    from scoring_core.arrow_input import matrix_from_batch

    batch = tensor_batch(X)
    view = matrix_from_batch(batch, [f"f{i}" for i in range(X.shape[1])])
    buffer_address = batch.column(0).values.buffers()[1].address
    assert view.__array_interface__["data"][0] == buffer_address
    assert view.flags.c_contiguous and view.shape == X.shape


def test_named_columns_become_one_fortran_array(X, named_batch):
    from scoring_core.arrow_input import matrix_from_batch

    names = [f"f{i}" for i in range(X.shape[1])]
    matrix = matrix_from_batch(named_batch(X, names), names)
    assert matrix.flags.f_contiguous and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, X)


def test_linear_kernel_block_edges_against_numpy():
    """Row counts around the 4-row groups, the 16-row column steps, the 2048-row block and
    the parallel threshold; feature counts around the 8 lanes and the 4-column passes."""
    rng = np.random.default_rng(11)
    for f in (1, 4, 7, 8, 9, 33):
        coef = rng.normal(size=(3, f))
        intercept = rng.normal(size=3)
        model = LinearModel(coef, intercept, "identity")
        for n in (1, 3, 4, 5, 17, 1023, 1024, 1025, 2047, 2049):
            X = rng.normal(size=(n, f)).astype(np.float32)
            expected = X.astype(np.float64) @ coef.T + intercept
            by_rows = model.predict(X)
            by_columns = model.predict(np.asfortranarray(X))
            np.testing.assert_allclose(by_rows, expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(by_rows, by_columns)


@pytest.mark.parametrize("features", [200, 203])
def test_tensor_and_named_columns_are_bit_identical(features, named_batch, tensor_batch):
    """200 features (25 lanes' worth) and 203 (a ragged last chunk): a tensor column and
    named columns give the same bits on every row count, odd ones past the blocks, one
    row and none, on one thread and two."""
    rng = np.random.default_rng(5)
    X_all = rng.normal(size=(4099, features)).astype(np.float32)
    y = (X_all @ rng.normal(size=features) > 0).astype(np.int64)
    est = LogisticRegression(max_iter=500).fit(X_all[:2000], y[:2000])
    model = scoring_core.compile(est)
    names = model.feature_names
    try:
        for threads in (1, 2):
            scoring_core.set_num_threads(threads)
            for n in (0, 1, 3, 17, 1001, 2049, 3001, 4099):
                X = X_all[:n]
                tensor = model.predict_arrow(tensor_batch(X))
                named = model.predict_arrow(named_batch(X, names))
                assert tensor.num_rows == named.num_rows == n
                assert tensor.schema.equals(named.schema)
                by_tensor = tensor.column(0).values.to_numpy().reshape(-1, 2)
                by_named = named.column(0).values.to_numpy().reshape(-1, 2)
                np.testing.assert_array_equal(by_tensor, by_named, err_msg=f"{n} rows, {threads} threads")
                np.testing.assert_array_equal(model.predict(X), model.predict(np.asfortranarray(X)))
                if n:
                    np.testing.assert_allclose(by_tensor, est.predict_proba(X), rtol=0, atol=TOL)
    finally:
        scoring_core.set_num_threads(2)


def test_row_and_column_kernels_agree_on_every_link_and_non_finite_input():
    """Multi-output links and inf/NaN inputs: both kernels give the same values (NaN
    where either gives NaN)."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(2100, 37)).astype(np.float32)
    X[5, 3] = np.inf
    X[6, 30] = -np.inf
    X[7, 0] = np.nan
    X[8, 36] = np.nan
    for link, k in (("identity", 2), ("logistic", 1), ("softmax", 4), ("ovr_logistic", 3)):
        model = LinearModel(rng.normal(size=(k, 37)), rng.normal(size=k), link)
        for dtype in (np.float32, np.float64):
            by_rows = model.predict(X.astype(dtype))
            by_columns = model.predict(np.asfortranarray(X.astype(dtype)))
            np.testing.assert_array_equal(by_rows, by_columns, err_msg=f"{link} {dtype.__name__}")
            assert np.isnan(by_rows[7:9]).all(), link


def test_softmax_is_stable_for_large_scores():
    model = LinearModel(np.array([[1000.0], [0.0], [-1000.0]]), np.zeros(3), "softmax")
    got = model.predict(np.array([[1.0], [-1.0]], dtype=np.float32))
    np.testing.assert_allclose(got, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-300)


def test_float64_tensor_column_and_null_rows(X, y_reg):
    est = LinearRegression().fit(X, y_reg)
    model = scoring_core.compile(est)
    values = pa.array(X[:5].astype(np.float64).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(values, X.shape[1], mask=pa.array([False, True, False, False, False]))
    got = model.predict_arrow(pa.RecordBatch.from_arrays([column], names=["x"])).column(0).to_numpy(zero_copy_only=False)
    assert np.isnan(got[1])
    keep = [0, 2, 3, 4]
    np.testing.assert_allclose(got[keep], est.predict(X[keep]), rtol=0, atol=TOL)


@pytest.mark.parametrize("features", [7, 203])
def test_large_named_batches_are_read_in_place_and_stay_bit_identical(features):
    """From linear_columns.MIN_ROWS rows on, named float columns are read where they are
    (scoring_core.linear_columns) instead of copied into one matrix: every link, float32 and
    float64 columns, columns in another order, inf and NaN, on one thread and two, give the
    bits a tensor gives. A column with nulls takes the matrix path (nulls are NaN there)."""
    from scoring_core import linear_columns
    from scoring_core.arrow_input import float_columns

    rng = np.random.default_rng(21)
    n = linear_columns.MIN_ROWS + 4097  # past the threshold, a ragged last block and 16-row step
    X = rng.normal(size=(n, features)).astype(np.float32)
    X[5, 3] = np.inf
    X[7, 0] = np.nan
    names = [f"f{j}" for j in range(features)]
    try:
        for threads in (1, 2):
            scoring_core.set_num_threads(threads)
            for link, k in (("identity", 2), ("logistic", 1), ("softmax", 4), ("ovr_logistic", 3)):
                model = scoring_core.model.CompiledModel(
                    LinearModel(rng.normal(size=(k, features)), rng.normal(size=k), link), feature_names=names,
                    task="classification" if link != "identity" else "regression",
                    classes=list(range(2 if link == "logistic" else k)) if link != "identity" else None)
                tensor = pa.RecordBatch.from_arrays(
                    [pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), features)], names=["input"])
                expected = model.predict_arrow(tensor).column(0)
                for dtype in (np.float32, np.float64):
                    order = rng.permutation(features)
                    named = pa.RecordBatch.from_arrays([pa.array(X[:, j].astype(dtype)) for j in order],
                                                       names=[names[j] for j in order])
                    assert float_columns(named, names) is not None  # the in-place path
                    got = model.predict_arrow(named).column(0)
                    if dtype == np.float32:
                        np.testing.assert_array_equal(_flat(got), _flat(expected), err_msg=f"{link} {threads} threads")
                    else:  # float64 columns: the matrix path casts them to float32 first; here they stay
                        wide = model.predict_arrow(pa.RecordBatch.from_arrays(
                            [pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float64).reshape(-1)), features)],
                            names=["input"])).column(0)
                        np.testing.assert_array_equal(_flat(got), _flat(wide), err_msg=f"{link} float64 {threads} threads")
            with_null = pa.RecordBatch.from_arrays(
                [pa.array([None, *X[1:, 0].tolist()], pa.float32()), *[pa.array(X[:, j]) for j in range(1, features)]],
                names=names)
            assert float_columns(with_null, names) is None
    finally:
        scoring_core.set_num_threads(2)


def _flat(column: pa.Array) -> np.ndarray:
    """A column of scores as numbers (NaN equal to NaN, unlike Arrow's equals)."""
    return column.values.to_numpy() if pa.types.is_fixed_size_list(column.type) else column.to_numpy()


def test_sliced_named_batches_are_read_from_their_offset():
    """A slice of a batch shares its parent's buffers and starts at an offset: the in-place
    column path reads from there, and gives the bits the same rows give as a tensor; so does
    a column with a validity bitmap and no nulls (both leave the one-call buffer read)."""
    from scoring_core import linear_columns
    from scoring_core.arrow_input import float_columns

    rng = np.random.default_rng(5)
    n, features, skip = linear_columns.MIN_ROWS + 600, 11, 37
    X = rng.normal(size=(n, features)).astype(np.float32)
    names = [f"f{j}" for j in range(features)]
    model = scoring_core.model.CompiledModel(
        LinearModel(rng.normal(size=(1, features)), rng.normal(size=1), "logistic"), feature_names=names,
        task="classification", classes=[0, 1])
    sliced = pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(features)], names=names).slice(skip)
    assert sliced.column(0).offset == skip and float_columns(sliced, names) is not None
    got = _flat(model.predict_arrow(sliced).column(0)).reshape(-1, 2)
    np.testing.assert_array_equal(got, model.predict(X[skip:]))
    # A column with a validity bitmap but no nulls is read in place too, from its own offset.
    bitmap = pa.py_buffer(np.packbits(np.ones(n, bool), bitorder="little"))
    valid = pa.Array.from_buffers(pa.float32(), n, [bitmap, pa.py_buffer(np.ascontiguousarray(X[:, 0]))])
    assert valid.buffers()[0] is not None and valid.null_count == 0
    mixed = pa.RecordBatch.from_arrays([valid.slice(skip), *sliced.columns[1:]], names=names)
    assert float_columns(mixed, names) is not None
    np.testing.assert_array_equal(_flat(model.predict_arrow(mixed).column(0)).reshape(-1, 2), got)
