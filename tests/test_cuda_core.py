"""The scoring core on CUDA (scoring_core.cuda) against the CPU core and each source library.

Without a GPU every kernel runs on numba's CUDA simulator: ``_numba_cuda`` switches it on
for the one import of ``numba.cuda`` this process makes (numba reads the switch then and
only then), and leaves the environment as it was, so that no subprocess of the suite
inherits it and the CPU kernels are untouched. The simulator runs each CUDA thread as a
Python thread: the models and batches here are tiny on purpose. The one test that needs a
real GPU runs in a child process without the simulator, and skips where there is none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from milepost.core.errors import FailedPrecondition, InvalidArgument
from scoring_core.cuda.trees import DeviceTrees, choose_lanes, chunks, gpu_layout

TOL = 1e-5


def _numba_cuda():
    """numba.cuda, as the simulator unless this process already imported it."""
    import numba.core.config as config

    if "numba.cuda" not in sys.modules:
        before = config.ENABLE_CUDASIM
        config.ENABLE_CUDASIM = 1  # numba.cuda reads this once, as it is imported
        try:
            from numba import cuda
        finally:
            config.ENABLE_CUDASIM = before
    from numba import cuda

    return cuda


cuda = _numba_cuda()
if not cuda.is_available():
    pytest.skip("numba.cuda was imported earlier in this process for a real GPU, and none is usable",
                allow_module_level=True)
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(16)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    X[rng.random(300) < 0.1, 1] = np.nan
    y = X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) - X[:, 2] * X[:, 3]
    probe = X[:24].copy()
    probe[3] = np.nan  # a row of nothing but missing values
    return X, y, probe


def _agree(model, X, want):
    """GPU == CPU core within TOL, and both == the library's ``want``; returns the GPU's."""
    gpu = model.to("cuda")
    got = gpu.predict(X)
    cpu = model.predict(X)
    assert got.shape == cpu.shape == np.shape(want) and got.dtype == cpu.dtype
    np.testing.assert_allclose(got, cpu, rtol=0, atol=TOL)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    return gpu, got


# -- trees -------------------------------------------------------------------------------------


def test_xgboost_binary_with_missing_values(data):
    X, y, probe = data
    clf = xgb.XGBClassifier(n_estimators=8, max_depth=3, learning_rate=0.3).fit(X, y > 0)
    model = scoring_core.compile(clf)
    gpu, got = _agree(model, probe, clf.predict_proba(probe))
    assert got.dtype == np.float32  # XGBoost's dtype, as the CPU core gives it
    _every_walk(gpu.device_stages[-1], model.model, probe)


def _every_walk(stage, cpu_stage, X):
    """Each lane count and staging of a DeviceTrees stage against the CPU stage. One lane
    a row sums the trees in the CPU's order (the same bits, shared memory or not); eight
    lanes reassociate the sum."""
    want = cpu_stage.predict(X)
    on_device = cuda.to_device(np.asfortranarray(X))
    for lanes in (1, 8):
        for staging in ("global", "shared"):
            out = stage.predict(on_device, lanes=lanes, staging=staging).copy_to_host()
            if lanes == 1:
                np.testing.assert_array_equal(out, want)
            np.testing.assert_allclose(out, want, rtol=0, atol=TOL)


def test_xgboost_multiclass_softmax(data):
    X, y, probe = data
    labels = np.digitize(y, [-0.5, 0.5])
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2, objective="multi:softprob").fit(X, labels)
    _agree(scoring_core.compile(clf), probe, clf.predict_proba(probe))


def test_xgboost_regressor_from_float64_input(data):
    X, y, probe = data
    reg = xgb.XGBRegressor(n_estimators=6, max_depth=3).fit(X, y)
    _agree(scoring_core.compile(reg), probe.astype(np.float64), reg.predict(probe))


def test_lightgbm_with_missing_values_and_a_categorical_feature(data):
    X, y, probe = data
    Xc = X.copy()
    rng = np.random.default_rng(3)
    Xc[:, 4] = rng.integers(0, 12, len(Xc)).astype(np.float32)
    Xc[rng.random(len(Xc)) < 0.1, 4] = np.nan
    yc = y + 2.0 * np.isin(Xc[:, 4], [1, 4, 7])
    params = {"num_leaves": 7, "learning_rate": 0.3, "min_data_in_leaf": 5, "min_data_per_group": 5,
              "cat_smooth": 1, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(Xc, yc, categorical_feature=[4]), 6)
    model = scoring_core.compile(booster)
    assert model.to("cuda").device_stages[-1].categorical
    Pc = Xc[:24].copy()
    Pc[3] = np.nan
    Pc[5, 4] = 40.0  # a category never seen
    Pc[6, 4] = -3.0  # negative: no category
    _agree(model, Pc, booster.predict(Pc))


def test_xgboost_categorical_splits_with_invalid_categories(data):
    X, y, _ = data
    Xc = X.copy()
    rng = np.random.default_rng(5)
    Xc[:, 5] = rng.integers(0, 12, len(Xc)).astype(np.float32)
    Xc[rng.random(len(Xc)) < 0.1, 5] = np.nan
    yc = y + (np.nan_to_num(Xc[:, 5], nan=0) % 3 == 0)
    types = ["q"] * 6
    types[5] = "c"
    booster = xgb.train({"max_depth": 3, "nthread": 1, "max_cat_to_onehot": 1},
                        xgb.DMatrix(Xc, yc, feature_types=types, enable_categorical=True), 5)
    rows = Xc[:20].copy()
    rows[:10, 5] = [-3, -1, -0.5, 0, 0.5, 1.5, 11, 12, 40, 1e9]  # invalid and unseen
    want = booster.predict(xgb.DMatrix(rows, feature_types=types, enable_categorical=True))
    _agree(scoring_core.compile(booster), rows, want)


def test_lightgbm_binary(data):
    X, y, probe = data
    booster = lgb.train({"objective": "binary", "num_leaves": 5, "verbose": -1, "num_threads": 1,
                         "min_data_in_leaf": 5}, lgb.Dataset(X, (y > 0).astype(int)), 5)
    _agree(scoring_core.compile(booster), probe, booster.predict(probe))


def test_sklearn_random_forest_with_class_distributions(data):
    from sklearn.ensemble import RandomForestClassifier

    X, y, probe = data
    Xf = np.nan_to_num(X)
    forest = RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0).fit(Xf, np.digitize(y, [-0.5, 0.5]))
    Pf = np.nan_to_num(probe)
    model = scoring_core.compile(forest)
    gpu, _ = _agree(model, Pf, forest.predict_proba(Pf))
    assert gpu.device_stages[-1].leaf_width == 3 and gpu.device_stages[-1].staging == "shared"
    # Shared memory for 20 nodes: trees one or two a chunk, the larger ones walked in global memory.
    small = DeviceTrees(model.model, shared_slots=20)
    assert small._chunks["shared"].shape[0] > 2 and small.staging == "global"
    _every_walk(small, model.model, Pf[:8])


def test_gpu_layout_and_chunks(data):
    X, y, _ = data
    booster = xgb.XGBRegressor(n_estimators=3, max_depth=3).fit(X, y).get_booster()
    params, arrays = scoring_core.compile(booster).model.ensemble.to_arrays()
    lay = gpu_layout(arrays)
    n_internal = arrays["node_feature"].size
    assert lay["feature"].size == 3 + 2 * n_internal and (lay["feature"] >= 0).sum() == n_internal
    internal = lay["feature"] >= 0
    left = lay["child"][internal]
    # Every slot is a root, a left child or the right child beside it, once.
    assert sorted([*lay["tree_root"], *left, *(left + 1)]) == list(range(lay["feature"].size))
    assert sorted(lay["child"][~internal]) == list(range(arrays["leaf_value"].size))  # every leaf once
    # Trees of 15, 5, 40 and 1 slots in chunks of 20: the 40 alone (walked in global memory).
    assert chunks(np.array([0, 15, 20, 60]), 61, 20).tolist() == [0, 2, 3, 4]
    # Lanes a row: many for one row on a large GPU, one for a million rows, never past the trees.
    assert [choose_lanes(1, 500, 132), choose_lanes(10**6, 500, 132), choose_lanes(1, 3, 132)] == [32, 1, 2]


def test_sklearn_hist_gradient_boosting_with_a_categorical_feature(data):
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y, probe = data
    Xc = X.copy()
    Xc[:, 4] = np.random.default_rng(4).integers(0, 8, len(Xc))
    yc = y + 2.0 * np.isin(Xc[:, 4], [2, 5])
    hgb = HistGradientBoostingRegressor(max_iter=5, max_leaf_nodes=7, categorical_features=[4]).fit(Xc, yc)
    P = Xc[:24].copy()
    P[3] = np.nan
    P[5, 4] = 2.5  # not an integer: an unknown category
    P[6, 4] = 30.0  # never seen
    _agree(scoring_core.compile(hgb), P, hgb.predict(P))


# -- linear models and transforms --------------------------------------------------------------


def test_logistic_regression_after_imputer_and_scaler(data):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, probe = data
    pipe = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler(), LogisticRegression()).fit(X, y > 0)
    model = scoring_core.compile(pipe)
    assert [s.kind for s in model.transforms] == ["column_map", "column_map"]
    _agree(model, probe, pipe.predict_proba(probe))
    # The transforms give the CPU's bits: same rounding after every step.
    gpu = model.to("cuda")
    out = gpu.device_stages[0].predict(cuda.to_device(np.asfortranarray(probe))).copy_to_host()
    np.testing.assert_array_equal(out, model.transforms[0].predict(np.asfortranarray(probe)))


def test_multinomial_logistic_with_one_hot_columns(data):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

    X, y, probe = data
    Xe = np.nan_to_num(X).astype(np.float64)
    Xe[:, 5] = np.round(np.clip(Xe[:, 5], -1, 1))
    columns = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), [5]),
                                 ("scale", MinMaxScaler(), [0, 1, 2])], remainder="passthrough")
    pipe = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=300))])
    pipe.fit(Xe, np.digitize(y, [-0.5, 0.5]))
    model = scoring_core.compile(pipe)
    assert "encode" in [s.kind for s in model.transforms]
    P = Xe[:20].copy()
    P[2, 5] = 7.0  # unknown category: ignored, zeros
    _agree(model, P, pipe.predict_proba(P))


def test_unknown_category_error_names_the_cpus_row_and_column(data):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y, _ = data
    Xe = np.round(np.clip(np.nan_to_num(X[:, :2]), -1, 1)).astype(np.float64)
    pipe = Pipeline([("columns", ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="error"), [0, 1])])),
                     ("model", LinearRegression())]).fit(Xe, y)
    model = scoring_core.compile(pipe)
    P = Xe[:10].copy()
    P[4, 1] = 5.0
    P[6, 0] = 9.0
    with pytest.raises(InvalidArgument) as cpu_error:
        model.predict(P)
    with pytest.raises(InvalidArgument) as gpu_error:
        model.to("cuda").predict(P)
    assert str(gpu_error.value) == str(cpu_error.value)
    assert "row 6" in str(gpu_error.value)


def test_linear_regression_after_row_normaliser(data):
    """row_norm comes from ONNX graphs (Normalizer); built here from scikit-learn's fit."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from scoring_core.linear import LinearModel
    from scoring_core.model import CompiledModel
    from scoring_core.row_norm import RowNorm

    X, y, probe = data
    Xn = np.nan_to_num(X)
    pipe = make_pipeline(Normalizer(), LinearRegression()).fit(Xn, y)
    reg = pipe[-1]
    model = CompiledModel(LinearModel(reg.coef_[None, :], np.array([reg.intercept_]), "identity"),
                          transforms=[RowNorm(6, "l2")], feature_names=[f"f{i}" for i in range(6)], task="regression")
    P = np.nan_to_num(probe)
    P[1] = 0.0  # a zero row stays zero
    _agree(model, P, pipe.predict(P))


def test_mlp_through_torch_matches_the_cpu_core_and_sklearn(data):
    torch = pytest.importorskip("torch")
    from sklearn.neural_network import MLPClassifier

    from scoring_core.cuda.mlp import TorchMLP

    X, y, probe = data
    Xm = np.nan_to_num(X)
    clf = MLPClassifier(hidden_layer_sizes=(16, 8), activation="tanh", solver="lbfgs", max_iter=200, random_state=0)
    clf.fit(Xm, y > 0)
    model = scoring_core.compile(clf)
    P = np.nan_to_num(probe)
    # torch's CPU device here: the same translation of layers and activations the GPU runs.
    got = TorchMLP(model.model, "cpu").predict(P)
    np.testing.assert_allclose(got, model.model.predict(P), rtol=0, atol=TOL)
    np.testing.assert_allclose(got, clf.predict_proba(P), rtol=0, atol=TOL)
    if not torch.cuda.is_available():
        with pytest.raises(FailedPrecondition, match="torch"):
            model.to("cuda")


# -- inputs, edge cases, errors ----------------------------------------------------------------


@pytest.fixture(scope="module")
def booster_model(data):
    X, y, _ = data
    clf = xgb.XGBClassifier(n_estimators=4, max_depth=3).fit(X, y > 0)
    return clf, scoring_core.compile(clf)


def test_one_row_empty_batch_and_nan(booster_model, data):
    clf, model = booster_model
    gpu = model.to("cuda:0")
    _, _, probe = data
    one = probe[3:4]
    np.testing.assert_allclose(gpu.predict(one), clf.predict_proba(one), rtol=0, atol=TOL)
    empty = gpu.predict(np.empty((0, 6), np.float32))
    assert empty.shape == (0, 2) and empty.dtype == np.float32
    assert gpu.predict_arrow(pa.record_batch([pa.array([], pa.float32())] * 6, names=model.feature_names)).num_rows == 0


def test_arrow_batches_and_device_arrays(booster_model, data):
    _, model = booster_model
    _, _, probe = data
    gpu = model.to("cuda")
    batch = pa.RecordBatch.from_arrays([pa.array(probe[:, j]) for j in range(6)], names=model.feature_names)
    got = gpu.predict_arrow(batch)
    assert got.schema == model.output_schema
    np.testing.assert_allclose(np.stack(got.column(0).to_numpy(zero_copy_only=False)),
                               np.stack(model.predict_arrow(batch).column(0).to_numpy(zero_copy_only=False)),
                               rtol=0, atol=TOL)
    on_device = cuda.to_device(np.ascontiguousarray(probe))  # row-major on the device, scored where it is
    np.testing.assert_allclose(gpu.predict(on_device), model.predict(probe), rtol=0, atol=TOL)
    with pytest.raises(InvalidArgument, match=r"expects \(n, 6\)"):
        gpu.predict(cuda.to_device(np.zeros((2, 5), np.float32)))
    assert gpu.to("cpu") is model and gpu.to("cuda:0") is gpu
    np.testing.assert_array_equal(gpu.explain(probe), model.explain(probe))  # TreeSHAP runs on the CPU


def test_device_strings_are_checked(booster_model):
    _, model = booster_model
    with pytest.raises(InvalidArgument, match="'cuda' or 'cuda:N'"):
        model.to("gpu0")
    with pytest.raises(FailedPrecondition, match="cuda:3"):
        model.to("cuda:3")
    assert model.to("cpu") is model


def test_importing_the_backend_leaves_numba_cuda_alone():
    """A CPU process that imports scoring_core.cuda (as the native engine does) imports
    neither numba.cuda nor torch until a model moves to a GPU."""
    code = "import sys, scoring_core, scoring_core.cuda; print('numba.cuda' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]


_ON_A_GPU = textwrap.dedent("""
    import numpy as np, xgboost as xgb, scoring_core
    from numba import cuda
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 8)).astype(np.float32)
    X[::9, 2] = np.nan
    clf = xgb.XGBClassifier(n_estimators=50, max_depth=6).fit(X, X[:, 0] + X[:, 1] > 0)
    model = scoring_core.compile(clf)
    gpu = model.to("cuda:0")
    class Foreign:  # only __cuda_array_interface__, as CuPy and torch tensors give
        def __init__(self, a): self.__cuda_array_interface__ = a.__cuda_array_interface__
    d = cuda.to_device(X)
    for got in (gpu.predict(X), gpu.predict(Foreign(d))):
        assert np.abs(got - model.predict(X)).max() <= 1e-5
        assert np.abs(got - clf.predict_proba(X)).max() <= 1e-5
    print("ok")
""")


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU (no nvidia-smi on this machine)")
def test_on_a_real_gpu():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", _ON_A_GPU], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
