"""Compiled scikit-learn MLPs reproduce predict / predict_proba, through every input path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.neural_network import MLPClassifier, MLPRegressor

import scoring_core
from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.mlp import MLP

TOL = 1e-5
N_FEATURES = 8  # as the data fixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---- scikit-learn ----


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("target", ["y_binary", "y_multi"])
def test_mlp_classifier_matches_predict_proba(activation, target, data, assert_agrees, round_trip, tmp_path):
    X = data["X"]
    est = MLPClassifier(hidden_layer_sizes=(16, 8), activation=activation, max_iter=150, random_state=0)
    est.fit(X.astype(np.float64), data[target])
    model = scoring_core.compile(est)
    assert model.task == "classification"
    assert model.classes == np.asarray(est.classes_).tolist()
    assert model.model.kind == "mlp" and model.model.dtype == "float64"
    expected = est.predict_proba(X)
    assert_agrees(model, X, expected)
    assert model.output_schema.field(0).type == pa.list_(pa.float64(), len(est.classes_))
    round_trip(model, tmp_path, X)


def test_mlp_regressor_matches_predict(data, tmp_path, assert_agrees, round_trip):
    X = data["X"]
    est = MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0).fit(X.astype(np.float64), data["y_reg"])
    model = scoring_core.compile(est)
    assert model.task == "regression" and model.predict_ndim == 1
    assert model.output_schema == pa.schema([pa.field("prediction", pa.float64())])
    assert_agrees(model, X, est.predict(X))
    loaded = round_trip(model, tmp_path, X)
    assert loaded.metadata["source"] == "sklearn.neural_network.MLPRegressor"


def test_mlp_fitted_on_float32_computes_in_float32(data):
    X = data["X"]
    est = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", max_iter=200, random_state=0).fit(X, data["y_reg"])
    assert est.coefs_[0].dtype == np.float32
    model = scoring_core.compile(est)
    assert model.model.dtype == "float32"
    np.testing.assert_allclose(model.predict(X), est.predict(X), rtol=0, atol=TOL)


def test_multi_output_regressor_gives_an_output_list(data, tmp_path, assert_agrees, round_trip):
    X = data["X"]
    Y = np.stack([data["y_reg"], -data["y_reg"] / 2], axis=1)
    est = MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X.astype(np.float64), Y)
    model = scoring_core.compile(est)
    assert model.output_schema == pa.schema([pa.field("output", pa.list_(pa.float64(), 2))])
    assert model.predict_ndim == 2
    assert_agrees(model, X, est.predict(X))
    round_trip(model, tmp_path, X)


def test_large_batches_on_one_and_two_threads(data, model_outputs):
    """Above the parallel threshold, over several blocks and spans, every layout agrees."""
    X = data["X"]
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=0).fit(X.astype(np.float64), data["y_multi"])
    model = scoring_core.compile(est)
    big = np.random.default_rng(1).normal(size=(3001, N_FEATURES)).astype(np.float32)
    expected = est.predict_proba(big)
    try:
        for threads in (1, 2):
            scoring_core.set_num_threads(threads)
            outs = model_outputs(model, big)
            outs["fortran"] = model.predict(np.asfortranarray(big))
            outs["float64"] = model.predict(big.astype(np.float64))
            for path, got in outs.items():
                np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=f"{path}/{threads}")
    finally:
        scoring_core.set_num_threads(2)


def test_multilabel_classifier_is_unimplemented(data):
    X = data["X"].astype(np.float64)
    Y = np.stack([data["y_binary"], 1 - data["y_binary"]], axis=1)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0).fit(X, Y)
    with pytest.raises(Unimplemented, match="multilabel"):
        scoring_core.compile(est)


def test_mlp_stage_validates_its_arrays():
    w = np.ones((3, 2))
    with pytest.raises(InvalidArgument, match="layer 1 takes 4 inputs"):
        MLP(weights=(w, np.ones((4, 1))), biases=(np.ones(2), np.ones(1)), activations=((), ()))
    with pytest.raises(InvalidArgument, match="softmax may only end"):
        MLP(weights=(w, np.ones((2, 1))), biases=(np.ones(2), np.ones(1)), activations=((("softmax", 0.0),), ()))
    with pytest.raises(InvalidArgument, match="unknown"):
        MLP(weights=(w,), biases=(np.ones(2),), activations=((("swish2", 0.0),),))


def test_activations_against_numpy():
    """Every activation kind, in both precisions, against a float64 numpy reference."""
    from math import erf

    rng = np.random.default_rng(2)
    X = rng.normal(scale=3, size=(50, 4))
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    z = X @ w + b
    sig = 1 / (1 + np.exp(-z))
    references = {
        "identity": z,
        "relu": np.maximum(z, 0),
        "leaky_relu": np.where(z >= 0, z, 0.2 * z),
        "logistic": sig,
        "tanh": np.tanh(z),
        "gelu": z * 0.5 * (1 + np.vectorize(erf)(z / np.sqrt(2))),
        "gelu_tanh": 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
        "silu": z * sig,
        "softmax": np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True),
    }
    for name, expected in references.items():
        for dtype, tol in (("float64", 1e-12), ("float32", 2e-5)):
            stage = MLP(weights=(w,), biases=(b,), activations=(((name, 0.2),),), dtype=dtype)
            np.testing.assert_allclose(stage.predict(X), expected, rtol=tol, atol=tol, err_msg=f"{name}/{dtype}")


def test_pin_blas_to_one_thread_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "import threadpoolctl, scoring_core.threads as t; ok = t.pin_blas_to_one_thread(); "
        "print(ok, {i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "{1}"]
