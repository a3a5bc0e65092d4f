"""Every CUDA kernel of the scoring core compiles for a real GPU, here, without one.

The simulator (tests/test_cuda_core.py) checks what the kernels compute, but it runs
them as Python: it cannot tell whether numba-cuda's real CUDA target types and lowers
them (a numpy call it does not support, an integer width it rejects, a CPU function
compiled as a device function: scoring_core.transforms._category_index and
scoring_core.trees.tree_kernels.categorical_step are). So: real models are scored on
the simulator with each kernel launch recorded (which kernel, with which argument
types, exactly as the backend launches it), and a child process without the simulator
compiles each of those launches to PTX for an H200 (sm_90) with NVVM from the
``nvidia-cuda-nvcc-cu12`` wheel. Nothing runs on a GPU: that is test_cuda_core's
``test_on_a_real_gpu``, on a machine that has one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import scoring_core
from scoring_core.cuda import _runtime as rt
from tests.test_cuda_core import cuda, lgb, xgb  # noqa: F401 - numba.cuda as the simulator

# Every kernel the backend builds (its rt.kernel keys), with how the child rebuilds it.
FACTORIES = {
    "tree_walk": "T.walk_kernel(*key[1:])", "tree_rules": "T.rules_kernel()", "linear": "D.linear_kernel(key[1])",
    "column_map": "D.map_kernel()", "encode": "D.encode_kernel()", "row_norm": "D.row_norm_kernel(key[1])",
    "column_major": "D.column_major_kernel()",
}

COMPILE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import cuda, types
    from numba.np.numpy_support import from_dtype
    import numba.cuda.dispatcher as dispatcher
    from scoring_core.cuda import _dense_kernels as D, _tree_kernels as T

    class H200:  # device functions ask the current device for its compute capability only
        compute_capability = (9, 0)

    dispatcher.get_current_device = H200
    FACTORIES = json.loads(sys.argv[1])

    def of(s):
        if s[0] == "array":
            return types.Array(from_dtype(np.dtype(s[1])), s[2], s[3])
        return from_dtype(np.dtype(s[1]))

    done = []
    for key, sig in json.load(sys.stdin):
        kernel = eval(FACTORIES[key[0]])
        ptx, _ = cuda.compile_ptx(kernel.py_func, tuple(of(s) for s in sig), cc=(9, 0))
        done.append([key, ".target sm_90" in ptx and ".entry" in ptx])
    print(json.dumps(done))
""")


def _type_of(a) -> list:
    """An argument as the CUDA target types it: arrays by dtype, dimensions and layout."""
    arr = getattr(a, "_ary", a)  # the simulator's device arrays keep the host array here
    if isinstance(arr, np.ndarray):
        layout = "C" if arr.flags.c_contiguous else "F" if arr.flags.f_contiguous else "A"
        return ["array", arr.dtype.str, arr.ndim, layout]
    if isinstance(a, (bool, np.bool_)):
        return ["scalar", "?"]
    if isinstance(a, (int, float)):
        return ["scalar", "<i8" if isinstance(a, int) else "<f8"]
    return ["scalar", np.dtype(type(a)).str]


@pytest.fixture()
def launches(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Each distinct (kernel key, argument types) launched while the fixture is on."""
    seen: dict[str, list] = {}
    build = rt.kernel

    class Recorded:
        def __init__(self, key, kernel) -> None:
            self.key, self.kernel = key, kernel

        def __getitem__(self, config):
            launch = self.kernel[config]

            def call(*args):
                entry = [list(self.key), [_type_of(a) for a in args]]
                seen[json.dumps(entry)] = entry
                return launch(*args)

            return call

    monkeypatch.setattr(rt, "kernel", lambda key, factory: Recorded(key, build(key, factory)))
    return seen


def _score_one_of_each(X: np.ndarray, y: np.ndarray) -> None:
    """Real models whose scoring on the GPU launches every kernel kind (checked by the test)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from scoring_core.linear import LinearModel
    from scoring_core.model import CompiledModel
    from scoring_core.row_norm import RowNorm

    Xc = X.copy()
    Xc[:, 4] = np.arange(len(Xc)) % 9
    params = {"num_leaves": 7, "min_data_in_leaf": 5, "min_data_per_group": 5, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(Xc, y, categorical_feature=[4]), 4)  # input rules, categorical walk
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(np.nan_to_num(X), y > 0)
    xgboost = xgb.XGBClassifier(n_estimators=3, max_depth=3).fit(X, y > 0)  # float32, no rules
    scaled = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(X, y > 0)
    Xe = np.round(np.clip(np.nan_to_num(X), -1, 1)).astype(np.float64)
    onehot = Pipeline([("columns", ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), [5])],
                                                     remainder="passthrough")),
                       ("model", LogisticRegression(max_iter=200))]).fit(Xe, np.digitize(y, [-0.5, 0.5]))
    reg = LinearRegression().fit(np.nan_to_num(X), y)
    normed = CompiledModel(LinearModel(reg.coef_[None, :], np.array([reg.intercept_]), "identity"),
                           transforms=[RowNorm(6, "l2")], feature_names=[f"f{i}" for i in range(6)], task="regression")
    P = X[:40]
    for model, rows in ((scoring_core.compile(booster), Xc[:40]), (scoring_core.compile(forest), np.nan_to_num(P)),
                        (scoring_core.compile(scaled), P), (scoring_core.compile(onehot), Xe[:40]),
                        (normed, np.nan_to_num(P))):
        model.to("cuda").predict(rows)
    gpu = scoring_core.compile(xgboost).to("cuda")
    gpu.predict(cuda.to_device(np.ascontiguousarray(P)))  # row-major on the device: the column-major copy
    trees = gpu.device_stages[-1]
    for lanes, staging in ((1, "global"), (8, "shared")):
        trees.predict(cuda.to_device(np.asfortranarray(P)), lanes=lanes, staging=staging)


def test_every_kernel_the_backend_launches_compiles_to_ptx_for_a_real_gpu(launches) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    X[rng.random(200) < 0.1, 1] = np.nan
    y = X[:, 0] - X[:, 2] + 0.5 * np.nan_to_num(X[:, 1])
    _score_one_of_each(X, y)
    recorded = list(launches.values())
    assert {key[0] for key, _ in recorded} == set(FACTORIES), "a kernel kind was not launched, or is new: add it"
    done = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(FACTORIES)], input=json.dumps(recorded),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    compiled = json.loads(done.stdout)
    assert [key for key, _ in compiled] == [key for key, _ in recorded]
    assert all(ok for _, ok in compiled), compiled
    assert len(compiled) >= len(FACTORIES) + 2  # the walk in several specialisations (lanes, staging, categories)
