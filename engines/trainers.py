"""Built-in training functions for pipeline stages: XGBoost, LightGBM and scikit-learn.

Each takes the engine's dataset (a Spark DataFrame, a Ray Dataset, an Arrow
table or a pandas DataFrame), trains on all but a held-out fifth of the rows,
measures the held-out fifth, and returns a CompiledModel whose lineage carries
those metrics; the stage runner adds where the data and code came from. Name
them in a training stage as ``entry: engines.trainers:xgboost`` (or lightgbm,
sklearn) with their keyword parameters under ``params``.

``BUILT_IN`` lists them: the exact entries every agent runs. A stage's parameters come
from a remote spec, so none of them may name a file (LightGBM reads and writes files its
parameters name) or an arbitrary class (``sklearn`` takes only scikit-learn estimators).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, shown
from scoring_core import measures

# The built-in trainers: the exact stage entries every agent allows, in one place.
BUILT_IN: tuple[str, ...] = ("engines.trainers:xgboost", "engines.trainers:lightgbm", "engines.trainers:sklearn")

# Library parameters that name files the library would read or write (LightGBM's and
# XGBoost's command-line parameters are also accepted by their Python training calls).
_FILE_PARAMS = frozenset({
    "data", "train", "train_data", "train_data_file", "data_filename", "valid", "valid_data", "valid_data_file",
    "test", "test_data", "input_model", "model_input", "model_in", "output_model", "model_output", "model_out",
    "output_result", "predict_result", "prediction_result", "convert_model", "convert_model_file", "machines",
    "mlist", "config", "fmap", "name_dump", "name_pred", "model_dir", "init_score", "input_init_score",
    "valid_data_initscores",
})


def _no_file_params(trainer: str, params: dict[str, Any]) -> None:
    for key in params:
        lowered = str(key).lower()
        if lowered in _FILE_PARAMS or any(part in lowered for part in ("file", "machine_list")):
            raise InvalidArgument(f"{trainer} parameter {shown(key)} names a file; training parameters from a "
                                  f"pipeline may not read or write files on the agent")


def _frame(data: Any) -> Any:
    """A pandas DataFrame from whatever dataset type the engine handed over."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data.to_pandas()
    module = type(data).__module__
    if module.startswith("pyspark"):
        return data.toPandas()
    if module.startswith("ray"):
        return data.to_pandas()
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return data
    raise InvalidArgument(f"cannot train on data of type {type(data).__name__}")


def _split(
    data: Any, label: str, features: list[str] | None, seed: int,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = _frame(data)
    if label not in df.columns:
        raise InvalidArgument(f"label column {label!r} is not in the data; columns: {list(df.columns)[:20]}")
    features = list(features) if features else [c for c in df.columns if c != label]
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise InvalidArgument(f"feature columns {missing} are not in the data")
    X = df[features].to_numpy(dtype=np.float32)
    y = df[label].to_numpy()
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, len(y) * 4 // 5)
    train, test = order[:cut], order[cut:]
    return features, X[train], y[train], X[test], y[test]


def _metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Held-out metrics: accuracy and log loss for probabilities, RMSE otherwise."""
    if len(y_true) == 0:
        return {}
    if scores.ndim == 2:
        return {"holdout_accuracy": float((scores.argmax(axis=1) == y_true).mean()),
                "holdout_log_loss": measures.log_loss(scores[np.arange(len(y_true)), y_true.astype(int)]),
                "holdout_rows": float(len(y_true))}
    return {"holdout_rmse": measures.errors(scores, y_true)["rmse"], "holdout_rows": float(len(y_true))}


def _compiled(model: Any, features: list[str], X: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
              params: dict) -> Any:
    """The trained model compiled, with its training rows ``X`` as the drift baseline
    (scoring_core.drift) and its held-out metrics in the lineage."""
    import scoring_core

    compiled = scoring_core.compile(model, feature_names=features, baseline=X)
    scores = compiled.predict(X_test)
    if compiled.task == "classification" and scores.ndim == 1:  # a binary Booster answers P(class 1) alone
        scores = np.column_stack([1 - scores, scores])
    compiled.metadata.setdefault("lineage", {}).update(
        {"metrics": _metrics(y_test, scores), "trainer_params": params}
    )
    return compiled


def xgboost(data: Any, *, label: str, features: list[str] | None = None, num_boost_round: int = 100,
            seed: int = 0, **params: Any) -> Any:
    import xgboost as xgb

    _no_file_params("xgboost", params)
    names, X, y, X_test, y_test = _split(data, label, features, seed)
    params = {"objective": "binary:logistic", "seed": seed, **params}
    booster = xgb.train(params, xgb.DMatrix(X, y, feature_names=names), num_boost_round)
    return _compiled(booster, names, X, X_test, y_test, {**params, "num_boost_round": num_boost_round})


def lightgbm(data: Any, *, label: str, features: list[str] | None = None, num_boost_round: int = 100,
             seed: int = 0, **params: Any) -> Any:
    import lightgbm as lgb

    _no_file_params("lightgbm", params)
    names, X, y, X_test, y_test = _split(data, label, features, seed)
    params = {"objective": "binary", "verbose": -1, "seed": seed, **params}
    booster = lgb.train(params, lgb.Dataset(X, y, feature_name=names), num_boost_round)
    return _compiled(booster, names, X, X_test, y_test, {**params, "num_boost_round": num_boost_round})


def sklearn(data: Any, *, label: str, estimator: str, features: list[str] | None = None, seed: int = 0,
            **params: Any) -> Any:
    """``estimator`` is a dotted class name, e.g. sklearn.linear_model.LogisticRegression: a
    scikit-learn estimator class, looked up in a public scikit-learn module."""
    cls = _estimator_class(estimator)
    names, X, y, X_test, y_test = _split(data, label, features, seed)
    model = cls(**params).fit(X, y)
    return _compiled(model, names, X, X_test, y_test, {"estimator": estimator, **params})


def _estimator_class(estimator: Any) -> Any:
    """The scikit-learn estimator class ``estimator`` names; nothing else (no function, no
    private module, nothing a module merely imported), since its parameters come from a spec."""
    import inspect
    import re

    text = estimator if isinstance(estimator, str) else ""
    module_name, _, cls_name = text.rpartition(".")
    parts = module_name.split(".")
    if (parts[0] != "sklearn" or len(parts) < 2 or not all(re.match(r"^[a-z][a-z0-9_]*$", p) for p in parts)
            or not re.match(r"^[A-Z][A-Za-z0-9]*$", cls_name)):
        raise InvalidArgument(f"estimator {shown(estimator)} must name a scikit-learn estimator class, "
                              f"e.g. sklearn.linear_model.LogisticRegression")
    from sklearn.base import BaseEstimator

    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidArgument(f"estimator {shown(estimator)}: there is no module {module_name!r}") from err
    cls = vars(module).get(cls_name)
    if not (inspect.isclass(cls) and issubclass(cls, BaseEstimator) and cls.__module__.startswith("sklearn.")):
        raise InvalidArgument(f"estimator {shown(estimator)} is not a scikit-learn estimator class")
    return cls
