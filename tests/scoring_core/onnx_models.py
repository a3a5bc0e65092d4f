"""Real models exported to ONNX by their libraries' own converters, and onnxruntime's answers.

Shared by the core's ONNX tests (tests/scoring_core/test_onnx.py) and the onnx engine's
(tests/engines/test_onnx_engine.py): every model is trained here on small data and exported
by skl2onnx, onnxmltools or torch.onnx, as a user would, so that parity is checked against
what those exporters really emit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 6
DATA_DIR = Path(__file__).parent / "data"


def data(n: int = 600, *, missing: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X float32, three-class y, regression target); with ``missing``, a tenth of X is NaN."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=N_FEATURES, n_informative=4, n_classes=3, random_state=seed)
    X = X.astype(np.float32)
    target = X[:, 0] * 2.0 - X[:, 1] + np.sin(X[:, 2])
    if missing:
        X[np.random.default_rng(seed).random(X.shape) < 0.1] = np.nan
    return X, y, target


def sklearn_onnx(estimator: Any, X: np.ndarray, **options: Any) -> Any:
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(estimator, X[:1], options=options or None, target_opset={"": 17, "ai.onnx.ml": 3})


def booster_onnx(estimator: Any) -> Any:
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    convert = convert_xgboost if type(estimator).__module__.startswith("xgboost") else convert_lightgbm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(estimator, initial_types=[("input", FloatTensorType([None, N_FEATURES]))], target_opset=15)


def torch_onnx(module: Any, X: np.ndarray) -> Any:
    import io

    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(X[:4]),), buffer, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return onnx.load_model_from_string(buffer.getvalue())


def ort_outputs(model: Any, feed: np.ndarray | dict[str, Any]) -> list[Any]:
    """onnxruntime's default call: every output, as ``session.run(None, feed)`` gives them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    if not isinstance(feed, dict):
        feed = {session.get_inputs()[0].name: feed}
    return session.run(None, feed)


def prediction(outputs: list[Any], classes: list[Any] | None = None) -> np.ndarray:
    """The prediction output (the last): a ZipMap's maps as an (n, k) float32 array in class order."""
    last = outputs[-1]
    if isinstance(last, list):
        keys = classes if classes is not None else (list(last[0]) if last else [])
        return np.asarray([[row[k] for k in keys] for row in last], np.float32).reshape(len(last), len(keys))
    return np.asarray(last)


def _torch_mlp() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1),
    )


def _torch_regressor() -> Any:
    import torch

    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 1))


def _sklearn(make: Callable[[], Any], target: str = "class", missing: bool = False, **options: Any) -> Callable[[], tuple[Any, bool]]:
    def build() -> tuple[Any, bool]:
        X, y, t = data(missing=missing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an MLP's ConvergenceWarning: any fitted network will do
            fitted = make().fit(X, y if target == "class" else (y > 0).astype(int) if target == "binary" else t)
        return sklearn_onnx(fitted, X, **options), missing
    return build


def _booster(make: Callable[[], Any], target: str) -> Callable[[], tuple[Any, bool]]:
    def build() -> tuple[Any, bool]:
        X, y, t = data(missing=True)
        yy = y if target == "class" else (y > 0).astype(int) if target == "binary" else t
        return booster_onnx(make().fit(X, yy)), True
    return build


def _torch(make: Callable[[], Any]) -> Callable[[], tuple[Any, bool]]:
    def build() -> tuple[Any, bool]:
        return torch_onnx(make(), data()[0]), False
    return build


def _cases() -> dict[str, Callable[[], tuple[Any, bool]]]:
    """name -> a builder of (ModelProto, whether its source takes missing values)."""
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    quiet = {"verbose": -1, "n_estimators": 20}
    return {
        "sklearn-logistic": _sklearn(lambda: LogisticRegression(max_iter=500)),
        "sklearn-logistic-binary": _sklearn(lambda: LogisticRegression(max_iter=500), "binary"),
        "sklearn-logistic-no-zipmap": _sklearn(lambda: LogisticRegression(max_iter=500), zipmap=False),
        "sklearn-scaler-logistic": _sklearn(lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
        "sklearn-imputer-scaler-logistic": _sklearn(
            lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=500)), missing=True),
        "sklearn-normalizer-scaler-logistic": _sklearn(
            lambda: make_pipeline(Normalizer(), StandardScaler(), LogisticRegression(max_iter=500))),
        "sklearn-normalizer-l1-linear-regression": _sklearn(lambda: make_pipeline(Normalizer("l1"), LinearRegression()),
                                                            "regression"),
        "sklearn-linear-regression": _sklearn(LinearRegression, "regression"),
        "sklearn-random-forest": _sklearn(lambda: RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0)),
        "sklearn-random-forest-binary": _sklearn(lambda: RandomForestClassifier(n_estimators=15, random_state=0), "binary"),
        "sklearn-random-forest-regressor": _sklearn(lambda: RandomForestRegressor(n_estimators=10, max_depth=8, random_state=0),
                                                    "regression"),
        "sklearn-gradient-boosting": _sklearn(lambda: GradientBoostingClassifier(n_estimators=20, random_state=0)),
        "sklearn-gradient-boosting-binary": _sklearn(lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
                                                     "binary"),
        "sklearn-gradient-boosting-regressor": _sklearn(lambda: GradientBoostingRegressor(n_estimators=20, random_state=0),
                                                        "regression"),
        "sklearn-mlp": _sklearn(lambda: MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=1000, random_state=0)),
        "sklearn-mlp-regressor": _sklearn(lambda: MLPRegressor(hidden_layer_sizes=(16,), max_iter=1000, random_state=0),
                                          "regression"),
        "xgboost-multiclass": _booster(lambda: xgb.XGBClassifier(n_estimators=20, max_depth=4), "class"),
        "xgboost-binary": _booster(lambda: xgb.XGBClassifier(n_estimators=20, max_depth=4), "binary"),
        "xgboost-regressor": _booster(lambda: xgb.XGBRegressor(n_estimators=20, max_depth=4), "regression"),
        "lightgbm-multiclass": _booster(lambda: lgb.LGBMClassifier(**quiet), "class"),
        "lightgbm-binary": _booster(lambda: lgb.LGBMClassifier(**quiet), "binary"),
        "lightgbm-regressor": _booster(lambda: lgb.LGBMRegressor(**quiet), "regression"),
        "torch-mlp-softmax": _torch(_torch_mlp),
        "torch-mlp-regressor": _torch(_torch_regressor),
    }


CASES = [
    "sklearn-logistic", "sklearn-logistic-binary", "sklearn-logistic-no-zipmap", "sklearn-scaler-logistic",
    "sklearn-imputer-scaler-logistic", "sklearn-normalizer-scaler-logistic", "sklearn-normalizer-l1-linear-regression",
    "sklearn-linear-regression", "sklearn-random-forest",
    "sklearn-random-forest-binary", "sklearn-random-forest-regressor", "sklearn-gradient-boosting",
    "sklearn-gradient-boosting-binary", "sklearn-gradient-boosting-regressor", "sklearn-mlp", "sklearn-mlp-regressor",
    "xgboost-multiclass", "xgboost-binary", "xgboost-regressor", "lightgbm-multiclass", "lightgbm-binary",
    "lightgbm-regressor", "torch-mlp-softmax", "torch-mlp-regressor",
]


def build(name: str) -> tuple[Any, bool]:
    return _cases()[name]()
