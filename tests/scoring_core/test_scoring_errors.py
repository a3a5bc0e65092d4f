"""Bad inputs and unsupported estimators fail with the right error, naming the culprit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.svm import SVC, LinearSVR

import scoring_core
from milepost.core.errors import InvalidArgument, Unimplemented


@pytest.fixture(scope="module")
def model(X, y_binary):
    return scoring_core.compile(LogisticRegression().fit(X, y_binary))


def _columns(X, names):
    return [pa.array(X[:, j]) for j in range(len(names))]


def test_missing_column(model, X):
    names = model.feature_names
    batch = pa.RecordBatch.from_arrays(_columns(X, names)[:-1], names=names[:-1])
    with pytest.raises(InvalidArgument, match="missing feature column.*'f19'"):
        model.predict_arrow(batch)


def test_extra_column(model, X):
    names = model.feature_names
    batch = pa.RecordBatch.from_arrays([*_columns(X, names), pa.array(X[:, 0])], names=[*names, "surprise"])
    with pytest.raises(InvalidArgument, match="unexpected column.*'surprise'"):
        model.predict_arrow(batch)


def test_string_column(model, X):
    names = model.feature_names
    columns = _columns(X, names)
    columns[3] = pa.array([str(v) for v in X[:, 3]])
    batch = pa.RecordBatch.from_arrays(columns, names=names)
    with pytest.raises(InvalidArgument, match="'f3' has type string"):
        model.predict_arrow(batch)


def test_duplicate_column(model, X):
    names = model.feature_names
    batch = pa.RecordBatch.from_arrays([*_columns(X, names), pa.array(X[:, 0])], names=[*names, "f0"])
    with pytest.raises(InvalidArgument, match="duplicate column.*'f0'"):
        model.predict_arrow(batch)


def test_tensor_column_of_wrong_width(model, X):
    values = pa.array(X[:, :19].reshape(-1))
    batch = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(values, 19)], names=["input__0"])
    with pytest.raises(InvalidArgument, match=r"'input__0'.*width 19.*width 20"):
        model.predict_arrow(batch)


def test_tensor_column_of_wrong_value_type(model, X):
    values = pa.array(np.zeros(40, dtype=np.int32))
    batch = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(values, 20)], names=["t"])
    with pytest.raises(InvalidArgument, match="'t' holds int32"):
        model.predict_arrow(batch)


def test_numpy_input_of_wrong_shape_or_dtype(model, X):
    with pytest.raises(InvalidArgument, match=r"\(n, 20\)"):
        model.predict(X[:, :5])
    with pytest.raises(InvalidArgument, match=r"\(n, 20\)"):
        model.predict(X[0])
    with pytest.raises(InvalidArgument, match="dtype"):
        model.predict(X.astype(str))


def test_predict_arrow_needs_a_batch(model, X):
    with pytest.raises(InvalidArgument, match="ndarray"):
        model.predict_arrow(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator, name", [(SVC(), "SVC"), (LinearSVR(), "LinearSVR")])
def test_unsupported_estimators_are_unimplemented(estimator, name, X, y_binary):
    estimator.fit(X, y_binary)
    with pytest.raises(Unimplemented) as info:
        scoring_core.compile(estimator)
    message = str(info.value)
    assert f"cannot compile {name} " in message
    assert "sklearn.linear_model.LogisticRegression" in message  # lists what is supported


def test_subclass_of_a_supported_estimator_is_refused(X, y_reg):
    class MyRegression(LinearRegression):
        def predict(self, X):
            return super().predict(X) + 1

    with pytest.raises(Unimplemented, match="MyRegression"):
        scoring_core.compile(MyRegression().fit(X, y_reg))


def test_sgd_classifier_without_probabilities(X, y_binary):
    est = SGDClassifier(loss="hinge", random_state=0).fit(X, y_binary)
    with pytest.raises(Unimplemented, match="loss='hinge'"):
        scoring_core.compile(est)


def test_multi_output_regression(X):
    est = LinearRegression().fit(X, np.stack([X[:, 0], X[:, 1]], axis=1))
    with pytest.raises(Unimplemented, match="multi-output"):
        scoring_core.compile(est)


def test_unfitted_and_bad_feature_names(X, y_reg):
    with pytest.raises(InvalidArgument, match="not fitted"):
        scoring_core.compile(LinearRegression())
    est = LinearRegression().fit(X, y_reg)
    with pytest.raises(InvalidArgument, match="3 names"):
        scoring_core.compile(est, feature_names=["a", "b", "c"])
    with pytest.raises(InvalidArgument, match="duplicate feature name"):
        scoring_core.compile(est, feature_names=["a"] * X.shape[1])


def test_set_num_threads_validates():
    with pytest.raises(ValueError):
        scoring_core.set_num_threads(0)
    scoring_core.set_num_threads(10_000)  # clamped to numba's pool
    from scoring_core import threads

    assert 1 <= threads.num_threads() <= 10_000
    scoring_core.set_num_threads(2)
